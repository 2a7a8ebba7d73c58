//! Command line of `wiretrail-agent`.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "wiretrail-agent", version, about = "Records every machine-to-machine conversation on this host")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// YAML file with defaults for the run flags (keys in snake_case, e.g.
    /// `ring_bytes: 33554432`); flags given here override it. See config.rs.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture traffic (the default).
    Run,
    /// Check capabilities, kernel BTF, tracefs and cgroup v2, then exit.
    Check,
    /// Attach the capture hooks with programs that return at once (the floor
    /// a benchmark compares the agent with) until SIGTERM or Ctrl-C; with
    /// `--hooks capture`, the capture programs themselves, their events read
    /// and dropped (no record is made).
    Floor {
        /// Which hook set.
        #[arg(long, value_enum, default_value = "syscalls")]
        hooks: crate::capture::floor::FloorHooks,
        /// File created once the programs are attached.
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
        /// TLS library file to probe (with `--hooks tls`; repeatable).
        #[arg(long)]
        library: Vec<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    Jsonl,
    /// One human-readable line per record.
    Text,
    /// Count records but write none (benchmarks).
    None,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Record format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub output: OutputFormat,
    /// Write records to this file (appending) instead of stdout.
    #[arg(long)]
    pub output_file: Option<PathBuf>,
    /// Kernel ring buffer size in bytes (power of two). Its data pages are
    /// mapped twice into the agent, so it counts twice in the agent's RSS.
    #[arg(long, default_value_t = 16 << 20)]
    pub ring_bytes: u32,
    /// Per-connection, per-direction capture cap in bytes (0 = unlimited). Bytes
    /// over it are reported as gaps with reason `truncated`.
    #[arg(long, default_value_t = 0)]
    pub conn_cap_bytes: u64,
    /// Keep the bytes of TLS ciphertext whose plaintext is captured. By
    /// default a socket's ciphertext is copied until its plaintext appears
    /// (the handshake stays in the records) and from then on only counted
    /// and timed (the connection record's `not_kept`).
    #[arg(long)]
    pub keep_tls_ciphertext: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// On exit, write the final counters as JSON to this file.
    #[arg(long)]
    pub stats_file: Option<PathBuf>,
    /// Create this file once capture is attached (for scripts and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// How long a missing byte range may wait for a late event before it is a gap (ms).
    #[arg(long, default_value_t = 2000)]
    pub reorder_window_ms: u64,
    /// Connections idle this long are flushed (s).
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_s: u64,
    /// Ship records to this collector (e.g. `https://collector:7443`); records are
    /// spooled on disk first, so none is lost while the collector is away.
    #[arg(long)]
    pub collector: Option<String>,
    /// This agent's id at the collector (default: the host name).
    #[arg(long, env = "WIRETRAIL_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Directory with the mTLS files `<tls_cert_name>.pem`, `<tls_cert_name>.key`
    /// and `ca.pem` (`cargo xtask certs` makes them). Without it the connection is
    /// plaintext, which the collector refuses unless it runs with `--insecure-plaintext`.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Base name of the client certificate and key in `--tls-dir`.
    #[arg(long, default_value = "agent")]
    pub tls_cert_name: String,
    /// TLS server name of the collector's certificate.
    #[arg(long, default_value = "collector")]
    pub collector_name: String,
    /// On-disk spool for records not yet acknowledged by the collector.
    #[arg(long, default_value = "/var/lib/wiretrail/spool")]
    pub spool_dir: PathBuf,
    /// Spool size limit in bytes; beyond it, records are replaced by an explicit
    /// gap record (never dropped silently).
    #[arg(long, default_value_t = 1 << 30)]
    pub spool_bytes: u64,
    /// Record each end of a conversation captured on this host on its own
    /// (by default both ends are paired into one record per exchange, with
    /// both observations and the bytes once).
    #[arg(long)]
    pub no_twins: bool,
    /// Do not capture TLS plaintext (no uprobes on TLS libraries).
    #[arg(long)]
    pub no_tls: bool,
    /// Most connections tracked at once; the least recently active are flushed beyond it.
    #[arg(long, default_value_t = 100_000)]
    pub max_conns: usize,
    /// Do not capture socket traffic (no syscall tracepoints): enforce and
    /// record the segmentation policy only.
    #[arg(long)]
    pub no_capture: bool,
    /// Segmentation policy file (YAML, see docs/policy.md): enforced in the
    /// kernel through cgroup hooks; re-read on SIGHUP and when it changes.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Name records' pods: watch this node's pods in the Kubernetes API. On by
    /// itself when running in a cluster (`KUBERNETES_SERVICE_HOST` set).
    #[arg(long)]
    pub kube: bool,
    /// Reach the Kubernetes API with this kubeconfig (default: the pod's service
    /// account in a cluster, else `KUBECONFIG` or `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's Kubernetes name, whose pods are watched (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Executables larger than this are not hashed (`exe_sha256`); 0 turns hashing off.
    #[arg(long, default_value_t = 1 << 30)]
    pub exe_hash_max_bytes: u64,
    /// Redaction tokenization key (32 random bytes, mode 0600), created on
    /// first start: card numbers become HMAC tokens under it.
    #[arg(long, default_value = "/var/lib/wiretrail/redact.key")]
    pub redact_key_file: PathBuf,
    /// Redaction rules: the config file's `redaction:` section (no flag).
    #[arg(skip)]
    pub redaction: crate::redact::RedactConfig,
    /// With `--collector`: send a heartbeat (counters, spool and clock state)
    /// this often, in ms (100..=10000).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=10_000))]
    pub heartbeat_ms: u64,
    /// Test hook: add this many ms to the clock error bound heartbeats report
    /// (exercises the collector's clock alert; never use in production).
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_clock_error_ms: u64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["wiretrail-agent", "--output", "none", "--ring-bytes", "4096"]).unwrap();
        assert_eq!(c.run.output, OutputFormat::None);
        assert!(Cli::try_parse_from(["wiretrail-agent", "--output", "xml"]).is_err());
    }
}
