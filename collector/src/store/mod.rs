//! The log: append-only segment files of framed leaves, plus derived files.
//!
//! Layout of a data directory:
//! - `log/seg-<first leaf index>.wtl`: frames (see [`frame`]); the record of truth.
//! - `log/hashes`: 32-byte leaf hash per leaf (derived, rebuilt on recovery).
//! - `log/offsets`: 8-byte offset of each leaf's frame in its segment (derived).
//! - `checkpoints.jsonl`: signed checkpoints, one JSON object per line.
//! - `signing.key`, `origin`: the checkpoint signing key and log name.
//! - `index.sqlite`: the search index (derived, see `crate::index`).
//!
//! Only the segment is fsynced before an ack; the derived files are checked and
//! rebuilt from the segments when the store is opened.

mod checkpoints;
pub mod frame;
mod reader;
mod recover;
pub mod tree;
mod writer;

use std::path::PathBuf;

pub use checkpoints::{load_checkpoints, load_verifier};
pub use reader::{LeafIter, Shared};
pub use writer::{StoreConfig, Writer};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// The stored data contradicts itself or a signed checkpoint.
    #[error("store is inconsistent: {0} (run `wiretrail verify`)")]
    Inconsistent(String),
    /// A leaf index or tree size outside the log.
    #[error("{0}")]
    OutOfRange(String),
    /// A proof could not be computed.
    #[error(transparent)]
    Proof(#[from] crate::merkle::ProofError),
    /// A checkpoint note could not be made or read.
    #[error(transparent)]
    Note(#[from] crate::merkle::NoteError),
    /// An earlier write or fsync failed; the writer refuses further appends until restart.
    #[error("store writer failed earlier and is stopped: {0}")]
    Poisoned(String),
}

impl StoreError {
    fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { what, path, source }
    }
}

/// Name of segment file starting at leaf `first`.
pub fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.wtl")
}

/// Lists the segments of `log_dir` as (first leaf index, path), sorted.
pub fn list_segments(log_dir: &std::path::Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(log_dir).map_err(StoreError::io("listing", log_dir))?;
    for e in rd {
        let e = e.map_err(StoreError::io("listing", log_dir))?;
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if let Some(n) = s.strip_prefix("seg-").and_then(|r| r.strip_suffix(".wtl")) {
            let first =
                n.parse::<u64>().map_err(|_| StoreError::Inconsistent(format!("unexpected segment file name {s}")))?;
            out.push((first, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Current UTC time in ns.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
