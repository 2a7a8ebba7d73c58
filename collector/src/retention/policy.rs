//! The retention file (`--retention FILE`): classes with durations and
//! selectors mapping records to a class.
//!
//! ```yaml
//! communications: 3y        # records no class matches (default 3y, SEC 17a-4(b)(4))
//! collector_entries: 6y     # the collector's own entries (default 6y, FINRA 4511)
//! classes:                  # first match wins
//!   - name: trading
//!     duration: 6y
//!     match: { identity: "team=trading*", protocol: fix, agent: "node-*" }
//! ```
//!
//! Durations: a whole number and one of `s m h d w y`; a year counts 366
//! days, so no record is kept a day less than a calendar-year rule asks.
//! `identity` is a glob (`*`, `?`) on the record's `key=value` identity
//! labels (any label matching is a match); `protocol` and `agent` are globs
//! on the record's application protocol and the batch's agent id. Every
//! selector given must match.
//!
//! Entries that carry state the log still relies on are never expired
//! (class `permanent`): `key_rotation` (the checkpoint key chain every
//! verifier follows from the first key), `hold_placed` and `hold_lifted`
//! (the holds are rebuilt from them at start: a deleted placement would
//! silently lift its hold) and `retention_deletion` (the record of what was
//! deleted and the hashes kept). The segments holding them therefore stay.

use std::path::Path;

use wiretrail_proto::v1::StoredLeaf;

use super::RetentionError;
use crate::registry::glob::glob_match;

const NS: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * NS;

/// Class of records no selector matches.
pub const COMMUNICATIONS: &str = "communications";
/// Class of the entries that are never expired (see the module docs).
pub const PERMANENT: &str = "permanent";

/// Collector entry kinds in [`PERMANENT`].
pub const PERMANENT_KINDS: [&str; 4] = [
    wiretrail_log::entry::KEY_ROTATION,
    wiretrail_log::entry::HOLD_PLACED,
    wiretrail_log::entry::HOLD_LIFTED,
    wiretrail_log::entry::RETENTION_DELETION,
];

/// Class of the collector's own entries.
pub const COLLECTOR: &str = "collector_entries";

/// Parses `3y`, `90d`, `30s`... into ns (the CLI's durations, see
/// [`crate::when::parse_duration`]); zero is refused.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d = crate::when::parse_duration(s).map_err(|e| e.to_string())?;
    i64::try_from(d.as_nanos())
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{:?}: must be positive and below 290 years", s.trim()))
}

/// What a class or hold selects; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Glob on the record's `key=value` identity labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Glob on the record's application protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Glob on the agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Selector {
    /// Whether `leaf` is selected. Collector entries have no identity or
    /// protocol: a selector naming one never selects them.
    pub fn matches(&self, leaf: &StoredLeaf) -> bool {
        if let Some(a) = &self.agent
            && !glob_match(a, &leaf.agent_id)
        {
            return false;
        }
        let rec = leaf.record.as_ref();
        if let Some(p) = &self.protocol
            && !rec.is_some_and(|r| glob_match(p, &r.app_protocol))
        {
            return false;
        }
        if let Some(g) = &self.identity
            && !rec.is_some_and(|r| r.identity.iter().any(|(k, v)| glob_match(g, &format!("{k}={v}"))))
        {
            return false;
        }
        true
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    duration: String,
    #[serde(default, rename = "match")]
    selector: Selector,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    communications: Option<String>,
    #[serde(default)]
    collector_entries: Option<String>,
    #[serde(default)]
    classes: Vec<RawClass>,
}

/// One retention class.
#[derive(Debug, Clone)]
pub struct Class {
    /// Its name.
    pub name: String,
    /// How long its records are kept, in ns from their received time.
    pub duration_ns: i64,
    /// What it selects.
    pub selector: Selector,
}

/// The retention classes in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Records no class matches.
    pub communications_ns: i64,
    /// The collector's own entries.
    pub collector_ns: i64,
    /// Classes, first match wins.
    pub classes: Vec<Class>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { communications_ns: 3 * 366 * DAY, collector_ns: 6 * 366 * DAY, classes: Vec::new() }
    }
}

impl Policy {
    /// Reads the retention file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Policy, RetentionError> {
        let Some(path) = path else { return Ok(Policy::default()) };
        let text = std::fs::read_to_string(path).map_err(|source| RetentionError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&text).map_err(|e| RetentionError::Policy(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a retention file.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let raw: RawFile = if text.trim().is_empty() {
            RawFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        let mut p = Policy::default();
        if let Some(d) = raw.communications {
            p.communications_ns = parse_duration(&d)?;
        }
        if let Some(d) = raw.collector_entries {
            p.collector_ns = parse_duration(&d)?;
        }
        for c in raw.classes {
            if c.name.is_empty() || c.name == COMMUNICATIONS || c.name == COLLECTOR || c.name == PERMANENT {
                return Err(format!("class name {:?} is empty or reserved", c.name));
            }
            let duration_ns = parse_duration(&c.duration).map_err(|e| format!("class {}: {e}", c.name))?;
            p.classes.push(Class { name: c.name, duration_ns, selector: c.selector });
        }
        Ok(p)
    }

    /// The class of `leaf` and how long it is kept (ns).
    pub fn classify<'a>(&'a self, leaf: &StoredLeaf) -> (&'a str, i64) {
        if let Some(e) = &leaf.entry {
            if PERMANENT_KINDS.contains(&e.kind.as_str()) {
                return (PERMANENT, i64::MAX);
            }
            return (COLLECTOR, self.collector_ns);
        }
        match self.classes.iter().find(|c| c.selector.matches(leaf)) {
            Some(c) => (&c.name, c.duration_ns),
            None => (COMMUNICATIONS, self.communications_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiretrail_proto::v1::Record;

    #[test]
    fn entries_the_log_relies_on_never_expire() {
        let p = Policy::parse("collector_entries: 1s\n").unwrap();
        let entry = |kind: &str| StoredLeaf {
            entry: Some(wiretrail_log::entry::new(kind, 0, "", serde_json::json!({}), vec![])),
            ..Default::default()
        };
        for kind in PERMANENT_KINDS {
            assert_eq!(p.classify(&entry(kind)), (PERMANENT, i64::MAX), "{kind}");
        }
        assert_eq!(p.classify(&entry(wiretrail_log::entry::ACCESS)), (COLLECTOR, NS));
    }

    #[test]
    fn durations_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("30s"), Ok(30 * NS));
        assert_eq!(parse_duration("90d"), Ok(90 * DAY));
        assert_eq!(parse_duration("3y"), Ok(3 * 366 * DAY));
        assert!(parse_duration("3").unwrap_err().contains("unit"));
        assert!(parse_duration("y").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn first_matching_class_wins_and_defaults_apply() {
        let p = Policy::parse(
            "classes:\n  - name: short\n    duration: 2s\n    match: { identity: \"pod=pod-1\", protocol: postgres }\n",
        )
        .unwrap();
        let rec = |pod: &str, proto: &str| StoredLeaf {
            record: Some(Record {
                app_protocol: proto.into(),
                identity: [("pod".to_string(), pod.to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(p.classify(&rec("pod-1", "postgres")), ("short", 2 * NS));
        assert_eq!(p.classify(&rec("pod-1", "http1")).0, COMMUNICATIONS);
        assert_eq!(p.classify(&rec("pod-2", "postgres")).0, COMMUNICATIONS);
        let entry = StoredLeaf { entry: Some(Default::default()), ..Default::default() };
        assert_eq!(p.classify(&entry), (COLLECTOR, 6 * 366 * DAY));
        assert!(Policy::parse("classes:\n  - name: x\n    duration: 2s\n    bogus: 1\n").is_err());
    }
}
