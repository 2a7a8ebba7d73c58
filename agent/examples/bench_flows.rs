//! Reassembly + parsing throughput of the flow engine on generated traffic, on
//! one core, printed as MB/s and records/s. Run by `cargo xtask bench flows`
//! (which builds it with `--release`); an example of the agent crate so that
//! xtask does not depend on the agent (xtask must build before the eBPF
//! toolchain is installed).

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use wiretrail_agent::flow::input::{
    ConnClose, ConnOpen, DataChunk, Direction, FlowEvent, ProcessIdentity, Role, Transport,
};
use wiretrail_agent::flow::{FlowConfig, FlowEngine};
use wiretrail_agent::proto::Protocol;

/// Capture splits syscalls into events of at most this many bytes.
const CHUNK: usize = 16 * 1024;

/// Options of the flows benchmark.
#[derive(clap::Parser, Debug)]
#[command(name = "bench_flows")]
pub struct Args {
    /// Approximate payload bytes generated per scenario (MiB).
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Concurrent connections the traffic is spread over.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Timed repetitions per scenario (the best is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run only the scenario with this name.
    #[arg(long)]
    only: Option<String>,
}

/// What traffic a scenario generates.
enum Traffic {
    /// HTTP/1.1 keep-alive exchanges.
    Http1 {
        /// Response body sizes cycled through.
        bodies: &'static [usize],
        /// Every n-th response uses chunked encoding (0: never).
        chunked_every: usize,
    },
    /// Redis SET/GET pipeline with 100-byte values.
    Redis,
    /// FIX 4.4 NewOrderSingle / ExecutionReport.
    Fix,
    /// PostgreSQL simple queries returning 10 rows.
    Postgres,
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    traffic: Traffic,
    /// Server port (protocol detection falls back to it).
    port: u16,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "http1-small",
        what: "API calls, ~300 B requests, 0.1-2 KiB JSON responses",
        traffic: Traffic::Http1 { bodies: &[128, 512, 1024, 2048, 256], chunked_every: 0 },
        port: 8080,
    },
    Scenario {
        name: "http1-mixed",
        what: "bodies 0.5-64 KiB, every 4th response chunked",
        traffic: Traffic::Http1 { bodies: &[512, 4096, 16_384, 65_536, 2048, 8192], chunked_every: 4 },
        port: 8080,
    },
    Scenario {
        name: "http1-bulk",
        what: "256 KiB downloads",
        traffic: Traffic::Http1 { bodies: &[262_144], chunked_every: 0 },
        port: 8080,
    },
    Scenario { name: "redis", what: "SET/GET with 100 B values", traffic: Traffic::Redis, port: 6379 },
    Scenario {
        name: "fix",
        what: "FIX 4.4 orders and execution reports, checksums verified",
        traffic: Traffic::Fix,
        port: 9878,
    },
    Scenario { name: "postgres", what: "simple queries, 10-row results", traffic: Traffic::Postgres, port: 5432 },
];

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    if cfg!(debug_assertions) {
        bail!("build the benchmark with --release (cargo xtask bench flows does)");
    }
    println!("flows benchmark: FlowEngine::push_into on one thread (one core), release build");
    println!(
        "{:<12} {:>9} {:>9} {:>11} {:>12} {:>9}  scenario",
        "name", "MiB", "MB/s", "records", "records/s", "ns/rec"
    );
    for s in SCENARIOS.iter().filter(|s| args.only.as_deref().is_none_or(|o| o == s.name)) {
        let events = generate(s, args.mib << 20, args.connections);
        let bytes: u64 = events
            .iter()
            .map(|e| match e {
                FlowEvent::Data(d) => d.data.len() as u64,
                _ => 0,
            })
            .sum();
        let mut best = f64::MAX;
        let mut records = 0u64;
        for _ in 0..args.runs.max(1) {
            let (secs, recs) = time_once(&events)?;
            best = best.min(secs);
            records = recs;
        }
        let mb_s = bytes as f64 / best / 1e6;
        println!(
            "{:<12} {:>9.1} {:>9.0} {:>11} {:>12.0} {:>9.1}  {}",
            s.name,
            bytes as f64 / (1 << 20) as f64,
            mb_s,
            records,
            records as f64 / best,
            best * 1e9 / records as f64,
            s.what
        );
    }
    println!("goal: >= 1000 MB/s of HTTP/1.1 per core through reassembly and parsing");
    Ok(())
}

fn time_once(events: &[FlowEvent]) -> anyhow::Result<(f64, u64)> {
    let mut engine = FlowEngine::new(FlowConfig::default());
    let mut out = Vec::with_capacity(1024);
    let mut records = 0u64;
    let start = Instant::now();
    let mut undetected = 0u64;
    for e in events {
        engine.push_into(e.clone(), &mut out);
        records += out.len() as u64;
        undetected +=
            out.iter().filter(|r| matches!(r.protocol, Protocol::Unknown | Protocol::Undetected)).count() as u64;
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = engine.stats();
    if stats.malformed_messages + stats.incomplete_messages + stats.unparsed_bytes + undetected > 0 {
        bail!("generated traffic did not parse cleanly: {stats:?}");
    }
    Ok((secs, records))
}

fn request(i: usize) -> Vec<u8> {
    format!(
        "GET /api/v1/accounts/{:08}/positions?limit=100&cursor={i} HTTP/1.1\r\nHost: ledger.internal.example\r\nUser-Agent: wiretrail-bench/1.0\r\nAccept: application/json\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.{i:016x}\r\nX-Request-Id: {i:032x}\r\n\r\n",
        i % 100_000
    )
    .into_bytes()
}

fn response(i: usize, body_len: usize, chunked: bool) -> Vec<u8> {
    const PATTERN: &[u8] = br#"{"qty":100,"px":"12.5"}"#;
    let body: Vec<u8> = (0..body_len).map(|j| PATTERN[j % PATTERN.len()]).collect();
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nDate: Sat, 21 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\nServer: bench\r\nX-Request-Id: {i:032x}\r\n"
    )
    .into_bytes();
    if chunked {
        r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for part in body.chunks(8192) {
            r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            r.extend_from_slice(part);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
    } else {
        r.extend_from_slice(format!("Content-Length: {body_len}\r\n\r\n").as_bytes());
        r.extend_from_slice(&body);
    }
    r
}

/// Request and response bytes of exchange `i` (`first`: the connection's
/// first exchange, for protocols with a handshake).
fn exchange(t: &Traffic, i: usize, first: bool) -> (Vec<u8>, Vec<u8>) {
    match t {
        Traffic::Http1 { bodies, chunked_every } => {
            let body = bodies[i % bodies.len()];
            let chunked = *chunked_every > 0 && i.is_multiple_of(*chunked_every);
            (request(i), response(i, body, chunked))
        }
        Traffic::Redis => {
            let key = format!("account:{i:08}:position");
            let value = format!("{i:0100}");
            if i.is_multiple_of(2) {
                let cmd = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100\r\n{value}\r\n", key.len());
                (cmd.into_bytes(), b"+OK\r\n".to_vec())
            } else {
                let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
                (cmd.into_bytes(), format!("$100\r\n{value}\r\n").into_bytes())
            }
        }
        Traffic::Fix => {
            let time = "20261121-12:00:01.000";
            let order = fix_message(&[
                ("35", "D".into()),
                ("49", "CLIENT1".into()),
                ("56", "BROKER1".into()),
                ("34", (i + 1).to_string()),
                ("52", time.into()),
                ("11", format!("ORD-{i:010}")),
                ("21", "1".into()),
                ("55", "AAPL".into()),
                ("54", "1".into()),
                ("60", time.into()),
                ("38", "100".into()),
                ("40", "2".into()),
                ("44", "187.25".into()),
            ]);
            let report = fix_message(&[
                ("35", "8".into()),
                ("49", "BROKER1".into()),
                ("56", "CLIENT1".into()),
                ("34", (i + 1).to_string()),
                ("52", time.into()),
                ("37", format!("B-{i:010}")),
                ("11", format!("ORD-{i:010}")),
                ("17", format!("E-{i:010}")),
                ("150", "0".into()),
                ("39", "0".into()),
                ("55", "AAPL".into()),
                ("54", "1".into()),
                ("38", "100".into()),
                ("151", "100".into()),
                ("14", "0".into()),
                ("6", "0".into()),
            ]);
            (order, report)
        }
        Traffic::Postgres => {
            let mut req = Vec::new();
            let mut resp = Vec::new();
            if first {
                let params = b"user\0bench\0database\0ledger\0\0";
                req.extend_from_slice(&((params.len() + 8) as u32).to_be_bytes());
                req.extend_from_slice(&196_608u32.to_be_bytes());
                req.extend_from_slice(params);
                resp.extend(pg(b'R', &0u32.to_be_bytes()));
                resp.extend(pg(b'Z', b"I"));
            }
            req.extend(pg(b'Q', format!("SELECT id, qty, px FROM positions WHERE account = {i}\0").as_bytes()));
            let mut t = 3u16.to_be_bytes().to_vec();
            for col in ["id", "qty", "px"] {
                t.extend_from_slice(col.as_bytes());
                t.extend_from_slice(&[0; 19]);
            }
            resp.extend(pg(b'T', &t));
            for r in 0..10 {
                let mut d = 3u16.to_be_bytes().to_vec();
                for v in [format!("{r}"), "100".to_string(), "187.25".to_string()] {
                    d.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    d.extend_from_slice(v.as_bytes());
                }
                resp.extend(pg(b'D', &d));
            }
            resp.extend(pg(b'C', b"SELECT 10\0"));
            resp.extend(pg(b'Z', b"I"));
            (req, resp)
        }
    }
}

fn pg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![t];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A FIX 4.4 message with correct BodyLength and CheckSum.
fn fix_message(fields: &[(&str, String)]) -> Vec<u8> {
    let body: String = fields.iter().map(|(t, v)| format!("{t}={v}\x01")).collect();
    let mut m = format!("8=FIX.4.4\x019={}\x01{body}", body.len()).into_bytes();
    let sum = m.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    m.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    m
}

/// Traffic of `conns` keep-alive connections, interleaved by exchange, with
/// writes split into capture-sized chunks.
fn generate(s: &Scenario, target: usize, conns: u64) -> Vec<FlowEvent> {
    let mut events = Vec::new();
    let mut pos = vec![[0u64; 2]; conns as usize];
    let mut ts = 1_000_000u64;
    for c in 0..conns {
        events.push(FlowEvent::Open(ConnOpen {
            conn_id: c + 1,
            ts_ns: ts,
            local: Some(SocketAddr::from(([10, 0, 0, 1], 40_000 + c as u16))),
            remote: Some(SocketAddr::from(([10, 0, 0, 2], s.port))),
            transport: Transport::Tcp,
            role: Role::Client,
            identity: ProcessIdentity { pid: 4242, uid: 1000, comm: "bench".into(), cgroup_id: 1 },
        }));
    }
    let mut total = 0usize;
    let mut i = 0usize;
    while total < target {
        let c = (i as u64 % conns) as usize;
        let first = (i as u64) < conns;
        let (req, resp) = exchange(&s.traffic, i, first);
        for (dir, msg) in [(Direction::Egress, req), (Direction::Ingress, resp)] {
            let msg = Bytes::from(msg);
            for off in (0..msg.len()).step_by(CHUNK) {
                let data = msg.slice(off..(off + CHUNK).min(msg.len()));
                ts += 1_000;
                total += data.len();
                events.push(FlowEvent::Data(DataChunk {
                    conn_id: c as u64 + 1,
                    direction: dir,
                    pos: pos[c][dir.index()],
                    ts_ns: ts,
                    data: data.clone(),
                }));
                pos[c][dir.index()] += data.len() as u64;
            }
        }
        i += 1;
    }
    for c in 0..conns {
        events.push(FlowEvent::Close(ConnClose {
            conn_id: c + 1,
            ts_ns: ts + 1,
            tx_total: pos[c as usize][0],
            rx_total: pos[c as usize][1],
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated traffic parses without a single malformed, incomplete
    /// or unparsed message (`time_once` fails otherwise), and HTTP/1 yields
    /// one record per message plus one per connection.
    #[test]
    fn generated_traffic_parses_cleanly() {
        for s in &SCENARIOS {
            let events = generate(s, 2 << 20, 8);
            let (_, records) = time_once(&events).expect("clean parse");
            if let Traffic::Http1 { .. } = s.traffic {
                let messages = events
                    .iter()
                    .filter(|e| matches!(e, FlowEvent::Data(d) if d.data.starts_with(b"GET ") || d.data.starts_with(b"HTTP/1.1 ")))
                    .count() as u64;
                assert_eq!(records, messages + 8, "{}", s.name);
            } else {
                assert!(records > 1000, "{}: {records}", s.name);
            }
        }
    }
}
