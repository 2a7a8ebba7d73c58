//! The single writer: appends frames and group-commits them with one fsync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use super::checkpoints::{load_checkpoints, load_or_create_signer, write_verifier};
use super::reader::Shared;
use super::recover::recover;
use super::{StoreError, frame, segment_name};

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// A new segment is started when the current one exceeds this many bytes.
    pub segment_bytes: u64,
    /// Log origin (checkpoint name) used when the directory is created.
    pub origin: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { segment_bytes: 256 << 20, origin: "wiretrail.local/log".into() }
    }
}

/// The only appender of a data directory (holds an exclusive lock on it).
pub struct Writer {
    /// Shared read state; updated on commit.
    shared: Arc<Shared>,
    /// Settings.
    config: StoreConfig,
    /// Current segment, opened for append.
    seg: File,
    /// Bytes in the current segment.
    seg_len: u64,
    /// `log/hashes`, append.
    hashes: File,
    /// `log/offsets`, append.
    offsets: File,
    /// Leaves appended (committed or not).
    size: u64,
    /// Set after a failed write or fsync; the writer then refuses to continue.
    poisoned: Option<String>,
    /// Keeps the directory lock for the writer's life.
    _lock: File,
    /// Scratch buffers for one append.
    buf: Vec<u8>,
    hbuf: Vec<u8>,
    obuf: Vec<u8>,
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
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
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Writer, Arc<Shared>), StoreError> {
        let log = dir.join("log");
        std::fs::create_dir_all(&log).map_err(StoreError::io("creating", &log))?;
        let lock = lock_dir(dir)?;
        let signer = load_or_create_signer(dir, &config.origin)?;
        write_verifier(dir, &signer.verifier())?;
        let checkpoints = load_checkpoints(dir, &signer.verifier())?;
        let r = recover(&log)?;
        let open_rw =
            |p: &Path| OpenOptions::new().read(true).append(true).open(p).map_err(StoreError::io("opening", p));
        let hashes_path = log.join("hashes");
        let offsets_path = log.join("offsets");
        let (seg_first, seg_len) = *r.segments.last().expect("recover creates a segment");
        let seg = open_rw(&log.join(segment_name(seg_first)))?;
        let (appended, _) = tokio::sync::watch::channel(r.size);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            committed: r.size.into(),
            segments: RwLock::new(r.segments.iter().map(|s| s.0).collect()),
            tree: RwLock::new(r.tree),
            hashes: File::open(&hashes_path).map_err(StoreError::io("opening", &hashes_path))?,
            offsets: File::open(&offsets_path).map_err(StoreError::io("opening", &offsets_path))?,
            appended,
            signer,
            checkpoints: Mutex::new(checkpoints),
        });
        if let Some(cp) = shared.latest_checkpoint() {
            let c = &cp.checkpoint;
            if c.size > r.size {
                return Err(StoreError::Inconsistent(format!(
                    "latest checkpoint covers {} leaves but the log holds only {}",
                    c.size, r.size
                )));
            }
            if shared.root(c.size)? != c.root {
                return Err(StoreError::Inconsistent(format!("log does not match the checkpoint of size {}", c.size)));
            }
        }
        tracing::info!(dir = %dir.display(), size = r.size, segments = r.segments.len(), "store opened");
        let writer = Writer {
            hashes: open_rw(&hashes_path)?,
            offsets: open_rw(&offsets_path)?,
            shared: shared.clone(),
            config,
            seg,
            seg_len,
            size: r.size,
            poisoned: None,
            _lock: lock,
            buf: Vec::new(),
            hbuf: Vec::new(),
            obuf: Vec::new(),
        };
        Ok((writer, shared))
    }

    /// The shared read state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn poison<T>(&mut self, e: StoreError) -> Result<T, StoreError> {
        tracing::error!(error = %e, "store write failed; refusing further appends until restart");
        self.poisoned = Some(e.to_string());
        Err(e)
    }

    /// Appends leaves (not yet durable); returns the index of the first.
    pub fn append(&mut self, leaves: &[Vec<u8>]) -> Result<u64, StoreError> {
        if let Some(p) = &self.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        let first = self.size;
        if let Err(e) = self.append_inner(leaves) {
            return self.poison(e);
        }
        Ok(first)
    }

    fn append_inner(&mut self, leaves: &[Vec<u8>]) -> Result<(), StoreError> {
        let log = self.shared.dir.join("log");
        self.buf.clear();
        self.hbuf.clear();
        self.obuf.clear();
        let mut hashes = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            if leaf.len() > frame::MAX_LEAF_LEN {
                return Err(StoreError::OutOfRange(format!("leaf of {} bytes exceeds the maximum", leaf.len())));
            }
            if self.seg_len + self.buf.len() as u64 >= self.config.segment_bytes {
                self.flush_buf(&log)?;
                self.roll(&log)?;
            }
            let off = self.seg_len + self.buf.len() as u64;
            let h = frame::encode(&mut self.buf, self.size + hashes.len() as u64, leaf);
            self.obuf.extend_from_slice(&off.to_le_bytes());
            self.hbuf.extend_from_slice(&h);
            hashes.push(h);
        }
        self.flush_buf(&log)?;
        self.hashes.write_all(&self.hbuf).map_err(StoreError::io("writing", log.join("hashes")))?;
        self.offsets.write_all(&self.obuf).map_err(StoreError::io("writing", log.join("offsets")))?;
        let mut tree = self.shared.tree.write().expect("tree lock");
        for h in hashes {
            tree.push(h);
        }
        self.size = tree.size();
        Ok(())
    }

    fn flush_buf(&mut self, log: &Path) -> Result<(), StoreError> {
        self.seg.write_all(&self.buf).map_err(StoreError::io("writing segment in", log))?;
        self.seg_len += self.buf.len() as u64;
        // Frames written so far belong to the current segment; offsets stay valid.
        self.buf.clear();
        Ok(())
    }

    fn roll(&mut self, log: &Path) -> Result<(), StoreError> {
        let next_first = self.size + (self.hbuf.len() / 32) as u64;
        self.seg.sync_data().map_err(StoreError::io("syncing segment in", log))?;
        let path = log.join(segment_name(next_first));
        self.seg = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(StoreError::io("creating", &path))?;
        sync_dir(log)?;
        self.seg_len = 0;
        self.shared.segments.write().expect("segments lock").push(next_first);
        tracing::info!(first = next_first, "new segment");
        Ok(())
    }

    /// Makes every appended leaf durable (one fdatasync) and visible to readers.
    pub fn commit(&mut self) -> Result<u64, StoreError> {
        if let Some(p) = &self.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        if let Err(e) = self.seg.sync_data() {
            return self.poison(StoreError::io("syncing segment in", self.shared.dir.join("log"))(e));
        }
        self.shared.committed.store(self.size, Ordering::Release);
        self.shared.appended.send_replace(self.size);
        Ok(self.size)
    }
}
