//! The `wiretrail` command line: serve, query, verify, checkpoint, export, verify-bundle,
//! inventory, alerts, policy check.

mod access_log;
mod alerting;
mod alerts;
mod completeness;
mod export;
mod hold;
mod inventory;
mod keys;
mod query;
mod review;
mod verify;
mod view;
mod window;

use alerting::AlertingArgs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, IssueCheckpointRequest};

use crate::access::meta::Meta;
use crate::tls::TlsFiles;

/// wiretrail collector and evidence tools.
#[derive(Parser)]
#[command(name = "wiretrail", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the collector.
    Serve {
        /// Data directory (created if missing).
        #[arg(long, env = "WIRETRAIL_DATA")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Directory with collector.pem, collector.key and ca.pem (from `cargo xtask certs`).
        #[arg(long, required_unless_present = "insecure_plaintext")]
        tls_dir: Option<PathBuf>,
        /// Serve without TLS (tests only: agents are then unauthenticated).
        #[arg(long)]
        insecure_plaintext: bool,
        /// Seconds between periodic checkpoints.
        #[arg(long, default_value_t = 10)]
        checkpoint_secs: u64,
        /// Start a new segment file once the current one holds this many bytes.
        #[arg(long, default_value_t = wiretrail_log::store::StoreConfig::default().segment_bytes)]
        segment_bytes: u64,
        /// zstd level new log frames are compressed at, -7..=19 (negative: zstd's fast levels); a frame is
        /// compressed only when that makes it smaller.
        #[arg(long, default_value_t = wiretrail_log::store::DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(-7..=19), allow_negative_numbers = true)]
        compression_level: i32,
        /// Write new log frames uncompressed (frames already compressed stay readable).
        #[arg(long)]
        no_compression: bool,
        /// Identity registry (YAML, see docs/registry.md); re-read on SIGHUP and when it changes.
        #[arg(long, env = "WIRETRAIL_REGISTRY")]
        registry: Option<PathBuf>,
        /// Roles file (YAML, see docs/roles.md): which certificate identities may ship for which agent ids.
        #[arg(long, env = "WIRETRAIL_ROLES")]
        roles: Option<PathBuf>,
        /// Seconds between incremental background verifications of the log (new leaves since the last).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        verify_interval_secs: u64,
        /// Seconds between full background verifications (one also runs at start).
        #[arg(long, default_value_t = 86400, value_parser = clap::value_parser!(u64).range(1..))]
        verify_full_interval_secs: u64,
        /// Alert settings: silence threshold and delivery to webhooks and syslog.
        #[command(flatten)]
        alerting: AlertingArgs,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics (verification, alert delivery, ingest).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Serve the console at https://HOST:PORT/ (same certificate, client certificates and roles as the API).
        #[arg(long, requires = "tls_dir")]
        console_addr: Option<std::net::SocketAddr>,
        /// Retention classes and passes.
        #[command(flatten)]
        retention: hold::RetentionServeArgs,
        /// Clustered mode: ClickHouse connection (see docs/clickhouse.md).
        #[command(flatten)]
        clickhouse: crate::clickhouse::ClickHouseArgs,
        /// Name of this collector's log (checkpoint origin), used when the data directory is created;
        /// each collector writing to one ClickHouse needs its own.
        #[arg(long, env = "WIRETRAIL_ORIGIN")]
        origin: Option<String>,
    },
    /// Repair a log that the collector refuses to open (run with the collector
    /// stopped): restore damaged frame headers whose data is intact, or cut
    /// the log at the first unreadable frame keeping a copy in DATA_DIR/repairs/;
    /// never cuts leaves covered by a signed checkpoint. See docs/repair.md.
    Repair {
        /// Data directory.
        #[arg(long, env = "WIRETRAIL_DATA")]
        data_dir: PathBuf,
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Search records.
    Query {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        case: Case,
        #[command(flatten)]
        filter: FilterArgs,
        /// Keep streaming new matching records.
        #[arg(long)]
        follow: bool,
        /// Clustered mode: the collector answers from every collector's log in
        /// ClickHouse (logged as an access in its own log), not from its own.
        #[arg(long, conflicts_with = "follow")]
        all_logs: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Search ClickHouse instead of a collector (every collector's log stored there).
        #[command(flatten)]
        clickhouse: crate::clickhouse::ClickHouseArgs,
    },
    /// Recompute the tree from the segments and check it against the signed checkpoints.
    Verify {
        /// Data directory to verify (read only).
        #[arg(long, required_unless_present = "url")]
        data_dir: Option<PathBuf>,
        /// Verify every log stored in ClickHouse instead (see docs/clickhouse.md).
        #[command(flatten)]
        clickhouse: crate::clickhouse::ClickHouseArgs,
        /// Verifier key file (pin it out of band); defaults to DATA_DIR/verifier.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// With --clickhouse: the first key of log ORIGIN, from a file obtained
        /// out of band (repeat per origin). Unpinned logs are verified from the
        /// key registered in ClickHouse, which the report marks.
        #[arg(long = "verifier-key", value_name = "ORIGIN=FILE", requires = "url")]
        verifier_keys: Vec<String>,
        /// State file for incremental verification (read if present, updated on success).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Issue a signed checkpoint now and print it.
    Checkpoint {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        case: Case,
    },
    /// Export the records matching a query as an evidence bundle (records,
    /// rendering, inclusion proofs, signed checkpoint, manifest).
    Export {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        case: Case,
        #[command(flatten)]
        filter: FilterArgs,
        /// Output directory (created; must be empty), or FILE.tar for a single file.
        /// With --clickhouse: a directory holding one bundle per log.
        #[arg(long)]
        out: PathBuf,
        /// Export from every collector's log stored in ClickHouse instead (see docs/clickhouse.md).
        #[command(flatten)]
        clickhouse: crate::clickhouse::ClickHouseArgs,
        /// With --clickhouse: the first key of log ORIGIN, from a file obtained out of band (repeatable).
        #[arg(long = "verifier-key", value_name = "ORIGIN=FILE", requires = "url")]
        verifier_keys: Vec<String>,
    },
    /// Print the inclusion proof of one leaf of a log stored in ClickHouse,
    /// at the largest checkpoint the log verifies against there (JSON).
    Prove {
        /// ClickHouse connection (required).
        #[command(flatten)]
        clickhouse: crate::clickhouse::ClickHouseArgs,
        /// The log (its collector's origin).
        #[arg(long)]
        origin: String,
        /// Leaf index in that log.
        #[arg(long)]
        leaf: u64,
        /// The log's first verifier key, from a file obtained out of band
        /// (default: the key registered in ClickHouse).
        #[arg(long = "verifier-key", value_name = "FILE")]
        verifier_key: Option<PathBuf>,
    },
    /// Segmentation policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Check an evidence bundle offline (no collector needed).
    VerifyBundle {
        /// Bundle directory or .tar file.
        path: PathBuf,
        /// Pinned verifier key file (recommended); defaults to the bundle's own verifier.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Accept a bundle whose manifest is not signed (the older format, or an
        /// export from ClickHouse alone: its records are still proven by the
        /// signed checkpoint).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// List the workload identities seen, with custodian and purpose from the registry.
    Inventory(inventory::InventoryArgs),
    /// List (or follow) alerts: shadow identities, policy denials and violations, gaps,
    /// clocks, silent and returning agents.
    Alerts(alerts::AlertsArgs),
    /// Completeness per agent over a window: heartbeats seen vs expected, bytes the
    /// agent saw vs recorded, gaps by reason, silences.
    Completeness(completeness::CompletenessArgs),
    /// List (or follow) the access log: who searched, viewed, exported, asked
    /// for proofs or checkpoints, when, and whose records came back (auditor role).
    AccessLog(access_log::AccessLogArgs),
    /// Show the records at a leaf range (reviewer role).
    View(view::ViewArgs),
    /// Supervisory review marks: mark records or a conversation as reviewed, list marks.
    Review(review::ReviewArgs),
    /// Rotate the checkpoint signing key now (admin role; recorded as a key_rotation entry).
    RotateSigningKey(keys::RotateArgs),
    /// Print the first signing key and each rotation, after checking the chain.
    KeyHistory(keys::HistoryArgs),
    /// Legal holds: place, lift, list (admin role).
    Hold(hold::HoldArgs),
    /// Retention: delete an expired segment now (admin role; refusals are recorded).
    Retention(hold::RetentionArgs),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Replay recorded connections against a policy and list the flows it
    /// would deny or only audit. Exit code: 0 nothing denied, 1 some flow
    /// denied, 2 error (e.g. an invalid policy).
    Check {
        /// The policy file (YAML, see docs/policy.md).
        #[arg(long)]
        policy: PathBuf,
        /// Agent JSONL output (`--output jsonl`) to replay instead of asking the collector.
        #[arg(long, conflicts_with_all = ["server", "tls_dir", "identity", "peer", "agent", "host"])]
        flows: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Conn {
    /// Collector address (host:port; an http:// or https:// prefix is ignored).
    #[arg(long, visible_alias = "collector", default_value = "127.0.0.1:7443")]
    server: String,
    /// Directory with ca.pem and the client's NAME.pem/NAME.key.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Client certificate name in --tls-dir.
    #[arg(long, default_value = "security")]
    cert_name: String,
    /// Server name expected in the collector's certificate.
    #[arg(long, default_value = "collector")]
    server_name: String,
}

/// The case a logged read is made under.
#[derive(clap::Args)]
struct Case {
    /// Case id recorded with this access in the collector's access log.
    #[arg(long)]
    case: Option<String>,
}

impl Case {
    fn meta(&self) -> anyhow::Result<Meta> {
        Meta::case(self.case.as_deref()).map_err(anyhow::Error::msg)
    }

    /// A case is recorded by a collector's access log; reads from ClickHouse
    /// (`--clickhouse` or `WIRETRAIL_CLICKHOUSE_URL`) go to no collector.
    fn not_with_clickhouse(&self) -> anyhow::Result<()> {
        if self.case.is_some() {
            bail!(
                "--case is recorded in a collector's access log, but this command reads ClickHouse \
                 (--clickhouse or WIRETRAIL_CLICKHOUSE_URL), which records no access: drop --case, or \
                 unset WIRETRAIL_CLICKHOUSE_URL to go through a collector"
            );
        }
        Ok(())
    }
}

/// A query client sending the case id (and, for exports, the purpose) with every call.
type Client = QueryClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Meta>>;

async fn client(c: &Conn, case: &Case) -> anyhow::Result<Client> {
    Ok(QueryClient::with_interceptor(connect(c).await?, case.meta()?).max_decoding_message_size(64 << 20))
}

#[derive(clap::Args)]
struct FilterArgs {
    #[command(flatten)]
    window: window::WindowArgs,
    #[arg(long, default_value = "")]
    agent: String,
    #[arg(long, default_value = "")]
    host: String,
    /// Workload identity key=value (repeatable).
    #[arg(long)]
    identity: Vec<String>,
    #[arg(long, default_value = "")]
    peer: String,
    #[arg(long, default_value_t = 0)]
    peer_port: u32,
    #[arg(long, default_value = "")]
    protocol: String,
    /// Text that must occur in the raw payload.
    #[arg(long, default_value = "")]
    text: String,
    #[arg(long, default_value_t = 0)]
    limit: u64,
    /// The collector's own log entries of this kind instead of records
    /// (agent_id_refused, batch_conflict, storage_unavailable, recovery, repair, verification_failed,
    /// agent_silent, agent_returned; * = all but access; access = the access log, auditor role).
    #[arg(long, default_value = "")]
    entry_kind: String,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<Filter> {
        let w = self.window.window()?;
        Ok(Filter {
            from_time_ns: w.from_ns,
            to_time_ns: w.to_ns,
            agent_id: self.agent.clone(),
            host: self.host.clone(),
            identity: self.identity.clone(),
            peer_address: self.peer.clone(),
            peer_port: self.peer_port,
            app_protocol: self.protocol.clone(),
            payload_text: self.text.clone(),
            limit: self.limit,
            entry_kind: self.entry_kind.clone(),
        })
    }
}

async fn connect(c: &Conn) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    // host:port; a URL's scheme is ignored (--tls-dir decides).
    let server = c.server.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let ep = match &c.tls_dir {
        None => Endpoint::from_shared(format!("http://{server}"))?,
        Some(d) => {
            let f = TlsFiles::in_dir(d, &c.cert_name);
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&f.ca)?))
                .identity(Identity::from_pem(read(&f.cert)?, read(&f.key)?))
                .domain_name(c.server_name.clone());
            Endpoint::from_shared(format!("https://{server}"))?.tls_config(tls)?
        }
    };
    ep.connect_timeout(Duration::from_secs(10)).connect().await.with_context(|| format!("connecting to {}", c.server))
}

/// `policy check`: true when no flow would be denied.
async fn policy_check(
    policy: &std::path::Path,
    flows: Option<&std::path::Path>,
    conn: &Conn,
    filter: &FilterArgs,
    json: bool,
) -> anyhow::Result<bool> {
    use crate::policy_check as pc;
    let policy = pc::load_policy(policy)?;
    let opened = match flows {
        Some(f) => pc::read_jsonl(f)?,
        None => pc::search(connect(conn).await?, filter.filter()?).await?,
    };
    let report = pc::replay(&policy, &opened);
    let mut out = std::io::stdout().lock();
    if json {
        pc::json(&mut out, &policy, &report)?
    } else {
        pc::table(&mut out, &policy, &report)?
    }
    Ok(report.denied == 0)
}

/// An error as one line for people: a collector's refusal as its message and
/// code (`deletion refused: ... [FailedPrecondition]`), anything else with its causes.
pub fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => format!("{} [{:?}]", s.message(), s.code()),
        None => format!("{e:#}"),
    }
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                data_dir,
                listen,
                tls_dir,
                insecure_plaintext,
                checkpoint_secs,
                segment_bytes,
                compression_level,
                no_compression,
                registry,
                roles,
                verify_interval_secs,
                verify_full_interval_secs,
                alerting,
                metrics_addr,
                console_addr,
                retention,
                clickhouse,
                origin,
            } => {
                let mut cfg = crate::ServeConfig::new(data_dir);
                cfg.clickhouse = clickhouse.config();
                if let Some(o) = origin {
                    cfg.store.origin = o;
                }
                cfg.verify = wiretrail_log::verify::background::VerifyConfig {
                    interval: Duration::from_secs(verify_interval_secs),
                    full_interval: Duration::from_secs(verify_full_interval_secs),
                };
                alerting.apply(&mut cfg)?;
                cfg.metrics_addr = metrics_addr;
                cfg.console_addr = console_addr;
                retention.apply(&mut cfg);
                cfg.store.segment_bytes = segment_bytes;
                cfg.store.compression = (!no_compression).then_some(compression_level);
                cfg.registry = registry;
                cfg.roles = roles;
                cfg.checkpoint_interval = Duration::from_secs(checkpoint_secs.max(1));
                cfg.tls = match (tls_dir, insecure_plaintext) {
                    (Some(d), _) => Some(TlsFiles::in_dir(&d, "collector")),
                    (None, true) => {
                        tracing::warn!("serving WITHOUT TLS: agents are not authenticated");
                        None
                    }
                    (None, false) => bail!("--tls-dir is required"),
                };
                let listener =
                    tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
                // Handlers first: a SIGTERM right after "listening" must drain, not kill.
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
                let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
                println!("listening on {}", listener.local_addr()?);
                let shutdown = async move {
                    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                    tracing::info!("shutting down");
                };
                crate::run(listener, cfg, shutdown).await?;
            }
            Cmd::Query { clickhouse, filter, json, case, .. } if clickhouse.url.is_some() => {
                case.not_with_clickhouse()?;
                query::from_clickhouse(&clickhouse, &filter, json).await?
            }
            Cmd::Verify { clickhouse, verifier_keys, .. } if clickhouse.url.is_some() => {
                verify::from_clickhouse(&clickhouse, &verifier_keys).await?
            }
            Cmd::Query { conn, case, filter, follow, all_logs, json, .. } => {
                query::from_collector(&conn, &case, &filter, query::Scope { follow, all_logs }, json).await?
            }
            Cmd::Verify { data_dir, key, state, .. } => verify::data_dir(data_dir, key, state)?,
            Cmd::Export { clickhouse, verifier_keys, filter, out, case, .. } if clickhouse.url.is_some() => {
                case.not_with_clickhouse()?;
                export::from_clickhouse(&clickhouse, &verifier_keys, &filter, &out).await?
            }
            Cmd::Export { conn, case, filter, out, .. } => export::from_collector(&conn, &case, &filter, &out).await?,
            Cmd::Prove { clickhouse, origin, leaf, verifier_key } => {
                export::prove(&clickhouse, &origin, leaf, verifier_key.as_deref()).await?
            }
            Cmd::VerifyBundle { path, key, allow_unsigned } => {
                let pinned = match &key {
                    Some(k) => Some(std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?),
                    None => None,
                };
                let files = wiretrail_log::bundle::read(&path)?;
                let report = wiretrail_log::bundle::verify_bundle(&files, pinned.as_deref())?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.manifest_signed && !allow_unsigned {
                    bail!(
                        "bundle REJECTED: its manifest is not signed (older format, or exported from ClickHouse \
                         alone); --allow-unsigned accepts it"
                    );
                }
                eprintln!(
                    "OK: {} records verified against the signed checkpoint of {} (size {}); manifest {}{}{}",
                    report.records,
                    report.origin,
                    report.tree_size,
                    if report.manifest_signed { "signed" } else { "NOT signed" },
                    report.access_leaf.map(|l| format!("; the export's access record is leaf {l}")).unwrap_or_default(),
                    if report.key_pinned { "" } else { "; key taken from the bundle, pin it with --key" }
                );
            }
            Cmd::Policy { cmd: PolicyCmd::Check { policy, flows, conn, filter, json } } => {
                let code = match policy_check(&policy, flows.as_deref(), &conn, &filter, json).await {
                    Ok(true) => 0,
                    Ok(false) => 1,
                    Err(e) => {
                        eprintln!("wiretrail policy check: {e:#}");
                        2
                    }
                };
                use std::io::Write;
                std::io::stdout().flush()?;
                std::process::exit(code);
            }
            Cmd::Checkpoint { conn, case } => {
                let mut q = client(&conn, &case).await?;
                let cp = q.issue_checkpoint(IssueCheckpointRequest {}).await?.into_inner();
                print!("{}", cp.note);
                eprintln!("verifier key: {}", cp.verifier_key);
            }
            Cmd::Repair { data_dir, dry_run } => {
                let plan =
                    tokio::task::spawn_blocking(move || wiretrail_log::store::repair::repair(&data_dir, dry_run))
                        .await??;
                println!("{}", serde_json::to_string_pretty(&plan)?);
                match (plan.actions.is_empty(), dry_run) {
                    (true, _) => eprintln!("repair: the log is readable to its end; nothing to do"),
                    (false, true) => {
                        eprintln!("repair (dry run): {} action(s) planned; nothing changed", plan.actions.len())
                    }
                    (false, false) => eprintln!(
                        "repair: {} action(s) done and appended to the log; copies under repairs/",
                        plan.actions.len()
                    ),
                }
            }
            Cmd::Inventory(args) => inventory::run(args).await?,
            Cmd::Alerts(args) => alerts::run(args).await?,
            Cmd::Completeness(args) => completeness::run(args).await?,
            Cmd::AccessLog(args) => access_log::run(args).await?,
            Cmd::View(args) => view::run(args).await?,
            Cmd::Review(args) => review::run(args).await?,
            Cmd::RotateSigningKey(args) => keys::rotate(args).await?,
            Cmd::KeyHistory(args) => keys::history(args).await?,
            Cmd::Hold(args) => hold::run_hold(args).await?,
            Cmd::Retention(args) => hold::run_retention(args).await?,
        }
        Ok(())
    })
}
