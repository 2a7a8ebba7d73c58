//! The spool: an on-disk, bounded, append-only queue of already numbered
//! batches, kept until the collector acknowledges them.
//!
//! Layout: `DIR/<boot start UTC ns, 20 digits>-<boot id>/<seq, 20 digits>.wtb`,
//! one file per batch (format in [`file`]). Directory names sort by boot start,
//! file names by seq, so iteration order is the order batches must be sent in:
//! the previous boots' unacknowledged batches first (with their original agent
//! id, boot id and seq, which lets the collector deduplicate them), then the
//! current boot's.
//!
//! fsync policy: a batch is written to a temporary file, fsynced, renamed and
//! its directory fsynced before [`Spool::append`] returns; only then is it
//! offered to the collector. A batch is unlinked after its ack without an
//! fsync: if the unlink is lost in a crash the batch is sent again and the
//! collector answers it as a duplicate. Records still being collected into a
//! batch in memory (at most the batcher's time/count/size limit) are lost if
//! the process is killed; the next boot's restart gap covers that window.
//!
//! The byte bound: [`Spool::append`] refuses a batch that would take the spool
//! above `max_bytes` ([`SpoolError::Full`]); the caller turns refused records
//! into one gap record. Gap batches may use an extra `gap_reserve_bytes` so
//! that the record of the loss always fits.
//!
//! Recovery rules at open: temporary files of interrupted writes are deleted
//! (never reported as spooled); a damaged batch file is renamed `*.corrupt`
//! and reported ([`Quarantined`]) so the shipper records the loss; anything
//! else that is not ours (a stray file, a directory of another shape) is left
//! alone with a warning. A batch missing from a boot's sequence (deleted, or
//! quarantined earlier) is found when the collector names the seq it expects;
//! the shipper then spools a gap batch standing for the missing seqs.

pub mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wiretrail_proto::v1::Batch;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A spooled batch file is damaged.
    #[error("spool: {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The batch does not fit under the byte bound.
    #[error("spool full: {used} bytes used, batch needs {need}, limit {limit}")]
    Full {
        /// Bytes in the spool now.
        used: u64,
        /// Size of the refused batch file.
        need: u64,
        /// The limit that applied.
        limit: u64,
    },
    /// The batch is not in the spool.
    #[error("spool: no batch {0:?}")]
    Missing(BatchKey),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { what, path, source }
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the spool (created if missing); must survive restarts.
    pub dir: PathBuf,
    /// Most bytes of batch files kept for ordinary batches.
    pub max_bytes: u64,
    /// Extra bytes only gap batches may use, so a loss can always be recorded.
    pub gap_reserve_bytes: u64,
}

impl SpoolConfig {
    /// `dir` with a 1 GiB bound and a 1 MiB gap reserve.
    pub fn new(dir: PathBuf) -> Self {
        SpoolConfig { dir, max_bytes: 1 << 30, gap_reserve_bytes: 1 << 20 }
    }
}

/// Position of a batch in the spool: its boot directory and seq.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchKey {
    /// Boot directory name (`<start ns>-<boot id>`); sorts by boot start.
    pub boot_dir: String,
    /// The batch's seq within its boot.
    pub seq: u64,
}

/// A batch file that could not be read at open; it was renamed to `*.corrupt`.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Where the batch was.
    pub key: BatchKey,
    /// The boot id of its directory.
    pub boot_id: String,
    /// The renamed file.
    pub path: PathBuf,
    /// Why it was refused.
    pub why: String,
}

/// One spooled batch file.
#[derive(Debug, Clone)]
struct Entry {
    /// The file.
    path: PathBuf,
    /// Its size (counted against the bound).
    bytes: u64,
    /// UTC ns when it was spooled (the file's mtime for batches of earlier runs).
    added_ns: i64,
}

/// In-memory view of the spool directory.
#[derive(Debug, Default)]
struct Inner {
    /// Every spooled batch, in send order.
    entries: BTreeMap<BatchKey, Entry>,
    /// Sum of the entries' sizes.
    used: u64,
}

/// The on-disk queue. Methods do blocking file I/O: call them from a blocking
/// thread (`tokio::task::spawn_blocking`).
#[derive(Debug)]
pub struct Spool {
    /// Settings.
    config: SpoolConfig,
    /// Index of the files, shared by the batcher (appends) and the sender (reads, removes).
    inner: Mutex<Inner>,
}

/// UTC ns now.
fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// A file's modification time (UTC ns; now when unreadable).
fn mtime_ns(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_ns, |d| d.as_nanos() as i64)
}

/// Whether `name` has the shape of a boot directory (`<20 digits>-<boot id>`).
fn is_boot_dir(name: &str) -> bool {
    name.split_once('-').is_some_and(|(t, id)| t.len() == 20 && t.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
}

/// The boot id encoded in a boot directory name.
pub fn boot_id_of(boot_dir: &str) -> &str {
    boot_dir.split_once('-').map(|(_, b)| b).unwrap_or(boot_dir)
}

impl Spool {
    /// Opens (or creates) the spool, indexing the batches left by earlier
    /// boots. Damaged files are renamed to `*.corrupt` and returned so the
    /// caller can record the loss; temporary files of interrupted writes are
    /// deleted (those batches were never reported as spooled).
    pub fn open(config: SpoolConfig) -> Result<(Spool, Vec<Quarantined>), SpoolError> {
        std::fs::create_dir_all(&config.dir).map_err(io("creating", &config.dir))?;
        let mut inner = Inner::default();
        let mut bad = Vec::new();
        for boot in std::fs::read_dir(&config.dir).map_err(io("listing", &config.dir))? {
            let boot = boot.map_err(io("listing", &config.dir))?;
            let boot_path = boot.path();
            let boot_dir = match boot.file_name().to_str() {
                Some(name) if boot_path.is_dir() && is_boot_dir(name) => name.to_string(),
                _ => {
                    tracing::warn!(path = %boot_path.display(), "not a spool entry; left alone");
                    continue;
                }
            };
            let mut n = 0;
            for f in std::fs::read_dir(&boot_path).map_err(io("listing", &boot_path))? {
                let f = f.map_err(io("listing", &boot_path))?;
                let path = f.path();
                let name = f.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    std::fs::remove_file(&path).map_err(io("removing", &path))?;
                    continue;
                }
                if name.ends_with(".corrupt") {
                    n += 1;
                    continue;
                }
                let Some(seq) = name.strip_suffix(".wtb").and_then(|s| s.parse::<u64>().ok()) else {
                    tracing::warn!(path = %path.display(), "not a spooled batch; left alone");
                    n += 1;
                    continue;
                };
                let key = BatchKey { boot_dir: boot_dir.clone(), seq };
                let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
                match file::decode(&path, &bytes) {
                    Ok(b) if b.seq == seq && b.boot_id == boot_id_of(&boot_dir) => {}
                    res => {
                        let why = match res {
                            Err(e) => e.to_string(),
                            Ok(b) => format!("holds batch {} of boot {}", b.seq, b.boot_id),
                        };
                        let q = path.with_extension("corrupt");
                        std::fs::rename(&path, &q).map_err(io("quarantining", &path))?;
                        tracing::error!(file = %path.display(), %why, "corrupt spool file quarantined");
                        bad.push(Quarantined { boot_id: boot_id_of(&boot_dir).to_string(), key, path: q, why });
                        n += 1;
                        continue;
                    }
                }
                n += 1;
                inner.used += bytes.len() as u64;
                let added_ns = mtime_ns(&path);
                inner.entries.insert(key, Entry { path, bytes: bytes.len() as u64, added_ns });
            }
            if n == 0 {
                std::fs::remove_dir(&boot_path).map_err(io("removing", &boot_path))?;
            }
        }
        tracing::info!(
            dir = %config.dir.display(),
            batches = inner.entries.len(),
            bytes = inner.used,
            "spool opened"
        );
        Ok((Spool { config, inner: Mutex::new(inner) }, bad))
    }

    /// Creates the directory of a new boot and returns its name.
    pub fn start_boot(&self, boot_id: &str, start_ns: i64) -> Result<String, SpoolError> {
        let name = format!("{:020}-{boot_id}", start_ns.max(0));
        let path = self.config.dir.join(&name);
        std::fs::create_dir(&path).map_err(io("creating", &path))?;
        file::sync_dir(&self.config.dir)?;
        Ok(name)
    }

    /// Durably appends `batch` under `boot_dir`. `gap` batches may use the
    /// reserve; others fail with [`SpoolError::Full`] above `max_bytes`.
    pub fn append(&self, boot_dir: &str, batch: &Batch, gap: bool) -> Result<u64, SpoolError> {
        let bytes = file::encode(batch);
        let need = bytes.len() as u64;
        let limit = self.config.max_bytes + if gap { self.config.gap_reserve_bytes } else { 0 };
        let key = BatchKey { boot_dir: boot_dir.to_string(), seq: batch.seq };
        {
            let inner = self.inner.lock().expect("spool lock");
            if inner.used + need > limit {
                return Err(SpoolError::Full { used: inner.used, need, limit });
            }
        }
        let path = self.config.dir.join(boot_dir).join(format!("{:020}.wtb", batch.seq));
        file::write_durable(&path, &bytes)?;
        let mut inner = self.inner.lock().expect("spool lock");
        inner.used += need;
        inner.entries.insert(key, Entry { path, bytes: need, added_ns: now_ns() });
        Ok(need)
    }

    /// Writes `batch` as batch `key` (bypassing the bound, so the boot's seq
    /// stays gap-free): in place of a quarantined or missing batch, or over a
    /// spooled one the collector refused as too large.
    pub fn replace(&self, key: &BatchKey, batch: &Batch) -> Result<(), SpoolError> {
        let bytes = file::encode(batch);
        let path = self.config.dir.join(&key.boot_dir).join(format!("{:020}.wtb", key.seq));
        file::write_durable(&path, &bytes)?;
        let mut inner = self.inner.lock().expect("spool lock");
        inner.used += bytes.len() as u64;
        if let Some(old) =
            inner.entries.insert(key.clone(), Entry { path, bytes: bytes.len() as u64, added_ns: now_ns() })
        {
            inner.used -= old.bytes;
        }
        Ok(())
    }

    /// Whether batch file `seq` of `boot_dir` was quarantined as corrupt.
    pub fn quarantined(&self, boot_dir: &str, seq: u64) -> bool {
        self.config.dir.join(boot_dir).join(format!("{seq:020}.corrupt")).exists()
    }

    /// The first spooled batch after `after` (from the start with `None`).
    pub fn next_after(&self, after: Option<&BatchKey>) -> Option<BatchKey> {
        let inner = self.inner.lock().expect("spool lock");
        match after {
            None => inner.entries.keys().next().cloned(),
            Some(k) => inner
                .entries
                .range((std::ops::Bound::Excluded(k.clone()), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| k.clone()),
        }
    }

    /// Reads a spooled batch.
    pub fn read(&self, key: &BatchKey) -> Result<Batch, SpoolError> {
        let path = {
            let inner = self.inner.lock().expect("spool lock");
            inner.entries.get(key).ok_or_else(|| SpoolError::Missing(key.clone()))?.path.clone()
        };
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        file::decode(&path, &bytes)
    }

    /// Removes an acknowledged batch.
    pub fn remove(&self, key: &BatchKey) -> Result<(), SpoolError> {
        let mut inner = self.inner.lock().expect("spool lock");
        let e = inner.entries.remove(key).ok_or_else(|| SpoolError::Missing(key.clone()))?;
        inner.used -= e.bytes;
        drop(inner);
        std::fs::remove_file(&e.path).map_err(io("removing", &e.path))
    }

    /// Bytes of batch files in the spool.
    pub fn used_bytes(&self) -> u64 {
        self.inner.lock().expect("spool lock").used
    }

    /// Number of spooled batches.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("spool lock").entries.len()
    }

    /// UTC ns when the first batch still waiting for its ack was spooled (`None`: none waits).
    pub fn oldest_ns(&self) -> Option<i64> {
        self.inner.lock().expect("spool lock").entries.values().next().map(|e| e.added_ns)
    }

    /// Whether the spool holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
