//! The commit thread's ClickHouse sink: leaves after the local fsync, before the acks.

use std::sync::Arc;

use prost::Message;
use serde::{Deserialize, Serialize};
use wiretrail_proto::v1::StoredLeaf;

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

impl LeafRow {
    /// The row of leaf `i` of `origin` with bytes `leaf` and Merkle leaf
    /// hash `hash` (the store's reader checked `leaf` against it: see
    /// [`wiretrail_log::store::LeafIter::next_hashed`]).
    pub fn new(origin: &str, i: u64, leaf: Vec<u8>, hash: Hash, prev_hash: Hash) -> Result<Self, StoreError> {
        let l = StoredLeaf::decode(leaf.as_slice())
            .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
        let mut row = LeafRow {
            origin: origin.to_string(),
            leaf_index: i,
            received: (l.received_time_ns.max(0) / 1_000_000_000) as u32,
            received_ns: l.received_time_ns,
            time_ns: 0,
            kind: "record".into(),
            agent_id: l.agent_id.clone(),
            identity: String::new(),
            peer: String::new(),
            protocol: String::new(),
            host: String::new(),
            leaf_hash: hash,
            leaf,
            prev_hash,
        };
        if let Some(e) = &l.entry {
            row.kind = format!("entry:{}", e.kind);
            row.time_ns = e.time_ns;
            return Ok(row);
        }
        let r = l.record.unwrap_or_default();
        row.time_ns = r.capture_time_ns;
        row.protocol = r.app_protocol.clone();
        row.host = r.host.clone();
        row.peer = r.remote.as_ref().map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_default();
        let mut ids: Vec<String> = wiretrail_log::sides::sides(&r)
            .iter()
            .flat_map(|s| s.identity.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        ids.sort();
        ids.dedup();
        row.identity = ids.join("\n");
        Ok(row)
    }
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

    /// Inserts leaves `[from, to)` of the local log in one INSERT, each row
    /// built as the body streams (building overlaps the sending and the
    /// server's parsing; no group's rows are held in memory). An error drops
    /// the unfinished INSERT, which ClickHouse then aborts: nothing of it is
    /// stored. Retried as [`Sink::retrying`] says.
    async fn insert_leaves(&self, from: u64, to: u64) -> Result<(), ClickHouseError> {
        self.retrying(LEAVES, || async {
            let mut prev = if from == 0 { [0u8; 32] } else { self.shared.leaf_hash(from - 1)? };
            let mut ins = self.start::<LeafRow>(LEAVES).await.map_err(insert_error(LEAVES))?;
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
            ins.end().await.map_err(insert_error(LEAVES))
        })
        .await
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
    pub fn sync(&mut self) -> Result<(), ClickHouseError> {
        let size = self.shared.size();
        if self.shipped < size {
            let t = std::time::Instant::now();
            let from = self.shipped;
            // The leaves, then a checkpoint signing them: every leaf acknowledged
            // in clustered mode is covered by a signed checkpoint in ClickHouse.
            let cp = self.shared.sign_unrecorded(size)?;
            let rt = self.rt.clone();
            rt.block_on(self.insert_leaves(from, size))?;
            let inserted = t.elapsed();
            rt.block_on(self.insert(CHECKPOINTS, &[checkpoint_row(&cp)]))?;
            tracing::debug!(
                rows = size - from,
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
/// a failed insert is retried on the next tick). Stops with the runtime.
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
        loop {
            tick.tick().await;
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
