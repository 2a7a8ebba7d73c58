//! Shipping records to the collector: batching, numbering, spooling, sending
//! over mTLS gRPC, and removing batches from the spool once acknowledged.
//!
//! # Use from the agent's `main`
//!
//! ```no_run
//! # async fn example() -> Result<(), wiretrail_agent::ship::ShipError> {
//! use std::path::Path;
//! use tokio_util::sync::CancellationToken;
//! use wiretrail_agent::ship::{ClientTlsFiles, ShipConfig, ShipHandle};
//! use wiretrail_agent::spool::SpoolConfig;
//!
//! let mut config = ShipConfig::new(
//!     "https://collector:7443".into(),
//!     "node-a".into(),                               // agent id
//!     "node-a".into(),                               // host stamped on gap records
//!     SpoolConfig::new("/var/lib/wiretrail/spool".into()),
//! );
//! config.tls = Some(ClientTlsFiles::in_dir(Path::new("/etc/wiretrail/certs"), "agent", "collector"));
//! let shutdown = CancellationToken::new();
//! let ship = ShipHandle::spawn(config, shutdown.clone()).await?;
//! // For each captured record (a `wiretrail_proto::v1::Record`):
//! ship.records.send(wiretrail_proto::v1::Record::default()).await.expect("shipper running");
//! // On SIGTERM:
//! shutdown.cancel();
//! ship.task.await.expect("shipper task")?;
//! # Ok(()) }
//! ```
//!
//! `records` is a bounded channel: `send().await` waits only while the
//! batcher writes a batch to disk; the shipper never blocks on the network,
//! so the agent can keep capturing while the collector is away.
//!
//! # Guarantees
//! - Records are grouped into batches (by count, bytes and time), numbered
//!   gap-free per (agent id, boot id) and fsynced to the spool before they
//!   are sent (see [`crate::spool`] for the fsync policy).
//! - A batch leaves the spool only after the collector's ack (sent by the
//!   collector after its own fsync). Unacked batches are re-sent after a
//!   reconnect or an agent restart with their original ids; the collector
//!   answers re-sent batches as duplicates, so each record is stored once.
//! - When the spool is full, nothing already spooled is dropped: the newest
//!   records that do not fit are replaced by one `RECORD_KIND_GAP` record
//!   (reason `GAP_REASON_SPOOL_FULL`, counts of records and bytes, time
//!   range), spooled and sent as soon as there is room again (or at shutdown,
//!   using the spool's gap reserve). Counted in [`ShipStats::records_dropped`]
//!   / [`ShipStats::gap_records`] and logged at warn.
//! - Heartbeat records (`RECORD_KIND_HEARTBEAT`) travel alone in their own
//!   batch, which may use the spool's gap reserve: a heartbeat is still
//!   spooled (and shipped in order once the collector takes batches again)
//!   while ordinary records are being replaced by a spool-full gap. Only when
//!   the reserve is full too does a heartbeat join the pending gap.
//! - A record above `max_record_bytes`, or one the collector refuses as too
//!   large (RESOURCE_EXHAUSTED), is replaced in its batch by a
//!   `GAP_REASON_TOO_LARGE` gap record keeping its metadata; the batch keeps
//!   its seq and shipping continues ([`ShipStats::records_too_large`]).
//! - Spool holes: when the collector names the seq it expects (FAILED_PRECONDITION
//!   "out of sequence") and the spool has no such batch (deleted, or
//!   quarantined), one gap batch (`GAP_REASON_SPOOL_LOST`, the seq range and
//!   the reason) is spooled in its place, standing for all the missing seqs
//!   (`covers_through_seq`), and shipping continues ([`ShipStats::batches_lost`]).
//! - Connection failures are retried with capped exponential backoff; the TLS
//!   files are re-read on every connection and a change triggers a reconnect.
//!   TLS failures are named: unknown CA, name mismatch, client certificate
//!   refused, missing files.
//! - On shutdown the batcher drains the channel into the spool, then the
//!   sender waits up to `drain_timeout` for outstanding acks; whatever is not
//!   acknowledged stays in the spool for the next start.

mod batcher;
mod gap;
mod sender;
mod stats;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wiretrail_proto::v1::Record;

use crate::spool::{Spool, SpoolConfig, SpoolError};
pub use stats::{ShipStats, StatsSnapshot};
pub use tls::{ClientTlsFiles, explain as explain_connect_error};

/// Shipper errors.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A TLS file could not be read (missing, unreadable).
    #[error("reading the {what} {path}: {source}")]
    TlsFile {
        /// Which of the files it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files hold no usable certificate, key or CA.
    #[error("unusable TLS files ({path}): {why}")]
    TlsInvalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The collector endpoint or TLS settings are unusable.
    #[error("collector endpoint {endpoint}: {source}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The configuration is invalid.
    #[error("ship configuration: {0}")]
    Config(String),
    /// The boot id could not be generated.
    #[error("generating the boot id: {0}")]
    BootId(#[source] std::io::Error),
    /// A shipper task panicked or was cancelled.
    #[error("shipper task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
}

/// Shipper settings.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// Collector URL: `https://host:port` (with `tls`) or `http://host:port` (tests).
    pub endpoint: String,
    /// mTLS files; `None` only for plaintext test collectors.
    pub tls: Option<ClientTlsFiles>,
    /// This agent's stable id (batches are numbered per agent id and boot).
    pub agent_id: String,
    /// Host name stamped on the gap records the shipper creates.
    pub host: String,
    /// Where and how large the spool is.
    pub spool: SpoolConfig,
    /// Most records per batch (the collector accepts up to 20 000).
    pub max_batch_records: usize,
    /// Most serialized record bytes per batch (a larger single record travels alone).
    pub max_batch_bytes: usize,
    /// Largest record shipped as is; a larger one is replaced by a
    /// `GAP_REASON_TOO_LARGE` gap record (its metadata kept). The collector
    /// refuses records above 16 MiB minus 4 KiB.
    pub max_record_bytes: usize,
    /// Longest a record waits in memory before its batch is spooled.
    pub max_batch_delay: Duration,
    /// Capacity of the record channel.
    pub channel_capacity: usize,
    /// Batches sent and not yet acknowledged on one stream.
    pub window: usize,
    /// First retry delay after a failure.
    pub backoff_initial: Duration,
    /// Cap of the exponential retry delay.
    pub backoff_max: Duration,
    /// A stream with unacknowledged batches and no ack for this long is reconnected.
    pub ack_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// How often the TLS files are checked for changes.
    pub tls_check_interval: Duration,
    /// At shutdown, how long to keep waiting for acks of spooled batches.
    pub drain_timeout: Duration,
}

impl ShipConfig {
    /// Defaults for everything but the endpoint, agent id, host and spool (no TLS).
    pub fn new(endpoint: String, agent_id: String, host: String, spool: SpoolConfig) -> Self {
        ShipConfig {
            endpoint,
            tls: None,
            agent_id,
            host,
            spool,
            max_batch_records: 1_000,
            max_batch_bytes: 1 << 20,
            max_record_bytes: (16 << 20) - (8 << 10),
            max_batch_delay: Duration::from_millis(200),
            channel_capacity: 4_096,
            window: 32,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tls_check_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }

    fn check(&self) -> Result<(), ShipError> {
        let bad = |s: &str| Err(ShipError::Config(s.to_string()));
        if self.agent_id.is_empty() {
            return bad("agent_id is empty");
        }
        if self.max_batch_records == 0 || self.max_batch_records > 20_000 {
            return bad("max_batch_records must be 1..=20000");
        }
        if self.window == 0 || self.channel_capacity == 0 || self.max_batch_bytes == 0 {
            return bad("window, channel_capacity and max_batch_bytes must be positive");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be positive and at most backoff_max");
        }
        match (&self.tls, self.endpoint.starts_with("https://")) {
            (Some(_), false) => bad("TLS needs an https:// endpoint"),
            (None, true) => bad("an https:// endpoint needs TLS files"),
            _ => Ok(()),
        }
    }
}

/// A running shipper.
pub struct ShipHandle {
    /// Where the agent sends its records.
    pub records: mpsc::Sender<Record>,
    /// Live counters.
    pub stats: Arc<ShipStats>,
    /// The boot id of this run (batches are numbered per agent id and boot id).
    pub boot_id: String,
    /// The spool (its fill level goes into heartbeats).
    pub spool: Arc<Spool>,
    /// Ends after `shutdown` is cancelled and the spool is drained (or `drain_timeout` passed).
    pub task: JoinHandle<Result<(), ShipError>>,
}

/// A fresh random boot id (the kernel's UUID generator).
fn new_boot_id() -> Result<String, ShipError> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").map(|s| s.trim().to_string()).map_err(ShipError::BootId)
}

impl ShipHandle {
    /// Opens the spool (re-queuing batches of earlier boots), starts a new
    /// boot and spawns the batcher and sender tasks. Must run inside a Tokio runtime.
    pub async fn spawn(config: ShipConfig, shutdown: CancellationToken) -> Result<ShipHandle, ShipError> {
        config.check()?;
        let stats = Arc::new(ShipStats::default());
        let boot_id = new_boot_id()?;
        let (spool, boot_dir) = {
            let (cfg, boot_id, agent, host, stats) =
                (config.spool.clone(), boot_id.clone(), config.agent_id.clone(), config.host.clone(), stats.clone());
            tokio::task::spawn_blocking(move || -> Result<_, ShipError> {
                let (spool, bad) = Spool::open(cfg)?;
                for q in bad {
                    let b = gap::corrupt_batch(&agent, &host, &q);
                    spool.replace(&q.key, &b)?;
                    ShipStats::add(&stats.corrupt_batches, 1);
                }
                let boot_dir = spool.start_boot(&boot_id, gap::now_ns())?;
                Ok((Arc::new(spool), boot_dir))
            })
            .await
            .map_err(ShipError::Join)??
        };
        tracing::info!(agent = %config.agent_id, boot = %boot_id, queued = spool.len(), "shipper starting");
        let (tx, rx) = mpsc::channel(config.channel_capacity);
        let notify = Arc::new(Notify::new());
        let batcher_done = CancellationToken::new();
        let b = batcher::Batcher::new(&config, spool.clone(), boot_dir, boot_id.clone(), notify.clone(), stats.clone());
        let batcher = tokio::spawn(b.run(rx, shutdown.clone(), batcher_done.clone()));
        let sender = tokio::spawn(sender::run(config, spool.clone(), notify, stats.clone(), shutdown, batcher_done));
        let task = tokio::spawn(async move {
            let b = batcher.await.map_err(ShipError::Join)?;
            let s = sender.await.map_err(ShipError::Join)?;
            b.and(s)
        });
        Ok(ShipHandle { records: tx, stats, boot_id, spool, task })
    }
}
