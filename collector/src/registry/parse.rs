//! Registry YAML → [`Registry`], with every problem reported at its line.
//!
//! Checks run inside deserialization so serde_yaml attaches the location of
//! the offending node to each error.

use std::path::Path;

use serde::Deserialize;
use serde::de::Error as _;
use sha2::{Digest, Sha256};

use super::schedule::{Hours, retired_at};
use super::{Entry, NEW_PEER_LEARNING_HOURS, Registry, RegistryError, is_match_key};

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Schema version; must be 1 (checked while parsing).
    #[serde(rename = "version")]
    _version: Version,
    /// Entries in priority order.
    #[serde(default)]
    identities: Vec<RawEntry>,
    /// Hours after an identity's first record during which new peers are its baseline.
    #[serde(default)]
    new_peer_learning_hours: Option<u64>,
}

/// A checked schema version.
struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the registry version 1")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Version, E> {
                match v {
                    1 => Ok(Version),
                    v => Err(E::custom(format!("unsupported registry version {v}; expected 1"))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Version, E> {
                Err(E::custom(format!("unsupported registry version {v}; expected 1")))
            }
        }
        d.deserialize_u64(V)
    }
}

/// One entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    /// Attribute globs.
    #[serde(rename = "match")]
    matches: Matches,
    /// Accountable owner.
    custodian: Required,
    /// Why the workload exists.
    purpose: Required,
    /// When it may talk.
    #[serde(default)]
    hours: Option<RawHours>,
    /// From when it must not talk.
    #[serde(default)]
    retired: Option<Retired>,
}

/// `hours: {days, from, to, tz}`, checked where it is written.
struct RawHours(Hours);

impl<'de> Deserialize<'de> for RawHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct H {
            days: String,
            from: String,
            to: String,
            #[serde(default = "utc")]
            tz: String,
        }
        fn utc() -> String {
            "UTC".into()
        }
        let h = H::deserialize(d)?;
        Hours::parse(&h.days, &h.from, &h.to, &h.tz).map(RawHours).map_err(D::Error::custom)
    }
}

/// `retired: DATE | RFC 3339 time`.
struct Retired(i64);

impl<'de> Deserialize<'de> for Retired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => s,
            other => return Err(D::Error::custom(format!("retired must be a date or time, not {other:?}"))),
        };
        retired_at(&s).map(Retired).map_err(D::Error::custom)
    }
}

/// A non-empty string.
struct Required(String);

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Required;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-empty string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Required, E> {
                if s.trim().is_empty() {
                    return Err(E::custom("must not be empty"));
                }
                Ok(Required(s.to_string()))
            }
        }
        d.deserialize_string(V)
    }
}

/// A known attribute name (checked at its own line).
struct MatchKey(String);

impl<'de> Deserialize<'de> for MatchKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let k = String::deserialize(d)?;
        if !is_match_key(&k) {
            return Err(D::Error::custom(format!(
                "unknown match attribute {k:?} (identity keys, k8s_label.<key>, host, uid)"
            )));
        }
        Ok(MatchKey(k))
    }
}

/// A glob; numbers and booleans are taken as their text (`uid: 1000`).
struct MatchValue(String);

impl<'de> Deserialize<'de> for MatchValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(MatchValue(s)),
            serde_yaml::Value::Number(n) => Ok(MatchValue(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(MatchValue(b.to_string())),
            _ => Err(D::Error::custom("a match value must be a string glob")),
        }
    }
}

/// A non-empty map of known attribute names to globs.
struct Matches(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Matches {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Matches;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of identity attributes to globs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Matches, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((MatchKey(k), MatchValue(v))) = m.next_entry()? {
                    if out.iter().any(|(o, _)| *o == k) {
                        return Err(A::Error::custom(format!("match attribute {k:?} given twice")));
                    }
                    out.push((k, v));
                }
                if out.is_empty() {
                    return Err(A::Error::custom("match must name at least one attribute"));
                }
                Ok(Matches(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `text` (the contents of `path`).
pub(super) fn parse(path: &Path, text: &str) -> Result<Registry, RegistryError> {
    let raw: RawFile = serde_yaml::from_str(text).map_err(|e| invalid(path, &e))?;
    Ok(Registry {
        entries: raw
            .identities
            .into_iter()
            .map(|e| Entry {
                matches: e.matches.0,
                custodian: e.custodian.0,
                purpose: e.purpose.0,
                hours: e.hours.map(|h| h.0),
                retired: e.retired.map(|r| r.0),
            })
            .collect(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        new_peer_learning_ns: (raw.new_peer_learning_hours.unwrap_or(NEW_PEER_LEARNING_HOURS) as i64)
            .saturating_mul(3_600_000_000_000),
    })
}

fn invalid(path: &Path, e: &serde_yaml::Error) -> RegistryError {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let mut message = e.to_string();
    // The location goes in front; drop serde_yaml's own " at line L column C".
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    RegistryError::Invalid { path: path.to_path_buf(), line, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RecordAttributes;
    use std::collections::HashMap;

    const GOOD: &str = "\
version: 1
identities:
  - match: {k8s_namespace: payments, k8s_service_account: api}
    custodian: payments-team@bank.example
    purpose: \"Payment initiation API\"
  - match:
      k8s_namespace: \"pay*\"
    custodian: payments-platform@bank.example
    purpose: Other payments workloads
  - match: {host: \"db-?\", exe: /usr/lib/postgresql/*/bin/postgres, uid: 999}
    custodian: dba@bank.example
    purpose: Ledger database
";

    fn err(text: &str) -> (usize, String) {
        match parse(Path::new("/etc/wt/registry.yaml"), text) {
            Err(RegistryError::Invalid { line, message, path }) => {
                let shown = RegistryError::Invalid { path, line, message: message.clone() }.to_string();
                assert!(shown.starts_with(&format!("/etc/wt/registry.yaml: line {line}: ")), "{shown}");
                (line, message)
            }
            other => panic!("expected an invalid-registry error, got {other:?}"),
        }
    }

    #[test]
    fn parses_entries_in_order() {
        let r = parse(Path::new("r.yaml"), GOOD).unwrap();
        assert_eq!(r.entries.len(), 3);
        assert_eq!(r.entries[0].custodian, "payments-team@bank.example");
        assert_eq!(r.entries[0].purpose, "Payment initiation API");
        assert_eq!(r.entries[2].matches.iter().find(|(k, _)| k == "uid").unwrap().1, "999");
        assert_eq!(r.sha256.len(), 64);
    }

    #[test]
    fn first_matching_entry_wins() {
        let r = parse(Path::new("r.yaml"), GOOD).unwrap();
        let id = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let api: HashMap<String, String> = id(&[("k8s_namespace", "payments"), ("k8s_service_account", "api")]);
        let a = RecordAttributes { identity: &api, host: "n1", uid: "0".into() };
        assert_eq!(r.resolve(&a).unwrap().custodian, "payments-team@bank.example");
        let batch: HashMap<String, String> = id(&[("k8s_namespace", "payments"), ("k8s_service_account", "batch")]);
        let a = RecordAttributes { identity: &batch, host: "n1", uid: "0".into() };
        assert_eq!(r.resolve(&a).unwrap().custodian, "payments-platform@bank.example");
        let pg: HashMap<String, String> = id(&[("exe", "/usr/lib/postgresql/16/bin/postgres")]);
        assert_eq!(
            r.resolve(&RecordAttributes { identity: &pg, host: "db-1", uid: "999".into() }).unwrap().custodian,
            "dba@bank.example"
        );
        assert!(r.resolve(&RecordAttributes { identity: &pg, host: "db-1", uid: "0".into() }).is_none());
        assert!(r.resolve(&RecordAttributes { identity: &pg, host: "db-12", uid: "999".into() }).is_none());
        // An absent attribute never matches, not even "*".
        let star =
            parse(Path::new("r"), "version: 1\nidentities:\n- match: {k8s_pod: '*'}\n  custodian: a\n  purpose: b\n")
                .unwrap();
        assert!(star.resolve(&RecordAttributes { identity: &pg, host: "h", uid: "0".into() }).is_none());
    }

    #[test]
    fn documented_example_parses() {
        let doc = include_str!("../../../docs/registry.md");
        let start = doc.find("```yaml\n").expect("docs/registry.md has a yaml example") + 8;
        let end = start + doc[start..].find("```").unwrap();
        let r = parse(Path::new("docs/registry.md"), &doc[start..end]).unwrap();
        assert_eq!(r.entries.len(), 4);
        assert_eq!(r.entries[3].matches[0].0, "k8s_label.app.kubernetes.io/part-of");
    }

    #[test]
    fn errors_carry_the_line() {
        // Missing custodian in the second entry (line 6 starts it).
        let (line, msg) = err(
            "version: 1\nidentities:\n  - match: {exe: /a}\n    custodian: x\n    purpose: y\n  - match: {exe: /b}\n    purpose: z\n",
        );
        assert_eq!(line, 6, "{msg}");
        assert!(msg.contains("custodian"), "{msg}");
        // Unknown attribute on line 4.
        let (line, msg) =
            err("version: 1\nidentities:\n  - custodian: x\n    match: {k8s_namspace: p}\n    purpose: y\n");
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("k8s_namspace"), "{msg}");
        // Empty purpose on line 5.
        let (line, msg) = err("version: 1\nidentities:\n  - match: {exe: /a}\n    custodian: x\n    purpose: \"\"\n");
        assert_eq!(line, 5, "{msg}");
        assert!(msg.contains("empty"), "{msg}");
        // Wrong version on line 1.
        let (line, msg) = err("version: 2\nidentities: []\n");
        assert_eq!(line, 1, "{msg}");
        assert!(msg.contains("version 2"), "{msg}");
        // Unknown field on line 3.
        let (line, msg) = err("version: 1\nidentities:\n  - owner: x\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("owner"), "{msg}");
        // YAML syntax error on line 3.
        let (line, _) = err("version: 1\nidentities:\n  - match: {exe: [\n");
        assert!(line >= 3, "syntax error reported at line {line}");
    }
}
