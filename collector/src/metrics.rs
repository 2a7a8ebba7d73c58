//! `--metrics-addr`: the collector's state as Prometheus text on
//! `GET /metrics` (HTTP/1.1, plaintext; bind it to a management address).
//!
//! Read from the live counters at each scrape: background verification
//! ([`wiretrail_log::verify::background::Status`]), alert delivery per destination
//! ([`crate::alerts::delivery::DeliveryStats`]), ingest
//! ([`crate::ingest::commit::CommitStats`]), the log's size and the index;
//! in clustered mode, retention's deletions in ClickHouse
//! ([`crate::clickhouse::expiry::MirrorStats`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::alerts::delivery::DeliveryStats;
use crate::clickhouse::expiry::MirrorStats;
use crate::index::IndexProgress;
use crate::ingest::commit::CommitStats;
use wiretrail_log::store::Log;
use wiretrail_log::verify::background::Status;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the numbers come from.
#[derive(Clone)]
pub struct Sources {
    /// Background verification.
    pub verify: Arc<Status>,
    /// Alert delivery counters by destination name.
    pub delivery: Vec<(String, Arc<DeliveryStats>)>,
    /// Ingest and commit counters.
    pub commit: Arc<CommitStats>,
    /// The indexer's progress.
    pub index: Arc<IndexProgress>,
    /// The log.
    pub shared: Arc<Log>,
    /// Retention's deletions repeated in ClickHouse (clustered mode).
    pub mirror: Option<Arc<MirrorStats>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").field("verify", &self.verify).field("log_size", &self.shared.size()).finish()
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge_f(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A labelled family: one value per label set.
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    values: Vec<(String, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(first) = values.first() else { return Ok(()) };
    let mut m = e.encode_descriptor(name, help, None, first.1.metric_type())?;
    for (label, v) in &values {
        v.encode(m.encode_family(&[(key, label.as_str())])?)?;
    }
    Ok(())
}

impl Collector for Sources {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let v = &self.verify;
        gauge(&mut e, "wiretrail_verify_running", "1 while a background verification run is in progress", {
            v.running.load(Ordering::Relaxed) as i64
        })?;
        family(
            &mut e,
            "wiretrail_verify_last_run_timestamp_seconds",
            "When the last background verification run of each kind ended (UTC; 0 = none yet)",
            "run",
            vec![
                ("full".to_string(), ConstGauge::new(secs(ld(&v.last_full_ns)))),
                ("incremental".to_string(), ConstGauge::new(secs(ld(&v.last_incremental_ns)))),
            ],
        )?;
        gauge_f(
            &mut e,
            "wiretrail_verify_last_ok_timestamp_seconds",
            "When the last background verification run that found the log consistent ended (UTC; 0 = none yet)",
            secs(ld(&v.last_ok_ns)),
        )?;
        gauge(
            &mut e,
            "wiretrail_verify_verified_leaves",
            "Leaves covered by the last good background verification run (its checkpoint's size)",
            ld(&v.verified_size) as i64,
        )?;
        family(
            &mut e,
            "wiretrail_verify_runs",
            "Background verification runs by result (failed: the log does not match its checkpoints or could not be read)",
            "result",
            vec![
                ("ok".to_string(), ConstCounter::new(ld(&v.runs_ok))),
                ("failed".to_string(), ConstCounter::new(ld(&v.runs_failed))),
            ],
        )?;
        gauge(
            &mut e,
            "wiretrail_verify_first_bad_leaf",
            "First bad leaf found by the last background verification run (-1 = none)",
            ld(&v.first_bad_plus_one) as i64 - 1,
        )?;
        let per_sink = |f: fn(&DeliveryStats) -> u64| -> Vec<(String, ConstCounter)> {
            self.delivery.iter().map(|(n, s)| (n.clone(), ConstCounter::new(f(s)))).collect()
        };
        family(
            &mut e,
            "wiretrail_alert_delivered",
            "Alerts accepted by each destination",
            "sink",
            per_sink(|s| s.delivered.load(Ordering::Relaxed)),
        )?;
        family(
            &mut e,
            "wiretrail_alert_delivery_failures",
            "Failed delivery attempts per destination (each is retried with backoff)",
            "sink",
            per_sink(|s| s.failures.load(Ordering::Relaxed)),
        )?;
        family(
            &mut e,
            "wiretrail_alert_skipped",
            "Alerts passed over because a destination's queue was full (still in the store)",
            "sink",
            per_sink(|s| s.skipped.load(Ordering::Relaxed)),
        )?;
        let pending: Vec<(String, ConstGauge)> = self
            .delivery
            .iter()
            .map(|(n, s)| (n.clone(), ConstGauge::new(s.pending.load(Ordering::Relaxed) as i64)))
            .collect();
        family(&mut e, "wiretrail_alert_pending", "Alerts waiting for each destination", "sink", pending)?;
        let c = &self.commit;
        for (name, help, a) in [
            ("wiretrail_ingest_batches", "Batches made durable", &c.batches),
            ("wiretrail_ingest_records", "Records made durable", &c.records),
            ("wiretrail_ingest_duplicates", "Retried batches answered from the dedup table", &c.duplicates),
            ("wiretrail_ingest_out_of_sequence", "Batches refused for a sequence gap", &c.out_of_sequence),
            ("wiretrail_ingest_conflicts", "Batches stored as conflicts", &c.conflicts),
            ("wiretrail_ingest_refused", "Batches refused: agent id owned by another identity", &c.refused),
            (
                "wiretrail_ingest_storage_refused",
                "Batches refused because the store could not write",
                &c.storage_refused,
            ),
            ("wiretrail_commits", "Group commits (fsyncs)", &c.commits),
        ] {
            counter(&mut e, name, help, ld(a))?;
        }
        gauge(&mut e, "wiretrail_log_leaves", "Durable leaves in the log", self.shared.size() as i64)?;
        gauge(&mut e, "wiretrail_index_leaves", "Leaves indexed", ld(&self.index.indexed) as i64)?;
        gauge(
            &mut e,
            "wiretrail_index_lag_limit",
            "Leaves the log may run ahead of the index before ingest waits (from the indexer's rate)",
            ld(&self.index.lag_limit) as i64,
        )?;
        counter(&mut e, "wiretrail_index_failures", "Index transactions that failed (each retried)", {
            ld(&self.index.failures)
        })?;
        if let Some(m) = &self.mirror {
            gauge(
                &mut e,
                "wiretrail_clickhouse_deleted_rows_pending",
                "Rows of leaves retention deleted here that ClickHouse still held at the last pass",
                ld(&m.rows_pending) as i64,
            )?;
            gauge(
                &mut e,
                "wiretrail_clickhouse_deletion_blocked_seconds",
                "Age of the running ClickHouse mutation that held retention's deletion back at the last pass (0: none)",
                ld(&m.blocked_secs) as i64,
            )?;
            gauge(
                &mut e,
                "wiretrail_clickhouse_deletion_blocked_failing",
                "1 when that mutation's last attempt failed (it will not finish by itself)",
                ld(&m.blocked_failing) as i64,
            )?;
            counter(
                &mut e,
                "wiretrail_clickhouse_deletion_failures",
                "Passes whose deletion in ClickHouse failed (unreachable, refused, timed out; retried next pass)",
                ld(&m.failures),
            )?;
            gauge(
                &mut e,
                "wiretrail_clickhouse_orphaned_logs",
                "Logs whose collectors were not seen for the orphan time, at the last pass",
                ld(&m.orphaned_logs) as i64,
            )?;
            gauge(
                &mut e,
                "wiretrail_clickhouse_orphaned_logs_unverified",
                "Orphaned logs this collector looks after that did not verify from ClickHouse (kept whole) at the last pass",
                ld(&m.orphans_unverified) as i64,
            )?;
            counter(
                &mut e,
                "wiretrail_clickhouse_orphan_leaves_deleted",
                "Leaves of orphaned logs this collector's retention deleted",
                ld(&m.orphan_leaves_deleted),
            )?;
            counter(
                &mut e,
                "wiretrail_clickhouse_orphan_failures",
                "Passes over the orphaned logs that failed (unreachable, refused, timed out; retried next pass)",
                ld(&m.orphan_failures),
            )?;
        }
        Ok(())
    }
}

/// The Prometheus text of `sources` now.
pub fn render(sources: &Sources) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(sources.clone()));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String");
    out
}

/// Binds `addr` and serves `GET /metrics` until the task is aborted; the bound address.
pub async fn spawn(
    addr: SocketAddr,
    sources: Sources,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "metrics serving on /metrics");
    let sources = Arc::new(sources);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, sources.clone()));
                let conn =
                    hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
                if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await {
                    tracing::debug!(%peer, error = %e, "metrics connection timed out");
                }
            });
        }
    });
    Ok((bound, task))
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    sources: Arc<Sources>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ct: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let s = sources.clone();
            let body = tokio::task::spawn_blocking(move || render(&s)).await.unwrap_or_default();
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        }
        (&Method::GET, _) => reply(StatusCode::NOT_FOUND, "text/plain", "not found; metrics are at /metrics\n".into()),
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_verification_shows_its_first_bad_leaf_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let (_w, shared) =
            wiretrail_log::store::Writer::open(dir.path(), wiretrail_log::store::StoreConfig::default()).unwrap();
        let verify = Arc::new(Status::default());
        verify.runs_failed.fetch_add(2, Ordering::Relaxed);
        verify.first_bad_plus_one.store(42, Ordering::Relaxed);
        verify.running.store(true, Ordering::Relaxed);
        verify.last_incremental_ns.store(1_500_000_000, Ordering::Relaxed);
        let sources = Sources {
            verify,
            delivery: vec![("syslog-0".into(), Arc::new(DeliveryStats::default()))],
            commit: Arc::new(CommitStats::default()),
            index: Arc::new(IndexProgress::default()),
            shared,
            mirror: Some(Arc::new(MirrorStats::default())),
        };
        sources.mirror.as_ref().unwrap().blocked_secs.store(7200, Ordering::Relaxed);
        sources.mirror.as_ref().unwrap().orphan_leaves_deleted.store(65_536, Ordering::Relaxed);
        sources.mirror.as_ref().unwrap().orphans_unverified.store(1, Ordering::Relaxed);
        let t = render(&sources);
        for line in [
            "wiretrail_verify_runs_total{result=\"failed\"} 2",
            "wiretrail_verify_first_bad_leaf 41",
            "wiretrail_verify_running 1",
            "wiretrail_verify_last_run_timestamp_seconds{run=\"incremental\"} 1.5",
            "wiretrail_alert_skipped_total{sink=\"syslog-0\"} 0",
            "wiretrail_clickhouse_deletion_blocked_seconds 7200",
            "wiretrail_clickhouse_deletion_failures_total 0",
            "wiretrail_clickhouse_orphan_leaves_deleted_total 65536",
            "wiretrail_clickhouse_orphaned_logs_unverified 1",
            "wiretrail_clickhouse_orphaned_logs 0",
            "# EOF",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in:\n{t}");
        }
    }
}
