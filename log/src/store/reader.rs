//! Read side of the store, shared by the writer, the API and the indexer.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use super::checkpoints::append_checkpoint;
use super::kept::{insert_sorted, range_at};
use super::tree::TreeCache;
use super::watch::{Appended, SizeWatch};
use super::{StoreError, segment_name};
use crate::frame::{self, HEADER_LEN};
use crate::merkle::{
    Checkpoint, Hash, HashSource, KeyRing, ProofError, SignedCheckpoint, Signer, Verifier, consistency_proof,
    inclusion_proof,
};

/// The read handle of one data directory's log: its committed leaves, their
/// Merkle tree, proofs, checkpoints (issued and signed here) and key
/// history. Made by [`super::Writer::open`] and shared (in an `Arc`) by the
/// single writer and any number of readers (API, indexer, verifier).
pub struct Log {
    /// The data directory.
    pub(super) dir: PathBuf,
    /// Leaves that are durable (fsynced) and may be read, proven and checkpointed.
    pub(super) committed: AtomicU64,
    /// First leaf index of each segment, ascending.
    pub(super) segments: RwLock<Vec<u64>>,
    /// Merkle tree nodes.
    pub(super) tree: RwLock<TreeCache>,
    /// Read handle on `log/hashes`.
    pub(super) hashes: File,
    /// Read handle on `log/offsets`.
    pub(super) offsets: File,
    /// Tells followers the committed size changed.
    pub(super) appended: Appended,
    /// Checkpoint signing key in force (replaced by a rotation).
    pub(super) signer: RwLock<Signer>,
    /// Every key of the log's history.
    pub(super) keys: RwLock<KeyRing>,
    /// Checkpoints issued so far (serializes issuing).
    pub(super) checkpoints: Mutex<Vec<SignedCheckpoint>>,
    /// Leaf ranges whose segments retention deleted (see [`super::kept`]).
    pub(super) deleted: RwLock<Vec<super::kept::Deleted>>,
    /// zstd level new frames are written with (`None`: uncompressed).
    pub(super) compression: Option<i32>,
}

impl Log {
    /// Durable number of leaves.
    pub fn size(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// zstd level new frames are written with (`None`: uncompressed), for
    /// [`crate::frame::prepare_all`] on the ingest tasks.
    pub fn compression(&self) -> Option<i32> {
        self.compression
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Watch of the committed size (for follow mode and the indexer).
    pub fn subscribe(&self) -> SizeWatch {
        self.appended.subscribe()
    }

    /// The verifier of the key signing checkpoints now.
    pub fn verifier(&self) -> Verifier {
        self.signer.read().expect("signer lock").verifier()
    }

    /// The log's key history (the first key and every key rotated in).
    pub fn keyring(&self) -> KeyRing {
        self.keys.read().expect("keys lock").clone()
    }

    /// Signs `body` with the checkpoint key as a signed note (bundle manifests).
    pub fn sign_note(&self, body: &str) -> String {
        self.signer.read().expect("signer lock").sign_text(body)
    }

    fn check_index(&self, i: u64) -> Result<(), StoreError> {
        let size = self.size();
        if i >= size {
            return Err(StoreError::OutOfRange(format!("leaf index {i} not in log of size {size}")));
        }
        Ok(())
    }

    fn segment_of(&self, i: u64) -> u64 {
        let segs = self.segments.read().expect("segments lock");
        let pos = segs.partition_point(|&f| f <= i);
        segs[pos - 1]
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join("log").join(segment_name(first))
    }

    fn offset_of(&self, i: u64) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.offsets.read_exact_at(&mut b, i * 8).map_err(StoreError::io("reading", self.dir.join("log/offsets")))?;
        Ok(u64::from_le_bytes(b))
    }

    /// The stored bytes of leaf `i`, checked against the frame's index and hash.
    pub fn read_leaf(&self, i: u64) -> Result<Vec<u8>, StoreError> {
        self.check_index(i)?;
        if let Some(d) = self.deleted_at(i) {
            return Err(StoreError::Deleted { leaf: i, entry: d.entry_leaf, segment: d.segment });
        }
        let seg = self.segment_path(self.segment_of(i));
        let off = self.offset_of(i)?;
        let f = File::open(&seg).map_err(StoreError::io("opening", &seg))?;
        let mut hb = [0u8; HEADER_LEN];
        f.read_exact_at(&mut hb, off).map_err(StoreError::io("reading", &seg))?;
        let h = frame::header(&hb).ok_or_else(|| StoreError::Inconsistent(format!("leaf {i}: bad frame header")))?;
        let mut body = vec![0u8; h.len];
        f.read_exact_at(&mut body, off + HEADER_LEN as u64).map_err(StoreError::io("reading", &seg))?;
        leaf_of(i, &h, body)
    }

    /// The Merkle leaf hash of leaf `i` (kept also for leaves retention deleted).
    pub fn leaf_hash(&self, i: u64) -> Result<Hash, StoreError> {
        self.check_index(i)?;
        let tree = self.tree.read().expect("tree lock");
        Ok(tree.source(&self.hashes).leaf_hashes(i, i + 1)?[0])
    }

    /// Sequential iterator over leaves `from..to` (bounded by the committed size).
    pub fn iter(&self, from: u64, to: u64) -> Result<LeafIter, StoreError> {
        let to = to.min(self.size());
        let segs = self.segments.read().expect("segments lock").clone();
        let deleted: Vec<(u64, u64)> = self.deleted().iter().map(|d| (d.first, d.end)).collect();
        let start_off = if from < to && range_at(&deleted, from, |d| *d).is_none() { self.offset_of(from)? } else { 0 };
        Ok(LeafIter { dir: self.dir.join("log"), segs, deleted, next: from, to, reader: None, start_off })
    }

    /// Root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        if size > self.size() {
            return Err(StoreError::OutOfRange(format!("tree size {size} > log size {}", self.size())));
        }
        let tree = self.tree.read().expect("tree lock");
        Ok(tree.source(&self.hashes).root(size)?)
    }

    /// Inclusion proof of leaf `i` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, i: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        if size > self.size() {
            return Err(StoreError::OutOfRange(format!("tree size {size} > log size {}", self.size())));
        }
        let tree = self.tree.read().expect("tree lock");
        Ok(inclusion_proof(&tree.source(&self.hashes), i, size)?)
    }

    /// Consistency proof between tree sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        if new > self.size() {
            return Err(StoreError::OutOfRange(format!("tree size {new} > log size {}", self.size())));
        }
        let tree = self.tree.read().expect("tree lock");
        consistency_proof(&tree.source(&self.hashes), old, new).map_err(|e| match e {
            ProofError::OutOfRange(s) => StoreError::OutOfRange(s),
            e => e.into(),
        })
    }

    /// Latest checkpoint, if any was issued.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.checkpoints.lock().expect("checkpoints lock").last().cloned()
    }

    /// Signs and stores a checkpoint of the committed log, unless the latest one already covers it.
    pub fn issue_checkpoint(&self) -> Result<SignedCheckpoint, StoreError> {
        let mut cps = self.checkpoints.lock().expect("checkpoints lock");
        self.issue_locked(&mut cps)
    }

    /// A checkpoint of the first `size` committed leaves signed by the key in
    /// force, NOT recorded in `checkpoints.jsonl` (clustered mode: ClickHouse
    /// keeps it, so every acknowledged leaf there is covered by a signature).
    pub fn sign_unrecorded(&self, size: u64) -> Result<SignedCheckpoint, StoreError> {
        let root = self.root(size)?;
        let signer = self.signer.read().expect("signer lock");
        Ok(signer.sign(&Checkpoint { origin: signer.verifier().name, size, root }))
    }

    /// [`Log::issue_checkpoint`] with the checkpoints lock held.
    pub(super) fn issue_locked(&self, cps: &mut Vec<SignedCheckpoint>) -> Result<SignedCheckpoint, StoreError> {
        let size = self.size();
        if let Some(last) = cps.last()
            && last.checkpoint.size == size
        {
            return Ok(last.clone());
        }
        let cp = self.sign_unrecorded(size)?;
        append_checkpoint(&self.dir, &cp)?;
        tracing::info!(size, root = %hex::encode(cp.checkpoint.root), "checkpoint issued");
        cps.push(cp.clone());
        Ok(cp)
    }
}

/// A leaf read back: its index, its bytes and its Merkle leaf hash.
pub type HashedLeaf = (u64, Vec<u8>, Hash);

/// Reads leaves in order, streaming through segment files.
pub struct LeafIter {
    /// `log/` directory.
    dir: PathBuf,
    /// Segment first indexes.
    segs: Vec<u64>,
    /// Deleted leaf ranges (skipped), sorted by first leaf.
    deleted: Vec<(u64, u64)>,
    /// Next leaf index to return.
    next: u64,
    /// End (exclusive).
    to: u64,
    /// Open segment reader and the first index of the following segment.
    reader: Option<(BufReader<File>, u64)>,
    /// Offset of leaf `next` in its segment when the iterator starts.
    start_off: u64,
}

impl Iterator for LeafIter {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_hashed().map(|r| r.map(|(i, leaf, _)| (i, leaf)))
    }
}

impl LeafIter {
    /// The next leaf with its Merkle leaf hash (the frame's, which the
    /// leaf's bytes were checked against: no second hashing for callers
    /// that need it).
    pub fn next_hashed(&mut self) -> Option<Result<HashedLeaf, StoreError>> {
        loop {
            // Leaves of segments deleted by retention are skipped (whole segments).
            while let Some(&(_, end)) = range_at(&self.deleted, self.next, |d| *d) {
                self.next = end;
                self.reader = None;
                self.start_off = 0;
            }
            if self.next >= self.to {
                return None;
            }
            match self.read_one() {
                // A segment deleted while iterating (recorded in `deleted`): go on after it.
                Err(StoreError::Deleted { entry: u64::MAX, .. }) => continue,
                r => return Some(r),
            }
        }
    }

    fn read_one(&mut self) -> Result<HashedLeaf, StoreError> {
        let i = self.next;
        let need_open = match &self.reader {
            None => true,
            Some((_, seg_end)) => i >= *seg_end,
        };
        if need_open {
            let pos = self.segs.partition_point(|&f| f <= i);
            let first = self.segs[pos - 1];
            let end = self.segs.get(pos).copied().unwrap_or(u64::MAX);
            let path = self.dir.join(segment_name(first));
            let mut f = match File::open(&path) {
                Ok(f) => f,
                // Deleted by retention since the iterator was made: skip its leaves.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && self.dir.join(super::kept::kept_name(first)).exists() =>
                {
                    insert_sorted(&mut self.deleted, (first, end), |d| d.0);
                    self.reader = None;
                    return Err(StoreError::Deleted { leaf: i, entry: u64::MAX, segment: segment_name(first) });
                }
                Err(e) => return Err(StoreError::io("opening", &path)(e)),
            };
            let off = if self.reader.is_none() { self.start_off } else { 0 };
            f.seek(SeekFrom::Start(off)).map_err(StoreError::io("seeking", &path))?;
            self.reader = Some((BufReader::with_capacity(1 << 20, f), end));
        }
        let (r, _) = self.reader.as_mut().expect("opened above");
        let mut hb = [0u8; HEADER_LEN];
        r.read_exact(&mut hb).map_err(StoreError::io("reading segment for leaf", &self.dir))?;
        let h = frame::header(&hb).ok_or_else(|| StoreError::Inconsistent(format!("leaf {i}: bad frame header")))?;
        let mut body = vec![0u8; h.len];
        r.read_exact(&mut body).map_err(StoreError::io("reading segment for leaf", &self.dir))?;
        let leaf = leaf_of(i, &h, body)?;
        self.next += 1;
        Ok((i, leaf, h.hash))
    }
}

/// The leaf of frame `h` (stored body `body`) read where leaf `i` belongs,
/// checked against the frame's index and hash.
fn leaf_of(i: u64, h: &frame::Header, body: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if h.index != i {
        return Err(StoreError::Inconsistent(format!("leaf {i}: frame holds leaf index {}", h.index)));
    }
    match frame::checked_leaf(h, &body) {
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(body),
        Ok(std::borrow::Cow::Owned(leaf)) => Ok(leaf),
        Err(e) => Err(StoreError::Inconsistent(format!("{e}"))),
    }
}
