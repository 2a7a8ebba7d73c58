//! Start-up snapshots: derived state saved so that opening a large log does
//! not rescan it.
//!
//! A snapshot is `state/<name>.snap` in the data directory: a prost-encoded
//! [`SnapshotFile`] holding the log size it describes, the leaf hash of the
//! last leaf it covers, and its body (encoded by its owner: the tree cache
//! here, the commit thread's tables in the collector's `ingest::state`) with the
//! body's SHA-256.
//!
//! Snapshots are derived, like `log/hashes`: never the record of truth, never
//! fsynced before an ack. Written with write-to-temp, fsync, rename, fsync of
//! the directory, so a crash leaves the old snapshot or the new one. At open
//! a snapshot is used only when its body hash matches, its size is within the
//! log, and its last leaf hash is the log's leaf hash at that size; anything
//! else is logged and the state is rebuilt by a scan, as without a snapshot.
//! The tree cache taken from a snapshot is further checked against the
//! latest signed checkpoint's root when the store opens. `wiretrail repair`
//! removes the snapshots.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use super::StoreError;
use super::writer::sync_dir;
use crate::merkle::Hash;

/// Format version of [`SnapshotFile`].
const VERSION: u32 = 1;

/// The file.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotFile {
    /// Format version.
    #[prost(uint32, tag = "1")]
    version: u32,
    /// Leaves the snapshot covers (`0..size`).
    #[prost(uint64, tag = "2")]
    size: u64,
    /// Leaf hash of leaf `size - 1` (empty when `size` is 0).
    #[prost(bytes = "vec", tag = "3")]
    last_leaf_hash: Vec<u8>,
    /// When it was written (UTC ns).
    #[prost(int64, tag = "4")]
    written_ns: i64,
    /// SHA-256 of `body`.
    #[prost(bytes = "vec", tag = "5")]
    body_sha256: Vec<u8>,
    /// The owner's encoding.
    #[prost(bytes = "vec", tag = "6")]
    body: Vec<u8>,
}

/// A snapshot read back (not yet checked against the log).
pub struct Loaded {
    /// Leaves it covers.
    pub size: u64,
    /// Leaf hash of leaf `size - 1`.
    pub last_leaf_hash: Option<Hash>,
    /// The owner's encoding.
    pub body: Vec<u8>,
}

impl Loaded {
    /// Whether it describes the log whose leaf hash at `size - 1` is `at` (read by the caller).
    pub fn matches(&self, log_size: u64, at: impl FnOnce(u64) -> Option<Hash>) -> bool {
        if self.size > log_size {
            return false;
        }
        match self.size.checked_sub(1) {
            None => true,
            Some(last) => self.last_leaf_hash.is_some() && at(last) == self.last_leaf_hash,
        }
    }
}

/// Folder of the snapshots.
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn path_of(dir: &Path, name: &str) -> PathBuf {
    state_dir(dir).join(format!("{name}.snap"))
}

/// Saves snapshot `name` of the log's first `size` leaves.
pub fn save(dir: &Path, name: &str, size: u64, last_leaf_hash: Option<Hash>, body: Vec<u8>) -> Result<(), StoreError> {
    let folder = state_dir(dir);
    std::fs::create_dir_all(&folder).map_err(StoreError::io("creating", &folder))?;
    let file = SnapshotFile {
        version: VERSION,
        size,
        last_leaf_hash: last_leaf_hash.map(|h| h.to_vec()).unwrap_or_default(),
        written_ns: super::now_ns(),
        body_sha256: Sha256::digest(&body).to_vec(),
        body,
    };
    let path = path_of(dir, name);
    let tmp = folder.join(format!("{name}.snap.tmp"));
    let mut f = File::create(&tmp).map_err(StoreError::io("creating", &tmp))?;
    f.write_all(&file.encode_to_vec()).map_err(StoreError::io("writing", &tmp))?;
    f.sync_all().map_err(StoreError::io("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io("renaming", &tmp))?;
    sync_dir(&folder)
}

/// Reads snapshot `name`; `None` (logged) when it is missing, unreadable or damaged.
pub fn load(dir: &Path, name: &str) -> Option<Loaded> {
    let path = path_of(dir, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "snapshot unreadable; rebuilding by a scan");
            return None;
        }
    };
    let problem = match SnapshotFile::decode(bytes.as_slice()) {
        Err(e) => format!("does not decode: {e}"),
        Ok(f) if f.version != VERSION => format!("format version {} (this build reads {VERSION})", f.version),
        Ok(f) if Sha256::digest(&f.body).as_slice() != f.body_sha256.as_slice() => "body hash mismatch".into(),
        Ok(f) => {
            let last_leaf_hash = Hash::try_from(f.last_leaf_hash.as_slice()).ok();
            return Some(Loaded { size: f.size, last_leaf_hash, body: f.body });
        }
    };
    tracing::warn!(path = %path.display(), %problem, "snapshot ignored; rebuilding by a scan");
    None
}

/// Removes every snapshot (after a repair changed the log).
pub fn remove_all(dir: &Path) -> Result<(), StoreError> {
    let folder = state_dir(dir);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io { what: "removing", path: folder, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), "x").is_none());
        save(d.path(), "x", 3, Some([7; 32]), b"body".to_vec()).unwrap();
        let l = load(d.path(), "x").unwrap();
        assert_eq!((l.size, l.last_leaf_hash, l.body.as_slice()), (3, Some([7; 32]), &b"body"[..]));
        assert!(l.matches(3, |i| (i == 2).then_some([7; 32])));
        assert!(!l.matches(2, |_| Some([7; 32])), "a snapshot beyond the log is refused");
        assert!(!l.matches(5, |_| Some([8; 32])), "another leaf at its size is refused");
        // A flipped body byte: ignored.
        let p = path_of(d.path(), "x");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(load(d.path(), "x").is_none());
        remove_all(d.path()).unwrap();
        assert!(!state_dir(d.path()).exists());
    }
}
