//! Tables, adapted to the server version checked at start.
//!
//! - `leaves`: one row per leaf of every collector's log: (origin, leaf
//!   index), received time, kind (record protocol or `entry:<kind>`),
//!   agent id, identity (the record's identity `k=v` pairs, sorted, one per
//!   line), peer (remote address:port), protocol, host, the leaf bytes, the
//!   leaf hash and the previous leaf's hash (so a reordered row is named).
//! - `checkpoints`: every signed checkpoint (origin, size, root, note).
//! - `origins`: each log's checkpoint verifier key.
//! - `heartbeats`: (origin, seen by the server's clock), one row a minute
//!   per live collector ([`super::orphans`]).
//!
//! MergeTree partitioned by day, ORDER BY
//! (identity, time, origin, leaf index), Replacing so a retried insert
//! collapses. From 19.1: ZSTD codecs; from 20.1: a bloom-filter skip index
//! on peer. No n-gram index on the leaf bytes: search's `position(leaf, ..)`
//! never uses one, a 64 KB filter per 4 granules of ~700-byte leaves is
//! saturated (it skips nothing), and building it cost ~15-20 us per row on
//! insert and again on every merge (an insert of 48k rows into 26.9: ~1 s
//! with it, ~0.2 s without). With a cluster: Replicated* tables
//! `<name>_local` ON CLUSTER and a Distributed table `<name>` over them.
//! Retention deletes the ranges its collector deleted, not whole day
//! partitions ([`super::expiry`] says why).

use super::{ClickHouseConfig, ClickHouseError, Version};

/// Each collector's latest signs of life ([`super::orphans`]).
pub const HEARTBEATS: &str = "heartbeats";
/// Table names of the leaves, checkpoints and origins.
pub const LEAVES: &str = "leaves";
/// Signed checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Verifier keys.
pub const ORIGINS: &str = "origins";

/// The DDL statements for `cfg` on a server of version `v`, in order.
pub fn statements(cfg: &ClickHouseConfig, v: Version) -> Vec<String> {
    let db = &cfg.database;
    let on = cfg.cluster.as_ref().map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    let zstd = |t: &str| if v.codecs() { format!("{t} CODEC(ZSTD(3))") } else { t.to_string() };
    let skip = if v.skip_indexes() { ",\n  INDEX peer_bf peer TYPE bloom_filter GRANULARITY 4" } else { "" };
    let leaves_cols = format!(
        "origin String, leaf_index UInt64, received DateTime, received_ns Int64, time_ns Int64, kind String, \
         agent_id String, identity String, peer String, protocol String, host String, leaf {}, \
         leaf_hash FixedString(32), prev_hash FixedString(32){skip}",
        zstd("String")
    );
    let cp_cols = "origin String, size UInt64, root FixedString(32), note String, issued DateTime";
    let origin_cols = "origin String, verifier_key String, registered DateTime";
    let tables: [(&str, String, &str); 4] = [
        (LEAVES, leaves_cols, "PARTITION BY toDate(received) ORDER BY (identity, received, origin, leaf_index)"),
        (CHECKPOINTS, cp_cols.into(), "ORDER BY (origin, size)"),
        (ORIGINS, origin_cols.into(), "ORDER BY origin"),
        (HEARTBEATS, "origin String, seen DateTime".into(), "ORDER BY origin"),
    ];
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {db}{on}")];
    for (name, cols, order) in tables {
        match &cfg.cluster {
            None => {
                out.push(format!("CREATE TABLE IF NOT EXISTS {db}.{name} ({cols}) ENGINE = ReplacingMergeTree {order}"))
            }
            Some(cluster) => {
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name}_local{on} ({cols}) ENGINE = \
                     ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/{name}', '{{replica}}') {order}"
                ));
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name}{on} AS {db}.{name}_local \
                     ENGINE = Distributed({cluster}, {db}, {name}_local, cityHash64(origin))"
                ));
            }
        }
    }
    out
}

/// Creates the database and tables (idempotent); logs the version and layout.
pub async fn create(c: &clickhouse::Client, cfg: &ClickHouseConfig, v: Version) -> Result<(), ClickHouseError> {
    tracing::info!(
        version = %format!("{}.{}", v.0, v.1),
        codecs = v.codecs(),
        skip_indexes = v.skip_indexes(),
        cluster = cfg.cluster.as_deref().unwrap_or("(none)"),
        quorum = cfg.quorum,
        "ClickHouse server version checked; creating the schema for it"
    );
    // Collectors starting together race on the same ON CLUSTER DDL (a
    // replica may answer "already exists" mid-creation): a few bounded retries.
    for sql in statements(cfg, v) {
        let mut attempt = 0u32;
        loop {
            match c.query(&sql).execute().await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "ClickHouse schema statement failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                }
                Err(e) => return Err(ClickHouseError::query(format!("schema: {sql}"))(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cluster: Option<&str>) -> ClickHouseConfig {
        ClickHouseConfig {
            url: "http://x".into(),
            database: "wt".into(),
            cluster: cluster.map(String::from),
            quorum: 0,
            user: None,
            password: None,
            timeout: std::time::Duration::from_secs(1),
            orphan_after: None,
        }
    }

    #[test]
    fn old_servers_get_no_codecs_or_skip_indexes() {
        let s = statements(&cfg(None), Version(18, 16)).join("\n");
        assert!(!s.contains("CODEC") && !s.contains("INDEX"), "{s}");
        assert!(s.contains("PARTITION BY toDate(received) ORDER BY (identity, received"), "{s}");
        let s = statements(&cfg(None), Version(26, 9)).join("\n");
        assert!(s.contains("CODEC(ZSTD(3))") && s.contains("bloom_filter") && !s.contains("ngrambf"), "{s}");
    }

    #[test]
    fn a_cluster_gets_replicated_tables_and_a_distributed_one() {
        let s = statements(&cfg(Some("wt")), Version(18, 16)).join("\n");
        assert!(s.contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/wt/leaves', '{replica}'"), "{s}");
        assert!(s.contains("ENGINE = Distributed(wt, wt, leaves_local, cityHash64(origin))"), "{s}");
    }
}
