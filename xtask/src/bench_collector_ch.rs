//! `cargo xtask bench collector --store clickhouse`: the collector figures of
//! [`crate::bench_collector`] for one in-process collector in clustered mode
//! writing to ClickHouse on this machine.
//!
//! Servers, started by the bench on loopback ports it picks, in a temp dir,
//! and killed at the end (also on error or Ctrl-C), with the launchers the
//! collector's tests use ([`wiretrail_tests::clickhouse`]):
//! - `--clickhouse-engine modern`: ClickHouse 26.9 (PyPI `chdb-core` in
//!   target/pyvenv), one server, ReplacingMergeTree; no quorum possible.
//! - `--clickhouse-engine replicated`: Debian's clickhouse-server 18.16,
//!   `--clickhouse-replicas` replicas (default 2) of one shard + ZooKeeper,
//!   ReplicatedReplacingMergeTree with a Distributed table (cluster `wt`);
//!   the collector writes to the first replica.
//! - `--clickhouse-quorum N` (default 0 = off): ClickHouse `insert_quorum`,
//!   1..=replicas; an ack then means N replicas hold the leaves. A quorum
//!   needs the replicated engine, which is the default when N > 0 (modern
//!   otherwise).
//!
//! Phases (as the embedded bench):
//! 1. Ingest: records/s whose ack came back; in clustered mode an ack means
//!    fsynced locally AND inserted in ClickHouse (with the quorum).
//! 2. Query: the embedded bench's `identity pod=X` + 1-hour queries, p50/p99
//!    of the clustered query path (`Reader::search`, as `wiretrail query
//!    --clickhouse`), after the collector stopped.
//! 3. Verify: the log verified from ClickHouse alone (`Reader::verify_pinned`
//!    with the collector's key pinned, as `wiretrail verify --clickhouse
//!    --verifier-key`), MB/s of leaf bytes; the leaves' bytes on disk in
//!    ClickHouse per payload byte. Then, from ClickHouse alone, the evidence
//!    bundle of the first query (`Reader::export`: the log verified again,
//!    then each record proven) and the inventory and alerts of the whole log
//!    (`Reader::derive`, leaves/s).
//! 4. Start-up: a clustered collector from its snapshot to its first answer
//!    (includes the sink's check of how much of the log ClickHouse holds).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::sync::oneshot;
use wiretrail_collector::ServeConfig;
use wiretrail_collector::clickhouse::ClickHouseConfig;
use wiretrail_collector::clickhouse::reader::Reader;
use wiretrail_tests::clickhouse::{Cluster, Modern};

use crate::bench_collector::{Args, Ingested};
use crate::bench_payload::PAYLOAD;

/// The collector's origin (its log's name in ClickHouse).
const ORIGIN: &str = "bench-collector";
/// The database the collector creates.
const DATABASE: &str = "wiretrail";

/// ClickHouse engines the bench can start.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// ClickHouse 26.9 (chdb-core), one server, ReplacingMergeTree.
    Modern,
    /// clickhouse-server 18.16 replicas + ZooKeeper, ReplicatedReplacingMergeTree.
    Replicated,
}

/// ClickHouse options of `bench collector` (only with `--store clickhouse`).
#[derive(clap::Args, Debug)]
pub struct ChArgs {
    /// With --store clickhouse: `modern` (ClickHouse 26.9 from chdb-core, one
    /// server, ReplacingMergeTree) or `replicated` (Debian's clickhouse-server
    /// 18.16 replicas + ZooKeeper, ReplicatedReplacingMergeTree + Distributed).
    /// Default: replicated with --clickhouse-quorum > 0, else modern.
    #[arg(long, value_enum)]
    clickhouse_engine: Option<Engine>,
    /// With --store clickhouse: replicas that must hold each insert before an
    /// ack (ClickHouse insert_quorum; needs the replicated engine); 0 = off.
    #[arg(long)]
    clickhouse_quorum: Option<u32>,
    /// With --clickhouse-engine replicated: replicas to start [default: 2].
    #[arg(long)]
    clickhouse_replicas: Option<usize>,
}

/// The resolved server setup.
#[derive(Debug, Clone, Copy)]
struct Setup {
    engine: Engine,
    quorum: u32,
    replicas: usize,
}

impl ChArgs {
    /// Refuses ClickHouse options with the embedded store.
    pub(crate) fn only_with_clickhouse(&self) -> anyhow::Result<()> {
        if self.clickhouse_engine.is_some() || self.clickhouse_quorum.is_some() || self.clickhouse_replicas.is_some() {
            bail!("--clickhouse-engine, --clickhouse-quorum and --clickhouse-replicas need --store clickhouse");
        }
        Ok(())
    }

    fn resolve(&self) -> anyhow::Result<Setup> {
        let quorum = self.clickhouse_quorum.unwrap_or(0);
        let engine = self.clickhouse_engine.unwrap_or(if quorum > 0 { Engine::Replicated } else { Engine::Modern });
        match engine {
            Engine::Modern => {
                if quorum > 0 {
                    bail!("--clickhouse-quorum {quorum} needs ReplicatedMergeTree: use --clickhouse-engine replicated");
                }
                if self.clickhouse_replicas.is_some() {
                    bail!(
                        "--clickhouse-replicas applies to --clickhouse-engine replicated only (modern is one server)"
                    );
                }
                Ok(Setup { engine, quorum, replicas: 1 })
            }
            Engine::Replicated => {
                let replicas = self.clickhouse_replicas.unwrap_or(2);
                if replicas == 0 || quorum as usize > replicas {
                    bail!(
                        "--clickhouse-quorum {quorum} with --clickhouse-replicas {replicas}: need 1 <= quorum <= replicas (or quorum 0)"
                    );
                }
                Ok(Setup { engine, quorum, replicas })
            }
        }
    }
}

/// The running servers; dropping this kills them.
enum Servers {
    Modern(Modern),
    Replicated(Cluster),
}

impl Servers {
    fn start(s: &Setup) -> anyhow::Result<Servers> {
        Ok(match s.engine {
            Engine::Modern => Servers::Modern(Modern::start().context("starting ClickHouse 26.9 (chdb)")?),
            Engine::Replicated => Servers::Replicated(
                Cluster::with_replicas(s.replicas).context("starting clickhouse-server 18.16 + ZooKeeper")?,
            ),
        })
    }

    /// The URL the collector writes to.
    fn url(&self) -> String {
        match self {
            Servers::Modern(m) => m.url(),
            Servers::Replicated(c) => c.replicas[0].url(),
        }
    }

    /// The collector's clustered-mode settings (the collector's defaults otherwise).
    fn config(&self, s: &Setup) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url(),
            database: DATABASE.into(),
            cluster: matches!(self, Servers::Replicated(_)).then(|| "wt".to_string()),
            quorum: s.quorum,
            user: None,
            password: None,
            timeout: Duration::from_secs(10),
            orphan_after: None,
        }
    }
}

/// Runs the benchmark against ClickHouse and prints the table.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let setup = args.clickhouse.resolve()?;
    // The collector's logs on stderr: warnings and errors (e.g. ClickHouse
    // refusing an insert), or what RUST_LOG asks for (the commit thread's and
    // the sink's timings: `wiretrail_collector::ingest=debug,wiretrail_collector::clickhouse=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
    let dir = crate::bench_collector::data_dir(args)?;
    eprintln!("starting ClickHouse ({:?} engine, {} server(s))", setup.engine, setup.replicas);
    let servers = Servers::start(&setup)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let res = rt.block_on(async {
        tokio::select! {
            r = bench(args, &dir, &servers, &setup) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // The collector (tasks of the runtime) stops before its servers.
    drop(rt);
    drop(servers);
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

/// Runs `sql` (one value back) against the collector's server.
async fn one<T>(cfg: &ClickHouseConfig, sql: &str) -> anyhow::Result<T>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    wiretrail_collector::clickhouse::client(cfg)
        .with_validation(false)
        .query(sql)
        .fetch_one::<T>()
        .await
        .with_context(|| format!("ClickHouse: {sql}"))
}

async fn bench(args: &Args, dir: &Path, servers: &Servers, setup: &Setup) -> anyhow::Result<()> {
    let ch = servers.config(setup);
    let version: String = one(&ch, "SELECT version()").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serve_config = |dir: &Path| {
        let mut cfg = ServeConfig::new(dir.to_path_buf());
        cfg.store.origin = ORIGIN.into();
        cfg.clickhouse = Some(ch.clone());
        cfg
    };
    let mut cfg = serve_config(dir);
    cfg.checkpoint_interval = Duration::from_secs(60);
    cfg.store.compression = (!args.no_compression).then_some(args.compression_level);
    let mut server = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
        let _ = stop_rx.await;
    }));

    // 0. The frame codec alone (before the server loads the machine).
    let codec = crate::bench_frames::measure(args.payload)?;

    // 1. Ingest (and build the data set); a collector that could not start says why.
    let ingested = tokio::select! {
        r = crate::bench_collector::ingest(addr, args) => r,
        r = &mut server => Err(match r {
            Ok(Err(e)) => anyhow!(e).context("the clustered collector stopped"),
            Ok(Ok(())) => anyhow!("the clustered collector stopped during ingest"),
            Err(e) => anyhow!(e).context("the clustered collector panicked"),
        }),
    };
    let Ingested { n, secs: ingest_secs, rates } = ingested?;
    // Stopped: the final checkpoint goes to ClickHouse; query and verify read ClickHouse alone.
    stop_tx.send(()).ok();
    server.await??;

    // 2. Query latency from ClickHouse: identity + 1 h window.
    let reader = Reader::open(&ch).await?;
    let mut lat = Vec::with_capacity(args.queries);
    let mut hits_total = 0u64;
    let filters = crate::bench_collector::query_filters(n, args);
    for f in &filters {
        let t = Instant::now();
        hits_total += reader.search(f).await?.len() as u64;
        lat.push(t.elapsed());
    }
    lat.sort();

    // 3. Verify from ClickHouse, the collector's first key pinned.
    let key = wiretrail_log::store::load_verifier(dir)?;
    let pins = BTreeMap::from([(ORIGIN.to_string(), key)]);
    let t = Instant::now();
    let reports = reader.verify_pinned(&pins).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    let report = match reports.as_slice() {
        [r] if r.origin == ORIGIN => r,
        _ => bail!("verify from ClickHouse: expected one log ({ORIGIN}), got {reports:?}"),
    };
    if !report.ok || report.leaves < n || report.verified_size != report.leaves {
        bail!("verify from ClickHouse failed or is incomplete (N = {n}): {report:?}");
    }
    // 3b. Evidence from ClickHouse alone: the bundle of one identity+1h
    // query (the log verified, then each record proven), and the inventory
    // and alerts of the whole log.
    let t = Instant::now();
    let bundles = reader.export(&filters[0], &pins).await?.bundles;
    let export_secs = t.elapsed().as_secs_f64();
    let exported: u64 = bundles.iter().map(|b| b.records).sum();
    let t = Instant::now();
    let registry = std::sync::Arc::new(wiretrail_collector::registry::RegistryHandle::open(None)?);
    let derived = reader.derive(registry).await?;
    let derive_secs = t.elapsed().as_secs_f64();
    if derived.leaves() < n || derived.missing() != 0 || derived.inventory(false)?.is_empty() {
        bail!("inventory from ClickHouse read {} leaves of {n}, {} missing", derived.leaves(), derived.missing());
    }
    // Bytes on disk: the leaves in ClickHouse (one replica), the local log's segments.
    let leaves_table = if setup.engine == Engine::Replicated { "leaves_local" } else { "leaves" };
    let ch_bytes: u64 = one(
        &ch,
        &format!(
            "SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts \
             WHERE active AND database = '{DATABASE}' AND table = '{leaves_table}'"
        ),
    )
    .await?;
    let mut segments_bytes = 0u64;
    for e in std::fs::read_dir(dir.join("log"))? {
        let e = e?;
        if e.file_name().to_string_lossy().ends_with(".wtl") {
            segments_bytes += e.metadata()?.len();
        }
    }
    let payload_bytes = (n * PAYLOAD as u64) as f64;

    // 4. Start-up in clustered mode, from the snapshot saved at the stop above.
    let start_snapshot = crate::bench_collector::time_start_with(serve_config(dir)).await?;

    print_table(args, setup, &version, n, ingest_secs, &rates);
    let pct = |p| crate::bench_collector::percentile(&lat, p).as_secs_f64() * 1e3;
    println!("{:<44} {:>16.2}", "query identity+1h p50 (ms), from ClickHouse", pct(0.50));
    println!("{:<44} {:>16.2}", "query identity+1h p99 (ms), from ClickHouse", pct(0.99));
    println!("{:<44} {:>16.1}", "query mean hits", hits_total as f64 / args.queries as f64);
    println!("{:<44} {:>16.1}", "verify from ClickHouse MB/s (leaf bytes)", report.bytes as f64 / 1e6 / verify_secs);
    println!("{:<44} {:>16.0}", "verify from ClickHouse records/s", report.leaves as f64 / verify_secs);
    println!("{:<44} {:>16.2}", "export from ClickHouse (s, incl. verify)", export_secs);
    println!("{:<44} {:>16}", "export from ClickHouse records", exported);
    println!("{:<44} {:>16.0}", "inventory+alerts from ClickHouse leaves/s", derived.leaves() as f64 / derive_secs);
    println!("{:<44} {:>16.3}", "ClickHouse leaves on disk per payload byte", ch_bytes as f64 / payload_bytes);
    println!("{:<44} {:>16.3}", "local log on disk per payload byte (segments)", segments_bytes as f64 / payload_bytes);
    println!("{:<44} {:>16.2}", "start-up to first answer, from snapshot (s)", start_snapshot);
    crate::bench_frames::print(args.payload, &codec);
    Ok(())
}

/// The header, the server settings and the ingest rows.
fn print_table(
    args: &Args,
    s: &Setup,
    version: &str,
    n: u64,
    ingest_secs: f64,
    rates: &crate::bench_collector::IngestRates,
) {
    println!();
    let build = if cfg!(debug_assertions) { "DEBUG build" } else { "release build" };
    println!(
        "collector benchmark ({build}, in-process collector in clustered mode, loopback plaintext gRPC, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let quorum = if s.quorum == 0 { "quorum off".to_string() } else { format!("insert_quorum={}", s.quorum) };
    match s.engine {
        Engine::Modern => println!(
            "ClickHouse {version} (chdb-core, clickhouse-local serving HTTP), 1 server, ReplacingMergeTree, {quorum}"
        ),
        Engine::Replicated => println!(
            "ClickHouse {version} (Debian clickhouse-server), {} replica(s) of one shard + ZooKeeper, \
             ReplicatedReplacingMergeTree + Distributed (insert_distributed_sync=1), {quorum}; all on this machine",
            s.replicas
        ),
    }
    crate::bench_collector::print_head(n, args);
    let acks = if s.quorum == 0 {
        "acks after local fsync + ClickHouse insert".to_string()
    } else {
        format!("acks after local fsync + ClickHouse insert on {} replicas", s.quorum)
    };
    crate::bench_collector::print_ingest(rates, ingest_secs, args, &acks);
}

#[cfg(test)]
mod tests {
    use super::{ChArgs, Engine};

    fn args(engine: Option<Engine>, quorum: Option<u32>, replicas: Option<usize>) -> ChArgs {
        ChArgs { clickhouse_engine: engine, clickhouse_quorum: quorum, clickhouse_replicas: replicas }
    }

    #[test]
    fn a_quorum_picks_the_replicated_engine_and_is_checked() {
        let s = args(None, None, None).resolve().unwrap();
        assert_eq!((s.engine, s.quorum, s.replicas), (Engine::Modern, 0, 1));
        let s = args(None, Some(2), None).resolve().unwrap();
        assert_eq!((s.engine, s.quorum, s.replicas), (Engine::Replicated, 2, 2));
        assert!(args(Some(Engine::Modern), Some(1), None).resolve().is_err());
        assert!(args(Some(Engine::Modern), None, Some(2)).resolve().is_err());
        assert!(args(None, Some(3), Some(2)).resolve().is_err());
        assert!(args(Some(Engine::Replicated), None, Some(0)).resolve().is_err());
        assert!(args(None, Some(1), None).only_with_clickhouse().is_err());
        assert!(args(None, None, None).only_with_clickhouse().is_ok());
    }
}
