//! Multi-row inserts for the indexer.
//!
//! Each execution of a one-row `INSERT` costs the indexer about as much
//! again as the row itself: the statement is reset, its parameters bound,
//! its cursors opened and closed and the VDBE halted (about a quarter of the
//! indexer's time in a profile of a 1M-record rebuild). The indexer's rows
//! therefore go [`ROWS`] at a time through one `INSERT ... VALUES (..), (..)`;
//! the rows left at the end of a transaction go through the one-row form.
//! Rows wait in a buffer the inserter keeps (integers, and text in one
//! string), so nothing is allocated per row.

use rusqlite::{CachedStatement, Connection};

/// Rows per multi-row statement.
pub(crate) const ROWS: usize = 32;

/// A value of a waiting row: an integer, or a range of the text buffer.
#[derive(Clone, Copy)]
enum Val {
    Int(i64),
    Text(usize, usize),
}

/// Inserts rows of `cols` columns into one table, [`ROWS`] per statement.
pub(crate) struct Inserter<'c> {
    one: CachedStatement<'c>,
    many: CachedStatement<'c>,
    cols: usize,
    vals: Vec<Val>,
    text: String,
}

/// One column value handed to [`Inserter::row`].
#[derive(Clone, Copy)]
pub(crate) enum Col<'a> {
    /// An integer.
    Int(i64),
    /// Text.
    Text(&'a str),
}

impl<'c> Inserter<'c> {
    /// An inserter for `head` (e.g. `INSERT OR IGNORE INTO t(a,b)`) with `cols` columns.
    pub(crate) fn new(c: &'c Connection, head: &str, cols: usize) -> rusqlite::Result<Inserter<'c>> {
        let row = format!("({})", vec!["?"; cols].join(","));
        let one = c.prepare_cached(&format!("{head} VALUES {row}"))?;
        let many = c.prepare_cached(&format!("{head} VALUES {}", vec![row; ROWS].join(",")))?;
        Ok(Inserter { one, many, cols, vals: Vec::with_capacity(ROWS * cols), text: String::new() })
    }

    /// Adds one row (`cols` values); executes a statement when [`ROWS`] are waiting.
    pub(crate) fn row(&mut self, values: &[Col<'_>]) -> rusqlite::Result<()> {
        assert_eq!(values.len(), self.cols, "a row of {} values for {} columns", values.len(), self.cols);
        for v in values {
            self.vals.push(match *v {
                Col::Int(i) => Val::Int(i),
                Col::Text(s) => {
                    let start = self.text.len();
                    self.text.push_str(s);
                    Val::Text(start, s.len())
                }
            });
        }
        if self.vals.len() == ROWS * self.cols {
            Self::execute(&mut self.many, &self.vals, &self.text)?;
            self.vals.clear();
            self.text.clear();
        }
        Ok(())
    }

    /// Inserts the rows still waiting (one statement each).
    pub(crate) fn finish(&mut self) -> rusqlite::Result<()> {
        for row in self.vals.chunks(self.cols) {
            Self::execute(&mut self.one, row, &self.text)?;
        }
        self.vals.clear();
        self.text.clear();
        Ok(())
    }

    fn execute(stmt: &mut CachedStatement<'_>, vals: &[Val], text: &str) -> rusqlite::Result<()> {
        for (k, v) in vals.iter().enumerate() {
            match *v {
                Val::Int(i) => stmt.raw_bind_parameter(k + 1, i)?,
                Val::Text(start, len) => stmt.raw_bind_parameter(k + 1, &text[start..start + len])?,
            }
        }
        stmt.raw_execute()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_inserted_whole_batches_and_the_rest() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT NOT NULL)").unwrap();
        let n = ROWS * 2 + 5;
        {
            let mut ins = Inserter::new(&c, "INSERT OR IGNORE INTO t(a,b)", 2).unwrap();
            for i in 0..n {
                let b = format!("text {i}");
                ins.row(&[Col::Int(i as i64), Col::Text(&b)]).unwrap();
                // A duplicate key is ignored, as the one-row form ignores it.
                if i == 3 {
                    ins.row(&[Col::Int(3), Col::Text("dup")]).unwrap();
                }
            }
            ins.finish().unwrap();
        }
        let rows: Vec<(i64, String)> = c
            .prepare("SELECT a, b FROM t ORDER BY a")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), n);
        assert!(rows.iter().enumerate().all(|(i, (a, b))| *a == i as i64 && *b == format!("text {i}")), "{rows:?}");
    }
}
