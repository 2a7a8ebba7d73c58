//! Reading from ClickHouse alone: search across every log stored there (the
//! verification of each log is in [`super::verify`]).

use prost::Message;
use wiretrail_proto::v1::{Filter, StoredLeaf};

use super::schema::LEAVES;
use super::writer::LeafRow;
use super::{ClickHouseConfig, ClickHouseError};

/// Records a search returns when its filter sets no limit.
pub const DEFAULT_LIMIT: u64 = 1000;

/// A read-only ClickHouse handle.
pub struct Reader {
    pub(super) client: clickhouse::Client,
}

/// One search hit.
pub struct Hit {
    /// The log.
    pub origin: String,
    /// Leaf index in that log.
    pub leaf_index: u64,
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
        Ok(Reader { client: c.with_validation(v.validation()) })
    }

    /// Records matching `f` across all logs, oldest first (one per (origin, leaf)).
    pub async fn search(&self, f: &Filter) -> Result<Vec<Hit>, ClickHouseError> {
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
        let limit = if f.limit == 0 { DEFAULT_LIMIT } else { f.limit };
        let sql = format!(
            "SELECT ?fields FROM {LEAVES} WHERE {} ORDER BY time_ns, origin, leaf_index LIMIT 1 BY origin, leaf_index LIMIT {limit}",
            w.join(" AND ")
        );
        let rows: Vec<LeafRow> = self.client.query(&sql).fetch_all().await.map_err(ClickHouseError::query("search"))?;
        rows.into_iter()
            .map(|r| {
                let leaf = StoredLeaf::decode(r.leaf.as_slice()).map_err(|e| {
                    ClickHouseError::Store(wiretrail_log::store::StoreError::Inconsistent(format!(
                        "{} leaf {} does not decode: {e}",
                        r.origin, r.leaf_index
                    )))
                })?;
                Ok(Hit { origin: r.origin, leaf_index: r.leaf_index, leaf, bytes: r.leaf })
            })
            .collect()
    }
}
