//! `--metrics-addr`: Prometheus text scraped over loopback from a running
//! collector: background verification state, alert delivery counters per
//! destination (a receiver that refuses once, then accepts; one that is not
//! there), ingest counters; HELP lines; 404 elsewhere.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiretrail_collector::alerts::delivery::webhook::WebhookConfig;

/// GET `path` over a fresh connection: (status line, body).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `name{labels}` (exact text before the value).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

/// A webhook receiver answering 503 to its first request and 200 after.
async fn receiver() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the body (content-length).
            loop {
                let k = s.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
            n += 1;
            let status = if n == 1 { "503 Service Unavailable" } else { "200 OK" };
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_loopback() {
    let data = tempfile::tempdir().unwrap();
    // The receiver first: a port picked and released before it could be
    // handed to it again, and the "dead" sink would then answer.
    let live = receiver().await;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.metrics_addr = Some(metrics);
    let hook = |url: String| WebhookConfig { url, secret: None, timeout: Duration::from_secs(5) };
    cfg.delivery.webhooks = vec![hook(format!("http://{live}/alerts")), hook(format!("http://{dead}/alerts"))];
    cfg.delivery.backoff_initial = Duration::from_millis(20);
    cfg.delivery.backoff_max = Duration::from_millis(100);
    cfg.delivery.poll = Duration::from_millis(20);
    let srv = Server::start(cfg).await;
    // 8 records of identities no registry declares: shadow identity alerts.
    for r in send(srv.addr, vec![batch("node-m", "boot", 0, 8)]).await {
        r.unwrap();
    }

    // Scrape until delivery and the first verification run show (bounded: 20 s).
    let started = std::time::Instant::now();
    let text = loop {
        let (status, body) = get(metrics, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        let s = |series: &str| sample(&body, series);
        let ready = s("wiretrail_alert_delivered_total{sink=\"webhook-0\"}").is_some_and(|v| v >= 1.0)
            && s("wiretrail_alert_delivery_failures_total{sink=\"webhook-0\"}") == Some(1.0)
            && s("wiretrail_alert_delivery_failures_total{sink=\"webhook-1\"}").is_some_and(|v| v >= 1.0)
            && s("wiretrail_verify_last_run_timestamp_seconds{run=\"full\"}").is_some_and(|v| v > 0.0);
        if ready {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "metrics never showed delivery and verification:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&text, "wiretrail_alert_delivered_total{sink=\"webhook-1\"}"), Some(0.0), "{text}");
    assert!(sample(&text, "wiretrail_alert_pending{sink=\"webhook-1\"}").unwrap() >= 1.0, "{text}");
    assert_eq!(sample(&text, "wiretrail_verify_runs_total{result=\"ok\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "wiretrail_verify_runs_total{result=\"failed\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wiretrail_verify_first_bad_leaf"), Some(-1.0), "{text}");
    assert_eq!(sample(&text, "wiretrail_verify_running"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wiretrail_ingest_records_total"), Some(8.0), "{text}");
    assert_eq!(sample(&text, "wiretrail_ingest_batches_total"), Some(1.0), "{text}");
    assert!(sample(&text, "wiretrail_log_leaves").unwrap() >= 8.0, "{text}");
    // Set by the indexer from its rate, within its floor and the 1M-record cap.
    let limit = sample(&text, "wiretrail_index_lag_limit").unwrap();
    assert!((50_000.0..=1_000_000.0).contains(&limit), "{limit}: {text}");
    for help in ["wiretrail_verify_running", "wiretrail_alert_delivered", "wiretrail_ingest_records"] {
        assert!(text.contains(&format!("# HELP {help} ")), "no HELP for {help}: {text}");
    }
    assert!(text.contains("# TYPE wiretrail_alert_delivery_failures counter"), "{text}");
    let (status, _) = get(metrics, "/other").await;
    assert!(status.contains("404"), "{status}");
    srv.stop().await;
}
