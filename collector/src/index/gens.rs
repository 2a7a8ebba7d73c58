//! Generations of the searched-key tables: `identity` and `endpoints` lead
//! their keys with `g`, the leaf's generation (`leaf >> GEN_BITS`).
//!
//! Why: those tables are keyed by what is searched (an identity pair, a peer
//! address), so without a leading generation every record inserts at one of
//! as many places as there are distinct keys. With 65,536 peer addresses the
//! pages being inserted into outgrow any page cache past ~2M records; every
//! transaction then rewrites a page per row into the WAL, and ingest fell to
//! 41k records/s at 10M (BENCHMARKS.md). With the generation first, inserts
//! land only in the newest generation's part of each B-tree, whose size is
//! bounded by [`GEN_LEAVES`] whatever the log's size: the same key-ordered
//! searches, on a working set that stays in memory.
//!
//! Searches seek once per generation that can hold a match: `gens` keeps each
//! generation's capture-time span, so a search with a time window seeks only
//! the generations overlapping it ([`filter`]).

use std::collections::BTreeMap;

use rusqlite::Transaction;

/// log2 of the leaves per generation.
pub const GEN_BITS: u32 = 16;
/// Leaves per generation.
pub const GEN_LEAVES: u64 = 1 << GEN_BITS;

/// The generation of leaf `leaf`.
pub fn of(leaf: u64) -> i64 {
    (leaf / GEN_LEAVES) as i64
}

/// Capture-time spans of the generations a transaction wrote into.
#[derive(Debug, Default)]
pub struct Spans(BTreeMap<i64, (i64, i64)>);

impl Spans {
    /// Notes a row of generation `g` at capture time `t`.
    pub fn note(&mut self, g: i64, t: i64) {
        let s = self.0.entry(g).or_insert((t, t));
        s.0 = s.0.min(t);
        s.1 = s.1.max(t);
    }

    /// Widens the stored spans by the noted ones (in the transaction that wrote the rows).
    pub fn save(&self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        let mut st = tx.prepare_cached(
            "INSERT INTO gens(g, t_min, t_max) VALUES (?1, ?2, ?3) ON CONFLICT(g) DO UPDATE \
             SET t_min = min(t_min, excluded.t_min), t_max = max(t_max, excluded.t_max)",
        )?;
        for (g, (lo, hi)) in &self.0 {
            st.execute((g, lo, hi))?;
        }
        Ok(())
    }
}

/// SQL condition restricting `col` (a `g` column) to the generations that
/// hold leaves in `(?1, ?2)` (the search's leaf bounds) and, when given,
/// capture times overlapping `[from, to)` (SQL expressions, e.g. parameters).
pub fn filter(col: &str, from: Option<&str>, to: Option<&str>) -> String {
    let mut conds = vec![format!("g BETWEEN (?1 + 1) >> {GEN_BITS} AND (?2 - 1) >> {GEN_BITS}")];
    if let Some(from) = from {
        conds.push(format!("t_max >= {from}"));
    }
    if let Some(to) = to {
        conds.push(format!("t_min < {to}"));
    }
    format!("{col} IN (SELECT g FROM gens WHERE {})", conds.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE gens(g INTEGER PRIMARY KEY, t_min INTEGER NOT NULL, t_max INTEGER NOT NULL);")
            .unwrap();
        c
    }

    fn gens_matching(c: &Connection, after: i64, before: i64, from: Option<i64>, to: Option<i64>) -> Vec<i64> {
        let sql = format!(
            "SELECT g FROM gens WHERE {} ORDER BY g",
            filter("g", from.map(|_| "?3"), to.map(|_| if from.is_some() { "?4" } else { "?3" }))
        );
        let mut args: Vec<i64> = vec![after, before];
        args.extend(from);
        args.extend(to);
        let mut st = c.prepare(&sql).unwrap();
        st.query_map(rusqlite::params_from_iter(args), |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn spans_only_widen_across_transactions() {
        let mut c = db();
        for batch in [vec![(0, 50), (0, 10), (1, 70)], vec![(0, 30), (1, 90), (1, 60)]] {
            let tx = c.transaction().unwrap();
            let mut s = Spans::default();
            for (g, t) in batch {
                s.note(g, t);
            }
            s.save(&tx).unwrap();
            tx.commit().unwrap();
        }
        let rows: Vec<(i64, i64, i64)> = c
            .prepare("SELECT g, t_min, t_max FROM gens ORDER BY g")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(0, 10, 50), (1, 60, 90)]);
    }

    #[test]
    fn the_filter_keeps_generations_in_the_leaf_bounds_and_overlapping_the_window() {
        let c = db();
        // Generation g spans capture times [100g, 100g + 50].
        for g in 0..4 {
            c.execute("INSERT INTO gens VALUES (?1, ?2, ?3)", (g, 100 * g, 100 * g + 50)).unwrap();
        }
        let last = (4 * GEN_LEAVES) as i64;
        assert_eq!(gens_matching(&c, -1, last, None, None), vec![0, 1, 2, 3]);
        // Leaf bounds are exclusive: after the last leaf of generation 0, before the first of 3.
        assert_eq!(gens_matching(&c, GEN_LEAVES as i64 - 1, 3 * GEN_LEAVES as i64, None, None), vec![1, 2]);
        assert_eq!(gens_matching(&c, GEN_LEAVES as i64 - 2, 3 * GEN_LEAVES as i64 + 1, None, None), vec![0, 1, 2, 3]);
        assert_eq!(gens_matching(&c, -1, 0, None, None), Vec::<i64>::new(), "nothing indexed");
        // The window [from, to) overlaps a span [t_min, t_max] when t_max >= from and t_min < to.
        assert_eq!(gens_matching(&c, -1, last, Some(150), Some(200)), vec![1]);
        assert_eq!(gens_matching(&c, -1, last, Some(151), Some(200)), Vec::<i64>::new());
        assert_eq!(gens_matching(&c, -1, last, Some(120), Some(201)), vec![1, 2]);
        assert_eq!(gens_matching(&c, -1, last, Some(250), None), vec![2, 3]);
        assert_eq!(gens_matching(&c, -1, last, None, Some(100)), vec![0]);
    }
}
