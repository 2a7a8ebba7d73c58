//! Kept hashes of segments deleted by retention (`log/seg-<first>.kept`).
//!
//! A retention deletion removes a whole closed segment. Before anything is
//! removed, a kept file with the segment's leaf hashes is written (state
//! *pending*, with the log size at that moment); then the
//! `retention_deletion` entry is appended and made durable; then the kept
//! file is rewritten with the entry's leaf index (state *done*) and the
//! segment is unlinked. Opening the store ([`finish_pending`]) completes or
//! abandons whatever a crash interrupted:
//! - pending kept file, segment present: the leaves appended after the
//!   recorded size are searched for the deletion entry; found, the deletion
//!   is finished; not found (never committed), the kept file is removed;
//! - done kept file, segment present: the segment is unlinked;
//! - kept file, segment absent: the range's hashes come from the kept file
//!   (recovery writes them to `log/hashes`, with no offsets).
//!
//! Format: `WTKEPT01`, then u64 LE first leaf, leaf count, entry leaf
//! (`u64::MAX` while pending), log size when written; then 32 bytes per leaf.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use wiretrail_proto::v1::StoredLeaf;

use super::reader::Log;
use super::writer::sync_dir;
use super::{StoreError, segment_name};
use crate::merkle::Hash;

const MAGIC: &[u8; 8] = b"WTKEPT01";
const HEAD: usize = 8 + 4 * 8;
/// `entry_leaf` of a pending deletion.
const PENDING: u64 = u64::MAX;
/// Offset written to `log/offsets` for a leaf whose segment was deleted.
pub const NO_OFFSET: u64 = u64::MAX;

/// A leaf range whose segment retention deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deleted {
    /// First leaf.
    pub first: u64,
    /// End (exclusive).
    pub end: u64,
    /// Leaf index of the `retention_deletion` entry.
    pub entry_leaf: u64,
    /// The removed segment's file name.
    pub segment: String,
}

/// The range of the sorted, disjoint `ranges` (`bounds` gives `[first, end)`)
/// holding leaf `i`, by binary search: every leaf read and iterator step asks.
pub(super) fn range_at<T>(ranges: &[T], i: u64, bounds: impl Fn(&T) -> (u64, u64)) -> Option<&T> {
    let k = ranges.partition_point(|r| bounds(r).0 <= i);
    let r = ranges.get(k.checked_sub(1)?)?;
    (i < bounds(r).1).then_some(r)
}

/// Inserts `r` into `ranges`, kept sorted by first leaf (deletions may come out of order).
pub(super) fn insert_sorted<T>(ranges: &mut Vec<T>, r: T, first: impl Fn(&T) -> u64) {
    let k = ranges.partition_point(|x| first(x) < first(&r));
    ranges.insert(k, r);
}

fn deleted_first(d: &Deleted) -> u64 {
    d.first
}

/// The header of a kept file.
#[derive(Debug, Clone)]
pub struct KeptHead {
    /// First leaf.
    pub first: u64,
    /// Leaves.
    pub count: u64,
    /// The deletion entry's leaf, `None` while pending.
    pub entry_leaf: Option<u64>,
    /// Log size when the file was written (the entry comes after it).
    pub intent_size: u64,
    /// The file.
    pub path: PathBuf,
}

/// Name of the kept file of the segment starting at `first`.
pub fn kept_name(first: u64) -> String {
    format!("seg-{first:020}.kept")
}

fn read_head(path: &Path) -> Result<KeptHead, StoreError> {
    use std::io::Read;
    let mut b = [0u8; HEAD];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut b)).map_err(StoreError::io("reading", path))?;
    if &b[..8] != MAGIC {
        return Err(StoreError::Inconsistent(format!("{} is not a kept-hashes file", path.display())));
    }
    let u = |k: usize| u64::from_le_bytes(b[8 + 8 * k..16 + 8 * k].try_into().expect("8 bytes"));
    let entry = u(2);
    Ok(KeptHead {
        first: u(0),
        count: u(1),
        entry_leaf: (entry != PENDING).then_some(entry),
        intent_size: u(3),
        path: path.to_path_buf(),
    })
}

/// The leaf hashes a kept file holds.
pub fn read_hashes(head: &KeptHead) -> Result<Vec<Hash>, StoreError> {
    let b = std::fs::read(&head.path).map_err(StoreError::io("reading", &head.path))?;
    let body = b.get(HEAD..).unwrap_or_default();
    if body.len() as u64 != head.count * 32 {
        return Err(StoreError::Inconsistent(format!(
            "{}: {} bytes of hashes for {} leaves",
            head.path.display(),
            body.len(),
            head.count
        )));
    }
    Ok(body.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
}

/// Lists the kept files of `log`, sorted by first leaf.
pub fn list_kept(log: &Path) -> Result<Vec<KeptHead>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(log).map_err(StoreError::io("listing", log))? {
        let e = e.map_err(StoreError::io("listing", log))?;
        let name = e.file_name();
        if name.to_str().is_some_and(|s| s.starts_with("seg-") && s.ends_with(".kept")) {
            out.push(read_head(&e.path())?);
        }
    }
    out.sort_by_key(|h| h.first);
    Ok(out)
}

/// Writes (atomically: temporary file, fsync, rename, directory fsync) a kept file.
pub(super) fn write_kept(
    log: &Path,
    first: u64,
    entry_leaf: Option<u64>,
    intent_size: u64,
    hashes: &[Hash],
) -> Result<PathBuf, StoreError> {
    let path = log.join(kept_name(first));
    let tmp = log.join(format!("{}.tmp", kept_name(first)));
    let mut b = Vec::with_capacity(HEAD + hashes.len() * 32);
    b.extend_from_slice(MAGIC);
    for v in [first, hashes.len() as u64, entry_leaf.unwrap_or(PENDING), intent_size] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for h in hashes {
        b.extend_from_slice(h);
    }
    let mut f = std::fs::File::create(&tmp).map_err(StoreError::io("creating", &tmp))?;
    f.write_all(&b).and_then(|_| f.sync_all()).map_err(StoreError::io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io("renaming", &tmp))?;
    sync_dir(log)?;
    Ok(path)
}

/// Whether leaf `i` decodes to the `retention_deletion` entry of the segment
/// starting at `first` (of this log: an entry naming an `origin` deleted
/// leaves of another collector's orphaned log, see the collector's
/// `clickhouse::orphans`).
fn is_deletion_entry(leaf: &[u8], first: u64) -> bool {
    let Ok(l) = StoredLeaf::decode(leaf) else { return false };
    let Some(e) = l.entry else { return false };
    e.kind == crate::entry::RETENTION_DELETION
        && serde_json::from_str::<serde_json::Value>(&e.detail_json)
            .ok()
            .filter(|d| d.get("origin").is_none())
            .and_then(|d| d.get("first_leaf")?.as_u64())
            .is_some_and(|f| f == first)
}

/// Completes or abandons the deletions a crash interrupted (see the module
/// docs) and records every deleted range in `shared`. Runs at open.
pub(super) fn finish_pending(shared: &Log, kept: Vec<KeptHead>) -> Result<(), StoreError> {
    let log = shared.dir.join("log");
    for mut k in kept {
        let seg = log.join(segment_name(k.first));
        let present = seg.exists();
        if k.entry_leaf.is_none() {
            if !present {
                return Err(StoreError::Inconsistent(format!(
                    "{} is a pending deletion but its segment is gone",
                    k.path.display()
                )));
            }
            let mut found = None;
            for item in shared.iter(k.intent_size, shared.size())? {
                let (i, leaf) = item?;
                if is_deletion_entry(&leaf, k.first) {
                    found = Some(i);
                    break;
                }
            }
            let Some(entry_leaf) = found else {
                tracing::warn!(kept = %k.path.display(), "retention deletion was never recorded; abandoning it");
                std::fs::remove_file(&k.path).map_err(StoreError::io("removing", &k.path))?;
                sync_dir(&log)?;
                continue;
            };
            let hashes = read_hashes(&k)?;
            write_kept(&log, k.first, Some(entry_leaf), k.intent_size, &hashes)?;
            k.entry_leaf = Some(entry_leaf);
        }
        let d = Deleted {
            first: k.first,
            end: k.first + k.count,
            entry_leaf: k.entry_leaf.expect("set above"),
            segment: segment_name(k.first),
        };
        if present {
            tracing::warn!(segment = %seg.display(), entry = d.entry_leaf, "finishing an interrupted retention deletion");
            shared.remove_segment(&d)?;
        } else {
            insert_sorted(&mut shared.deleted.write().expect("deleted lock"), d, deleted_first);
        }
    }
    Ok(())
}

/// A deletion whose kept file is written and whose entry is yet to be appended.
#[derive(Debug, Clone)]
pub struct PendingDeletion {
    /// First leaf of the segment.
    pub first: u64,
    /// End (exclusive).
    pub end: u64,
    /// Segment file name.
    pub segment: String,
    /// The leaf hashes kept.
    pub hashes: Vec<Hash>,
    /// Log size when the kept file was written (the entry comes after it).
    pub intent_size: u64,
}

impl Log {
    /// Closed segments as (first leaf, end): all but the one being appended to.
    /// A segment ends where the next one starts, or where a deleted range
    /// after it starts, whichever comes first.
    pub fn closed_segments(&self) -> Vec<(u64, u64)> {
        let segs = self.segments.read().expect("segments lock");
        let deleted = self.deleted.read().expect("deleted lock");
        segs.windows(2)
            .map(|w| {
                let after = deleted.partition_point(|d| d.first <= w[0]);
                let gap = deleted.get(after).map_or(u64::MAX, |d| d.first);
                (w[0], w[1].min(gap))
            })
            .collect()
    }

    /// Ranges deleted by retention.
    pub fn deleted(&self) -> Vec<Deleted> {
        self.deleted.read().expect("deleted lock").clone()
    }

    /// The deletion covering leaf `i`, if its segment was deleted.
    pub fn deleted_at(&self, i: u64) -> Option<Deleted> {
        range_at(&self.deleted.read().expect("deleted lock"), i, |d| (d.first, d.end)).cloned()
    }

    /// First step of deleting the closed segment starting at `first`: checks
    /// it may go (closed, covered by the latest signed checkpoint) and writes
    /// its kept hashes (pending).
    pub fn begin_deletion(&self, first: u64) -> Result<PendingDeletion, StoreError> {
        let end = self
            .closed_segments()
            .into_iter()
            .find(|s| s.0 == first)
            .map(|s| s.1)
            .ok_or_else(|| StoreError::OutOfRange(format!("no closed segment starts at leaf {first}")))?;
        let signed = self.latest_checkpoint().map(|c| c.checkpoint.size).unwrap_or(0);
        if end > signed {
            return Err(StoreError::OutOfRange(format!(
                "segment {first}..{end} is not yet covered by a signed checkpoint (size {signed})"
            )));
        }
        let hashes = {
            let tree = self.tree.read().expect("tree lock");
            crate::merkle::HashSource::leaf_hashes(&tree.source(&self.hashes), first, end)?
        };
        let intent_size = self.size();
        write_kept(&self.dir.join("log"), first, None, intent_size, &hashes)?;
        Ok(PendingDeletion { first, end, segment: segment_name(first), hashes, intent_size })
    }

    /// Last step: the deletion entry (leaf `entry_leaf`) is durable; marks
    /// the kept file done and unlinks the segment.
    pub fn finish_deletion(&self, p: &PendingDeletion, entry_leaf: u64) -> Result<Deleted, StoreError> {
        let log = self.dir.join("log");
        write_kept(&log, p.first, Some(entry_leaf), p.intent_size, &p.hashes)?;
        let d = Deleted { first: p.first, end: p.end, entry_leaf, segment: p.segment.clone() };
        self.remove_segment(&d)?;
        Ok(d)
    }

    /// Records `d` as deleted (readers stop using the segment), then unlinks it.
    fn remove_segment(&self, d: &Deleted) -> Result<(), StoreError> {
        insert_sorted(&mut self.deleted.write().expect("deleted lock"), d.clone(), deleted_first);
        self.segments.write().expect("segments lock").retain(|&f| f != d.first);
        let log = self.dir.join("log");
        let seg = log.join(&d.segment);
        match std::fs::remove_file(&seg) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("removing", &seg)(e)),
        }
        sync_dir(&log)
    }
}

#[cfg(test)]
mod tests {
    use super::{insert_sorted, is_deletion_entry, range_at};

    #[test]
    fn a_deletion_of_another_logs_leaves_does_not_finish_a_pending_deletion_here() {
        let leaf = |detail: serde_json::Value| {
            crate::entry::leaf(crate::entry::new(crate::entry::RETENTION_DELETION, 1, "s", detail, vec![]), "")
        };
        assert!(is_deletion_entry(&leaf(serde_json::json!({ "first_leaf": 3 })), 3));
        assert!(!is_deletion_entry(&leaf(serde_json::json!({ "first_leaf": 4 })), 3));
        assert!(!is_deletion_entry(&leaf(serde_json::json!({ "first_leaf": 3, "origin": "gone" })), 3));
    }

    #[test]
    fn ranges_are_found_by_binary_search_and_kept_sorted() {
        let mut r: Vec<(u64, u64)> = Vec::new();
        for x in [(10, 20), (0, 5), (30, 31), (5, 8)] {
            insert_sorted(&mut r, x, |d| d.0);
        }
        assert_eq!(r, [(0, 5), (5, 8), (10, 20), (30, 31)]);
        let at = |i| range_at(&r, i, |d| *d).copied();
        assert_eq!((at(0), at(4), at(5), at(7)), (Some((0, 5)), Some((0, 5)), Some((5, 8)), Some((5, 8))));
        assert_eq!((at(8), at(9), at(20), at(31)), (None, None, None, None));
        assert_eq!((at(10), at(19), at(30)), (Some((10, 20)), Some((10, 20)), Some((30, 31))));
        assert_eq!(range_at(&[] as &[(u64, u64)], 0, |d| *d), None);
    }
}
