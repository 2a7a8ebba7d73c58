//! The index's layout: its tables, the version of their layout, and what
//! happens to an index built with another (it is recreated empty and
//! rebuilt from the log: the index is derived).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::indexed;

/// The index's own tables (the inventory, alerts and review marks add theirs).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dims(id INTEGER PRIMARY KEY, agent TEXT NOT NULL, host TEXT NOT NULL,
  proto TEXT NOT NULL, UNIQUE(agent, host, proto));
CREATE TABLE IF NOT EXISTS records(leaf INTEGER PRIMARY KEY, t INTEGER NOT NULL, dim INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_t ON records(t);
CREATE INDEX IF NOT EXISTS records_dim ON records(dim, t);
CREATE TABLE IF NOT EXISTS gens(g INTEGER PRIMARY KEY, t_min INTEGER NOT NULL, t_max INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS identity(g INTEGER NOT NULL, kv TEXT NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL,
  PRIMARY KEY(g, kv, t, leaf)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS endpoints(g INTEGER NOT NULL, addr TEXT NOT NULL, port INTEGER NOT NULL,
  t INTEGER NOT NULL, leaf INTEGER NOT NULL, PRIMARY KEY(g, addr, t, leaf, port)) WITHOUT ROWID;
";

/// Version of the index layout; an index built with another is rebuilt from the log.
/// 2: both ends of two-witness records are indexed (identities and endpoints).
/// 3: `identity` and `endpoints` are their own index (WITHOUT ROWID), and
///    `records` has no peer columns or index (peer searches go through
///    `endpoints`): three B-tree inserts fewer per record.
/// 4: `identity` and `endpoints` lead their keys with the leaf's generation
///    ([`gens`]), whose capture-time spans are kept in `gens`.
/// 5: `records` keeps a [`dims`] id instead of agent, host and protocol, with
///    one index `(dim, t)` instead of three: two B-tree inserts fewer per record.
pub(super) const SCHEMA_VERSION: i64 = 5;

/// Drops what an older layout has and this one has not (or has differently);
/// [`SCHEMA`] then creates the current tables.
/// (Dropping a table drops its indexes.)
const MIGRATE: &str = "DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS identity; DROP TABLE IF EXISTS endpoints; \
     DROP TABLE IF EXISTS gens; DROP TABLE IF EXISTS dims;";

/// Drops the tables of an index whose `schema` mark names an older layout,
/// and its marks, so that [`SCHEMA`] can create this layout's tables (an
/// index of this one or none is left as it is). Readers open the index too:
/// the check is a read, and only a stale index takes the write lock (and is
/// checked again under it). The indexer then empties the rest ([`resume_point`]).
pub(super) fn drop_older(c: &mut Connection) -> Result<(), rusqlite::Error> {
    fn stored(c: &Connection) -> Result<Option<i64>, rusqlite::Error> {
        let has_meta: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(None);
        }
        c.query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0)).optional()
    }
    let older = |v: Option<i64>| matches!(v, Some(v) if v != SCHEMA_VERSION);
    if !older(stored(c)?) {
        return Ok(());
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let was = stored(&tx)?;
    if older(was) {
        tracing::warn!(layout = was, current = SCHEMA_VERSION, "the index has an older layout; recreating it");
        tx.execute_batch(MIGRATE)?;
        tx.execute("DELETE FROM meta WHERE k IN ('indexed', 'schema')", [])?;
    }
    tx.commit()
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

/// Recreates the index's tables in this layout, empty (it is then rebuilt from the log).
fn migrate(c: &Connection) -> Result<(), rusqlite::Error> {
    c.execute_batch(&format!("BEGIN; {MIGRATE} {SCHEMA} COMMIT;"))?;
    clear(c)
}

/// Empties the index (it is then rebuilt from the log).
pub fn clear(c: &Connection) -> Result<(), rusqlite::Error> {
    // One transaction: rows left without their `indexed` mark would be indexed again.
    c.execute_batch(&format!(
        "BEGIN; DELETE FROM records; DELETE FROM identity; DELETE FROM endpoints; DELETE FROM gens; DELETE FROM dims; DELETE FROM meta; \
         DELETE FROM alerts; DELETE FROM clock_state; {} {} COMMIT;",
        crate::review::CLEAR,
        crate::inventory::CLEAR
    ))
}

/// Where indexing resumes in a log of `log_size` leaves: the `indexed` mark,
/// or 0 after emptying an index that is ahead of the log, or recreating the
/// tables of one with another layout (or none yet).
pub(super) fn resume_point(c: &Connection, log_size: u64) -> Result<u64, rusqlite::Error> {
    let done = indexed(c)?;
    let current = has_inventory(c)?;
    if current && done <= log_size {
        return Ok(done);
    }
    if done > 0 {
        tracing::warn!(
            indexed = done,
            log = log_size,
            layout_current = current,
            "index is ahead of the log or has an older layout; rebuilding it"
        );
    }
    if current { clear(c) } else { migrate(c) }?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{db_path, open};

    /// The layout of index version 2.
    const V2: &str = "
CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE records(leaf INTEGER PRIMARY KEY, t INTEGER NOT NULL, agent TEXT NOT NULL, host TEXT NOT NULL,
  peer_addr TEXT NOT NULL, peer_port INTEGER NOT NULL, proto TEXT NOT NULL);
CREATE INDEX records_peer ON records(peer_addr, t);
CREATE TABLE identity(kv TEXT NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL);
CREATE INDEX identity_kv ON identity(kv, t, leaf);
CREATE TABLE endpoints(addr TEXT NOT NULL, port INTEGER NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL);
CREATE INDEX endpoints_addr ON endpoints(addr, t, leaf);
INSERT INTO meta VALUES ('indexed', 3), ('inventory', 1), ('schema', 2);
INSERT INTO records VALUES (0, 1, 'a', 'h', '10.0.0.1', 80, 'http'), (1, 2, 'a', 'h', '', 0, ''), (2, 3, 'a', 'h', '', 0, '');
INSERT INTO identity VALUES ('pod=x', 1, 0);
INSERT INTO endpoints VALUES ('10.0.0.1', 80, 1, 0);
";

    /// The layout of index version 3 (no generations).
    const V3: &str = "
CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE records(
  leaf INTEGER PRIMARY KEY, t INTEGER NOT NULL, agent TEXT NOT NULL, host TEXT NOT NULL, proto TEXT NOT NULL);
CREATE INDEX records_t ON records(t);
CREATE INDEX records_agent ON records(agent, t);
CREATE INDEX records_host ON records(host, t);
CREATE INDEX records_proto ON records(proto, t);
CREATE TABLE identity(kv TEXT NOT NULL, t INTEGER NOT NULL, leaf INTEGER NOT NULL,
  PRIMARY KEY(kv, t, leaf)) WITHOUT ROWID;
CREATE TABLE endpoints(addr TEXT NOT NULL, port INTEGER NOT NULL, t INTEGER NOT NULL,
  leaf INTEGER NOT NULL, PRIMARY KEY(addr, t, leaf, port)) WITHOUT ROWID;
INSERT INTO meta VALUES ('indexed', 3), ('inventory', 1), ('schema', 3);
INSERT INTO records VALUES (0, 1, 'a', 'h', 'http'), (1, 2, 'a', 'h', ''), (2, 3, 'a', 'h', '');
INSERT INTO identity VALUES ('pod=x', 1, 0);
INSERT INTO endpoints VALUES ('10.0.0.1', 80, 1, 0);
";

    fn sql_of(c: &Connection, name: &str) -> Option<String> {
        c.query_row("SELECT sql FROM sqlite_master WHERE name = ?", [name], |r| r.get(0)).ok()
    }

    #[test]
    fn an_index_of_an_older_layout_is_recreated_empty_in_this_one() {
        for (old, version) in [(V2, 2), (V3, 3)] {
            let dir = tempfile::tempdir().unwrap();
            Connection::open(db_path(dir.path())).unwrap().execute_batch(old).unwrap();
            let c = open(dir.path()).unwrap();
            assert_eq!(indexed(&c).unwrap(), 0, "v{version}: open drops the older layout and its mark");
            assert_eq!(resume_point(&c, 10).unwrap(), 0);
            for (t, key) in
                [("identity", "PRIMARY KEY(g, kv, t, leaf)"), ("endpoints", "PRIMARY KEY(g, addr, t, leaf, port)")]
            {
                let sql = sql_of(&c, t).unwrap();
                assert!(sql.contains(key) && sql.contains("WITHOUT ROWID"), "v{version} {t}: {sql}");
            }
            assert!(sql_of(&c, "records").unwrap().contains("dim INTEGER"), "v{version}: records keep a dims id");
            for gone in
                ["records_peer", "identity_kv", "endpoints_addr", "records_agent", "records_host", "records_proto"]
            {
                assert_eq!(sql_of(&c, gone), None, "v{version}: {gone} is dropped");
            }
            let rows: i64 = c
                .query_row(
                    "SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM identity) \
                     + (SELECT count(*) FROM endpoints) + (SELECT count(*) FROM gens) + (SELECT count(*) FROM dims)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(rows, 0, "v{version}: rebuilt from the log, so emptied first");
            assert_eq!(indexed(&c).unwrap(), 0);
        }
    }

    #[test]
    fn a_current_index_resumes_at_its_mark_unless_it_is_ahead_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path()).unwrap();
        assert_eq!(resume_point(&c, 10).unwrap(), 0);
        c.execute_batch(&format!(
            "INSERT INTO meta VALUES ('indexed', 7), ('inventory', 1), ('schema', {SCHEMA_VERSION});
             INSERT INTO records VALUES (0, 1, 1);"
        ))
        .unwrap();
        assert_eq!(resume_point(&c, 10).unwrap(), 7);
        assert_eq!(resume_point(&c, 7).unwrap(), 7);
        // A log shorter than the mark (restored from an older copy): start over.
        assert_eq!(resume_point(&c, 5).unwrap(), 0);
        assert_eq!(c.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    }
}
