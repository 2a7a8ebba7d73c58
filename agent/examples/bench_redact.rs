//! Throughput of redaction's search (`Redactor::find`, every built-in rule)
//! on the traffic of `bench_flows`' HTTP/1 and Redis scenarios: ~300 B
//! requests with a bearer token, JSON responses full of short digit runs,
//! Redis SETs. Prints the best of 7 timed passes (20 rounds over 3,000
//! buffers each) as MB/s and ns per buffer. Run:
//! `cargo run --release -p wiretrail-agent --example bench_redact`.
use std::time::Instant;

use wiretrail_agent::proto::Protocol;
use wiretrail_agent::redact::{RedactConfig, Redactor};

/// The agent's own allocator, so the figures are the agent's.
#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

fn buffers() -> Vec<Vec<u8>> {
    let mut bufs = Vec::new();
    for i in 0..1000usize {
        bufs.push(format!(
            "GET /api/v1/accounts/{:08}/positions?limit=100&cursor={i} HTTP/1.1\r\nHost: ledger.internal.example\r\n\
             User-Agent: wiretrail-bench/1.0\r\nAccept: application/json\r\n\
             Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.{i:016x}\r\nX-Request-Id: {i:032x}\r\n\r\n",
            i % 100_000
        )
        .into_bytes());
        let body: String = std::iter::repeat_n(r#"{"qty":100,"px":"12.5"}"#, 20 + i % 40).collect();
        bufs.push(
            format!(
                "HTTP/1.1 200 OK\r\nDate: Sat, 21 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\n\
                 Server: bench\r\nX-Request-Id: {i:032x}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        bufs.push(format!("*3\r\n$3\r\nSET\r\n$22\r\naccount:{i:08}:position\r\n$100\r\n{i:0100}\r\n").into_bytes());
    }
    bufs
}

fn main() {
    let r = Redactor::with_key(RedactConfig::default().compile().expect("built-in rules compile"), vec![7; 32]);
    let bufs = buffers();
    let bytes: usize = bufs.iter().map(Vec::len).sum();
    let (mut best, mut masks) = (f64::MAX, 0);
    for _ in 0..7 {
        let t = Instant::now();
        masks = 0;
        for _ in 0..20 {
            for b in &bufs {
                masks += r.find(Protocol::Http1, b).len();
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    // One mask per request: the Authorization rule and the bearer rule cover one range.
    assert_eq!(masks, 20 * 1000, "masks found");
    println!(
        "redaction find: {:.0} MB/s, {:.0} ns per buffer ({} buffers, {masks} masks)",
        (bytes * 20) as f64 / best / 1e6,
        best * 1e9 / (bufs.len() * 20) as f64,
        bufs.len()
    );
}
