//! SHA-256 of the executable each process runs, hashed off the event path.
//!
//! The file is opened through `/proc/PID/exe`, so the hash is of the image the
//! process actually runs, even when the path on disk was replaced or deleted
//! since. Hashes are cached by the file's (st_dev, st_ino, size, mtime): each
//! binary is read once, however many processes run it.
//!
//! Cost bound: on a cache miss, files up to `INLINE_MAX_BYTES` (1 MiB: curl,
//! most CLI tools) are hashed right away by the caller, once per file version
//! (about a millisecond with the optimized sha2; so even a process that lives
//! a few ms gets its hash on its first record). Larger ones are opened by the
//! caller and read and hashed on one dedicated thread (`exe-hash`) fed by a
//! bounded queue, so a 100 MB binary never stalls the event pipeline; a miss
//! that finds the queue full is retried on a later record. Two callers (the
//! exec reader and the pipeline) racing on a new small file may both hash it;
//! that is the only repeat. Files larger than
//! `max_bytes` (`--exe-hash-max-bytes`, default 1 GiB; 0 turns hashing off) are
//! not hashed. Until a hash is ready, records of the process omit `exe_sha256`;
//! the resolver notices completed hashes (a generation counter) and later
//! records carry it.
use std::{
    collections::HashMap,
    fs::File,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError},
    },
};

use sha2::{Digest as _, Sha256};

use crate::metrics::Metrics;

/// What identifies one version of one executable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: i64,
}

impl FileKey {
    pub fn of(md: &std::fs::Metadata) -> FileKey {
        FileKey { dev: md.dev(), ino: md.ino(), size: md.size(), mtime_s: md.mtime(), mtime_ns: md.mtime_nsec() }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Queued or being hashed.
    Pending,
    /// Lowercase hex digest.
    Done(Arc<str>),
    /// Unreadable, changed while read, or over the size limit: not retried.
    Failed,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The hash.
    Ready(Arc<str>),
    /// Not ready yet: look again after [`ExeHasher::generation`] changes.
    Pending(FileKey),
    /// No hash will come (no process, unreadable, too big, hashing off).
    Never,
}

struct Job {
    key: FileKey,
    file: File,
}

/// The cache and the worker's queue; shared by the pipeline and the worker.
pub struct ExeHasher {
    cache: Mutex<HashMap<FileKey, State>>,
    /// Bumped each time a hash completes (or fails).
    generation: AtomicU64,
    tx: Option<SyncSender<Job>>,
    max_bytes: u64,
    /// Files up to this size are hashed by the caller.
    inline_max: u64,
    metrics: Arc<Metrics>,
}

impl ExeHasher {
    /// Most cached files (the cache is cleared when full: a cache, not a record).
    const MAX: usize = 16_384;
    /// Files waiting for the worker.
    const QUEUE: usize = 256;
    /// Default `--exe-hash-max-bytes`.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    /// Files hashed by the caller rather than the thread.
    pub const INLINE_MAX_BYTES: u64 = 1 << 20;

    /// Starts the hashing thread; `max_bytes == 0` turns hashing off.
    pub fn start(max_bytes: u64, metrics: Arc<Metrics>) -> Arc<ExeHasher> {
        Self::start_with(max_bytes, Self::INLINE_MAX_BYTES, metrics)
    }

    /// [`ExeHasher::start`] with another inline limit (tests).
    pub fn start_with(max_bytes: u64, inline_max: u64, metrics: Arc<Metrics>) -> Arc<ExeHasher> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(Self::QUEUE);
        let h = Arc::new(ExeHasher {
            cache: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            tx: (max_bytes > 0).then_some(tx),
            max_bytes,
            inline_max,
            metrics,
        });
        if max_bytes > 0 {
            let weak = Arc::downgrade(&h);
            let spawned = std::thread::Builder::new().name("exe-hash".into()).spawn(move || {
                while let Ok(job) = rx.recv() {
                    let Some(h) = weak.upgrade() else { return };
                    h.work(job);
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the exe-hash thread; records carry no exe_sha256");
            }
        }
        h
    }

    /// Changes whenever a pending hash settles.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, State>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity of the file process `pid` runs now (one `stat`).
    pub fn key_of(pid: u32) -> Option<FileKey> {
        std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|md| FileKey::of(&md))
    }

    /// The hash of what process `pid` runs, queueing it on a miss. Never reads
    /// the file on the calling thread.
    pub fn lookup(&self, pid: u32) -> Lookup {
        match Self::key_of(pid) {
            Some(key) => self.request(pid, key),
            None => Lookup::Never,
        }
    }

    /// The hash of file `key` (which process `pid` runs or ran), queueing it
    /// when unknown and the process is still there to open it by.
    pub fn request(&self, pid: u32, key: FileKey) -> Lookup {
        let Some(tx) = &self.tx else { return Lookup::Never };
        if let Some(l) = self.get(key) {
            return l;
        }
        if key.size > self.max_bytes {
            self.settle(key, State::Failed);
            self.metrics.exe_hash_skipped.inc();
            return Lookup::Never;
        }
        // Open now, while the process runs: the worker hashes this very file.
        let Ok(file) = File::open(format!("/proc/{pid}/exe")) else { return Lookup::Never };
        if file.metadata().map(|md| FileKey::of(&md)).ok() != Some(key) {
            // The process executed something else meanwhile.
            return Lookup::Never;
        }
        if key.size <= self.inline_max {
            return match self.hash(file, key) {
                State::Done(h) => Lookup::Ready(h),
                _ => Lookup::Never,
            };
        }
        {
            let mut m = self.lock();
            if m.len() >= Self::MAX {
                m.clear();
            }
            m.insert(key, State::Pending);
        }
        match tx.try_send(Job { key, file }) {
            Ok(()) => Lookup::Pending(key),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                // Not queued: forget it so a later record of the process retries.
                self.lock().remove(&key);
                self.metrics.exe_hash_backlog.inc();
                Lookup::Pending(key)
            }
        }
    }

    /// What is known about file `key` (None: nothing, not even queued).
    pub fn get(&self, key: FileKey) -> Option<Lookup> {
        if self.tx.is_none() {
            return Some(Lookup::Never);
        }
        self.lock().get(&key).map(|st| match st {
            State::Done(h) => Lookup::Ready(h.clone()),
            State::Pending => Lookup::Pending(key),
            State::Failed => Lookup::Never,
        })
    }

    fn settle(&self, key: FileKey, state: State) {
        self.lock().insert(key, state);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn work(&self, job: Job) {
        self.hash(job.file, job.key);
    }

    fn hash(&self, file: File, key: FileKey) -> State {
        let state = match hash_file(file, &key) {
            Ok(hex) => {
                self.metrics.exe_hashes.inc();
                State::Done(hex.into())
            }
            Err(e) => {
                self.metrics.exe_hash_errors.inc();
                tracing::debug!(error = %e, ino = key.ino, "hashing an executable");
                State::Failed
            }
        };
        self.settle(key, state.clone());
        state
    }
}

/// SHA-256 of an open file, checking it is still the version `key` names.
pub fn hash_file(mut file: File, key: &FileKey) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let after = FileKey::of(&file.metadata()?);
    if after != *key || total != key.size {
        return Err(std::io::Error::other("the executable changed while it was hashed"));
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_ready(h: &ExeHasher, pid: u32) -> Arc<str> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match h.lookup(pid) {
                Lookup::Ready(x) => return x,
                Lookup::Never => panic!("no hash will come"),
                Lookup::Pending(_) => {}
            }
            assert!(Instant::now() < deadline, "hash not ready in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let key = FileKey::of(&f.metadata().unwrap());
        assert_eq!(hash_file(f, &key).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // A stale key (the file changed) is an error, not a wrong hash.
        let f = File::open(&p).unwrap();
        assert!(hash_file(f, &FileKey { size: 4, ..key }).is_err());
    }

    #[test]
    fn small_files_are_hashed_at_once() {
        let metrics = Arc::new(Metrics::default());
        let h = ExeHasher::start_with(ExeHasher::DEFAULT_MAX_BYTES, u64::MAX, metrics.clone());
        let Lookup::Ready(x) = h.lookup(std::process::id()) else { panic!("not hashed inline") };
        assert_eq!(x.len(), 64);
        assert_eq!(h.lookup(std::process::id()), Lookup::Ready(x));
        assert_eq!(metrics.exe_hashes.get(), 1);
    }

    #[test]
    fn hashes_our_own_executable_once_off_thread() {
        let metrics = Arc::new(Metrics::default());
        let h = ExeHasher::start_with(ExeHasher::DEFAULT_MAX_BYTES, 0, metrics.clone());
        let me = std::process::id();
        let g0 = h.generation();
        assert!(matches!(h.lookup(me), Lookup::Pending(_) | Lookup::Ready(_)));
        let got = wait_ready(&h, me);
        assert!(h.generation() > g0, "settling bumps the generation");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let want = {
            let f = File::open(&exe).unwrap();
            let key = FileKey::of(&f.metadata().unwrap());
            hash_file(f, &key).unwrap()
        };
        assert_eq!(&*got, want.as_str());
        assert_eq!(got.len(), 64);
        // Cached by file: no second hash; found by key once the process is gone.
        assert_eq!(h.lookup(me), Lookup::Ready(got.clone()));
        let key = ExeHasher::key_of(me).unwrap();
        assert_eq!(h.get(key), Some(Lookup::Ready(got.clone())));
        assert_eq!(h.request(u32::MAX, key), Lookup::Ready(got));
        assert_eq!(metrics.exe_hashes.get(), 1);
    }

    #[test]
    fn size_limit_and_off() {
        let metrics = Arc::new(Metrics::default());
        let h = ExeHasher::start(16, metrics.clone());
        assert_eq!(h.lookup(std::process::id()), Lookup::Never, "over the limit");
        assert_eq!(metrics.exe_hash_skipped.get(), 1);
        let off = ExeHasher::start(0, metrics);
        assert_eq!(off.lookup(std::process::id()), Lookup::Never);
        assert_eq!(h.lookup(u32::MAX), Lookup::Never, "no such process");
    }
}
