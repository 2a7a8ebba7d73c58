//! Checkpoints of the index's write-ahead log, off the indexer thread.
//!
//! SQLite checkpoints the WAL in whichever connection commits past 1,000
//! pages, which put a tenth of the indexer's time into copying pages back to
//! the database. The indexer's connection has automatic checkpoints off, and
//! this thread runs a PASSIVE checkpoint on its own connection whenever the
//! indexer has committed since the last one (at most every [`EVERY`]), so the
//! copying overlaps the next transactions. Without it the WAL would only grow.
//!
//! PASSIVE alone is not enough: SQLite starts the WAL over only when a
//! checkpoint has copied every frame before the next write transaction
//! begins, and an indexer that commits back to back never leaves it that
//! moment, so the WAL grew with the index (2.8 GB after a 10M-record bench
//! run, more than the index itself). So, after a commit that leaves the WAL
//! past [`TRUNCATE_AT`], the indexer itself runs a TRUNCATE checkpoint
//! ([`bound`]): it is the only writer, so nothing has to be waited for but
//! readers, the passive checkpoints have copied most frames already, and
//! the file is emptied. (A TRUNCATE from this thread instead has to catch
//! the gap between two of the indexer's transactions: it mostly missed it,
//! and the WAL still reached 820 MB.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{IndexError, IndexProgress};

/// Most time between checkpoints while the indexer commits.
const EVERY: Duration = Duration::from_millis(250);
/// WAL size past which a checkpoint truncates it.
const TRUNCATE_AT: u64 = 64 << 20;
/// How long the indexer's TRUNCATE waits for readers.
const TRUNCATE_WAIT: Duration = Duration::from_millis(200);
/// The indexer connection's busy timeout otherwise (as [`super::open`] sets it).
const INDEXER_BUSY: Duration = Duration::from_secs(10);

/// Turns off the automatic checkpoints of `c` (the indexer's connection).
pub(crate) fn manual(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    c.pragma_update(None, "wal_autocheckpoint", 0)
}

/// Starts the checkpoint thread for the index in `dir`; it ends when `progress.stop` is set.
pub(crate) fn spawn(dir: &Path, progress: Arc<IndexProgress>) -> Result<JoinHandle<()>, IndexError> {
    let c = super::open(dir)?;
    let wal = wal_path(dir);
    Ok(std::thread::Builder::new()
        .name("wt-index-wal".into())
        .spawn(move || {
            let mut last = u64::MAX;
            while !progress.stop.load(Ordering::Acquire) {
                std::thread::sleep(EVERY);
                let now = progress.indexed.load(Ordering::Acquire);
                if now == last {
                    continue;
                }
                last = now;
                if let Err(e) = checkpoint(&c, &wal, u64::MAX) {
                    tracing::warn!(error = %e, "checkpointing the index's WAL failed; retrying");
                }
            }
            // A last one, so a stopped collector leaves a short WAL.
            let _ = checkpoint(&c, &wal, 0);
        })
        .expect("spawning the index WAL checkpointer"))
}

/// On the indexer's connection after a commit: a TRUNCATE checkpoint when
/// the WAL at `wal` is past [`TRUNCATE_AT`]; whether it ran.
pub(crate) fn bound(c: &rusqlite::Connection, wal: &Path) -> rusqlite::Result<bool> {
    let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    if len <= TRUNCATE_AT {
        return Ok(false);
    }
    // A search holding an old snapshot would make the TRUNCATE wait: give up
    // soon instead (the next commit tries again) rather than hold the indexer.
    c.busy_timeout(TRUNCATE_WAIT)?;
    let done = checkpoint(c, wal, TRUNCATE_AT);
    c.busy_timeout(INDEXER_BUSY)?;
    done.map(|m| m == Mode::Truncate)
}

/// The index's WAL file.
pub(crate) fn wal_path(dir: &Path) -> PathBuf {
    let mut p = super::db_path(dir).into_os_string();
    p.push("-wal");
    PathBuf::from(p)
}

/// Which checkpoint [`checkpoint`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Copied what it could without waiting.
    Passive,
    /// Waited, copied everything and emptied the WAL file.
    Truncate,
}

/// A PASSIVE checkpoint, or a TRUNCATE one when the WAL at `wal` is larger
/// than `limit` bytes.
pub(crate) fn checkpoint(c: &rusqlite::Connection, wal: &Path, limit: u64) -> rusqlite::Result<Mode> {
    let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    let mode = if len > limit { Mode::Truncate } else { Mode::Passive };
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    // (busy, frames in the WAL, frames copied): busy when a TRUNCATE gave up
    // waiting (the next round tries again).
    let busy: i64 = c.query_row(sql, [], |r| r.get(0))?;
    if busy != 0 {
        tracing::debug!(wal_bytes = len, ?mode, "index WAL checkpoint could not finish; retried next round");
    } else if mode == Mode::Truncate {
        tracing::debug!(wal_bytes = len, "index WAL checkpointed and truncated");
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wal_past_the_limit_is_checkpointed_and_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::index::open(dir.path()).unwrap();
        manual(&writer).unwrap();
        let reader = crate::index::open(dir.path()).unwrap();
        let wal = wal_path(dir.path());
        writer.execute_batch("CREATE TABLE big(x BLOB)").unwrap();
        for _ in 0..64 {
            writer.execute("INSERT INTO big VALUES (zeroblob(16384))", []).unwrap();
        }
        let grown = std::fs::metadata(&wal).unwrap().len();
        assert!(grown > 1 << 20, "{grown}");
        assert_eq!(checkpoint(&reader, &wal, grown).unwrap(), Mode::Passive);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), grown, "a passive checkpoint leaves the file");
        assert_eq!(checkpoint(&reader, &wal, 1 << 20).unwrap(), Mode::Truncate);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "emptied");
        let n: i64 = writer.query_row("SELECT count(*) FROM big", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 64);
    }
}
