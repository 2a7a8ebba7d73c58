//! The `redaction:` section of the agent's configuration file, and the rule
//! set it compiles to.
//!
//! ```yaml
//! redaction:
//!   disable: [card_number]          # built-in rules turned off (recorded at start)
//!   rules:
//!     - name: employee_id
//!       regex: 'EMP-(\d{6})'         # whole match masked, or group 1 if present
//!     - name: api_key_header
//!       header: X-Api-Key
//!     - name: ssn_field
//!       json_field: ssn
//! ```
use std::sync::Arc;

use regex::bytes::Regex;
use serde::Deserialize;

use super::{
    BUILTIN, RedactError,
    headers::{self, HeaderRule, ValueShape},
    patterns::{self, PatternRule},
};

/// The configuration file's `redaction:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Built-in rules turned off, by name (see `BUILTIN`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Custom rules.
    #[serde(default)]
    pub rules: Vec<CustomRule>,
}

/// One custom rule: a name and exactly one of `regex`, `header`, `json_field`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    pub name: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub json_field: Option<String>,
}

/// Compiled rules.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Built-in rules on, by name.
    pub enabled: Vec<&'static str>,
    /// Built-in rules the configuration turned off.
    pub disabled: Vec<&'static str>,
    /// Custom rule names (`custom.<name>`).
    pub custom: Vec<String>,
    pub headers: Vec<HeaderRule>,
    pub patterns: Vec<PatternRule>,
}

impl Rules {
    pub fn on(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }
}

fn compile(rule: &Arc<str>, source: &str) -> Result<PatternRule, RedactError> {
    let regex = Regex::new(source).map_err(|e| RedactError::Regex { rule: rule.to_string(), source: Box::new(e) })?;
    Ok(PatternRule::new(regex, rule.clone()))
}

/// A built-in pattern, over bytes: `\b`, `\s` and classes are ASCII, so a
/// non-ASCII letter beside a key is a word boundary (it does not hide the
/// key) and `[\s\S]` takes any byte, valid UTF-8 or not. Unicode word
/// boundaries also kept the regex engine off its DFAs: the built-ins ran in
/// the PikeVM, about half of all redaction time.
fn compile_builtin(rule: &Arc<str>, source: &str) -> Result<PatternRule, RedactError> {
    let regex = regex::bytes::RegexBuilder::new(source)
        .unicode(false)
        .build()
        .map_err(|e| RedactError::Regex { rule: rule.to_string(), source: Box::new(e) })?;
    Ok(PatternRule::new(regex, rule.clone()))
}

impl RedactConfig {
    /// Checks the section and compiles its rules; errors name the rule.
    pub fn compile(&self) -> Result<Rules, RedactError> {
        for d in &self.disable {
            if !BUILTIN.contains(&d.as_str()) {
                return Err(RedactError::UnknownBuiltin { name: d.clone(), known: BUILTIN.join(", ") });
            }
        }
        let enabled: Vec<&'static str> =
            BUILTIN.iter().copied().filter(|b| !self.disable.iter().any(|d| d == b)).collect();
        let disabled: Vec<&'static str> = BUILTIN.iter().copied().filter(|b| !enabled.contains(b)).collect();
        let mut rules = Rules { enabled, disabled, custom: Vec::new(), headers: Vec::new(), patterns: Vec::new() };
        if rules.on(super::HTTP_HEADERS) {
            rules.headers = headers::builtin(&Arc::from(super::HTTP_HEADERS));
        }
        if rules.on(super::BEARER_TOKEN) {
            rules.patterns.push(compile_builtin(&Arc::from(super::BEARER_TOKEN), patterns::BEARER)?);
        }
        if rules.on(super::API_KEY) {
            let any = patterns::API_KEYS.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
            rules.patterns.push(compile_builtin(&Arc::from(super::API_KEY), &any)?);
        }
        for c in &self.rules {
            let ok_name =
                !c.name.is_empty() && c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok_name {
                return Err(RedactError::BadRule {
                    rule: c.name.clone(),
                    what: "the name must be letters, digits, `_` or `-`".into(),
                });
            }
            let name = format!("custom.{}", c.name);
            if rules.custom.contains(&name) {
                return Err(RedactError::BadRule { rule: c.name.clone(), what: "the name is used twice".into() });
            }
            let rule: Arc<str> = Arc::from(name.as_str());
            match (&c.regex, &c.header, &c.json_field) {
                (Some(r), None, None) => rules.patterns.push(compile(&rule, r)?),
                (None, Some(h), None) if !h.is_empty() && !h.contains(':') => rules.headers.push(HeaderRule {
                    name: h.to_ascii_lowercase().into_bytes(),
                    shape: ValueShape::Whole,
                    rule: rule.clone(),
                }),
                (None, None, Some(f)) if !f.is_empty() => {
                    rules.patterns.push(compile(&rule, &patterns::json_field_pattern(f))?)
                }
                _ => {
                    return Err(RedactError::BadRule {
                        rule: c.name.clone(),
                        what: "give exactly one of `regex`, `header` (a header name) or `json_field` (a field name)"
                            .into(),
                    });
                }
            }
            rules.custom.push(name);
        }
        Ok(rules)
    }
}
