//! The log: append-only segment files of framed leaves, plus derived files.
//!
//! Layout of a data directory:
//! - `log/seg-<first leaf index>.wtl`: frames (see [`crate::frame`]); the record of truth.
//!   A frame's body is its leaf, or one zstd frame of it when that is smaller
//!   (`serve --compression-level`, default -1; `--no-compression` writes new
//!   frames uncompressed). The leaf hash is always of the uncompressed leaf,
//!   and frames of either kind (and segments from before compression) mix freely.
//! - `log/hashes`: 32-byte leaf hash per leaf (derived, rebuilt on recovery).
//! - `log/offsets`: 8-byte offset of each leaf's frame in its segment (derived).
//! - `checkpoints.jsonl`: signed checkpoints, one JSON object per line.
//! - `signing.key`, `origin`: the first checkpoint signing key and log name.
//! - `keys/`: keys rotated in since, and their history ([`keys`]).
//! - `log/seg-<first leaf index>.kept`: the leaf hashes of a segment deleted
//!   by retention (see [`kept`]); stands in for the segment in recovery and
//!   verification.
//! - `state/<name>.snap`: start-up snapshots of derived state (the tree
//!   cache, the commit thread's tables; see [`snapshot`]), checked against
//!   the log before use.
//! - `index.sqlite`: the search index (derived, see the collector's `index` module).
//! - `repairs/<UTC ns>/`: copies of what `wiretrail repair` cut or rewrote.
//!
//! fsync rule: only the segment is fsynced before an ack (one `fdatasync` per
//! group of batches); the derived files are checked and rebuilt from the
//! segments when the store is opened. A batch's frames are appended together
//! and never span two segments, so a batch is durable whole or not at all.
//!
//! Write failures (disk full, I/O errors): the writer truncates the segment
//! and the derived files back to where they were before the failed batch (or
//! to the last durable size when an fsync fails) and stays usable; the next
//! append simply tries again. Only a failed rollback stops it.
//!
//! Recovery rules ([`recover`]): the derived files are re-derived from the
//! segments; a torn write at the very end of the last segment (a frame
//! running past the end of the file, or a zero-filled tail, with no readable
//! frame after it) is cut, and so is an incomplete trailing batch (fewer
//! frames than its `batch_records`) — neither was ever acknowledged. Nothing
//! covered by a signed checkpoint is ever cut. Any other inconsistency stops
//! the opening with [`StoreError::NeedsRepair`] (leaf index and byte offset);
//! `wiretrail repair` ([`repair`]) then restores or cuts, keeping a copy.
//!
//! Keys ([`checkpoints`]): the signing key and verifier key are created only
//! in a directory without evidence, and never replaced. A rotation
//! ([`Log::activate_signing_key`]) adds a key under `keys/` ([`keys`]); the first
//! key stays the trust anchor and each later key is valid only from the
//! tree size its `key_rotation` entry set.

mod batchkey;
mod checkpoints;
pub mod kept;
pub mod keys;
mod reader;
mod recover;
pub mod repair;
pub mod snapshot;
pub mod tree;
mod watch;
mod writer;

use std::path::PathBuf;

pub use batchkey::LeafBatch;
pub use checkpoints::{load_checkpoints, load_verifier};
pub use kept::{Deleted, PendingDeletion};
pub use keys::{Rotation, load_keyring};
pub use reader::{LeafIter, Log};
pub use recover::Cut;
pub use watch::{SizeWatch, WatchError};
pub use writer::{DEFAULT_COMPRESSION_LEVEL, StoreConfig, Writer};

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
    /// A write failed and could not be rolled back; the writer refuses further appends until restart.
    #[error("store writer failed earlier and is stopped: {0}")]
    Poisoned(String),
    /// The log holds something recovery may not decide alone.
    #[error(
        "log needs repair at leaf {leaf} ({path} byte offset {offset}): {problem}; nothing was changed. \
         Run `wiretrail repair --dry-run --data-dir DIR` to see what a repair would do"
    )]
    NeedsRepair {
        /// First leaf concerned.
        leaf: u64,
        /// Segment file.
        path: PathBuf,
        /// Byte offset in it.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A key file is missing while the directory already holds evidence.
    #[error(
        "{0} is missing but this data directory already holds checkpoints or log data; \
         restore the file from backup (a new key would not verify the existing checkpoints)"
    )]
    KeyMissing(PathBuf),
    /// `verifier.key` is not the verifier of `signing.key`.
    #[error("{0} does not match signing.key; refusing to start (keys are never overwritten)")]
    KeyMismatch(PathBuf),
    /// The leaf's segment was deleted by retention; only its hash is kept.
    #[error(
        "leaf {leaf} was deleted by retention (segment {segment}; see the retention_deletion entry at leaf {entry})"
    )]
    Deleted {
        /// The leaf asked for.
        leaf: u64,
        /// Leaf index of the `retention_deletion` entry.
        entry: u64,
        /// The deleted segment's file name.
        segment: String,
    },
    /// A leaf is larger than a frame may hold.
    #[error("leaf of {0} bytes exceeds the maximum of {max}", max = crate::frame::MAX_LEAF_LEN)]
    LeafTooLarge(usize),
}

impl StoreError {
    /// Whether the error is the disk being full (or over quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
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
