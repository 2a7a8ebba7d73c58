//! The single writer: appends frames and group-commits them with one fsync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use super::checkpoints::{load_checkpoints, load_or_create_signer, write_verifier};
use super::keys;
use super::reader::Log;
use super::recover::recover;
use super::watch::Appended;
use super::{StoreError, segment_name};
use crate::frame;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// A new segment is started when the current one exceeds this many bytes.
    pub segment_bytes: u64,
    /// Log origin (checkpoint name) used when the directory is created.
    pub origin: String,
    /// zstd level new frames are compressed at (when that makes them
    /// smaller); `None` writes every frame uncompressed. Either way every
    /// frame already in the log stays readable.
    pub compression: Option<i32>,
}

/// zstd level of [`StoreConfig::compression`] by default: -1 (zstd's first
/// fast level) stores the bench's leaves as small as levels 1 and 3 at under
/// half their cost per leaf on the writer thread, and its frames decompress
/// faster (BENCHMARKS.md, collector section).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = -1;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes: 256 << 20,
            origin: "wiretrail.local/log".into(),
            compression: Some(DEFAULT_COMPRESSION_LEVEL),
        }
    }
}

/// Where the log ends: current segment, its length, number of leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    /// First leaf index of the segment being appended to.
    seg_first: u64,
    /// Bytes in that segment.
    seg_len: u64,
    /// Leaves in the log.
    size: u64,
}

/// The only appender of a data directory (holds an exclusive lock on it).
pub struct Writer {
    /// The log's read handle; updated on commit.
    shared: Arc<Log>,
    /// Settings.
    config: StoreConfig,
    /// Current segment, opened for append.
    seg: File,
    /// End of the appended (not necessarily durable) log.
    pos: Pos,
    /// End of the durable log (as of the last successful commit).
    durable: Pos,
    /// `log/hashes`, append.
    hashes: File,
    /// `log/offsets`, append.
    offsets: File,
    /// Leaf hashes appended since the last commit (folded into the tree on commit).
    pending: Vec<crate::merkle::Hash>,
    /// Set when a failed write could not be rolled back; the writer then refuses to continue.
    poisoned: Option<String>,
    /// What recovery cut when the store was opened.
    cuts: Vec<super::Cut>,
    /// Whether the tree cache came from its snapshot at open.
    tree_from_snapshot: bool,
    /// Keeps the directory lock for the writer's life.
    _lock: File,
    /// Frame encoder (its zstd context is reused for every leaf).
    encoder: frame::Encoder,
    /// Scratch buffers for one append.
    buf: Vec<u8>,
    hbuf: Vec<u8>,
    obuf: Vec<u8>,
}

pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io("opening", &path))?;
    // SAFETY: flock on a valid open descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("syncing directory", dir))
}

impl Writer {
    /// Opens (creating if needed) the data directory, recovering from any crash.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Writer, Arc<Log>), StoreError> {
        let log = dir.join("log");
        let new_dir = !dir.exists();
        std::fs::create_dir_all(&log).map_err(StoreError::io("creating", &log))?;
        // A new directory's name is durable only once its parent is synced.
        if new_dir {
            sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
        }
        sync_dir(dir)?;
        let lock = lock_dir(dir)?;
        let encoder =
            frame::Encoder::new(config.compression).map_err(StoreError::io("setting up compression for", dir))?;
        let first = load_or_create_signer(dir, &config.origin)?;
        write_verifier(dir, &first.verifier())?;
        let history = keys::load_history(dir)?;
        let ring = keys::ring_of(&first.verifier(), &history)?;
        let signer = keys::current_signer(dir, first, &history)?;
        let checkpoints = load_checkpoints(dir, &ring)?;
        let checkpointed = checkpoints.iter().map(|c| c.checkpoint.size).max().unwrap_or(0);
        let r = recover(&log, checkpointed)?;
        let open_rw =
            |p: &Path| OpenOptions::new().read(true).append(true).open(p).map_err(StoreError::io("opening", p));
        let hashes_path = log.join("hashes");
        let offsets_path = log.join("offsets");
        let (seg_first, seg_len) = *r.segments.last().expect("recover creates a segment");
        let seg = open_rw(&log.join(segment_name(seg_first)))?;
        let appended = Appended::default();
        let shared = Arc::new(Log {
            dir: dir.to_path_buf(),
            committed: r.size.into(),
            segments: RwLock::new(r.segments.iter().map(|s| s.0).collect()),
            tree: RwLock::new(r.tree),
            hashes: File::open(&hashes_path).map_err(StoreError::io("opening", &hashes_path))?,
            offsets: File::open(&offsets_path).map_err(StoreError::io("opening", &offsets_path))?,
            appended,
            signer: RwLock::new(signer),
            keys: RwLock::new(ring),
            checkpoints: Mutex::new(checkpoints),
            deleted: RwLock::new(Vec::new()),
            compression: config.compression,
        });
        let mut tree_from_snapshot = r.tree_from_snapshot;
        if let Some(cp) = shared.latest_checkpoint() {
            let c = &cp.checkpoint;
            if c.size > r.size {
                return Err(StoreError::Inconsistent(format!(
                    "latest checkpoint covers {} leaves but the log holds only {}",
                    c.size, r.size
                )));
            }
            if shared.root(c.size)? != c.root && tree_from_snapshot {
                tracing::warn!(
                    size = c.size,
                    "tree snapshot does not match the latest checkpoint; rebuilding the tree"
                );
                let (tree, _) = super::recover::tree_of(dir, &hashes_path, r.size, false)?;
                *shared.tree.write().expect("tree lock") = tree;
                tree_from_snapshot = false;
            }
            if shared.root(c.size)? != c.root {
                return Err(StoreError::Inconsistent(format!("log does not match the checkpoint of size {}", c.size)));
            }
        }
        super::kept::finish_pending(&shared, r.kept)?;
        tracing::info!(dir = %dir.display(), size = r.size, segments = r.segments.len(),
            deleted_segments = shared.deleted().len(), "store opened");
        let pos = Pos { seg_first, seg_len, size: r.size };
        let writer = Writer {
            hashes: open_rw(&hashes_path)?,
            offsets: open_rw(&offsets_path)?,
            shared: shared.clone(),
            config,
            seg,
            pos,
            durable: pos,
            pending: Vec::new(),
            poisoned: None,
            cuts: r.cuts,
            tree_from_snapshot,
            _lock: lock,
            encoder,
            buf: Vec::new(),
            hbuf: Vec::new(),
            obuf: Vec::new(),
        };
        Ok((writer, shared))
    }

    /// The log's read handle (the one [`Writer::open`] returned).
    pub fn log(&self) -> &Arc<Log> {
        &self.shared
    }

    /// What recovery cut when the store was opened (torn, never acknowledged writes).
    pub fn recovered_cuts(&self) -> &[super::Cut] {
        &self.cuts
    }

    /// Saves the tree cache's snapshot (see [`super::snapshot`]) at the
    /// durable size, which it returns with the leaf hash there, for the
    /// caller's own snapshots of the same size.
    pub fn save_tree_snapshot(&self) -> Result<(u64, Option<crate::merkle::Hash>), StoreError> {
        let (size, body) = {
            let tree = self.shared.tree.read().expect("tree lock");
            (tree.size(), tree.encode())
        };
        let last = match size.checked_sub(1) {
            Some(i) => Some(self.shared.leaf_hash(i)?),
            None => None,
        };
        super::snapshot::save(&self.shared.dir, super::recover::TREE_SNAPSHOT, size, last, body)?;
        Ok((size, last))
    }

    /// Whether the tree cache came from its snapshot when the store was opened.
    pub fn tree_from_snapshot(&self) -> bool {
        self.tree_from_snapshot
    }

    /// Leaves appended (durable or not).
    pub fn appended(&self) -> u64 {
        self.pos.size
    }

    /// Appends the leaves of one batch (not yet durable); returns the index of
    /// the first. On failure nothing of the batch stays in the log.
    pub fn append(&mut self, leaves: &[Vec<u8>]) -> Result<u64, StoreError> {
        self.append_with(leaves, None)
    }

    /// [`Writer::append`] of leaves already prepared by
    /// [`frame::Encoder::prepare`] (hashed and compressed off this thread),
    /// one per leaf.
    pub fn append_prepared(&mut self, leaves: &[Vec<u8>], prepared: &[frame::Prepared]) -> Result<u64, StoreError> {
        if prepared.len() != leaves.len() {
            return Err(StoreError::Inconsistent(format!(
                "{} leaves came with {} prepared frames",
                leaves.len(),
                prepared.len()
            )));
        }
        self.append_with(leaves, Some(prepared))
    }

    fn append_with(&mut self, leaves: &[Vec<u8>], prepared: Option<&[frame::Prepared]>) -> Result<u64, StoreError> {
        if let Some(p) = &self.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        if let Some(l) = leaves.iter().find(|l| l.len() > frame::MAX_LEAF_LEN) {
            return Err(StoreError::LeafTooLarge(l.len()));
        }
        let before = self.pos;
        let first = before.size;
        if let Err(e) = self.append_inner(leaves, prepared) {
            tracing::warn!(error = %e, first, leaves = leaves.len(), "append failed; rolling the batch back");
            self.rollback(before)?;
            return Err(e);
        }
        Ok(first)
    }

    fn append_inner(&mut self, leaves: &[Vec<u8>], prepared: Option<&[frame::Prepared]>) -> Result<(), StoreError> {
        let log = self.shared.dir.join("log");
        if self.pos.seg_len >= self.config.segment_bytes && self.pos.seg_len > 0 {
            // A batch never spans two segments: roll before it.
            self.roll(&log)?;
        }
        self.buf.clear();
        self.hbuf.clear();
        self.obuf.clear();
        let mut hashes = Vec::with_capacity(leaves.len());
        for (k, leaf) in leaves.iter().enumerate() {
            let off = self.pos.seg_len + self.buf.len() as u64;
            let index = self.pos.size + k as u64;
            let h = match prepared.and_then(|p| p.get(k)) {
                Some(p) => {
                    frame::push_prepared(&mut self.buf, index, leaf, p);
                    p.hash
                }
                None => self.encoder.encode(&mut self.buf, index, leaf),
            };
            self.obuf.extend_from_slice(&off.to_le_bytes());
            self.hbuf.extend_from_slice(&h);
            hashes.push(h);
        }
        self.seg.write_all(&self.buf).map_err(StoreError::io("writing segment in", &log))?;
        self.hashes.write_all(&self.hbuf).map_err(StoreError::io("writing", log.join("hashes")))?;
        self.offsets.write_all(&self.obuf).map_err(StoreError::io("writing", log.join("offsets")))?;
        self.pos.seg_len += self.buf.len() as u64;
        self.pos.size += leaves.len() as u64;
        self.pending.extend(hashes);
        Ok(())
    }

    fn roll(&mut self, log: &Path) -> Result<(), StoreError> {
        let next_first = self.pos.size;
        self.seg.sync_data().map_err(StoreError::io("syncing segment in", log))?;
        let path = log.join(segment_name(next_first));
        self.seg = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(StoreError::io("creating", &path))?;
        self.shared.segments.write().expect("segments lock").push(next_first);
        self.pos.seg_first = next_first;
        self.pos.seg_len = 0;
        sync_dir(log)?;
        tracing::info!(first = next_first, "new segment");
        Ok(())
    }

    /// Truncates the segment(s) and derived files back to `to` (a position
    /// at or after the durable end). A rollback that fails stops the writer.
    fn rollback(&mut self, to: Pos) -> Result<(), StoreError> {
        let res = self.rollback_inner(to);
        if let Err(e) = &res {
            tracing::error!(error = %e, "rolling back a failed write failed; refusing further appends until restart");
            self.poisoned = Some(e.to_string());
        }
        res
    }

    fn rollback_inner(&mut self, to: Pos) -> Result<(), StoreError> {
        let log = self.shared.dir.join("log");
        if self.pos.seg_first != to.seg_first {
            // Segments created after `to` hold nothing durable: remove them.
            let mut segs = self.shared.segments.write().expect("segments lock");
            while segs.last().is_some_and(|&f| f > to.seg_first) {
                let f = segs.pop().expect("checked");
                let p = log.join(segment_name(f));
                std::fs::remove_file(&p).map_err(StoreError::io("removing", &p))?;
            }
            drop(segs);
            let p = log.join(segment_name(to.seg_first));
            self.seg = OpenOptions::new().read(true).append(true).open(&p).map_err(StoreError::io("opening", &p))?;
            sync_dir(&log)?;
        }
        self.seg.set_len(to.seg_len).map_err(StoreError::io("truncating segment in", &log))?;
        self.hashes.set_len(to.size * 32).map_err(StoreError::io("truncating", log.join("hashes")))?;
        self.offsets.set_len(to.size * 8).map_err(StoreError::io("truncating", log.join("offsets")))?;
        self.seg.sync_data().map_err(StoreError::io("syncing segment in", &log))?;
        let keep = (to.size - self.durable.size) as usize;
        self.pending.truncate(keep);
        self.pos = to;
        Ok(())
    }

    /// Makes every appended leaf durable (one fdatasync) and visible to
    /// readers. On failure everything appended since the last commit is
    /// rolled back (none of it was acknowledged).
    pub fn commit(&mut self) -> Result<u64, StoreError> {
        if let Some(p) = &self.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        if self.pos == self.durable {
            return Ok(self.pos.size);
        }
        if let Err(e) = self.seg.sync_data() {
            let e = StoreError::io("syncing segment in", self.shared.dir.join("log"))(e);
            tracing::warn!(error = %e, "fsync failed; rolling back the uncommitted batches");
            self.rollback(self.durable)?;
            return Err(e);
        }
        {
            let mut tree = self.shared.tree.write().expect("tree lock");
            for h in self.pending.drain(..) {
                tree.push(h);
            }
        }
        self.durable = self.pos;
        self.shared.committed.store(self.pos.size, Ordering::Release);
        self.shared.appended.notify();
        Ok(self.pos.size)
    }
}
