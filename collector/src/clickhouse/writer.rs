//! The commit thread's ClickHouse sink: leaves after the local fsync, before the acks.

use std::sync::Arc;

use prost::Message;
use serde::{Deserialize, Serialize};
use wiretrail_proto::v1::{Record, StoredLeaf};

use super::schema::{CHECKPOINTS, LEAVES, ORIGINS};
use super::{ClickHouseConfig, ClickHouseError, Version};
use wiretrail_log::merkle::{Hash, SignedCheckpoint};
use wiretrail_log::store::{Log, StoreError};

/// One row of `leaves`.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct LeafRow {
    /// The log (collector) the leaf belongs to.
    pub origin: String,
    /// Position in that log.
    pub leaf_index: u64,
    /// Collector receive time (seconds, UTC): the partition and sort key.
    pub received: u32,
    /// Collector receive time (UTC ns).
    pub received_ns: i64,
    /// Capture time (records) or entry time (collector entries), UTC ns.
    pub time_ns: i64,
    /// "record" or "entry:<kind>".
    pub kind: String,
    /// Agent id.
    pub agent_id: String,
    /// The record's identity, `k=v` sorted, one per line (both witnesses' when two).
    pub identity: String,
    /// Remote address:port.
    pub peer: String,
    /// Application protocol.
    pub protocol: String,
    /// Host name.
    pub host: String,
    /// The leaf bytes (encoded `StoredLeaf`).
    #[serde(with = "serde_bytes")]
    pub leaf: Vec<u8>,
    /// Merkle leaf hash of `leaf`.
    pub leaf_hash: Hash,
    /// Leaf hash of the previous leaf of the log (zeros for the first).
    pub prev_hash: Hash,
}

/// One row of `checkpoints`.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// The log.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The signed note.
    pub note: String,
    /// When shipped (seconds, UTC).
    pub issued: u32,
}

/// One row of `origins`.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct OriginRow {
    /// The log.
    pub origin: String,
    /// Its checkpoint verifier key (note verifier string).
    pub verifier_key: String,
    /// When registered (seconds, UTC).
    pub registered: u32,
}

/// The columns of a leaf's row that its content decides (all but the
/// position, hashes and bytes). For a batch's records they are computed where
/// the record is at hand, on the ingest tasks ([`Columns::of_record`]), so the
/// commit thread neither decodes the leaves again nor reads them back.
///
/// [`LeafRow`] repeats these fields rather than holding a `Columns`: the
/// `clickhouse` crate's `Row` derive names one column per field and its
/// RowBinary serializer has no maps, so `#[serde(flatten)]` cannot make a
/// nested struct's fields columns (ClickHouse/clickhouse-rs issues 264 and
/// 99, open). [`LeafRow::with`] is the one place that moves them across.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub received_ns: i64,
    pub time_ns: i64,
    pub kind: String,
    pub agent_id: String,
    pub identity: String,
    pub peer: String,
    pub protocol: String,
    pub host: String,
}

impl Columns {
    /// The columns of the leaf of record `r` shipped by `agent_id`, received at `received_ns`.
    pub fn of_record(r: &Record, agent_id: &str, received_ns: i64) -> Columns {
        let mut ids: Vec<String> = wiretrail_log::sides::sides(r)
            .iter()
            .flat_map(|s| s.identity.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        ids.sort();
        ids.dedup();
        Columns {
            received_ns,
            time_ns: r.capture_time_ns,
            kind: "record".into(),
            agent_id: agent_id.to_string(),
            identity: ids.join("\n"),
            peer: r.remote.as_ref().map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_default(),
            protocol: r.app_protocol.clone(),
            host: r.host.clone(),
        }
    }

    /// The columns of a decoded leaf (a record's or a collector entry's).
    pub fn of_leaf(l: &StoredLeaf) -> Columns {
        match (&l.entry, &l.record) {
            (Some(e), _) => Columns {
                received_ns: l.received_time_ns,
                time_ns: e.time_ns,
                kind: format!("entry:{}", e.kind),
                agent_id: l.agent_id.clone(),
                ..Columns::default()
            },
            (None, r) => Columns::of_record(r.as_ref().unwrap_or(&Record::default()), &l.agent_id, l.received_time_ns),
        }
    }
}

impl LeafRow {
    /// The row of leaf `i` of `origin` with bytes `leaf` and Merkle leaf
    /// hash `hash` (the store's reader checked `leaf` against it: see
    /// [`wiretrail_log::store::LeafIter::next_hashed`]).
    pub fn new(origin: &str, i: u64, leaf: Vec<u8>, hash: Hash, prev_hash: Hash) -> Result<Self, StoreError> {
        let l = StoredLeaf::decode(leaf.as_slice())
            .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
        Ok(LeafRow::with(origin, i, leaf, hash, prev_hash, Columns::of_leaf(&l)))
    }

    /// The row of leaf `i` whose content columns are `c`.
    pub fn with(origin: &str, i: u64, leaf: Vec<u8>, hash: Hash, prev_hash: Hash, c: Columns) -> Self {
        LeafRow {
            origin: origin.to_string(),
            leaf_index: i,
            received: (c.received_ns.max(0) / 1_000_000_000) as u32,
            received_ns: c.received_ns,
            time_ns: c.time_ns,
            kind: c.kind,
            agent_id: c.agent_id,
            identity: c.identity,
            peer: c.peer,
            protocol: c.protocol,
            host: c.host,
            leaf,
            leaf_hash: hash,
            prev_hash,
        }
    }
}

/// Leaves a batch appended, as the commit thread has them in memory: leaf
/// `first + k` is `leaves[k]` (its bytes, its hash, its columns).
#[derive(Debug)]
pub struct Appended {
    pub first: u64,
    pub leaves: Vec<(Vec<u8>, Hash, Columns)>,
}

fn now_s() -> u32 {
    (wiretrail_log::store::now_ns().max(0) / 1_000_000_000) as u32
}

/// Inserts this log's leaves and checkpoints into ClickHouse.
pub struct Sink {
    client: clickhouse::Client,
    cfg: ClickHouseConfig,
    shared: Arc<Log>,
    origin: String,
    rt: tokio::runtime::Handle,
    /// Leaves [0, shipped) are in ClickHouse.
    shipped: u64,
}

impl Sink {
    /// Connects, checks the version (logged), creates the schema, registers
    /// this log's key and finds how much of the log ClickHouse already holds.
    pub async fn open(cfg: ClickHouseConfig, shared: Arc<Log>) -> Result<Sink, ClickHouseError> {
        let base = super::client(&cfg);
        let v: Version = super::server_version(&base).await?;
        super::schema::create(&base, &cfg, v).await?;
        let client = base.with_database(&cfg.database).with_validation(v.validation());
        let origin = shared.verifier().name;
        let mut sink = Sink { client, cfg, shared, origin, rt: tokio::runtime::Handle::current(), shipped: 0 };
        let keys: Vec<String> = sink
            .client
            .query("SELECT DISTINCT verifier_key FROM ? WHERE origin = ?")
            .bind(clickhouse::sql::Identifier(ORIGINS))
            .bind(&sink.origin)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query("reading the registered origins"))?;
        let mine = sink.shared.verifier().key_string();
        if let Some(other) = keys.iter().find(|k| **k != mine) {
            return Err(ClickHouseError::OriginTaken { origin: sink.origin.clone(), key: other.clone() });
        }
        let row = OriginRow {
            origin: sink.origin.clone(),
            verifier_key: sink.shared.verifier().key_string(),
            registered: now_s(),
        };
        sink.insert(ORIGINS, &[row]).await?;
        // Leaves retention deleted here are not counted: their rows may be
        // gone from ClickHouse already, or not yet.
        let deleted = super::expiry::merged(sink.shared.deleted().iter().map(|d| (d.first, d.end)).collect());
        let (all, max): (u64, u64) = sink
            .client
            .query("SELECT uniqExact(leaf_index), max(leaf_index) FROM ? WHERE origin = ?")
            .bind(clickhouse::sql::Identifier(LEAVES))
            .bind(&sink.origin)
            .fetch_one()
            .await
            .map_err(ClickHouseError::query("reading how much of the log is stored"))?;
        let n = all.saturating_sub(super::expiry::rows_in(&sink.client, &sink.origin, &deleted).await?.0);
        let size = sink.shared.size();
        let whole = n > 0 && n + super::expiry::deleted_in(&deleted, 0, max + 1) == max + 1;
        sink.shipped = if whole { (max + 1).min(size) } else { 0 };
        if n > 0 && !whole {
            tracing::warn!(
                rows = n,
                max,
                "ClickHouse holds part of this log with holes; inserting it again from leaf 0"
            );
        }
        tracing::info!(origin = %sink.origin, in_clickhouse = sink.shipped, log_size = size, "clustered mode: ClickHouse sink ready");
        Ok(sink)
    }

    /// Leaves of this log in ClickHouse.
    pub fn shipped(&self) -> u64 {
        self.shipped
    }

    /// Inserts `rows` in one INSERT (with the quorum settings), retried as [`Sink::retrying`] says.
    async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), ClickHouseError> {
        self.retrying(table, || async {
            let mut ins = self.start::<T>(table).await.map_err(insert_error(table))?;
            for r in rows {
                ins.write(r).await.map_err(insert_error(table))?;
            }
            ins.end().await.map_err(insert_error(table))
        })
        .await
    }

    /// Inserts leaves `[from, to)` of the local log in one INSERT. `ready`
    /// holds rows of some of them already built (the group's, from memory;
    /// ascending, within the range); the others are read back from the log,
    /// each row built as the body streams (building overlaps the sending and
    /// the server's parsing). An error drops the unfinished INSERT, which
    /// ClickHouse then aborts: nothing of it is stored. Retried as
    /// [`Sink::retrying`] says.
    async fn insert_leaves(&self, from: u64, to: u64, ready: &[LeafRow]) -> Result<(), ClickHouseError> {
        self.retrying(LEAVES, || async {
            let mut ins = self.start::<LeafRow>(LEAVES).await.map_err(insert_error(LEAVES))?;
            let mut next = from;
            for row in ready {
                if row.leaf_index > next {
                    self.insert_from_log(&mut ins, next, row.leaf_index).await?;
                }
                ins.write(row).await.map_err(insert_error(LEAVES))?;
                next = row.leaf_index + 1;
            }
            if next < to {
                self.insert_from_log(&mut ins, next, to).await?;
            }
            ins.end().await.map_err(insert_error(LEAVES))
        })
        .await
    }

    /// Writes the rows of leaves `[from, to)`, read back from the log, into `ins`.
    async fn insert_from_log(
        &self,
        ins: &mut clickhouse::insert::Insert<LeafRow>,
        from: u64,
        to: u64,
    ) -> Result<(), ClickHouseError> {
        let mut prev = if from == 0 { [0u8; 32] } else { self.shared.leaf_hash(from - 1)? };
        // Segments retention deleted are skipped: their hashes are kept.
        let mut leaves = self.shared.iter(from, to)?;
        let mut next = from;
        while let Some(item) = leaves.next_hashed() {
            let (i, bytes, hash) = item?;
            if i != next {
                prev = self.shared.leaf_hash(i - 1)?;
            }
            next = i + 1;
            let row = LeafRow::new(&self.origin, i, bytes, hash, prev)?;
            prev = row.leaf_hash;
            ins.write(&row).await.map_err(insert_error(LEAVES))?;
        }
        Ok(())
    }

    /// The rows of the group's leaves held in memory (batches in the order
    /// they were appended, so ascending) that are in `[from, to)`. Each row's
    /// previous hash comes from the row before it when that is its neighbour,
    /// else from the log.
    fn rows_of(&self, appended: Vec<Appended>, from: u64, to: u64) -> Result<Vec<LeafRow>, ClickHouseError> {
        let mut rows: Vec<LeafRow> = Vec::with_capacity(appended.iter().map(|a| a.leaves.len()).sum());
        for a in appended {
            for (i, (leaf, hash, columns)) in (a.first..).zip(a.leaves) {
                if i < from || i >= to {
                    continue;
                }
                let prev = match rows.last() {
                    Some(r) if r.leaf_index + 1 == i => r.leaf_hash,
                    _ if i == 0 => [0; 32],
                    _ => self.shared.leaf_hash(i - 1)?,
                };
                debug_assert!(rows.last().is_none_or(|r| r.leaf_index < i), "leaves handed over out of order");
                rows.push(LeafRow::with(&self.origin, i, leaf, hash, prev, columns));
            }
        }
        Ok(rows)
    }

    /// Runs `attempt` (one INSERT into `table`) until it succeeds or fails
    /// otherwise than this: servers before 20.10 allow one unfinished quorum
    /// insert per table at a time (error 286, "Quorum for previous write has
    /// not been satisfied yet", when several collectors insert together),
    /// which is retried until the configured timeout.
    async fn retrying<F, Fut>(&self, table: &str, mut attempt: F) -> Result<(), ClickHouseError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), ClickHouseError>>,
    {
        let start = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(10);
        loop {
            match attempt().await {
                Err(e) if is_previous_quorum_pending(&e) && start.elapsed() + wait < self.cfg.timeout => {
                    tracing::debug!(table, "a previous quorum insert is still replicating; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    /// Starts an INSERT into `table` with the timeouts and quorum settings.
    async fn start<T: clickhouse::Row>(
        &self,
        table: &str,
    ) -> Result<clickhouse::insert::Insert<T>, clickhouse::error::Error> {
        let mut ins =
            self.client.insert::<T>(table).await?.with_timeouts(Some(self.cfg.timeout), Some(self.cfg.timeout));
        if self.cfg.cluster.is_some() {
            ins = ins.with_setting("insert_distributed_sync", "1");
        }
        if self.cfg.quorum > 0 {
            ins = ins
                .with_setting("insert_quorum", self.cfg.quorum.to_string())
                .with_setting("insert_quorum_timeout", self.cfg.timeout.as_millis().to_string());
        }
        Ok(ins)
    }

    /// Inserts every durable leaf not yet in ClickHouse (blocking; from the
    /// commit thread), then a checkpoint of the log's size signed by the key
    /// in force (not recorded locally: see [`Log::sign_unrecorded`]).
    /// `appended`: leaves of the group just made durable, as the commit thread
    /// holds them (their hashes are the ones the log stored); the rest are read
    /// back from the log.
    pub fn sync(&mut self, appended: Vec<Appended>) -> Result<(), ClickHouseError> {
        let size = self.shared.size();
        if self.shipped < size {
            let t = std::time::Instant::now();
            let from = self.shipped;
            let ready = self.rows_of(appended, from, size)?;
            // The leaves, then a checkpoint signing them: every leaf acknowledged
            // in clustered mode is covered by a signed checkpoint in ClickHouse.
            let cp = self.shared.sign_unrecorded(size)?;
            let rt = self.rt.clone();
            rt.block_on(self.insert_leaves(from, size, &ready))?;
            let inserted = t.elapsed();
            rt.block_on(self.insert(CHECKPOINTS, &[checkpoint_row(&cp)]))?;
            tracing::debug!(
                rows = size - from,
                from_memory = ready.len(),
                leaves_ms = inserted.as_secs_f64() * 1e3,
                checkpoint_ms = (t.elapsed() - inserted).as_secs_f64() * 1e3,
                "leaves (rows built as the insert streams) and a checkpoint inserted into ClickHouse"
            );
            self.shipped = size;
        }
        Ok(())
    }
}

/// The error of an insert into `table`.
fn insert_error(table: &str) -> impl Fn(clickhouse::error::Error) -> ClickHouseError + '_ {
    move |source| ClickHouseError::Query { what: format!("insert into {table}"), source }
}

/// ClickHouse error 286 (UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE).
fn is_previous_quorum_pending(e: &ClickHouseError) -> bool {
    matches!(e, ClickHouseError::Query { source, .. } if source.to_string().contains("Code: 286"))
}

/// Ships each new checkpoint of the log to ClickHouse (checked every second;
/// a failed insert is retried on the next tick), and the collector's
/// heartbeat ([`super::orphans::heartbeat`]). Stops with the runtime.
pub fn spawn_checkpoints(cfg: ClickHouseConfig, shared: Arc<Log>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = super::client(&cfg).with_database(&cfg.database);
        let client = match super::server_version(&client).await {
            Ok(v) => client.with_validation(v.validation()),
            Err(e) => {
                tracing::error!(error = %e, "ClickHouse checkpoint shipping cannot start");
                return;
            }
        };
        let mut shipped = 0u64;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let (origin, every) = (shared.verifier().name, super::orphans::heartbeat_every(&cfg));
        let mut beat_due = std::time::Instant::now();
        loop {
            tick.tick().await;
            if std::time::Instant::now() >= beat_due {
                match super::orphans::heartbeat(&client, &cfg, &origin).await {
                    Ok(()) => beat_due = std::time::Instant::now() + every,
                    Err(e) => tracing::warn!(error = %e, "inserting the heartbeat into ClickHouse failed; retrying"),
                }
            }
            let Some(cp) = shared.latest_checkpoint() else { continue };
            if cp.checkpoint.size <= shipped {
                continue;
            }
            match insert_checkpoint(&client, &cfg, &cp).await {
                Ok(()) => {
                    shipped = cp.checkpoint.size;
                    tracing::debug!(size = shipped, "checkpoint inserted into ClickHouse");
                }
                Err(e) => tracing::warn!(error = %e, "inserting a checkpoint into ClickHouse failed; retrying"),
            }
        }
    })
}

/// Inserts one signed checkpoint.
pub async fn insert_checkpoint(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    cp: &SignedCheckpoint,
) -> Result<(), clickhouse::error::Error> {
    let mut ins = client.insert::<CheckpointRow>(CHECKPOINTS).await?;
    if cfg.cluster.is_some() {
        ins = ins.with_setting("insert_distributed_sync", "1");
    }
    ins.write(&checkpoint_row(cp)).await?;
    ins.end().await
}

/// Inserts the final checkpoint at shutdown (best effort: logged on failure).
pub async fn ship_final(cfg: &ClickHouseConfig, cp: &SignedCheckpoint) {
    let client = super::client(cfg).with_database(&cfg.database);
    let client = match super::server_version(&client).await {
        Ok(v) => client.with_validation(v.validation()),
        Err(e) => return tracing::error!(error = %e, "final checkpoint not inserted into ClickHouse"),
    };
    match insert_checkpoint(&client, cfg, cp).await {
        Ok(()) => tracing::info!(size = cp.checkpoint.size, "final checkpoint inserted into ClickHouse"),
        Err(e) => tracing::error!(error = %e, "final checkpoint not inserted into ClickHouse"),
    }
}

/// The row of a signed checkpoint.
pub fn checkpoint_row(cp: &SignedCheckpoint) -> CheckpointRow {
    CheckpointRow {
        origin: cp.checkpoint.origin.clone(),
        size: cp.checkpoint.size,
        root: cp.checkpoint.root,
        note: cp.note.clone(),
        issued: now_s(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiretrail_proto::v1::{Batch, Endpoint, Side};

    /// The columns the ingest tasks compute from a record are the ones read
    /// back from its stored leaf: rows built from memory and rows built from
    /// the log are the same rows.
    #[test]
    fn columns_of_a_record_match_its_stored_leaf() {
        let r = Record {
            capture_time_ns: 1_700_000_000_123,
            app_protocol: "http1".into(),
            host: "node-a".into(),
            identity: [("app".to_string(), "pay".to_string()), ("ns".into(), "prod".into())].into(),
            peer_identity: [("app".to_string(), "ledger".to_string())].into(),
            remote: Some(Endpoint { address: "10.0.0.7".into(), port: 8443 }),
            witness: Some(Side {
                remote: Some(Endpoint { address: "10.0.0.3".into(), port: 41000 }),
                ..Side::default()
            }),
            ..Record::default()
        };
        let batch = Batch {
            agent_id: "agent-1".into(),
            boot_id: "b".into(),
            seq: 3,
            records: vec![r.clone()],
            ..Batch::default()
        };
        let leaves = crate::ingest::encode_leaves(batch, "cn=agent-1", 1_700_000_001_000_000_000, &[7; 32]);
        let stored = StoredLeaf::decode(leaves[0].as_slice()).unwrap();
        let c = Columns::of_record(&r, "agent-1", 1_700_000_001_000_000_000);
        assert_eq!(c, Columns::of_leaf(&stored));
        assert_eq!((c.identity.as_str(), c.peer.as_str()), ("app=ledger\napp=pay\nns=prod", "10.0.0.7:8443"));
        let row = LeafRow::with("o", 5, leaves[0].clone(), [1; 32], [2; 32], c);
        assert_eq!((row.received, row.time_ns, row.kind.as_str()), (1_700_000_001, 1_700_000_000_123, "record"));

        let entry = wiretrail_log::entry::leaf(
            wiretrail_log::entry::new("retention_deletion", 42, "store", serde_json::json!({}), Vec::new()),
            "",
        );
        let e = Columns::of_leaf(&StoredLeaf::decode(entry.as_slice()).unwrap());
        assert_eq!((e.kind.as_str(), e.time_ns, e.identity.as_str()), ("entry:retention_deletion", 42, ""));
    }
}
