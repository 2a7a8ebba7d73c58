//! The identity registry: which workload identities are known, who is
//! accountable for each (custodian) and why it exists (purpose).
//!
//! A YAML file (`wiretrail serve --registry FILE`, schema in
//! `docs/registry.md`), re-read on SIGHUP and when its mtime changes. An
//! identity that no entry matches is a *shadow* identity. An invalid file is
//! rejected with `FILE: line L: message`; the previous registry stays in force.

pub mod glob;
mod parse;
pub mod schedule;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

pub use glob::glob_match;
pub use watch::RegistryHandle;

/// Errors reading or parsing a registry file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The registry file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid registry.
    #[error("{path}: line {line}: {message}")]
    Invalid {
        /// The registry file.
        path: PathBuf,
        /// 1-based line of the problem (0 when the parser gave none).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Attribute names a match may use besides `k8s_label.<key>`.
pub const MATCH_KEYS: &[&str] = &[
    "cgroup_path",
    "container_id",
    "container_runtime",
    "exe",
    "exe_sha256",
    "k8s_pod",
    "k8s_namespace",
    "k8s_pod_uid",
    "k8s_service_account",
    "k8s_node",
    "host",
    "uid",
];

/// Whether `key` may be used in a match.
pub fn is_match_key(key: &str) -> bool {
    MATCH_KEYS.contains(&key) || key.strip_prefix("k8s_label.").is_some_and(|l| !l.is_empty())
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// (attribute, glob) pairs, all of which must match.
    pub matches: Vec<(String, String)>,
    /// The accountable owner.
    pub custodian: String,
    /// Why the workload exists.
    pub purpose: String,
    /// When it may talk (`None` = any time).
    pub hours: Option<schedule::Hours>,
    /// UTC ns from which it must not talk at all.
    pub retired: Option<i64>,
}

/// A parsed registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Entries in file order; the first that matches wins.
    pub entries: Vec<Entry>,
    /// SHA-256 (hex) of the file's bytes ("" for the empty registry used without a file).
    pub sha256: String,
    /// How long after an identity is first seen its new peers raise
    /// `new_peer` alerts (its first peers are its baseline), in ns.
    pub new_peer_learning_ns: i64,
}

/// Default of the registry's `new_peer_learning_hours`.
pub const NEW_PEER_LEARNING_HOURS: u64 = 24;

impl Default for Registry {
    /// The empty registry (no file): every identity is shadow.
    fn default() -> Self {
        Registry {
            entries: Vec::new(),
            sha256: String::new(),
            new_peer_learning_ns: NEW_PEER_LEARNING_HOURS as i64 * 3_600_000_000_000,
        }
    }
}

/// The attributes of a workload that registry matches are evaluated against.
pub trait Attributes {
    /// Value of attribute `key`, `None` when absent.
    fn attr(&self, key: &str) -> Option<&str>;
}

impl Attributes for BTreeMap<String, String> {
    fn attr(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A record's attributes: its identity map plus `host` and `uid`.
pub struct RecordAttributes<'a> {
    /// The record's identity map.
    pub identity: &'a HashMap<String, String>,
    /// The record's host.
    pub host: &'a str,
    /// The record's uid, as text.
    pub uid: String,
}

impl Attributes for RecordAttributes<'_> {
    fn attr(&self, key: &str) -> Option<&str> {
        match key {
            "host" => Some(self.host),
            "uid" => Some(&self.uid),
            k => self.identity.get(k).map(String::as_str),
        }
    }
}

impl RecordAttributes<'_> {
    /// The attributes as an owned map (what the inventory stores).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = self.identity.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        m.insert("host".into(), self.host.to_string());
        m.insert("uid".into(), self.uid.clone());
        m
    }
}

impl Entry {
    /// Whether every (attribute, glob) pair matches; an absent attribute never matches.
    pub fn matches(&self, a: &dyn Attributes) -> bool {
        self.matches.iter().all(|(k, pat)| a.attr(k).is_some_and(|v| glob_match(pat, v)))
    }
}

impl Registry {
    /// Parses registry YAML; `path` only names the file in errors.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Registry, RegistryError> {
        parse::parse(path, text)
    }

    /// Reads and parses a registry file.
    pub fn load(path: &std::path::Path) -> Result<Registry, RegistryError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: path.to_path_buf(), source })?;
        Registry::parse(path, &text)
    }

    /// The first entry matching `a`, `None` for a shadow identity.
    pub fn resolve(&self, a: &dyn Attributes) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(a))
    }
}
