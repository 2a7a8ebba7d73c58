//! The search index: SQLite (bundled, WAL), derived from the log and rebuildable.
//!
//! The indexer thread follows the committed log and indexes in transactions;
//! `meta.indexed` is the number of leaves indexed. Queries read the index below
//! that mark and scan the log above it, so results are complete even while the
//! index lags. Ingest waits when the lag exceeds what the indexer does in
//! [`IndexConfig::max_lag_secs`] at its measured rate (at most
//! [`IndexConfig::max_lag`] records; [`pace`]), so searches scan a bounded
//! tail and the index catches up within seconds once ingest stops.
//!
//! The same transactions maintain the identity inventory ([`crate::inventory`])
//! and the alerts ([`crate::alerts`]), so they too are rebuilt from the log.
//!
//! Three threads share the work: [`feed`] reads, decompresses and decodes the
//! log ahead of the indexer; the indexer (`wt-index`) runs the transactions;
//! [`wal`] checkpoints the database's WAL. The index is a candidate filter:
//! every hit is read from the log and matched again ([`crate::query`]), so
//! the tables hold only the keys searches narrow by, each in one B-tree
//! ([`layout`]): `identity` and `endpoints` are WITHOUT ROWID tables keyed by
//! generation ([`gens`]), what is searched, time and leaf, so inserts stay in
//! a working set of bounded size however long the log; `records` keeps a
//! [`dims`] id for its agent, host and protocol. Five B-tree inserts per
//! record, made [`rows::ROWS`] rows per statement ([`rows`]). Measured on a 1M-record bench log (`examples/index_rebuild.rs`):
//! 19k leaves/s before the WITHOUT ROWID layout and the threads, about 4
//! times that after; at 10M records, ingest paced by the indexer went from
//! 41k to 90k records/s with generations and dims; see BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::Connection;
use wiretrail_proto::v1::{Record, StoredLeaf};

pub(crate) mod dims;
mod feed;
pub(crate) mod gens;
mod layout;
pub mod pace;
mod rows;

pub use layout::clear;
use layout::{SCHEMA_VERSION, resume_point};
mod wal;

use feed::Feed;
use rows::{Col, Inserter};

use crate::inventory::Tracker;
use crate::registry::RegistryHandle;
use wiretrail_log::store::{Log, StoreError};

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed.
    #[error("index database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading the log failed.
    #[error("reading the log for indexing: {0}")]
    Store(#[from] StoreError),
}

/// Index settings.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Most records the index may run behind the durable log before ingest waits.
    pub max_lag: u64,
    /// Seconds of indexing (at the indexer's measured rate) the lag may
    /// reach before ingest waits, within `max_lag` ([`pace`]).
    pub max_lag_secs: f64,
    /// Records per index transaction.
    pub txn_rows: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig { max_lag: 1_000_000, max_lag_secs: 4.0, txn_rows: 20_000 }
    }
}

/// How long the indexer waits for the feed before looking at the stop flag again.
const FEED_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Path of the index database in a data directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("index.sqlite")
}

/// Opens (creating) the index database.
pub fn open(dir: &Path) -> Result<Connection, IndexError> {
    let path = db_path(dir);
    let err = |source| IndexError::Sqlite { path: path.clone(), source };
    let c = Connection::open(&path).map_err(err)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    c.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    // Statement journals (every INSERT OR REPLACE keeps one) in memory: in a
    // temp file they were 29 % of indexing time, a pwrite per page touched.
    c.pragma_update(None, "temp_store", "MEMORY").map_err(err)?;
    c.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
    let mut c = c;
    layout::drop_older(&mut c).map_err(err)?;
    c.execute_batch(layout::SCHEMA).map_err(err)?;
    c.execute_batch(crate::inventory::SCHEMA).map_err(err)?;
    c.execute_batch(crate::alerts::SCHEMA).map_err(err)?;
    c.execute_batch(crate::review::SCHEMA).map_err(err)?;
    Ok(c)
}

/// Opens the index for the indexer; an unreadable database (it is derived
/// from the log) is moved aside as `index.sqlite.unreadable-<UTC ns>` and
/// rebuilt instead of stopping the collector. Only the header, schema and
/// progress row are read here; the page-by-page check ([`damaged`]) is the
/// indexer thread's first task, off the start-up path.
pub fn open_or_rebuild(dir: &Path) -> Result<Connection, IndexError> {
    match open(dir).and_then(|c| {
        indexed(&c).map_err(|source| IndexError::Sqlite { path: db_path(dir), source })?;
        Ok(c)
    }) {
        Ok(c) => Ok(c),
        Err(e) => rebuild(dir, &e),
    }
}

/// `PRAGMA quick_check` of the whole database: `Some(problem)` when it is damaged.
pub fn damaged(c: &Connection) -> Option<String> {
    match c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
        Ok(s) if s == "ok" => None,
        Ok(s) => Some(s),
        Err(e) => Some(e.to_string()),
    }
}

/// Moves the database aside (after `e`) and opens a new, empty one.
fn rebuild(dir: &Path, e: &dyn std::fmt::Display) -> Result<Connection, IndexError> {
    let path = db_path(dir);
    let aside = dir.join(format!("index.sqlite.unreadable-{}", wiretrail_log::store::now_ns()));
    tracing::warn!(error = %e, moved_to = %aside.display(), "index database unreadable; rebuilding it from the log");
    if let Err(e) = std::fs::rename(&path, &aside) {
        tracing::warn!(error = %e, "could not move the unreadable index aside; removing it");
        let _ = std::fs::remove_file(&path);
    }
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("index.sqlite{ext}")));
    }
    open(dir)
}

/// Number of leaves indexed according to the database.
pub fn indexed(c: &Connection) -> Result<u64, rusqlite::Error> {
    c.query_row("SELECT COALESCE((SELECT v FROM meta WHERE k='indexed'), 0)", [], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
}

/// Indexes leaves `from..to` of the log in one transaction, updating the
/// inventory and raising alerts through `tracker`.
pub fn index_range(
    c: &mut Connection,
    shared: &Log,
    tracker: &mut Tracker,
    from: u64,
    to: u64,
) -> Result<(), IndexError> {
    let chunk = feed::read(shared, from, to)?;
    index_leaves(c, &db_path(shared.dir()), tracker, &chunk.leaves, to)
}

/// Indexes decoded `leaves` in one transaction that also moves the
/// `indexed` mark to `to` (the end of the range they were read from).
pub(crate) fn index_leaves<'a>(
    c: &mut Connection,
    path: &Path,
    tracker: &mut Tracker,
    leaves: impl IntoIterator<Item = &'a (u64, StoredLeaf)>,
    to: u64,
) -> Result<(), IndexError> {
    let err = |source| IndexError::Sqlite { path: path.to_path_buf(), source };
    let tx = c.transaction().map_err(err)?;
    let (swept, alerts) = {
        // OR IGNORE, not OR REPLACE: a leaf's row never changes, and a REPLACE
        // statement keeps a statement journal (a page copy per page it touches).
        let mut rec = Inserter::new(&tx, "INSERT OR IGNORE INTO records(leaf,t,dim)", 3).map_err(err)?;
        // OR IGNORE: both ends of a two-witness record may have the same pair.
        let mut idn = Inserter::new(&tx, "INSERT OR IGNORE INTO identity(g,kv,t,leaf)", 4).map_err(err)?;
        let mut ends = Inserter::new(&tx, "INSERT OR IGNORE INTO endpoints(g,addr,port,t,leaf)", 5).map_err(err)?;
        let mut spans = gens::Spans::default();
        let mut dims = dims::Dims::default();
        let mut pass = tracker.pass(&tx);
        let empty = Record::default();
        let mut kv = String::new();
        for (i, leaf) in leaves {
            let i = *i;
            if let Some(e) = &leaf.entry {
                // The collector's own entries: searchable by kind, some raise alerts.
                let proto = format!("entry:{}", e.kind);
                let dim = dims.id(&tx, &leaf.agent_id, "", &proto).map_err(err)?;
                rec.row(&[Col::Int(i as i64), Col::Int(e.time_ns), Col::Int(dim)]).map_err(err)?;
                pass.observe_entry(i, e).map_err(err)?;
                crate::review::index_entry(&tx, i, e).map_err(err)?;
                continue;
            }
            let r = leaf.record.as_ref().unwrap_or(&empty);
            pass.observe(i, r).map_err(err)?;
            pass.observe_agent(i, &leaf.agent_id, r).map_err(err)?;
            let dim = dims.id(&tx, &leaf.agent_id, &r.host, &r.app_protocol).map_err(err)?;
            rec.row(&[Col::Int(i as i64), Col::Int(r.capture_time_ns), Col::Int(dim)]).map_err(err)?;
            // Both ends of a two-witness record: a search by either finds it.
            let (g, t) = (gens::of(i), r.capture_time_ns);
            // Once per record, whether or not it has rows below: a span only
            // has to cover its generation's rows, and a wider one costs one seek.
            spans.note(g, t);
            for side in wiretrail_log::sides::sides(r) {
                for (k, v) in side.identity {
                    kv.clear();
                    kv.push_str(k);
                    kv.push('=');
                    kv.push_str(v);
                    idn.row(&[Col::Int(g), Col::Text(&kv), Col::Int(t), Col::Int(i as i64)]).map_err(err)?;
                }
                if let Some(e) = side.remote
                    && !e.address.is_empty()
                {
                    let row =
                        [Col::Int(g), Col::Text(&e.address), Col::Int(e.port.into()), Col::Int(t), Col::Int(i as i64)];
                    ends.row(&row).map_err(err)?;
                }
            }
        }
        for ins in [&mut rec, &mut idn, &mut ends] {
            ins.finish().map_err(err)?;
        }
        spans.save(&tx).map_err(err)?;
        pass.finish().map_err(err)?
    };
    tx.execute("INSERT OR REPLACE INTO meta(k,v) VALUES ('indexed', ?)", [to as i64]).map_err(err)?;
    tx.execute("INSERT OR REPLACE INTO meta(k,v) VALUES ('inventory', 1)", []).map_err(err)?;
    tx.execute("INSERT OR REPLACE INTO meta(k,v) VALUES ('schema', ?)", [SCHEMA_VERSION]).map_err(err)?;
    tx.commit().map_err(err)?;
    tracker.committed(swept);
    for a in &alerts {
        crate::alerts::log(a);
    }
    Ok(())
}

/// Progress of the indexer, shared with ingest (back-pressure) and queries.
#[derive(Default, Debug)]
pub struct IndexProgress {
    /// Leaves indexed.
    pub indexed: AtomicU64,
    /// Set to stop the indexer thread.
    pub stop: AtomicBool,
    /// Index transactions that failed (each is retried).
    pub failures: AtomicU64,
    /// The lag (records) ingest may reach before it waits: set by the
    /// indexer from its rate ([`pace`]); 0 until the indexer starts.
    pub lag_limit: AtomicU64,
}

impl IndexProgress {
    /// Whether ingest must wait: the durable log of `size` leaves is further
    /// ahead of the index than the lag limit.
    pub fn behind(&self, size: u64) -> bool {
        let limit = match self.lag_limit.load(Ordering::Acquire) {
            0 => IndexConfig::default().max_lag,
            l => l,
        };
        size.saturating_sub(self.indexed.load(Ordering::Acquire)) > limit
    }
}

/// Spawns the indexer thread following the committed log; shadow identities
/// are judged against `registry`.
pub fn spawn(
    shared: Arc<Log>,
    config: IndexConfig,
    progress: Arc<IndexProgress>,
    registry: Arc<RegistryHandle>,
) -> Result<std::thread::JoinHandle<()>, IndexError> {
    let mut c = open_or_rebuild(shared.dir())?;
    let path = db_path(shared.dir());
    let mut done =
        resume_point(&c, shared.size()).map_err(|source| IndexError::Sqlite { path: path.clone(), source })?;
    let mut tracker = Tracker::new(registry);
    progress.indexed.store(done, Ordering::Release);
    let mut rate = pace::Rate::default();
    progress.lag_limit.store(rate.lag_limit(&config), Ordering::Release);
    Ok(std::thread::Builder::new()
        .name("wt-index".into())
        .spawn(move || {
            if let Some(problem) = damaged(&c) {
                // Searches meanwhile read the log beyond `indexed`: set it first.
                progress.indexed.store(0, Ordering::Release);
                drop(c);
                c = match rebuild(shared.dir(), &problem) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "ALERT index_unavailable: the index cannot be rebuilt; searches read the log");
                        return;
                    }
                };
                done = 0;
                tracker = Tracker::new(tracker.registry());
            }
            // The indexer's page cache (64 MiB): the pages its inserts land on stay
            // in memory instead of being read back from the OS for each insert.
            if let Err(e) = c.pragma_update(None, "cache_size", -65536) {
                tracing::warn!(error = %e, "could not enlarge the indexer's page cache");
            }
            // WAL checkpoints on their own thread (automatic ones stay on if it cannot start).
            let checkpointer = wal::spawn(shared.dir(), progress.clone())
                .inspect_err(|e| tracing::warn!(error = %e, "index WAL checkpoints stay in the indexer thread"))
                .ok();
            if checkpointer.is_some()
                && let Err(e) = wal::manual(&c)
            {
                tracing::warn!(error = %e, "automatic index WAL checkpoints stay on");
            }
            let feed = Feed::spawn(shared.clone(), done, progress.clone());
            let wal_file = wal::wal_path(shared.dir());
            let rows = config.txn_rows.max(1) as u64;
            // Leaves read but not yet committed, chunk by chunk as the feed
            // decoded them (one vector of ~20,000 decoded leaves, regrown for
            // every transaction, cost ~20 % of the indexer in copies and page
            // faults), and the end of the range they cover.
            let mut batch: Vec<Vec<(u64, StoredLeaf)>> = Vec::new();
            let mut batch_to = done;
            // When the batch's first leaves arrived: the indexer is busy from then until its commit.
            let mut busy_since = std::time::Instant::now();
            loop {
                if progress.stop.load(Ordering::Acquire) {
                    break;
                }
                // Gather up to a transaction's worth of what the feed has read.
                if batch_to - done < rows {
                    let first = if batch_to == done { feed.next(FEED_WAIT) } else { feed.ready() };
                    match first {
                        Some(Ok(chunk)) => {
                            debug_assert_eq!(chunk.from, batch_to, "the feed reads in order");
                            if batch_to == done {
                                busy_since = std::time::Instant::now();
                            }
                            batch_to = chunk.to;
                            batch.push(chunk.leaves);
                            continue;
                        }
                        Some(Err(e)) => {
                            progress.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, from = batch_to, "reading the log for the index failed; retrying in 1 s");
                        }
                        None => {}
                    }
                }
                if batch_to == done {
                    continue;
                }
                match index_leaves(&mut c, &path, &mut tracker, batch.iter().flatten(), batch_to) {
                    Ok(()) => {
                        rate.observe(batch_to - done, busy_since.elapsed());
                        progress.lag_limit.store(rate.lag_limit(&config), Ordering::Release);
                        done = batch_to;
                        for leaves in batch.drain(..) {
                            feed.recycle(leaves);
                        }
                        progress.indexed.store(done, Ordering::Release);
                        if let Err(e) = wal::bound(&c, &wal_file) {
                            tracing::warn!(error = %e, "truncating the index's WAL failed; retried after the next commit");
                        }
                    }
                    Err(e) => {
                        // The same leaves are indexed again: the failed transaction was rolled back.
                        progress.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, from = done, "indexing failed; retrying in 1 s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
            drop(feed);
            if let Some(h) = checkpointer {
                let _ = h.join();
            }
        })
        .expect("spawning indexer"))
}
