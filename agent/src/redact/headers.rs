//! HTTP/1 header values: `Authorization`, `Proxy-Authorization`, `Cookie`,
//! `Set-Cookie` (built-in) and header names from custom rules, found at the
//! start of any line of any payload (HTTP/1 heads, and HTTP/1 text in
//! segments). HTTP/2 header blocks are HPACK-coded: see `super::hpack`.
use std::sync::Arc;

use super::mask::Mask;

/// How a header's value is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueShape {
    /// `<scheme> <credentials>`: the scheme is kept, the rest masked
    /// (a value without a space is masked whole).
    Credentials,
    /// `name=value; name=value`: every value masked, names kept.
    Cookies,
    /// `name=value; Attr=...`: the first pair's value masked, attributes kept.
    SetCookie,
    /// The whole value.
    Whole,
}

/// A header name (lower case) and how its value is masked, for one rule.
#[derive(Clone, Debug)]
pub struct HeaderRule {
    pub name: Vec<u8>,
    pub shape: ValueShape,
    pub rule: Arc<str>,
}

/// The built-in header rules, under rule name `rule`.
pub fn builtin(rule: &Arc<str>) -> Vec<HeaderRule> {
    [
        ("authorization", ValueShape::Credentials),
        ("proxy-authorization", ValueShape::Credentials),
        ("cookie", ValueShape::Cookies),
        ("set-cookie", ValueShape::SetCookie),
    ]
    .into_iter()
    .map(|(n, shape)| HeaderRule { name: n.as_bytes().to_vec(), shape, rule: rule.clone() })
    .collect()
}

/// The header rule for `name` (case-insensitive), if any.
pub fn rule_for<'a>(rules: &'a [HeaderRule], name: &[u8]) -> Option<&'a HeaderRule> {
    rules.iter().find(|r| r.name.eq_ignore_ascii_case(name))
}

/// Masks of `value` (offsets relative to it) for header rule `r`.
pub fn value_masks(r: &HeaderRule, value: &[u8]) -> Vec<(usize, usize)> {
    let trimmed_end = value.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let value = &value[..trimmed_end];
    match r.shape {
        ValueShape::Whole => vec![(0, value.len())],
        ValueShape::Credentials => match value.iter().position(|&c| c == b' ') {
            Some(sp) => {
                let start = sp + value[sp..].iter().take_while(|&&c| c == b' ').count();
                vec![(start, value.len())]
            }
            None => vec![(0, value.len())],
        },
        ValueShape::Cookies | ValueShape::SetCookie => {
            let mut out = Vec::new();
            let mut at = 0;
            for pair in value.split(|&c| c == b';') {
                if let Some(eq) = pair.iter().position(|&c| c == b'=') {
                    out.push((at + eq + 1, at + pair.len()));
                } else if r.shape == ValueShape::Cookies {
                    out.push((at, at + pair.len()));
                }
                if r.shape == ValueShape::SetCookie {
                    break;
                }
                at += pair.len() + 1;
            }
            out
        }
    }
}

/// Masks of header values in `buf`: a header line is a line start (buffer
/// start or after `\n`), a name from `rules`, `:`, optional blanks, the value
/// up to `\r` or `\n` (or the end of the buffer).
pub fn find(buf: &[u8], rules: &[HeaderRule], out: &mut Vec<Mask>) {
    if rules.is_empty() {
        return;
    }
    let mut line = 0;
    while line < buf.len() {
        let eol = memchr::memchr(b'\n', &buf[line..]).map_or(buf.len(), |i| line + i);
        let l = &buf[line..eol];
        if let Some(colon) = memchr::memchr(b':', l)
            && let Some(r) = rule_for(rules, &l[..colon])
        {
            let mut v = colon + 1;
            while v < l.len() && (l[v] == b' ' || l[v] == b'\t') {
                v += 1;
            }
            let vend = if l.last() == Some(&b'\r') { l.len() - 1 } else { l.len() };
            for (s, e) in value_masks(r, &l[v..vend.max(v)]) {
                out.push(Mask::star(line + v + s, line + v + e, &r.rule));
            }
        }
        line = eol + 1;
    }
}
