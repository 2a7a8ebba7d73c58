//! The search index: SQLite (bundled, WAL), derived from the log and rebuildable.
//!
//! The indexer thread follows the committed log and indexes in transactions;
//! `meta.indexed` is the number of leaves indexed. Queries read the index below
//! that mark and scan the log above it, so results are complete even while the
//! index lags. Ingest waits when the lag exceeds [`IndexConfig::max_lag`]; so
//! the index runs at most that many records behind the durable log.
//!
//! The same transactions maintain the identity inventory ([`crate::inventory`])
//! and the alerts ([`crate::alerts`]), so they too are rebuilt from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prost::Message;
use rusqlite::{Connection, params};
use wiretrail_proto::v1::StoredLeaf;

use crate::inventory::Tracker;
use crate::registry::RegistryHandle;
use crate::store::{Shared, StoreError};

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
    /// Records per index transaction.
    pub txn_rows: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig { max_lag: 1_000_000, txn_rows: 20_000 }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records(
  leaf INTEGER PRIMARY KEY, t INTEGER NOT NULL, agent TEXT NOT NULL, host TEXT NOT NULL,
  peer_addr TEXT NOT NULL, peer_port INTEGER NOT NULL, proto TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_t ON records(t);
CREATE INDEX IF NOT EXISTS records_agent ON records(agent, t);
CREATE INDEX IF NOT EXISTS records_host ON records(host, t);
CREATE INDEX IF NOT EXISTS records_peer ON records(peer_addr, t);
CREATE INDEX IF NOT EXISTS records_proto ON records(proto, t);
CREATE TABLE IF NOT EXISTS identity(kv TEXT NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS identity_kv ON identity(kv, t, leaf);
CREATE TABLE IF NOT EXISTS endpoints(addr TEXT NOT NULL, port INTEGER NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS endpoints_addr ON endpoints(addr, t, leaf);
";

/// Version of the index layout; an index built with another is rebuilt from the log.
/// 2: both ends of two-witness records are indexed (identities and endpoints).
const SCHEMA_VERSION: i64 = 2;

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
    c.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
    c.execute_batch(SCHEMA).map_err(err)?;
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
    let aside = dir.join(format!("index.sqlite.unreadable-{}", crate::store::now_ns()));
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

/// Whether the database was built with the inventory and this layout
/// (older indexes were not).
fn has_inventory(c: &Connection) -> Result<bool, rusqlite::Error> {
    c.query_row(
        "SELECT EXISTS(SELECT 1 FROM meta WHERE k='inventory') AND EXISTS(SELECT 1 FROM meta WHERE k='schema' AND v=?1)",
        [SCHEMA_VERSION],
        |r| r.get(0),
    )
}

/// Empties the index (it is then rebuilt from the log).
pub fn clear(c: &Connection) -> Result<(), rusqlite::Error> {
    c.execute_batch(
        "DELETE FROM records; DELETE FROM identity; DELETE FROM endpoints; DELETE FROM meta; DELETE FROM alerts; \
         DELETE FROM clock_state;",
    )?;
    c.execute_batch(crate::review::CLEAR)?;
    c.execute_batch(crate::inventory::CLEAR)
}

/// Indexes leaves `from..to` of the log in one transaction, updating the
/// inventory and raising alerts through `tracker`.
pub fn index_range(
    c: &mut Connection,
    shared: &Shared,
    tracker: &mut Tracker,
    from: u64,
    to: u64,
) -> Result<(), IndexError> {
    let path = db_path(shared.dir());
    let err = |source| IndexError::Sqlite { path: path.clone(), source };
    let tx = c.transaction().map_err(err)?;
    let (swept, alerts) = {
        let mut rec = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO records(leaf,t,agent,host,peer_addr,peer_port,proto) VALUES (?,?,?,?,?,?,?)",
            )
            .map_err(err)?;
        let mut idn = tx.prepare_cached("INSERT INTO identity(kv,t,leaf) VALUES (?,?,?)").map_err(err)?;
        let mut ends = tx.prepare_cached("INSERT INTO endpoints(addr,port,t,leaf) VALUES (?,?,?,?)").map_err(err)?;
        let mut pass = tracker.pass(&tx);
        for item in shared.iter(from, to)? {
            let (i, bytes) = item?;
            let leaf = StoredLeaf::decode(bytes.as_slice())
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
            if let Some(e) = &leaf.entry {
                // The collector's own entries: searchable by kind, some raise alerts.
                let proto = format!("entry:{}", e.kind);
                rec.execute(params![i as i64, e.time_ns, leaf.agent_id, "", "", 0, proto]).map_err(err)?;
                pass.observe_entry(i, e).map_err(err)?;
                crate::review::index_entry(&tx, i, e).map_err(err)?;
                continue;
            }
            let r = leaf.record.unwrap_or_default();
            pass.observe(i, &r).map_err(err)?;
            pass.observe_agent(i, &leaf.agent_id, &r).map_err(err)?;
            let remote = r.remote.clone().unwrap_or_default();
            rec.execute(params![
                i as i64,
                r.capture_time_ns,
                leaf.agent_id,
                r.host,
                remote.address,
                remote.port,
                r.app_protocol
            ])
            .map_err(err)?;
            // Both ends of a two-witness record: a search by either finds it.
            for side in crate::sides::sides(&r) {
                for (k, v) in side.identity {
                    idn.execute(params![format!("{k}={v}"), r.capture_time_ns, i as i64]).map_err(err)?;
                }
                if let Some(e) = side.remote
                    && !e.address.is_empty()
                {
                    ends.execute(params![e.address, e.port, r.capture_time_ns, i as i64]).map_err(err)?;
                }
            }
        }
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
}

/// Spawns the indexer thread following the committed log; shadow identities
/// are judged against `registry`.
pub fn spawn(
    shared: Arc<Shared>,
    config: IndexConfig,
    progress: Arc<IndexProgress>,
    registry: Arc<RegistryHandle>,
) -> Result<std::thread::JoinHandle<()>, IndexError> {
    let mut c = open_or_rebuild(shared.dir())?;
    let path = db_path(shared.dir());
    let mut done = indexed(&c).map_err(|source| IndexError::Sqlite { path: path.clone(), source })?;
    let inventoried = has_inventory(&c).map_err(|source| IndexError::Sqlite { path: path.clone(), source })?;
    if done > shared.size() || (done > 0 && !inventoried) {
        tracing::warn!(
            indexed = done,
            log = shared.size(),
            inventoried,
            "index is ahead of the log or predates the inventory; rebuilding it"
        );
        clear(&c).map_err(|source| IndexError::Sqlite { path: path.clone(), source })?;
        done = 0;
    }
    let mut tracker = Tracker::new(registry);
    progress.indexed.store(done, Ordering::Release);
    let mut watch = shared.subscribe();
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
            loop {
                if progress.stop.load(Ordering::Acquire) {
                    return;
                }
                let size = shared.size();
                if done >= size {
                    // Wait for new commits (or a stop request) without a runtime.
                    let _ = watch.borrow_and_update();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                let to = size.min(done + config.txn_rows as u64);
                match index_range(&mut c, &shared, &mut tracker, done, to) {
                    Ok(()) => {
                        done = to;
                        progress.indexed.store(done, Ordering::Release);
                    }
                    Err(e) => {
                        progress.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, from = done, "indexing failed; retrying in 1 s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
        })
        .expect("spawning indexer"))
}
