//! Delivery against local receivers: retries with backoff until accepted,
//! the HMAC header, the bounded queue, the syslog frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::alerts::{Kind, NewAlert};

fn store_alerts(dir: &Path, n: usize) {
    let c = crate::index::open(dir).unwrap();
    for i in 0..n {
        let a = NewAlert {
            time_ns: 1_700_000_000_123_456_789 + i as i64,
            kind: Kind::Gap,
            identity_key: "node-\"a]".into(),
            detail: serde_json::json!({"reason": "ring_full", "i": i}),
            leaf_index: 10 + i as u64,
        };
        crate::alerts::insert(&c, &a).unwrap();
    }
}

/// One HTTP request read from `s`: (headers lower-cased, body).
async fn read_request(s: &mut tokio::net::TcpStream) -> (Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the request head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap();
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    (headers, buf[head_end..head_end + len].to_vec())
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        poll: Duration::from_millis(10),
        ..Default::default()
    }
}

#[tokio::test]
async fn webhook_retries_until_accepted_and_signs_the_body() {
    let dir = tempfile::tempdir().unwrap();
    store_alerts(dir.path(), 2);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let attempts = Arc::new(AtomicUsize::new(0));
    let a2 = attempts.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let (headers, body) = read_request(&mut s).await;
            // The first two attempts fail: the collector must retry, not drop.
            let ok = a2.fetch_add(1, Ordering::SeqCst) >= 2;
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await.unwrap();
            if ok {
                tx.send((headers, body)).await.unwrap();
            }
        }
    });
    let mut cfg = config();
    cfg.webhooks.push(webhook::WebhookConfig {
        url: format!("http://{addr}/hook"),
        secret: Some(b"s3cret".to_vec()),
        timeout: Duration::from_secs(5),
    });
    let (stats, tasks) = spawn(dir.path(), &cfg).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered").unwrap());
    }
    for (i, (headers, body)) in got.iter().enumerate() {
        let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(h(webhook::SIGNATURE_HEADER), webhook::signature(b"s3cret", body));
        assert_ne!(h(webhook::SIGNATURE_HEADER), webhook::signature(b"other", body));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!((v["id"].as_u64(), v["kind"].as_str()), (Some(i as u64 + 1), Some("gap")));
        assert_eq!(v["detail"]["i"], i);
        assert_eq!(h("x-wiretrail-alert-id"), (i + 1).to_string());
    }
    let s = &stats[0].1;
    assert!(wait(|| s.delivered.load(Ordering::Relaxed) == 2).await);
    assert_eq!(s.failures.load(Ordering::Relaxed), 2);
    for t in tasks {
        t.abort();
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("alert-delivery/webhook-0.json")).unwrap()).unwrap();
    assert_eq!((state["delivered_through"].as_u64(), state["failures"].as_u64()), (Some(2), Some(2)));
}

#[tokio::test]
async fn a_full_queue_passes_over_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    store_alerts(dir.path(), 5);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cfg = config();
    cfg.queue_max = 2;
    cfg.syslog.push(syslog::SyslogConfig {
        addr: addr.to_string(),
        tls_ca: None,
        tls_name: None,
        timeout: Duration::from_secs(5),
    });
    let (stats, tasks) = spawn(dir.path(), &cfg).unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), l.accept()).await.unwrap().unwrap();
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    let frames = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        text.extend_from_slice(&chunk[..n]);
        let f = parse_frames(&text);
        if f.len() == 2 {
            break f;
        }
    };
    // Alerts 1..=3 were passed over (the bound is 2), 4 and 5 delivered.
    assert!(frames[0].contains(" [wiretrail@32473 id=\"4\" kind=\"gap\""), "{}", frames[0]);
    assert!(frames[1].contains("id=\"5\""), "{}", frames[1]);
    let st = &stats[0].1;
    assert_eq!(st.skipped.load(Ordering::Relaxed), 3);
    assert!(wait(|| st.delivered.load(Ordering::Relaxed) == 2).await);
    for t in tasks {
        t.abort();
    }
    // Passed over, not deleted: still in the store.
    let c = crate::index::open(dir.path()).unwrap();
    assert_eq!(crate::alerts::list(&c, 0, None, 10).unwrap().len(), 5);
}

async fn wait(f: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Splits octet-counted frames (RFC 6587); a partial last frame is left out.
fn parse_frames(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(sp) = b.iter().position(|&c| c == b' ') {
        let len: usize = std::str::from_utf8(&b[..sp]).unwrap().parse().unwrap();
        if b.len() < sp + 1 + len {
            break;
        }
        out.push(String::from_utf8(b[sp + 1..sp + 1 + len].to_vec()).unwrap());
        b = &b[sp + 1 + len..];
    }
    out
}

#[test]
fn syslog_message_is_rfc5424() {
    let a = Alert {
        id: 7,
        time_ns: 1_700_000_000_123_456_789,
        kind: "clock".into(),
        severity: "high".into(),
        identity_key: "a\"b]c\\".into(),
        detail_json: "{\"x\":1}".into(),
        leaf_index: 42,
    };
    let m = String::from_utf8(syslog::message(&a, "host one", 99)).unwrap();
    // PRI 13*8+3, version 1, UTC time with 6 fraction digits, host without spaces.
    assert!(m.starts_with("<107>1 2023-11-14T22:13:20.123456Z hostone wiretrail 99 clock "), "{m}");
    assert!(m.contains(r#"identity="a\"b\]c\\" leaf="42"] "#), "{m}");
    let json = m.split_once('\u{feff}').unwrap().1;
    assert_eq!(serde_json::from_str::<serde_json::Value>(json).unwrap()["detail"]["x"], 1);
    let f = syslog::frame(m.as_bytes());
    assert_eq!(parse_frames(&f), vec![m.clone()]);
}
