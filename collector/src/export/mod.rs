//! Evidence bundles: `wiretrail export` writes the records matching a query
//! with everything needed to check them offline; `wiretrail verify-bundle`
//! checks a bundle without the collector.
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
//!   inclusion proof; see [`wiretrail_log::keychain`]);
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

mod build;
pub mod render;
pub mod seal;
pub mod tar;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use build::{Progress, export, export_as};
pub use verify::{BundleReport, verify_bundle};

/// Bundle format name in the manifest (signed manifests).
pub const FORMAT: &str = "wiretrail-bundle-v2";
/// The older format: unsigned manifest, no access record.
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

/// Errors of export and bundle I/O.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A query API call failed.
    #[error("{what}: {source}")]
    Rpc {
        /// Which call.
        what: &'static str,
        /// The status.
        #[source]
        source: tonic::Status,
    },
    /// The collector's answer does not check out (the export is refused).
    #[error("collector answer does not verify: {0}")]
    Invalid(String),
    /// The checkpoint or key does not parse or verify.
    #[error(transparent)]
    Note(#[from] wiretrail_log::merkle::NoteError),
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
    /// The output exists and is not an empty directory.
    #[error("{0} already exists; refusing to overwrite")]
    Exists(PathBuf),
    /// The archive is malformed.
    #[error("{path}: {why}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { what, path, source }
}

/// Whether `out` names a single-file (tar) bundle.
pub fn is_archive(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar")
}

/// Writes a bundle as a directory or, for `*.tar`, an archive; fsyncs it.
pub fn write(out: &Path, files: &Files) -> Result<(), ExportError> {
    use std::io::Write;
    let put = |path: &Path, bytes: &[u8]| -> Result<(), ExportError> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ExportError::Exists(path.to_path_buf())
            } else {
                io("creating", path)(e)
            }
        })?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io("writing", path))
    };
    if is_archive(out) {
        return put(out, &tar::write(files));
    }
    match std::fs::read_dir(out) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(ExportError::Exists(out.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(io("creating", out))?
        }
        Err(e) => return Err(io("reading", out)(e)),
    }
    for (name, bytes) in files {
        put(&out.join(name), bytes)?;
    }
    Ok(())
}

/// Reads a bundle directory (its regular files) or archive.
pub fn read(path: &Path) -> Result<Files, ExportError> {
    let meta = std::fs::metadata(path).map_err(io("reading", path))?;
    if meta.is_file() {
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        return tar::read(&bytes).map_err(|why| ExportError::Archive { path: path.to_path_buf(), why });
    }
    let mut files = Files::new();
    for e in std::fs::read_dir(path).map_err(io("listing", path))? {
        let e = e.map_err(io("listing", path))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if !p.is_file() {
            return Err(ExportError::Archive { path: p, why: "unexpected non-file in the bundle".into() });
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
