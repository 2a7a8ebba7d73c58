//! Parsed fields kept consistent with masked bytes: every string in a
//! message's fields (and a parser's complaint) that holds bytes a rule
//! masked gets the same mask, and HTTP/2 header values (decoded from HPACK,
//! so not a copy of the raw bytes) are masked by header name.
use serde_json::Value;

use super::headers::{self, HeaderRule};

/// Masked bytes as text: what was there and what is there now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subst {
    pub from: String,
    pub to: String,
}

/// Secrets shorter than this are replaced only where a string equals them
/// (a substring that short would mask unrelated text).
pub const MIN_SUBSTRING: usize = 4;

/// `s` with every substitution applied.
pub fn mask_str(s: &str, subs: &[Subst]) -> Option<String> {
    let mut out: Option<String> = None;
    for sub in subs {
        let cur = out.as_deref().unwrap_or(s);
        if cur == sub.from {
            out = Some(sub.to.clone());
        } else if sub.from.len() >= MIN_SUBSTRING && cur.contains(&sub.from) {
            out = Some(cur.replace(&sub.from, &sub.to));
        }
    }
    out
}

/// Applies `subs` to every string of `v`, and header rules to HTTP/2-style
/// header lists (`{"name": .., "value": ..}` objects or `[name, value]` pairs).
pub fn mask_value(v: &mut Value, subs: &[Subst], header_rules: &[HeaderRule]) {
    match v {
        Value::String(s) => {
            if let Some(m) = mask_str(s, subs) {
                *s = m;
            }
        }
        Value::Array(a) => {
            if let [Value::String(name), Value::String(value)] = &mut a[..] {
                mask_header(name, value, header_rules);
            }
            for x in a {
                mask_value(x, subs, header_rules);
            }
        }
        Value::Object(o) => {
            if let (Some(Value::String(name)), Some(Value::String(_))) = (o.get("name"), o.get("value")) {
                let name = name.clone();
                if let Some(Value::String(value)) = o.get_mut("value") {
                    let mut n = name;
                    mask_header(&mut n, value, header_rules);
                }
            }
            for (_, x) in o.iter_mut() {
                mask_value(x, subs, header_rules);
            }
        }
        _ => {}
    }
}

fn mask_header(name: &mut str, value: &mut String, rules: &[HeaderRule]) {
    if headers::rule_for(rules, name.as_bytes()).is_some() {
        // Decoded from HPACK: masked whole, as its literal is in the bytes.
        *value = "*".repeat(value.len());
    }
}
