//! `cargo xtask bench collector`: collector figures measured in one run on
//! this machine, against an in-process collector on loopback (plaintext gRPC,
//! so TLS cost is not included), with the load generator on the same cores.
//!
//! 1. Ingest: records/s with 512-byte payloads, counting only records whose
//!    durable (post-fsync) ack came back; several agent streams in parallel.
//!    The acked count is sampled every second, and three rates are printed:
//!    the start (the first `--start-secs`, while the log runs ahead of the
//!    index), the steady state (the second half of the ingest phase, with the
//!    slowest and fastest 5 s window in it), and the whole-phase mean.
//!    This phase also builds the data set for the next two.
//! 2. Query: p50/p99 latency of `identity pod=X` + a 1-hour window over the
//!    N stored records (capture times spread over 30 days, 100 pods), through
//!    the gRPC query API, after the index has caught up.
//! 3. Verify: full `verify` of the data directory, MB/s of leaf bytes (uncompressed)
//!    and of segment bytes; then the log's bytes on disk per payload byte.
//! 4. Start-up: seconds from starting a collector on the data directory to
//!    its first answer, from the snapshot saved when the previous one stopped,
//!    then with the snapshots removed (a scan of the whole log).
//!
//! `--store clickhouse` runs the same phases against a collector in clustered
//! mode writing to a ClickHouse server the bench starts itself (see
//! [`crate::bench_collector_ch`]: engine, replicas and quorum options).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use wiretrail_collector::ServeConfig;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Batch, Endpoint, Filter, LatestCheckpointRequest, Record, RecordKind, SearchRequest};

use crate::bench_payload::{PAYLOAD, Payload, payload};

/// Span of capture times in the data set.
const SPAN_NS: i64 = 30 * 24 * 3600 * 1_000_000_000;
/// One hour in ns.
const HOUR_NS: i64 = 3600 * 1_000_000_000;
/// Distinct pods in the identity map.
const PODS: u64 = 100;

/// Options of `bench collector`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Records to store (the goal is 10 million).
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) records: u64,
    /// Stop building the data set after this many seconds (N is then what was stored).
    #[arg(long, default_value_t = 300)]
    pub(crate) setup_secs: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: u64,
    /// Parallel agent streams.
    #[arg(long, default_value_t = 4)]
    pub(crate) streams: u64,
    /// Length of the start window reported apart from the steady state (s).
    #[arg(long, default_value_t = 10)]
    pub(crate) start_secs: u64,
    /// Query samples.
    #[arg(long, default_value_t = 200)]
    pub(crate) queries: usize,
    /// Data directory (emptied first); defaults to target/bench-collector.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Keep the data directory afterwards.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Record payloads: `alphabet` (the alphabet repeated after a record
    /// number: trivially compressible) or `http` (varied HTTP/1.1 requests
    /// with random ids, tokens and JSON bodies).
    #[arg(long, value_enum, default_value_t = Payload::Alphabet)]
    pub(crate) payload: Payload,
    /// zstd level of the log's frames (the collector's `--compression-level`).
    #[arg(long, default_value_t = wiretrail_log::store::DEFAULT_COMPRESSION_LEVEL, allow_negative_numbers = true)]
    pub(crate) compression_level: i32,
    /// Store frames uncompressed (the collector's `--no-compression`).
    #[arg(long)]
    pub(crate) no_compression: bool,
    /// Where the collector keeps its records: `embedded` (its own log and
    /// index) or `clickhouse` (clustered mode: the log, and every leaf in a
    /// ClickHouse server the bench starts; query and verify from ClickHouse).
    #[arg(long, value_enum, default_value_t = Store::Embedded)]
    pub(crate) store: Store,
    #[command(flatten)]
    pub(crate) clickhouse: crate::bench_collector_ch::ChArgs,
}

/// Where the benchmarked collector keeps its records.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The embedded store (log + index in the data directory).
    Embedded,
    /// Clustered mode: the log, plus every leaf in ClickHouse before the ack.
    Clickhouse,
}

pub(crate) fn record(i: u64, n: u64, kind: Payload) -> Record {
    let p = payload(kind, i);
    Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: 1_700_000_000_000_000_000 + (i as i128 * SPAN_NS as i128 / n as i128) as i64,
        conn_id: i % 1000,
        remote: Some(Endpoint { address: format!("10.1.{}.{}", (i / 256) % 256, i % 256), port: 5432 }),
        app_protocol: "postgres".into(),
        identity: [("pod".to_string(), format!("pod-{}", i % PODS))].into(),
        payload: p,
        host: "bench-node".into(),
        ..Default::default()
    }
}

/// One agent stream: batches `seq` of records `first + k*streams ...` until told to stop.
async fn agent(addr: std::net::SocketAddr, id: u64, a: Arc<Shared>, kind: Payload) -> anyhow::Result<()> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut client = IngestClient::new(ch);
    let (tx, rx) = mpsc::channel::<Batch>(16);
    let mut acks = client.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let a2 = a.clone();
    let producer = tokio::spawn(async move {
        let mut seq = 0;
        loop {
            let first = a2.next.fetch_add(a2.batch, Ordering::Relaxed);
            if first >= a2.target || a2.stop.load(Ordering::Relaxed) {
                break;
            }
            let last = (first + a2.batch).min(a2.target);
            let records = (first..last).map(|i| record(i, a2.target, kind)).collect();
            let b = Batch {
                agent_id: format!("bench-agent-{id}"),
                boot_id: "bench".into(),
                seq,
                records,
                covers_through_seq: 0,
            };
            seq += 1;
            if tx.send(b).await.is_err() {
                break;
            }
        }
    });
    while let Some(ack) = acks.next().await {
        let ack = ack.context("ingest")?;
        a.acked.fetch_add(ack.last_leaf_index - ack.first_leaf_index + 1, Ordering::Relaxed);
    }
    producer.await?;
    Ok(())
}

/// State shared by the agent streams.
struct Shared {
    /// Next record number to hand out.
    next: AtomicU64,
    /// Records acked durably.
    acked: AtomicU64,
    /// Records to generate.
    target: u64,
    /// Records per batch.
    batch: u64,
    /// Set when the setup time is over.
    stop: AtomicBool,
}

/// Runs the benchmark and prints the table.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.store == Store::Clickhouse {
        return crate::bench_collector_ch::run(&args);
    }
    args.clickhouse.only_with_clickhouse()?;
    let dir = data_dir(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let res = rt.block_on(bench(&args, &dir));
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

/// The data directory, emptied.
pub(crate) fn data_dir(args: &Args) -> anyhow::Result<PathBuf> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("target/bench-collector"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What the ingest phase measured.
pub(crate) struct Ingested {
    /// Records acked durably (N).
    pub(crate) n: u64,
    /// Length of the phase (s).
    pub(crate) secs: f64,
    /// The rates.
    pub(crate) rates: IngestRates,
}

/// Phase 1: ingest up to `--records` records over `--streams` agent streams
/// into the collector at `addr`, for at most `--setup-secs`.
pub(crate) async fn ingest(addr: std::net::SocketAddr, args: &Args) -> anyhow::Result<Ingested> {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        target: args.records,
        batch: args.batch,
        stop: AtomicBool::new(false),
    });
    eprintln!(
        "ingest: up to {} records of {PAYLOAD} B ({:?} payload) over {} streams, at most {} s",
        args.records, args.payload, args.streams, args.setup_secs
    );
    let t = Instant::now();
    let agents: Vec<_> =
        (0..args.streams).map(|id| tokio::spawn(agent(addr, id, shared.clone(), args.payload))).collect();
    // (seconds since the start, records acked), once a second.
    let samples = Arc::new(std::sync::Mutex::new(vec![(0.0f64, 0u64)]));
    let monitor = {
        let shared = shared.clone();
        let samples = samples.clone();
        let deadline = t + Duration::from_secs(args.setup_secs);
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                every.tick().await;
                let n = shared.acked.load(Ordering::Relaxed);
                let mut s = samples.lock().expect("samples");
                s.push((t.elapsed().as_secs_f64(), n));
                if s.len() % 5 == 1 {
                    let (_, before) = s[s.len() - 6];
                    eprintln!("  {n} records acked, {:.0}/s over the last 5 s", (n - before) as f64 / 5.0);
                }
                if Instant::now() >= deadline {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    for a in agents {
        a.await??;
    }
    monitor.abort();
    let ingest_secs = t.elapsed().as_secs_f64();
    let n = shared.acked.load(Ordering::Relaxed);
    if n == 0 {
        bail!("nothing was ingested");
    }
    let mut samples = samples.lock().expect("samples").clone();
    samples.push((ingest_secs, n));
    let rates = IngestRates::of(&samples, args.start_secs as f64);
    Ok(Ingested { n, secs: ingest_secs, rates })
}

async fn bench(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut cfg = ServeConfig::new(dir.to_path_buf());
    cfg.checkpoint_interval = Duration::from_secs(60);
    cfg.store.compression = (!args.no_compression).then_some(args.compression_level);
    let server = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
        let _ = stop_rx.await;
    }));

    // 0. The frame codec alone (before the server loads the machine).
    let codec = crate::bench_frames::measure(args.payload)?;

    // 1. Ingest (and build the data set), the index's WAL size sampled every second.
    let wal_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, wal) = (wal_peak.clone(), dir.join("index.sqlite-wal"));
        tokio::spawn(async move {
            loop {
                let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                peak.fetch_max(len, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let ingested = ingest(addr, args).await;
    sampler.abort();
    let Ingested { n, secs: ingest_secs, rates } = ingested?;

    // Wait for the index to cover everything.
    let t_idx = Instant::now();
    loop {
        let c = wiretrail_collector::index::open(dir)?;
        if wiretrail_collector::index::indexed(&c)? >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let index_wait = t_idx.elapsed().as_secs_f64();

    // 2. Query latency: identity + 1 h window.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut q = QueryClient::new(ch);
    let mut lat = Vec::with_capacity(args.queries);
    let mut hits_total = 0u64;
    for filter in query_filters(n, args) {
        let t = Instant::now();
        let mut s =
            q.search(SearchRequest { filter: Some(filter), follow: false, ..Default::default() }).await?.into_inner();
        while let Some(r) = s.next().await {
            r?;
            hits_total += 1;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    stop_tx.send(()).ok();
    server.await??;

    // 3. Verify.
    let v = wiretrail_log::store::load_verifier(dir)?;
    let t = Instant::now();
    let (report, _) = wiretrail_log::verify::verify(dir, &v, None, |_, _| {})?;
    let verify_secs = t.elapsed().as_secs_f64();
    if let Some(i) = report.first_bad {
        bail!("verify found a bad record at {i}: {:?}", report.problem);
    }
    // Bytes on disk: the segments (the record of truth), and with the derived hashes and offsets.
    let (mut segments_bytes, mut log_bytes) = (0u64, 0u64);
    for e in std::fs::read_dir(dir.join("log"))? {
        let e = e?;
        let len = e.metadata()?.len();
        log_bytes += len;
        if e.file_name().to_string_lossy().ends_with(".wtl") {
            segments_bytes += len;
        }
    }
    let payload_bytes = (n * PAYLOAD as u64) as f64;
    // The index (derived, rebuildable) and its write-ahead log, as the collector left them.
    let file_len = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
    let (index_bytes, index_wal_bytes) = (file_len("index.sqlite"), file_len("index.sqlite-wal"));

    // 4. Start-up: from the snapshot saved at the stop above, then without it (a scan of the whole log).
    for name in ["commit.snap", "tree.snap"] {
        let p = wiretrail_log::store::snapshot::state_dir(dir).join(name);
        if !p.exists() {
            bail!("the collector did not leave {} when it stopped", p.display());
        }
    }
    let start_snapshot = time_start(dir).await?;
    wiretrail_log::store::snapshot::remove_all(dir)?;
    let start_scan = time_start(dir).await?;

    println!();
    // The collector runs inside xtask, so its build is xtask's: `cargo xtask`
    // builds it in debug. Say which, never assume.
    let build = if cfg!(debug_assertions) { "DEBUG build" } else { "release build" };
    println!(
        "collector benchmark ({build}, in-process collector, loopback plaintext gRPC, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    print_head(n, args);
    print_ingest(&rates, ingest_secs, args, "durable acks");
    println!("{:<44} {:>16.1}", "index catch-up after ingest (s)", index_wait);
    println!("{:<44} {:>16.2}", "query identity+1h p50 (ms)", percentile(&lat, 0.50).as_secs_f64() * 1e3);
    println!("{:<44} {:>16.2}", "query identity+1h p99 (ms)", percentile(&lat, 0.99).as_secs_f64() * 1e3);
    println!("{:<44} {:>16.1}", "query mean hits", hits_total as f64 / args.queries as f64);
    println!("{:<44} {:>16.1}", "verify MB/s (leaf bytes)", report.leaf_bytes as f64 / 1e6 / verify_secs);
    println!("{:<44} {:>16.1}", "verify MB/s (segment bytes)", report.bytes as f64 / 1e6 / verify_secs);
    println!("{:<44} {:>16.0}", "verify records/s", report.leaves as f64 / verify_secs);
    println!("{:<44} {:>16.1}", "log size (MB, segments)", segments_bytes as f64 / 1e6);
    println!("{:<44} {:>16.3}", "log bytes on disk per payload byte", segments_bytes as f64 / payload_bytes);
    println!("{:<44} {:>16.3}", "  with log/hashes and log/offsets", log_bytes as f64 / payload_bytes);
    println!("{:<44} {:>16.1}", "index size (MB)", index_bytes as f64 / 1e6);
    println!(
        "{:<44} {:>16.1}",
        "  index WAL, largest during ingest (MB)",
        wal_peak.load(Ordering::Relaxed) as f64 / 1e6
    );
    println!("{:<44} {:>16.1}", "  index WAL at stop (MB)", index_wal_bytes as f64 / 1e6);
    println!("{:<44} {:>16.2}", "start-up to first answer, from snapshot (s)", start_snapshot);
    println!("{:<44} {:>16.2}", "start-up to first answer, full scan (s)", start_scan);
    crate::bench_frames::print(args.payload, &codec);
    Ok(())
}

/// The query samples: `identity pod=X` and a 1-hour window at random
/// within the capture times of the `n` stored records (the same sequence in
/// every run).
pub(crate) fn query_filters(n: u64, args: &Args) -> Vec<Filter> {
    let covered_ns = (n as i128 * SPAN_NS as i128 / args.records as i128) as i64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    (0..args.queries)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let from = 1_700_000_000_000_000_000 + (rng % (covered_ns - HOUR_NS).max(1) as u64) as i64;
            let pod = (rng >> 32) % PODS;
            Filter {
                identity: vec![format!("pod=pod-{pod}")],
                from_time_ns: from,
                to_time_ns: from + HOUR_NS,
                limit: 100_000,
                ..Default::default()
            }
        })
        .collect()
}

/// The p-th percentile of sorted latencies.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints the ingest rows (`acks` says what an ack meant).
pub(crate) fn print_ingest(rates: &IngestRates, ingest_secs: f64, args: &Args, acks: &str) {
    println!("ingest records/s, {PAYLOAD} B payload, {acks}:");
    let start_label = format!("  start (first {:.0} s)", rates.start_secs);
    println!("{start_label:<44} {:>16.0}", rates.start);
    let steady_label = format!("  steady state (last {:.0} s, second half)", rates.steady_secs);
    println!("{steady_label:<44} {:>16.0}", rates.steady);
    println!(
        "{:<44} {:>16}",
        "  steady state, slowest / fastest 5 s window",
        match rates.steady_windows {
            Some((lo, hi)) => format!("{lo:.0} / {hi:.0}"),
            None => "n/a (< 5 s)".to_string(),
        }
    );
    println!("{:<44} {:>16.0}", "  whole-phase mean (start included)", rates.whole);
    println!("{:<44} {:>16.1}", "ingest payload MB/s, steady state", rates.steady * PAYLOAD as f64 / 1e6);
    if ingest_secs < 4.0 * args.start_secs as f64 {
        println!(
            "NOTE: the ingest phase ran {ingest_secs:.0} s, less than 4 x --start-secs: the start and the steady state overlap or are short"
        );
    }
}

/// The notes (debug build, N short of the goal), the table head, N and the payload row.
pub(crate) fn print_head(n: u64, args: &Args) {
    if cfg!(debug_assertions) {
        println!(
            "NOTE: debug build (`cargo xtask`); for release figures run `cargo run --release -p xtask -- bench collector`"
        );
    }
    if n < args.records {
        println!("NOTE: N = {n} records (goal {}), limited by --setup-secs {}", args.records, args.setup_secs);
    }
    println!("{:<44} {:>16}", "metric", "value");
    println!("{:<44} {:>16}", "records stored (N)", n);
    print_payload_row(args);
}

/// The payload and log compression row.
pub(crate) fn print_payload_row(args: &Args) {
    println!(
        "{:<44} {:>16}",
        "payload, log compression",
        format!(
            "{:?}, {}",
            args.payload,
            if args.no_compression { "off".to_string() } else { format!("zstd {}", args.compression_level) }
        )
        .to_lowercase()
    );
}

/// Seconds from starting a collector on `dir` to its first answer (a
/// `LatestCheckpoint` call made at once; the connection waits in the
/// listener's backlog while the collector opens its store). Then stops it.
async fn time_start(dir: &std::path::Path) -> anyhow::Result<f64> {
    time_start_with(ServeConfig::new(dir.to_path_buf())).await
}

/// [`time_start`] for a collector with configuration `cfg`.
pub(crate) async fn time_start_with(cfg: ServeConfig) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let t = Instant::now();
    let server = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
        let _ = stop_rx.await;
    }));
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(600))
        .connect()
        .await?;
    QueryClient::new(ch).latest_checkpoint(LatestCheckpointRequest::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    stop_tx.send(()).ok();
    server.await??;
    Ok(secs)
}

/// Ingest rates from (seconds, records acked) samples taken every second,
/// the last one at the end of the phase.
pub(crate) struct IngestRates {
    /// Length of the start window actually used (s).
    start_secs: f64,
    /// Records/s over the start window.
    start: f64,
    /// Length of the steady-state window (s).
    steady_secs: f64,
    /// Records/s over the second half of the phase.
    steady: f64,
    /// Slowest and fastest 5 s window within the steady state.
    steady_windows: Option<(f64, f64)>,
    /// Records/s over the whole phase.
    whole: f64,
}

impl IngestRates {
    fn of(samples: &[(f64, u64)], start_secs: f64) -> IngestRates {
        let &(end, n) = samples.last().expect("a final sample");
        let rate = |a: (f64, u64), b: (f64, u64)| (b.1 - a.1) as f64 / (b.0 - a.0).max(1e-9);
        // The first sample at or after the start window (or the end).
        let s = *samples.iter().find(|x| x.0 >= start_secs).unwrap_or(&(end, n));
        let half = *samples.iter().find(|x| x.0 >= end / 2.0).unwrap_or(&(end, n));
        let half = if half.0 >= end { samples[0] } else { half };
        let steady: Vec<(f64, u64)> = samples.iter().copied().filter(|x| x.0 >= half.0).collect();
        let windows: Vec<f64> =
            steady.iter().filter_map(|&a| steady.iter().find(|b| b.0 >= a.0 + 5.0).map(|&b| rate(a, b))).collect();
        IngestRates {
            start_secs: s.0,
            start: rate(samples[0], s),
            steady_secs: end - half.0,
            steady: rate(half, (end, n)),
            steady_windows: (!windows.is_empty()).then(|| {
                (windows.iter().copied().fold(f64::MAX, f64::min), windows.iter().copied().fold(0.0, f64::max))
            }),
            whole: n as f64 / end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IngestRates;

    #[test]
    fn start_and_steady_state_are_apart() {
        // 200k/s for 10 s, then 20k/s for 30 s.
        let mut s = vec![(0.0, 0u64)];
        for t in 1..=40u64 {
            let n = if t <= 10 { t * 200_000 } else { 2_000_000 + (t - 10) * 20_000 };
            s.push((t as f64, n));
        }
        let r = IngestRates::of(&s, 10.0);
        assert_eq!((r.start_secs, r.start), (10.0, 200_000.0));
        assert_eq!((r.steady_secs, r.steady), (20.0, 20_000.0));
        assert_eq!(r.steady_windows, Some((20_000.0, 20_000.0)));
        assert_eq!(r.whole, 2_600_000.0 / 40.0);
    }
}
