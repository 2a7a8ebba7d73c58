//! Throughput of the connection table (reassembly, parsing, exchange
//! assembly, record making) on generated traffic, on one core, printed as
//! MB/s and records/s. Run by `cargo xtask bench flows` (which builds it with
//! `--release`); an example of the agent crate so that xtask does not depend
//! on the agent (xtask must build before the eBPF toolchain is installed).
//!
//! Each scenario is timed `--runs` times; the table prints the median run
//! and the spread (slowest/fastest). Messages are cut into capture-sized
//! chunks (16 KiB) and, with `--split`, every message is also split at a
//! random point, so parsers see messages that span chunks.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use wiretrail_agent::capture::event::CaptureEvent;
use wiretrail_agent::capture::synthetic::Synth;
use wiretrail_agent::capture::tls::TlsRegistry;
use wiretrail_agent::conn::{ConnConfig, ConnTable};
use wiretrail_agent::identity::{IdentityResolver, Sources};
use wiretrail_agent::proto::Protocol;
use wiretrail_agent::record::Record;
use wiretrail_agent::types::Direction;

/// The agent's own allocator, so the figures are the agent's.
#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

#[path = "bench_flows_traffic/brokers.rs"]
mod brokers;
#[path = "bench_flows_traffic/instructions.rs"]
mod instructions;

/// Capture splits syscalls into events of at most this many bytes.
const CHUNK: usize = 16 * 1024;

/// Options of the flows benchmark.
#[derive(clap::Parser, Debug)]
#[command(name = "bench_flows")]
pub struct Args {
    /// Approximate payload bytes generated per scenario (MiB; default 256,
    /// 2 with `--instructions`).
    #[arg(long)]
    mib: Option<usize>,
    /// Concurrent connections the traffic is spread over.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Timed repetitions per scenario (the median is reported, with the spread).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Split every message at one more (pseudo-random) point besides the 16 KiB chunking.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    split: bool,
    /// Run only the scenario with this name.
    #[arg(long)]
    only: Option<String>,
    /// Count the instructions executed inside `ConnTable::on_event` per
    /// record and per event with valgrind's callgrind (one run per scenario,
    /// the same for the same build and traffic) instead of timing.
    #[arg(long)]
    instructions: bool,
}

impl Args {
    fn mib(&self) -> usize {
        self.mib.unwrap_or(if self.instructions { 2 } else { 256 })
    }
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
    /// MySQL queries with 10-row results and prepared-statement executions.
    Mysql,
    /// AMQP confirmed publishes and deliveries with properties and 161 B bodies.
    Amqp,
    /// NATS publishes with reply subjects and deliveries (161 B payloads).
    Nats,
    /// MQTT 3.1.1 QoS 1 publishes, acknowledgements and deliveries (161 B payloads).
    Mqtt,
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    traffic: Traffic,
    /// Server port (protocol detection falls back to it).
    port: u16,
    /// Both ends captured (loopback): two witnesses, one record per exchange.
    both_ends: bool,
}

const SCENARIOS: [Scenario; 11] = [
    Scenario {
        name: "http1-small",
        what: "API calls, ~300 B requests, 0.1-2 KiB JSON responses",
        traffic: Traffic::Http1 { bodies: &[128, 512, 1024, 2048, 256], chunked_every: 0 },
        port: 8080,
        both_ends: false,
    },
    Scenario {
        name: "http1-twins",
        what: "http1-small with both ends captured (one record per exchange, both observations)",
        traffic: Traffic::Http1 { bodies: &[128, 512, 1024, 2048, 256], chunked_every: 0 },
        port: 8080,
        both_ends: true,
    },
    Scenario {
        name: "http1-mixed",
        what: "bodies 0.5-64 KiB, every 4th response chunked",
        traffic: Traffic::Http1 { bodies: &[512, 4096, 16_384, 65_536, 2048, 8192], chunked_every: 4 },
        port: 8080,
        both_ends: false,
    },
    Scenario {
        name: "http1-bulk",
        what: "256 KiB downloads",
        traffic: Traffic::Http1 { bodies: &[262_144], chunked_every: 0 },
        port: 8080,
        both_ends: false,
    },
    Scenario {
        name: "redis",
        what: "SET/GET with 100 B values",
        traffic: Traffic::Redis,
        port: 6379,
        both_ends: false,
    },
    Scenario {
        name: "fix",
        what: "FIX 4.4 orders and execution reports, checksums verified",
        traffic: Traffic::Fix,
        port: 9878,
        both_ends: false,
    },
    Scenario {
        name: "postgres",
        what: "simple queries, 10-row results",
        traffic: Traffic::Postgres,
        port: 5432,
        both_ends: false,
    },
    Scenario {
        name: "mysql",
        what: "queries with 10-row results, prepared executions",
        traffic: Traffic::Mysql,
        port: 3306,
        both_ends: false,
    },
    Scenario {
        name: "amqp",
        what: "confirmed publishes + deliveries, 161 B bodies",
        traffic: Traffic::Amqp,
        port: 5672,
        both_ends: false,
    },
    Scenario {
        name: "nats",
        what: "PUB with reply subject + MSG, 161 B payloads",
        traffic: Traffic::Nats,
        port: 4222,
        both_ends: false,
    },
    Scenario {
        name: "mqtt",
        what: "QoS 1 PUBLISH/PUBACK + deliveries, 161 B",
        traffic: Traffic::Mqtt,
        port: 1883,
        both_ends: false,
    },
];

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    if cfg!(debug_assertions) {
        bail!("build the benchmark with --release (cargo xtask bench flows does)");
    }
    if args.instructions {
        return count_instructions(&args);
    }
    println!(
        "flows benchmark: ConnTable::on_event on one thread (one core), release build, median of {} runs, {}",
        args.runs.max(1),
        if args.split { "messages split across events" } else { "whole messages per event (16 KiB chunks)" }
    );
    println!(
        "{:<12} {:>8} {:>8} {:>7} {:>10} {:>11} {:>8} {:>8}  scenario",
        "name", "MiB", "MB/s", "spread", "records", "records/s", "ns/rec", "ns/event"
    );
    for s in SCENARIOS.iter().filter(|s| args.only.as_deref().is_none_or(|o| o == s.name)) {
        let events = generate(s, args.mib() << 20, args.connections, args.split);
        let bytes: u64 = events
            .iter()
            .map(|e| match e {
                CaptureEvent::Data { payload, .. } => payload.len() as u64,
                _ => 0,
            })
            .sum();
        let mut times = Vec::new();
        let mut records = 0u64;
        for _ in 0..args.runs.max(1) {
            let (secs, recs) = time_once(s, &events)?;
            times.push(secs);
            records = recs;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let spread = times[times.len() - 1] / times[0];
        println!(
            "{:<12} {:>8.1} {:>8.0} {:>7.2} {:>10} {:>11.0} {:>8.1} {:>8.1}  {}",
            s.name,
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / median / 1e6,
            spread,
            records,
            records as f64 / median,
            median * 1e9 / records as f64,
            median * 1e9 / events.len() as f64,
            s.what
        );
    }
    println!("goal: >= 1000 MB/s of HTTP/1.1 per core through reassembly, parsing and exchange assembly");
    Ok(())
}

/// `--instructions`: each scenario once under callgrind (see `instructions.rs`).
fn count_instructions(args: &Args) -> anyhow::Result<()> {
    println!(
        "flows benchmark: instructions inside ConnTable::on_event (callgrind), one run, {} MiB per scenario, {}",
        args.mib(),
        if args.split { "messages split across events" } else { "whole messages per event (16 KiB chunks)" }
    );
    println!(
        "{:<12} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "name", "instructions", "records", "events", "per rec", "per event"
    );
    let pass = [
        "--mib".to_string(),
        args.mib().to_string(),
        "--connections".into(),
        args.connections.to_string(),
        "--split".into(),
        args.split.to_string(),
    ];
    for s in SCENARIOS.iter().filter(|s| args.only.as_deref().is_none_or(|o| o == s.name)) {
        // The same traffic the child generates (generation is deterministic).
        let events = generate(s, args.mib() << 20, args.connections, args.split);
        let (_, records) = time_once(s, &events)?;
        let n = instructions::count(s.name, &pass)?;
        println!(
            "{:<12} {:>14} {:>10} {:>10} {:>10.0} {:>10.0}",
            s.name,
            n,
            records,
            events.len(),
            n as f64 / records as f64,
            n as f64 / events.len() as f64
        );
    }
    Ok(())
}

fn table() -> ConnTable {
    ConnTable::new(ConnConfig::default(), IdentityResolver::new(Sources::default()), Arc::new(TlsRegistry::default()))
}

fn time_once(s: &Scenario, events: &[CaptureEvent]) -> anyhow::Result<(f64, u64)> {
    let mut t = table();
    let mut out: Vec<Record> = Vec::with_capacity(1024);
    let mut records = 0u64;
    let mut unparsed = 0u64;
    // The agent's decoder hands each event over owned: copy them before the
    // clock starts, so the timed loop moves events in as the agent does.
    let events = events.to_vec();
    let start = Instant::now();
    for e in events {
        t.on_event(e, &mut out);
        records += out.len() as u64;
        unparsed += out.iter().filter(|r| !matches!(r, Record::Exchange(_) | Record::Connection(_))).count() as u64;
        unparsed += out
            .iter()
            .filter(|r| matches!(r, Record::Exchange(e) if matches!(e.protocol, Protocol::Unknown | Protocol::Undetected) || e.incomplete.is_some()))
            .count() as u64;
        out.clear();
    }
    t.finish_all(&mut out);
    records += out.len() as u64;
    let secs = start.elapsed().as_secs_f64();
    let st = &t.stats;
    if st.malformed_messages + st.incomplete_messages + st.unparsed_bytes + st.gap_bytes + unparsed > 0 {
        bail!("{}: generated traffic did not parse cleanly ({unparsed} stray records): {st:?}", s.name);
    }
    if s.both_ends && st.twins == 0 {
        bail!("{}: the two ends were not paired: {st:?}", s.name);
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
        Traffic::Mysql => brokers::mysql(i, first),
        Traffic::Amqp => brokers::amqp(i, first),
        Traffic::Nats => brokers::nats(i, first),
        Traffic::Mqtt => brokers::mqtt(i, first),
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
/// writes split into capture-sized chunks (and at one more point per message
/// with `split`); with `both_ends`, the server's socket too.
fn generate(s: &Scenario, target: usize, conns: u64, split: bool) -> Vec<CaptureEvent> {
    let mut events = Vec::new();
    let mut clients: Vec<Synth> = Vec::new();
    let mut servers: Vec<Synth> = Vec::new();
    for c in 0..conns {
        let (cl, sv) = (format!("10.0.0.1:{}", 40_000 + c), format!("10.0.0.2:{}", s.port));
        let mut client = Synth::tcp(2 * c + 1, &cl, &sv).process(4242, "bench-client");
        events.push(client.connect());
        clients.push(client);
        if s.both_ends {
            let mut server = Synth::tcp(2 * c + 2, &sv, &cl).process(4343, "bench-server");
            events.push(server.accept());
            servers.push(server);
        }
    }
    let mut total = 0usize;
    let mut i = 0usize;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while total < target {
        let c = (i as u64 % conns) as usize;
        let first = (i as u64) < conns;
        // The connection's own exchange ordinal (acknowledgement numbers follow it).
        let (req, resp) = exchange(&s.traffic, i / conns as usize, first);
        for (client_dir, msg) in [(Direction::Egress, req), (Direction::Ingress, resp)] {
            let mut cuts: Vec<usize> = (CHUNK..msg.len()).step_by(CHUNK).collect();
            if split && msg.len() > 1 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                cuts.push(1 + (rng as usize) % (msg.len() - 1));
                cuts.sort_unstable();
                cuts.dedup();
            }
            let mut at = 0;
            for end in cuts.into_iter().chain([msg.len()]) {
                let piece = &msg[at..end];
                at = end;
                total += piece.len();
                // The sender's write, then the receiver's read.
                let (first_side, second_side) = if client_dir == Direction::Egress {
                    (Some((&mut clients[c], Direction::Egress)), servers.get_mut(c).map(|s| (s, Direction::Ingress)))
                } else {
                    (servers.get_mut(c).map(|s| (s, Direction::Egress)), Some((&mut clients[c], Direction::Ingress)))
                };
                for (side, dir) in [first_side, second_side].into_iter().flatten() {
                    events.push(side.data(dir, piece, false));
                }
            }
        }
        i += 1;
    }
    for c in clients.iter_mut().chain(servers.iter_mut()) {
        events.push(c.close());
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated traffic parses without a single malformed, incomplete
    /// or unparsed message (`time_once` fails otherwise), and HTTP/1 yields
    /// one record per exchange plus one per connection — with both ends too.
    #[test]
    fn generated_traffic_parses_cleanly() {
        for s in &SCENARIOS {
            time_once(s, &generate(s, 2 << 20, 8, true)).expect("clean parse of split messages");
            let events = generate(s, 2 << 20, 8, false);
            let (_, records) = time_once(s, &events).expect("clean parse");
            if let Traffic::Http1 { .. } = s.traffic {
                let requests = events
                    .iter()
                    .filter(|e| {
                        matches!(e, CaptureEvent::Data { payload, direction: Direction::Egress, meta, .. }
                        if payload.starts_with(b"GET ") && meta.pid == 4242)
                    })
                    .count() as u64;
                assert_eq!(records, requests + 8, "{}", s.name);
            } else {
                assert!(records > 1000, "{}: {records}", s.name);
            }
        }
    }
}
