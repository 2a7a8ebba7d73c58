//! Redaction: secrets are masked in the agent, in every record's bytes and
//! parsed fields, before the record is written, hashed, spooled or shipped
//! (`crate::pipeline` applies [`Redactor::apply`] to every record first).
//!
//! Masking keeps length and framing: masked bytes are replaced in place by
//! `*` (or, for card numbers, by a keyed token of the same shape), so byte
//! positions, lengths and protocol framing stay true. Each record lists what
//! was masked (`redactions`: part, stream position, length, rule, rules
//! version). Built-in rules (version [`RULES_VERSION`]), all on by default:
//!
//! - `http_headers`: HTTP/1 `Authorization`/`Proxy-Authorization` (scheme
//!   kept), `Cookie` (names kept), `Set-Cookie` (attributes kept) values, in
//!   any payload line; HTTP/2 the same headers in HPACK literals (`hpack`).
//! - `bearer_token`: `Bearer <token>` anywhere in any payload.
//! - `api_key`: common API-key shapes (`patterns::API_KEYS`).
//! - `postgres_password`: contents of PasswordMessage, SASLInitialResponse
//!   (mechanism kept), SASLResponse, GSSResponse.
//! - `redis_auth`: `AUTH` arguments, `HELLO ... AUTH user pass`.
//! - `fix_password`: FIX tags 554 and 925.
//! - `card_number`: Luhn-valid card numbers → keyed tokens (`card`).
//!
//! Card tokens are keyed by the agent's key (`key`); each card redaction
//! names the key's id. The key is rotated without downtime by replacing the
//! key file and sending SIGHUP ([`Redactor::reload_key`]): the change is a
//! `redaction_key_rotated` notice record naming the old and new key ids.
//!
//! Custom rules (regex, header name, JSON field name) come from the
//! configuration file (`config`). Turning a built-in rule off is explicit
//! (`disable:`) and stated in a `redaction_rules` notice record at start.
//!
//! Not covered: records are per message after reassembly, so a secret split
//! across writes is masked whole; but a secret split by a capture gap, or
//! across two records of one long message (`incomplete: continues`, beyond
//! the per-message size cap), is seen in two pieces and may not match a
//! pattern rule. HTTP/2 header values indexed from the HPACK dynamic table by
//! a name that was itself inserted there are masked in the parsed fields
//! only; the literal that inserted them is masked in the bytes if its name was
//! literal or static. A FIX message's CheckSum (10) is not recomputed. Secrets
//! in compressed or encrypted payloads (gzip bodies, TLS not hooked) are not
//! seen. A PostgreSQL request part with a gap is walked only up to the gap.
use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use crate::{
    proto::Protocol,
    record::{Fields, Part, Record, Redaction},
};

pub mod card;
pub mod config;
pub mod fields;
pub mod headers;
pub mod hpack;
pub mod key;
pub mod mask;
pub mod patterns;
pub mod protocols;
#[cfg(test)]
mod tests;

pub use config::{CustomRule, RedactConfig, Rules};
use fields::Subst;
use key::Key;
use mask::Mask;

/// Version of the built-in rule set; stated on every redaction.
pub const RULES_VERSION: u32 = 1;

pub const HTTP_HEADERS: &str = "http_headers";
pub const BEARER_TOKEN: &str = "bearer_token";
pub const API_KEY: &str = "api_key";
pub const POSTGRES_PASSWORD: &str = "postgres_password";
pub const REDIS_AUTH: &str = "redis_auth";
pub const FIX_PASSWORD: &str = "fix_password";
pub const CARD_NUMBER: &str = "card_number";

/// Every built-in rule.
pub const BUILTIN: &[&str] =
    &[HTTP_HEADERS, BEARER_TOKEN, API_KEY, POSTGRES_PASSWORD, REDIS_AUTH, FIX_PASSWORD, CARD_NUMBER];

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction rule `{rule}`: bad regular expression: {source}")]
    Regex {
        rule: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("redaction rule `{rule}`: {what}")]
    BadRule { rule: String, what: String },
    #[error("redaction: `disable: {name}` names no built-in rule (built-in rules: {known})")]
    UnknownBuiltin { name: String, known: String },
    #[error("redaction key {path}: {what}")]
    Key {
        path: PathBuf,
        what: String,
        #[source]
        source: Option<std::io::Error>,
    },
}

/// Compiled rules and the tokenization key.
pub struct Redactor {
    rules: Rules,
    key: RwLock<Arc<Key>>,
    /// Where the key is re-read from on rotation (None: a fixed key, tests).
    key_file: Option<PathBuf>,
    postgres: Arc<str>,
    redis: Arc<str>,
    fix: Arc<str>,
    card: Arc<str>,
    headers: Arc<str>,
}

/// What masking one buffer did.
struct Masked {
    bytes: bytes::Bytes,
    masks: Vec<Mask>,
}

impl Redactor {
    /// Compiles `config` and loads (or creates) the key at `key_file`.
    pub fn new(config: &RedactConfig, key_file: &std::path::Path) -> Result<Redactor, RedactError> {
        Redactor::from_rules(config.compile()?, key_file)
    }

    /// Compiled `rules` with the key at `key_file` (created when absent).
    pub fn from_rules(rules: Rules, key_file: &std::path::Path) -> Result<Redactor, RedactError> {
        let key = key::load_or_create(key_file)?;
        let mut r = Redactor::with_key(rules, key);
        r.key_file = Some(key_file.to_path_buf());
        Ok(r)
    }

    /// The key in force.
    pub fn key(&self) -> Arc<Key> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the key file (SIGHUP). A new key takes effect for the next
    /// record, and the returned notice states the rotation; an unchanged key
    /// returns None; an unreadable or bad key file is an error and the key in
    /// force stays.
    pub fn reload_key(&self) -> Result<Option<Record>, RedactError> {
        let Some(path) = &self.key_file else { return Ok(None) };
        let new = Arc::new(Key::new(key::load_or_create(path)?));
        let mut k = self.key.write().unwrap_or_else(|e| e.into_inner());
        if k.id == new.id {
            return Ok(None);
        }
        let previous = std::mem::replace(&mut *k, new.clone());
        tracing::info!(previous = %previous.id, key_id = %new.id, "redaction tokenization key rotated");
        Ok(Some(Record::notice(
            "redaction_key_rotated",
            serde_json::json!({"previous_key_id": previous.id, "key_id": new.id, "key_file": path}),
        )))
    }

    /// Compiled `rules` with a given key (tests).
    pub fn with_key(rules: Rules, key: Vec<u8>) -> Redactor {
        Redactor {
            rules,
            key: RwLock::new(Arc::new(Key::new(key))),
            key_file: None,
            postgres: Arc::from(POSTGRES_PASSWORD),
            redis: Arc::from(REDIS_AUTH),
            fix: Arc::from(FIX_PASSWORD),
            card: Arc::from(CARD_NUMBER),
            headers: Arc::from(HTTP_HEADERS),
        }
    }

    /// The notice stating the rule set in force (written once at start).
    pub fn notice(&self) -> Record {
        if !self.rules.disabled.is_empty() {
            tracing::warn!(disabled = ?self.rules.disabled, "built-in redaction rules turned off by configuration");
        }
        Record::notice(
            "redaction_rules",
            serde_json::json!({
                "rules_version": RULES_VERSION,
                "enabled": self.rules.enabled,
                "disabled": self.rules.disabled,
                "custom": self.rules.custom,
                "key_id": self.key().id,
            }),
        )
    }

    /// The masks for `buf`, a part of a `protocol` record (with the key in force).
    pub fn find(&self, protocol: Protocol, buf: &[u8]) -> Vec<Mask> {
        self.find_with(&self.key(), protocol, buf)
    }

    fn find_with(&self, key: &Key, protocol: Protocol, buf: &[u8]) -> Vec<Mask> {
        let mut out = Vec::new();
        headers::find(buf, &self.rules.headers, &mut out);
        if protocol == Protocol::Http2 && self.rules.on(HTTP_HEADERS) {
            hpack::find(buf, &self.headers, &mut out);
        }
        if protocol == Protocol::Postgres && self.rules.on(POSTGRES_PASSWORD) {
            protocols::postgres(buf, &self.postgres, &mut out);
        }
        if protocol == Protocol::Redis && self.rules.on(REDIS_AUTH) {
            protocols::redis(buf, &self.redis, &mut out);
        }
        if self.rules.on(FIX_PASSWORD) {
            protocols::fix(buf, &self.fix, &mut out);
        }
        for p in &self.rules.patterns {
            p.find(buf, &mut out);
        }
        if self.rules.on(CARD_NUMBER) {
            card::find(buf, &key.bytes, &self.card, &mut out);
        }
        mask::normalize(out)
    }

    fn mask(&self, key: &Key, protocol: Protocol, buf: &bytes::Bytes, subs: &mut Vec<Subst>) -> Option<Masked> {
        let masks = self.find_with(key, protocol, buf);
        if masks.is_empty() {
            return None;
        }
        let masked = mask::apply(buf, &masks);
        for m in &masks {
            let from = String::from_utf8_lossy(&buf[m.start..m.end]).into_owned();
            let to = String::from_utf8_lossy(&masked[m.start..m.end]).into_owned();
            if from != to && !subs.iter().any(|s| s.from == from) {
                subs.push(Subst { from, to });
            }
        }
        Some(Masked { bytes: bytes::Bytes::from(masked), masks })
    }

    /// Masks one part's bytes (and the other end's, if kept); states each
    /// range in `out`.
    fn part(
        &self,
        key: &Key,
        protocol: Protocol,
        i: usize,
        p: &mut Part,
        subs: &mut Vec<Subst>,
        out: &mut Vec<Redaction>,
    ) {
        if let Some(m) = self.mask(key, protocol, &p.raw.0, subs) {
            out.extend(m.masks.iter().map(|k| redaction(key, i, p, k, false)));
            p.raw.0 = m.bytes;
        }
        if let Some(w) = p.witness_raw.as_mut()
            && let Some(m) = self.mask(key, protocol, &w.0, subs)
        {
            out.extend(m.masks.iter().map(|k| redaction(key, i, p, k, true)));
            p.witness_raw.as_mut().expect("checked").0 = m.bytes;
        }
    }

    /// Masks `rec` in place: its bytes, its parsed fields, its parsers'
    /// complaints; lists the masked ranges on it.
    pub fn apply(&self, rec: &mut Record) {
        if rec.parts().is_empty() {
            return;
        }
        let key = self.key();
        let mut subs = Vec::new();
        match rec {
            Record::Exchange(e) => {
                let mut out = Vec::new();
                for (i, p) in e.parts.iter_mut().enumerate() {
                    self.part(&key, e.protocol, i, p, &mut subs, &mut out);
                }
                let header_rules = if e.protocol == Protocol::Http2 { &self.rules.headers[..] } else { &[] };
                if !subs.is_empty() || !header_rules.is_empty() {
                    for m in &mut e.messages {
                        let mut v = m.fields.json();
                        fields::mask_value(&mut v, &subs, header_rules);
                        m.fields = Fields::Json(v);
                        if let Some(err) = &mut m.error
                            && let Some(s) = fields::mask_str(err, &subs)
                        {
                            *err = s;
                        }
                    }
                }
                e.redactions = out;
            }
            Record::Segment(s) => {
                let mut out = Vec::new();
                self.part(&key, s.protocol, 0, &mut s.part, &mut subs, &mut out);
                if let Some(err) = &mut s.error
                    && let Some(m) = fields::mask_str(err, &subs)
                {
                    *err = m;
                }
                s.redactions = out;
            }
            _ => {}
        }
    }
}

/// The stream position of raw byte `r` of part `p` (gaps hold no raw bytes).
fn stream_offset(p: &Part, r: usize, witness: bool) -> u64 {
    let gaps = if witness { p.witness.as_ref().map_or(&[][..], |w| &w.gaps[..]) } else { &p.seen.gaps[..] };
    let mut off = r as u64;
    for g in gaps {
        if g.offset <= off {
            off += g.len;
        } else {
            break;
        }
    }
    off
}

fn redaction(key: &Key, i: usize, p: &Part, m: &Mask, witness: bool) -> Redaction {
    Redaction {
        part: i,
        pos: p.pos + stream_offset(p, m.start, witness),
        len: (m.end - m.start) as u64,
        rule: m.rule.to_string(),
        rules_version: RULES_VERSION,
        witness,
        key_id: (&*m.rule == CARD_NUMBER).then(|| key.id.clone()),
    }
}
