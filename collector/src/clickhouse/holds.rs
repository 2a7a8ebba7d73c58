//! The legal holds of every collector sharing ClickHouse.
//!
//! An admin's hold request reaches one collector behind the Service; its
//! `hold_placed` / `hold_lifted` entry goes into that collector's log, and so
//! into ClickHouse before the request is answered. [`ClusterHolds`] reads the
//! hold entries of every log from there for retention
//! ([`crate::retention::SharedHolds`]), so a hold placed at any collector
//! keeps every collector's matching records, and any collector can lift it.
//!
//! Reads ask for sequential consistency when inserts need a quorum
//! (`select_sequential_consistency=1`: a replica that lacks a quorum-inserted
//! part refuses rather than answering without it). A lift counts once its
//! log's latest checkpoint in ClickHouse covers it
//! ([`crate::retention::LogEntry::signed`]). The rows are not verified
//! here: whoever may write to the tables can forge an entry row, which
//! `verify --clickhouse` names (a row its log's signed tree does not hold).

use std::collections::HashMap;

use prost::Message;
use wiretrail_log::entry::{HOLD_LIFTED, HOLD_PLACED};
use wiretrail_proto::v1::StoredLeaf;

use super::expiry::EntryRow;
use super::reader::Reader;
use super::schema::{CHECKPOINTS, LEAVES};
use super::{ClickHouseConfig, ClickHouseError};
use crate::retention::{LogEntry, SharedHolds};

#[derive(clickhouse::Row, serde::Deserialize)]
struct SizeRow {
    origin: String,
    size: u64,
}

impl Reader {
    /// Every hold entry of every log, each marked signed when its log's
    /// largest checkpoint covers it; `sequential`: with
    /// `select_sequential_consistency` (a quorum is in use).
    pub async fn hold_entries(&self, sequential: bool) -> Result<Vec<LogEntry>, ClickHouseError> {
        let mut q = self
            .client
            .query(&format!(
                "SELECT DISTINCT origin, leaf_index, leaf FROM {LEAVES} WHERE kind IN (?, ?) ORDER BY origin, leaf_index"
            ))
            .bind(format!("entry:{HOLD_PLACED}"))
            .bind(format!("entry:{HOLD_LIFTED}"));
        let mut sizes =
            self.client.query(&format!("SELECT origin, max(size) AS size FROM {CHECKPOINTS} GROUP BY origin"));
        if sequential {
            q = q.with_setting("select_sequential_consistency", "1");
            sizes = sizes.with_setting("select_sequential_consistency", "1");
        }
        let rows: Vec<EntryRow> = q.fetch_all().await.map_err(ClickHouseError::query("reading the hold entries"))?;
        let sizes: HashMap<String, u64> = sizes
            .fetch_all::<SizeRow>()
            .await
            .map_err(ClickHouseError::query("reading the logs' signed sizes"))?
            .into_iter()
            .map(|r| (r.origin, r.size))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let entry = StoredLeaf::decode(r.leaf.as_slice()).ok().and_then(|l| l.entry);
            match entry {
                Some(e) if e.kind == HOLD_PLACED || e.kind == HOLD_LIFTED => {
                    let signed = sizes.get(&r.origin).is_some_and(|&s| r.leaf_index < s);
                    out.push(LogEntry { origin: r.origin, leaf: r.leaf_index, entry: e, signed });
                }
                // A placement not read could release records it holds: refuse.
                _ => {
                    return Err(ClickHouseError::Inconsistent(format!(
                        "the row of log {} leaf {} is marked as a hold entry but does not hold one",
                        r.origin, r.leaf_index
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// The holds of every log in ClickHouse, for retention (blocking reads from
/// the retention thread, bounded by the configured timeout).
pub struct ClusterHolds {
    reader: Reader,
    sequential: bool,
    timeout: std::time::Duration,
    rt: tokio::runtime::Handle,
}

impl ClusterHolds {
    /// Connects (the server's version checked).
    pub async fn open(cfg: &ClickHouseConfig) -> Result<ClusterHolds, ClickHouseError> {
        if cfg.cluster.is_some() && cfg.quorum == 0 {
            tracing::warn!(
                "clustered mode without --clickhouse-quorum: replicas copy inserts asynchronously, so a legal hold \
                 placed at one collector may be read late by another (set a quorum of 2 or more)"
            );
        }
        Ok(ClusterHolds {
            reader: Reader::open(cfg).await?,
            sequential: cfg.quorum > 0,
            timeout: cfg.timeout * 3,
            rt: tokio::runtime::Handle::current(),
        })
    }
}

impl SharedHolds for ClusterHolds {
    fn hold_entries(&self) -> Result<Vec<LogEntry>, String> {
        self.rt
            .block_on(async { tokio::time::timeout(self.timeout, self.reader.hold_entries(self.sequential)).await })
            .map_err(|_| format!("ClickHouse did not answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())
    }
}
