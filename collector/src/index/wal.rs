//! Checkpoints of the index's write-ahead log, off the indexer thread.
//!
//! SQLite checkpoints the WAL in whichever connection commits past 1,000
//! pages, which put a tenth of the indexer's time into copying pages back to
//! the database. The indexer's connection has automatic checkpoints off, and
//! this thread runs a PASSIVE checkpoint on its own connection whenever the
//! indexer has committed since the last one (at most every [`EVERY`]), so the
//! copying overlaps the next transactions. Without it the WAL would only grow.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{IndexError, IndexProgress};

/// Most time between checkpoints while the indexer commits.
const EVERY: Duration = Duration::from_millis(250);

/// Turns off the automatic checkpoints of `c` (the indexer's connection).
pub(crate) fn manual(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    c.pragma_update(None, "wal_autocheckpoint", 0)
}

/// Starts the checkpoint thread for the index in `dir`; it ends when `progress.stop` is set.
pub(crate) fn spawn(dir: &Path, progress: Arc<IndexProgress>) -> Result<JoinHandle<()>, IndexError> {
    let c = super::open(dir)?;
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
                if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "checkpointing the index's WAL failed; retrying");
                }
            }
            // A last one, so a stopped collector leaves a short WAL.
            let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        })
        .expect("spawning the index WAL checkpointer"))
}
