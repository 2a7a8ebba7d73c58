//! Secrets found by their shape in any payload text: bearer tokens, common
//! API-key formats, and custom rules (regular expressions, JSON field names).
use std::sync::Arc;

use regex::bytes::Regex;

use super::mask::Mask;

/// `Bearer <token>` anywhere (case-insensitive scheme): the token (8 or more
/// RFC 6750 token characters) is masked, the word `Bearer ` kept.
pub const BEARER: &str = r"(?i:\bbearer)[ ]+([A-Za-z0-9\-._~+/]{8,}=*)";

/// API-key shapes (each masked whole), documented in docs/redaction.md:
/// AWS access key ids, GitHub tokens (classic and fine-grained), Slack
/// tokens, Stripe secret and restricted keys, Google API keys, OpenAI-style
/// `sk-` keys, JSON Web Tokens, and PEM private-key blocks.
pub const API_KEYS: &[&str] = &[
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,255}",
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,255}\b",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,255}",
    r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]{0,8192}?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
];

/// A compiled pattern rule: matches are masked whole, or only capture group
/// 1 when the pattern has one.
#[derive(Clone, Debug)]
pub struct PatternRule {
    regex: Regex,
    pub rule: Arc<str>,
    /// Whether the pattern has a group 1 (looked up once: the regex answers
    /// through its group table, a cost on every payload part).
    group: bool,
}

impl PatternRule {
    /// The rule `rule` matching `regex`.
    pub fn new(regex: Regex, rule: Arc<str>) -> PatternRule {
        let group = regex.captures_len() >= 2;
        PatternRule { regex, rule, group }
    }

    pub fn find(&self, buf: &[u8], out: &mut Vec<Mask>) {
        // Without a group 1, the match itself: no capture slots to fill.
        if !self.group {
            out.extend(self.regex.find_iter(buf).map(|m| Mask::star(m.start(), m.end(), &self.rule)));
            return;
        }
        for c in self.regex.captures_iter(buf) {
            let m = c.get(1).or_else(|| c.get(0)).expect("group 0 always matches");
            out.push(Mask::star(m.start(), m.end(), &self.rule));
        }
    }
}

/// The pattern masking the string value of JSON field `name` (inside the
/// quotes; escapes kept in the masked range).
pub fn json_field_pattern(name: &str) -> String {
    let quoted = serde_json::to_string(name).expect("a string serializes");
    format!(r#"{}\s*:\s*"((?:[^"\\]|\\.)*)""#, regex::escape(&quoted))
}
