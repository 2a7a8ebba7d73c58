//! Evidence bundles and their offline verification: the collector's
//! `wiretrail export` writes the records matching a query with everything
//! needed to check them offline; [`verify_bundle`] (`wiretrail verify-bundle`)
//! checks a bundle with this crate alone.
//!
//! A bundle is a directory, or (when the output name ends in `.tar`) a ustar
//! archive of the same files:
//! - `records.jsonl`: one JSON object per record, all fields, the raw payload
//!   (`payload_base64`) and the exact stored leaf (`leaf_base64`);
//! - `records.txt`: the same records rendered for people;
//! - `proofs.jsonl`: each record's RFC 9162 inclusion proof at the checkpoint's size;
//! - `checkpoint.txt`: the collector's signed checkpoint (C2SP signed note);
//! - `verifier.key`: the log's first verifier key (pin it with `--key`);
//! - `keys.jsonl` (only after a signing key rotation): the chain from the
//!   first key to the one that signed `checkpoint.txt`, one rotation per line
//!   (its `key_rotation` entry, the old key's checkpoint covering it and the
//!   inclusion proof; see [`crate::keychain`]);
//! - `query.json`: the filter that selected the records;
//! - `manifest.json`: SHA-256 of every other file, record count, tree size and
//!   root, and the export's own access entry (leaf index, leaf SHA-256);
//! - `manifest.sig`: the collector's signature over the manifest (checkpoint
//!   key, signed-note format; see [`seal`]);
//! - `access.json`: the access entry of the export's search (leaf bytes,
//!   index, inclusion proof), when the collector found it.
//!
//! What proves what: the checkpoint signature and the inclusion proofs prove
//! that every record is, byte for byte, in the collector's log; the manifest
//! signature (same key) proves the collector sealed this manifest, whose
//! hashes cover every file. With `--key`, the verifier key is pinned out of
//! band instead of taken from the bundle. Bundles of the older unsigned
//! format (`wiretrail-bundle-v1`) still verify, reported as unsigned.

pub mod render;
pub mod seal;
pub mod tar;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use verify::{BundleReport, Rejected, verify_bundle};

/// Bundle format name in the manifest (signed manifests).
pub const FORMAT: &str = "wiretrail-bundle-v2";
/// Unsigned manifest, no access record: the older format, and the bundles
/// exported from ClickHouse alone (no collector to seal them).
pub const FORMAT_V1: &str = "wiretrail-bundle-v1";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's signature (a signed note by the checkpoint key).
pub const SIG: &str = "manifest.sig";
/// The export's own access record.
pub const ACCESS: &str = "access.json";
/// Files listed in the manifest.
pub const FILES: [&str; 6] =
    ["checkpoint.txt", "proofs.jsonl", "query.json", "records.jsonl", "records.txt", "verifier.key"];

/// The optional key chain file (present when the log's key was rotated).
pub const KEYS_FILE: &str = "keys.jsonl";

/// Bundle files by name.
pub type Files = BTreeMap<String, Vec<u8>>;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Number of records (lines of records.jsonl).
    pub records: u64,
    /// Log origin named by the checkpoint.
    pub origin: String,
    /// Tree size of the checkpoint the proofs are for.
    pub tree_size: u64,
    /// Root hash of that tree (hex).
    pub root_hash: String,
    /// SHA-256 (hex) of each other file.
    pub files: BTreeMap<String, String>,
    /// The access entry of the export's search (absent when none was found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<seal::AccessRef>,
}

impl Manifest {
    /// The only accepted serialization (pretty JSON and a newline).
    pub fn canonical(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }
}

/// Errors of reading (and writing) a bundle's files.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing bundle files failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is malformed.
    #[error("{path}: {why}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Maps an I/O error of `what` on `path` to [`BundleError::Io`].
pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io { what, path, source }
}

/// Reads a bundle directory (its regular files) or archive.
pub fn read(path: &Path) -> Result<Files, BundleError> {
    let meta = std::fs::metadata(path).map_err(io("reading", path))?;
    if meta.is_file() {
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        return tar::read(&bytes).map_err(|why| BundleError::Archive { path: path.to_path_buf(), why });
    }
    let mut files = Files::new();
    for e in std::fs::read_dir(path).map_err(io("listing", path))? {
        let e = e.map_err(io("listing", path))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if !p.is_file() {
            return Err(BundleError::Archive { path: p, why: "unexpected non-file in the bundle".into() });
        }
        files.insert(name, std::fs::read(&p).map_err(io("reading", &p))?);
    }
    Ok(files)
}

/// SHA-256 of `b` in hex.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
