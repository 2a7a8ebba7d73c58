//! Clustered mode: every leaf and every signed checkpoint of this
//! collector's log also goes to ClickHouse, before the batch is acknowledged.
//!
//! - [`schema`]: tables created at start, adapted to the server version
//!   (logged): MergeTree partitioned by day, ORDER BY (identity, time);
//!   ZSTD codecs and skip indexes on servers that have them (no TTL: it
//!   would delete held evidence and leave holes verify cannot explain);
//!   Replicated* + Distributed when a cluster is named.
//! - [`expiry`]: what retention deletes from the collector's log is deleted
//!   from ClickHouse too, range by range, and readers put the kept hashes
//!   of its `retention_deletion` entries in the deleted leaves' place.
//! - [`writer`]: the commit thread's sink. After the local fsync and before
//!   the acks it inserts every leaf not yet in ClickHouse (with
//!   `insert_quorum=N` when a quorum is set); when ClickHouse refuses or
//!   times out, the whole group is refused (UNAVAILABLE) and the agents
//!   retry from their spools; the next group inserts the missing leaves
//!   first, so an ack always means "fsynced here and in ClickHouse".
//! - [`holds`]: the legal holds of every collector sharing ClickHouse, read
//!   by each one's retention before it deletes.
//! - [`orphans`]: each collector's heartbeat, and the retention of the logs
//!   whose collectors are gone (expired by one live collector).
//! - [`reader`]: search and verify from ClickHouse alone, across every
//!   collector's log (origin) stored there; [`export`]: evidence bundles and
//!   inclusion proofs from it; [`derive`]: the inventory and alerts of all
//!   logs, derived from it as the indexer derives them.
//!
//! Rows are keyed by (origin, leaf index); a retried insert may land twice,
//! so the tables are ReplacingMergeTree and readers keep one row per key
//! (two different rows for one key are reported as tampering).

pub mod derive;
pub mod expiry;
pub mod export;
pub mod holds;
pub mod orphans;
pub mod reader;
pub mod schema;
pub mod verify;
pub mod writer;

use std::time::Duration;

/// Connection settings (flags or environment, e.g. from a Kubernetes Secret).
#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL (e.g. http://clickhouse:8123): clustered mode.
    #[arg(long = "clickhouse", env = "WIRETRAIL_CLICKHOUSE_URL")]
    pub url: Option<String>,
    /// Database holding the wiretrail tables (created if missing).
    #[arg(long = "clickhouse-database", env = "WIRETRAIL_CLICKHOUSE_DATABASE", default_value = "wiretrail")]
    pub database: String,
    /// Cluster name (remote_servers): tables are Replicated* with a Distributed table over them.
    #[arg(long = "clickhouse-cluster", env = "WIRETRAIL_CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
    /// Replicas that must have each insert before an ack (ClickHouse `insert_quorum`); 0 = off.
    #[arg(long = "clickhouse-quorum", env = "WIRETRAIL_CLICKHOUSE_QUORUM", default_value_t = 0)]
    pub quorum: u32,
    /// ClickHouse user.
    #[arg(long = "clickhouse-user", env = "WIRETRAIL_CLICKHOUSE_USER")]
    pub user: Option<String>,
    /// ClickHouse password (prefer the environment variable).
    #[arg(long = "clickhouse-password", env = "WIRETRAIL_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Seconds an insert (and its quorum) may take before the batch is refused.
    #[arg(long = "clickhouse-timeout-secs", env = "WIRETRAIL_CLICKHOUSE_TIMEOUT_SECS", default_value_t = 10)]
    pub timeout_secs: u64,
    /// Seconds without a heartbeat after which a collector's log counts as
    /// orphaned and a live collector expires it under the retention policy
    /// (see docs/clickhouse.md); 0 = never.
    #[arg(long = "clickhouse-orphan-after-secs", env = "WIRETRAIL_CLICKHOUSE_ORPHAN_AFTER_SECS", default_value_t = 7 * 86_400)]
    pub orphan_after_secs: u64,
}

impl ClickHouseArgs {
    /// The settings when a URL is given.
    pub fn config(&self) -> Option<ClickHouseConfig> {
        self.url.as_ref().map(|url| ClickHouseConfig {
            url: url.clone(),
            database: self.database.clone(),
            cluster: self.cluster.clone(),
            quorum: self.quorum,
            user: self.user.clone(),
            password: self.password.clone(),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            orphan_after: (self.orphan_after_secs > 0).then(|| Duration::from_secs(self.orphan_after_secs)),
        })
    }
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// Cluster name, for replicated tables.
    pub cluster: Option<String>,
    /// `insert_quorum` (0 = off).
    pub quorum: u32,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Insert and quorum timeout.
    pub timeout: Duration,
    /// Time without a heartbeat after which a log is orphaned and expired by
    /// a live collector ([`orphans`]); `None`: never.
    pub orphan_after: Option<Duration>,
}

/// Errors of the ClickHouse mode.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// A query or insert failed.
    #[error("ClickHouse {what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The operation did not finish in time.
    #[error("ClickHouse {0}: timed out")]
    Timeout(String),
    /// Another log (another key) already uses this origin name in ClickHouse.
    #[error(
        "origin {origin:?} is already registered in ClickHouse with another key ({key}); \
         give each collector its own --origin (its data directory keeps the first one)"
    )]
    OriginTaken {
        /// The name.
        origin: String,
        /// The key registered for it.
        key: String,
    },
    /// A proof or export cannot be given from what ClickHouse holds (the log
    /// does not verify, or the leaf is not covered by a verified checkpoint).
    #[error("from ClickHouse: {0}")]
    Unproven(String),
    /// Deriving the inventory and alerts failed (the in-memory database, or a leaf that does not decode).
    #[error("deriving the inventory and alerts from ClickHouse: {0}")]
    Derive(String),
    /// A blocking task reading ClickHouse's rows (decoding, matching) failed.
    #[error("ClickHouse rows: a reading task failed: {0}")]
    Task(String),
    /// The server version is not understood.
    #[error("ClickHouse version {0:?} not understood")]
    Version(String),
    /// A search read its bound of candidate rows before finding its limit of
    /// records the filter matches (ClickHouse's text and identity tests are
    /// looser than the filter's).
    #[error(
        "the search read {read} candidate rows from ClickHouse and {found} of them match the filter \
         (limit {limit}); narrow it (a time range, an agent, an identity) or lower the limit"
    )]
    TooBroad {
        /// Candidate rows read.
        read: u64,
        /// Of them, matching the filter.
        found: usize,
        /// The search's limit.
        limit: u64,
    },
    /// A row does not hold what its columns say (e.g. a hold entry row without one).
    #[error("ClickHouse rows: {0}")]
    Inconsistent(String),
    /// Reading the local log failed.
    #[error("reading the local log: {0}")]
    Store(#[from] wiretrail_log::store::StoreError),
    /// A stored checkpoint does not parse or verify.
    #[error("checkpoint of {origin}: {source}")]
    Note {
        /// Which log.
        origin: String,
        /// Why.
        #[source]
        source: wiretrail_log::merkle::NoteError,
    },
}

impl ClickHouseError {
    pub(crate) fn query(what: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> Self {
        let what = what.into();
        move |source| ClickHouseError::Query { what, source }
    }
}

/// A server's version (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    /// Parses `version()` output such as "18.16.1" or "26.9.1.123".
    pub fn parse(s: &str) -> Result<Self, ClickHouseError> {
        let mut it = s.trim().split('.').map(str::parse::<u32>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => Ok(Version(a, b)),
            _ => Err(ClickHouseError::Version(s.to_string())),
        }
    }

    /// Column codecs (`CODEC(ZSTD)`): 19.1 and later.
    pub fn codecs(self) -> bool {
        self >= Version(19, 1)
    }

    /// Data-skipping indexes without experimental flags: 20.1 and later.
    pub fn skip_indexes(self) -> bool {
        self >= Version(20, 1)
    }

    /// Validation of RowBinary types against the server (`RowBinaryWithNamesAndTypes`): 24.10 and later.
    pub fn validation(self) -> bool {
        self >= Version(24, 10)
    }
}

/// A client for `cfg` (no database selected: the schema creates it).
pub fn client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    let mut c = clickhouse::Client::default().with_url(&cfg.url).with_compression(clickhouse::Compression::None);
    if let Some(u) = &cfg.user {
        c = c.with_user(u);
    }
    if let Some(p) = &cfg.password {
        c = c.with_password(p);
    }
    c
}

/// The server's version (`SELECT version()`).
pub async fn server_version(c: &clickhouse::Client) -> Result<Version, ClickHouseError> {
    let v: String = c
        .clone()
        .with_validation(false)
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(ClickHouseError::query("reading the server version"))?;
    Version::parse(&v)
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_parse_and_gate_features() {
        let old = Version::parse("18.16.1").unwrap();
        assert_eq!(old, Version(18, 16));
        assert!(!old.codecs() && !old.skip_indexes() && !old.validation());
        let new = Version::parse("26.9.1.1").unwrap();
        assert!(new.codecs() && new.skip_indexes() && new.validation());
        assert!(Version::parse("x").is_err());
    }
}
