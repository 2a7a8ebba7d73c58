//! Alert delivery: every stored alert is pushed to each configured
//! destination (webhooks: [`webhook`]; syslog over TCP: [`syslog`]), in id
//! order, at least once.
//!
//! The queue is the alert store itself: each destination keeps a cursor
//! (the last alert id it accepted) in `DATA/alert-delivery/<name>.json`,
//! written (and fsynced) after each delivery, so a collector restart resumes
//! where it stopped; an alert may then be delivered twice, never skipped
//! silently. A failed delivery is counted and retried with exponential
//! backoff (it blocks the alerts behind it: order is kept). The queue is
//! bounded: when more than `queue_max` alerts wait for one destination, the
//! oldest beyond the bound are passed over — counted in `skipped`, logged at
//! error with their id range; they stay in the store, readable with
//! `wiretrail alerts --since N`. Counters (delivered, failures, skipped,
//! pending) are in the state file and logged.

pub mod syslog;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use wiretrail_proto::v1::Alert;

/// Delivery errors.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The destination is misconfigured.
    #[error("alert destination {0}")]
    Config(String),
    /// Connecting or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("webhook request: {0}")]
    Http(#[source] hyper::Error),
    /// The receiver answered with a non-2xx status.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// No answer in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// Reading the alert store failed.
    #[error("reading alerts: {0}")]
    Store(#[source] rusqlite::Error),
}

/// One destination.
#[tonic::async_trait]
pub trait Sink: Send {
    /// Name used for its state file and logs (file-name safe).
    fn name(&self) -> String;
    /// Delivers one alert; `Ok` once the destination has accepted it.
    async fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError>;
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Webhooks.
    pub webhooks: Vec<webhook::WebhookConfig>,
    /// Syslog receivers.
    pub syslog: Vec<syslog::SyslogConfig>,
    /// Most alerts waiting per destination before the oldest are passed over.
    pub queue_max: u64,
    /// First retry delay; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Cap of the retry delay.
    pub backoff_max: Duration,
    /// How often the store is checked for new alerts.
    pub poll: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            webhooks: Vec::new(),
            syslog: Vec::new(),
            queue_max: 100_000,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            poll: Duration::from_millis(250),
        }
    }
}

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Alerts accepted by the destination.
    pub delivered: AtomicU64,
    /// Failed attempts (each retried).
    pub failures: AtomicU64,
    /// Alerts passed over because the queue was full (still in the store).
    pub skipped: AtomicU64,
    /// Alerts waiting now.
    pub pending: AtomicU64,
}

/// What is persisted per destination.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    delivered_through: u64,
    delivered: u64,
    failures: u64,
    skipped: u64,
    pending: u64,
}

fn state_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("alert-delivery").join(format!("{name}.json"))
}

fn load(path: &Path) -> State {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save(path: &Path, s: &State) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(s).expect("state serializes"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Alerts after `since` (up to `limit`), how many wait in all, and the largest id stored.
fn page(c: &Connection, since: u64, limit: u64) -> rusqlite::Result<(Vec<Alert>, u64, u64)> {
    let v = super::list(c, since, None, limit)?;
    let (waiting, max): (i64, i64) = c.query_row(
        "SELECT (SELECT COUNT(*) FROM alerts WHERE id > ?1), COALESCE((SELECT MAX(id) FROM alerts), 0)",
        [since.min(i64::MAX as u64) as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((v, waiting as u64, max as u64))
}

/// The alert store as read by a destination's task.
struct Store {
    dir: PathBuf,
    conn: Option<Connection>,
}

impl Store {
    async fn page(&mut self, since: u64, limit: u64) -> Result<(Vec<Alert>, u64, u64), DeliveryError> {
        let conn = self.conn.take();
        let dir = self.dir.clone();
        let (c, r) = tokio::task::spawn_blocking(move || {
            let c = match conn {
                Some(c) => c,
                None => match crate::index::open(&dir) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(DeliveryError::Config(format!("index: {e}")))),
                },
            };
            let r = page(&c, since, limit).map_err(DeliveryError::Store);
            (Some(c), r)
        })
        .await
        .expect("alert store task");
        self.conn = c;
        r
    }
}

/// The running destinations: counters by name, and their tasks.
pub type Running = (Vec<(String, Arc<DeliveryStats>)>, Vec<tokio::task::JoinHandle<()>>);

/// Spawns one delivery task per destination; returns their counters by name.
pub fn spawn(data_dir: &Path, config: &DeliveryConfig) -> Result<Running, DeliveryError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for (i, w) in config.webhooks.iter().enumerate() {
        sinks.push(Box::new(webhook::Webhook::new(i, w.clone())?));
    }
    for (i, s) in config.syslog.iter().enumerate() {
        sinks.push(Box::new(syslog::Syslog::new(i, s.clone())?));
    }
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    for sink in sinks {
        let st = Arc::new(DeliveryStats::default());
        stats.push((sink.name(), st.clone()));
        tasks.push(tokio::spawn(run(data_dir.to_path_buf(), sink, config.clone(), st)));
    }
    Ok((stats, tasks))
}

/// Delivers alerts to `sink` forever (until aborted).
async fn run(data_dir: PathBuf, mut sink: Box<dyn Sink>, cfg: DeliveryConfig, stats: Arc<DeliveryStats>) {
    let name = sink.name();
    let path = state_path(&data_dir, &name);
    let mut st = load(&path);
    stats.delivered.store(st.delivered, Ordering::Relaxed);
    stats.failures.store(st.failures, Ordering::Relaxed);
    stats.skipped.store(st.skipped, Ordering::Relaxed);
    let mut store = Store { dir: data_dir, conn: None };
    let persist = |st: &State| {
        if let Err(e) = save(&path, st) {
            tracing::error!(destination = %name, error = %e, "alert delivery state not saved (alerts may be delivered twice)");
        }
    };
    tracing::info!(destination = %name, from = st.delivered_through, "alert delivery starting");
    let mut backoff = cfg.backoff_initial;
    loop {
        let (alerts, waiting, max) = match store.page(st.delivered_through, 256).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "cannot read alerts; retrying");
                tokio::time::sleep(cfg.poll.max(Duration::from_secs(1))).await;
                continue;
            }
        };
        if st.delivered_through > max {
            // The index was rebuilt into a new database: ids restarted.
            tracing::warn!(destination = %name, cursor = st.delivered_through, max,
                "alert ids restarted (index rebuilt); delivering from the first again");
            st.delivered_through = 0;
            continue;
        }
        st.pending = waiting;
        stats.pending.store(waiting, Ordering::Relaxed);
        if waiting > cfg.queue_max {
            // Pass over the oldest beyond the bound: the alert with rank `waiting - queue_max` is the last skipped.
            let n = (waiting - cfg.queue_max).min(alerts.len() as u64) as usize;
            let Some(last_skipped) = n.checked_sub(1).and_then(|i| alerts.get(i)).map(|a| a.id) else { continue };
            tracing::error!(destination = %name, skipped = n, from_id = st.delivered_through + 1,
                through_id = last_skipped, queue_max = cfg.queue_max,
                "ALERT QUEUE FULL: alerts not delivered to this destination; they stay in the store \
                 (wiretrail alerts --since {})", st.delivered_through);
            st.skipped += n as u64;
            stats.skipped.store(st.skipped, Ordering::Relaxed);
            st.delivered_through = last_skipped;
            persist(&st);
            continue;
        }
        if alerts.is_empty() {
            tokio::time::sleep(cfg.poll).await;
            continue;
        }
        for a in alerts {
            match sink.deliver(&a).await {
                Ok(()) => {
                    backoff = cfg.backoff_initial;
                    st.delivered += 1;
                    st.delivered_through = a.id;
                    st.pending = st.pending.saturating_sub(1);
                    persist(&st);
                    stats.delivered.store(st.delivered, Ordering::Relaxed);
                    stats.pending.store(st.pending, Ordering::Relaxed);
                    tracing::debug!(destination = %name, id = a.id, "alert delivered");
                }
                Err(e) => {
                    st.failures += 1;
                    stats.failures.store(st.failures, Ordering::Relaxed);
                    persist(&st);
                    tracing::warn!(destination = %name, id = a.id, error = %e, retry_in = ?backoff,
                        failures = st.failures, "alert delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.backoff_max);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
