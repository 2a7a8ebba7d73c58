//! Reading from ClickHouse alone: search across every log stored there (the
//! verification of each log is in [`super::verify`]).

use prost::Message;
use wiretrail_log::filter::Query;
use wiretrail_proto::v1::{Filter, StoredLeaf};

use super::schema::LEAVES;
use super::writer::LeafRow;
use super::{ClickHouseConfig, ClickHouseError};

/// Candidate rows [`Reader::search_matching`] reads at most (by default)
/// before it gives up on finding its limit of records the filter matches.
pub const MAX_CANDIDATES: u64 = 200_000;

/// Candidate rows per ClickHouse query of [`Reader::search_matching`].
const PAGE: u64 = 10_000;

/// A read-only ClickHouse handle.
pub struct Reader {
    pub(super) client: clickhouse::Client,
    /// Candidate rows a search reads at most ([`MAX_CANDIDATES`] unless set).
    pub max_candidates: u64,
}

/// One search hit.
pub struct Hit {
    /// The log.
    pub origin: String,
    /// Leaf index in that log.
    pub leaf_index: u64,
    /// Capture (or entry) time, the first key of the search order.
    pub time_ns: i64,
    /// The decoded leaf.
    pub leaf: StoredLeaf,
    /// The leaf bytes as stored.
    pub bytes: Vec<u8>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'").replace('?', "??")
}

impl Reader {
    /// Connects (checks the version).
    pub async fn open(cfg: &ClickHouseConfig) -> Result<Reader, ClickHouseError> {
        let c = super::client(cfg).with_database(&cfg.database);
        let v = super::server_version(&c).await?;
        Ok(Reader { client: c.with_validation(v.validation()), max_candidates: MAX_CANDIDATES })
    }

    /// The records `q` matches across all logs, oldest first, at most its
    /// limit. ClickHouse's rows are candidates (its text and identity tests
    /// are looser than the filter's); they are read page by page in the
    /// search order, each page starting after the last row of the one
    /// before, and kept where the filter matches, until the limit is reached
    /// or the rows run out. More than `max_candidates` rows read is an error
    /// ([`ClickHouseError::TooBroad`]), never a short answer.
    pub async fn search_matching(&self, q: &Query) -> Result<Vec<Hit>, ClickHouseError> {
        let (limit, page) = (q.limit, PAGE.min(self.max_candidates.max(1)));
        let (mut out, mut after, mut read) = (Vec::new(), None, 0u64);
        let query = std::sync::Arc::new(q.clone());
        loop {
            let rows = self.rows(&q.f, after.as_ref(), page).await?;
            let n = rows.len() as u64;
            read += n;
            if let Some(last) = rows.last() {
                after = Some((last.time_ns, last.origin.clone(), last.leaf_index));
            }
            // Decoding and matching a page is CPU work: off the async workers.
            let (q2, want) = (query.clone(), (limit as usize).saturating_sub(out.len()));
            let matched = tokio::task::spawn_blocking(move || -> Result<Vec<Hit>, ClickHouseError> {
                let mut m = Vec::new();
                for r in rows {
                    let h = hit(r)?;
                    if q2.matches(&h.leaf) {
                        m.push(h);
                        if m.len() == want {
                            break;
                        }
                    }
                }
                Ok(m)
            })
            .await
            .map_err(|e| ClickHouseError::Task(e.to_string()))??;
            out.extend(matched);
            if out.len() as u64 == limit {
                return Ok(out);
            }
            if n < page {
                return Ok(out);
            }
            if read >= self.max_candidates {
                return Err(ClickHouseError::TooBroad { read, found: out.len(), limit });
            }
        }
    }

    /// Candidate rows for `f` across all logs, oldest first (one per (origin,
    /// leaf)), at most the filter's limit: what ClickHouse's own tests select.
    pub async fn search(&self, f: &Filter) -> Result<Vec<Hit>, ClickHouseError> {
        let rows =
            self.rows(f, None, if f.limit == 0 { wiretrail_log::filter::DEFAULT_LIMIT } else { f.limit }).await?;
        rows.into_iter().map(hit).collect()
    }

    /// At most `limit` candidate rows for `f` after the row `after` (time,
    /// origin, leaf index) in the search order.
    async fn rows(
        &self,
        f: &Filter,
        after: Option<&(i64, String, u64)>,
        limit: u64,
    ) -> Result<Vec<LeafRow>, ClickHouseError> {
        let mut w = vec!["1".to_string()];
        if f.from_time_ns != 0 {
            w.push(format!("time_ns >= {}", f.from_time_ns));
        }
        if f.to_time_ns != 0 {
            w.push(format!("time_ns < {}", f.to_time_ns));
        }
        for (col, v) in [("agent_id", &f.agent_id), ("host", &f.host), ("protocol", &f.app_protocol)] {
            if !v.is_empty() {
                w.push(format!("{col} = '{}'", esc(v)));
            }
        }
        for id in &f.identity {
            w.push(format!("has(splitByChar('\\n', identity), '{}')", esc(id)));
        }
        if !f.peer_address.is_empty() {
            let port = if f.peer_port != 0 { f.peer_port.to_string() } else { "%".into() };
            w.push(format!("peer LIKE '{}:{port}'", esc(&f.peer_address).replace('%', "\\%")));
        }
        if !f.payload_text.is_empty() {
            w.push(format!("position(leaf, '{}') > 0", esc(&f.payload_text)));
        }
        if f.entry_kind == "*" {
            // As the in-memory filter: every entry but the access entries.
            w.push("kind LIKE 'entry:%' AND kind != 'entry:access'".into());
        } else if !f.entry_kind.is_empty() {
            w.push(format!("kind = 'entry:{}'", esc(&f.entry_kind)));
        } else {
            w.push("kind = 'record'".into());
        }
        if let Some((t, origin, leaf)) = after {
            let o = esc(origin);
            w.push(format!(
                "(time_ns > {t} OR (time_ns = {t} AND (origin > '{o}' OR (origin = '{o}' AND leaf_index > {leaf}))))"
            ));
        }
        let sql = format!(
            "SELECT ?fields FROM {LEAVES} WHERE {} ORDER BY time_ns, origin, leaf_index LIMIT 1 BY origin, leaf_index LIMIT {limit}",
            w.join(" AND ")
        );
        self.client.query(&sql).fetch_all().await.map_err(ClickHouseError::query("search"))
    }
}

/// The hit of a row: its leaf decoded.
fn hit(r: LeafRow) -> Result<Hit, ClickHouseError> {
    let leaf = StoredLeaf::decode(r.leaf.as_slice()).map_err(|e| {
        ClickHouseError::Store(wiretrail_log::store::StoreError::Inconsistent(format!(
            "{} leaf {} does not decode: {e}",
            r.origin, r.leaf_index
        )))
    })?;
    Ok(Hit { origin: r.origin, leaf_index: r.leaf_index, time_ns: r.time_ns, leaf, bytes: r.leaf })
}
