//! Dimensions of the `records` table: each distinct (agent, host, protocol)
//! is a row of `dims`, and a record keeps only its id.
//!
//! Why: those three columns each had an index `(column, t)`, so a record cost
//! five B-tree inserts (the table and four indexes) and carried the three
//! strings four times. Their combinations are few (agents × hosts ×
//! protocols seen), so one index `(dim, t)` serves a search by any of them:
//! the search names the matching ids (`dim IN (SELECT id FROM dims WHERE ...)`)
//! and seeks each. That is three B-tree inserts per record instead of five.

use rusqlite::Transaction;

/// Three lookups per record on the indexer thread: foldhash, not SipHash.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The ids of the dimensions one transaction used (looked up or added).
#[derive(Debug, Default)]
pub struct Dims {
    /// agent → host → protocol → id: nested so a record's strings are looked
    /// up borrowed, and cloned only the first time a combination is seen.
    ids: Map<String, Map<String, Map<String, i64>>>,
}

impl Dims {
    /// The id of (agent, host, proto), adding a row for a combination not seen
    /// before. Ids come from `tx`, so a `Dims` serves one transaction only.
    pub fn id(&mut self, tx: &Transaction<'_>, agent: &str, host: &str, proto: &str) -> Result<i64, rusqlite::Error> {
        if let Some(id) = self.ids.get(agent).and_then(|h| h.get(host)).and_then(|p| p.get(proto)) {
            return Ok(*id);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO dims(agent, host, proto) VALUES (?1, ?2, ?3)")?
            .execute((agent, host, proto))?;
        let id = tx
            .prepare_cached("SELECT id FROM dims WHERE agent = ?1 AND host = ?2 AND proto = ?3")?
            .query_row((agent, host, proto), |r| r.get(0))?;
        self.ids
            .entry(agent.to_string())
            .or_default()
            .entry(host.to_string())
            .or_default()
            .insert(proto.to_string(), id);
        Ok(id)
    }
}

/// SQL condition restricting `col` (a `dim` column) to the dimensions whose
/// columns meet `conds` (conditions on `agent`, `host` and `proto`).
pub fn filter(col: &str, conds: &[String]) -> String {
    format!("{col} IN (SELECT id FROM dims WHERE {})", conds.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn each_combination_gets_one_id_across_transactions() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE dims(id INTEGER PRIMARY KEY, agent TEXT NOT NULL, host TEXT NOT NULL, proto TEXT NOT NULL,
               UNIQUE(agent, host, proto));",
        )
        .unwrap();
        let combos: Vec<(String, String, String)> =
            (0..40).map(|i| (format!("a{}", i % 20), "h".to_string(), format!("p{}", i % 2))).collect();
        let mut first = Vec::new();
        for round in 0..2 {
            let tx = c.transaction().unwrap();
            let mut d = Dims::default();
            let ids: Vec<i64> = combos.iter().map(|(a, h, p)| d.id(&tx, a, h, p).unwrap()).collect();
            // Asked again in the same transaction: from memory, the same ids.
            let again: Vec<i64> = combos.iter().map(|(a, h, p)| d.id(&tx, a, h, p).unwrap()).collect();
            assert_eq!(ids, again);
            tx.commit().unwrap();
            if round == 0 {
                first = ids;
            } else {
                assert_eq!(ids, first, "the same ids in a later transaction");
            }
        }
        let distinct: std::collections::BTreeSet<i64> = first.iter().copied().collect();
        assert_eq!(distinct.len(), 20, "a0..a19 each with one protocol (i % 20 fixes i % 2)");
        let rows: i64 = c.query_row("SELECT count(*) FROM dims", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 20);
    }
}
