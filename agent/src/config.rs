//! The agent's configuration file (`--config PATH`): YAML whose keys are the
//! run flags in snake_case (`ring_bytes: 33554432`, `no_tls: true`, ...).
//!
//! Precedence: a flag given on the command line wins, then the file, then the
//! built-in default. Unknown keys and bad values are errors naming the key and
//! the line, so a typo in a ConfigMap never silently falls back to a default.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{CommandFactory as _, FromArgMatches as _, ValueEnum as _, parser::ValueSource};
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::cli::{Cli, OutputFormat, RunArgs};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// A YAML or value error, with the line it is on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Names the key; ends with `at line N column M` or `(line N)`.
    pub message: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
}

impl ParseError {
    fn new(e: serde_yaml::Error, text: &str) -> ParseError {
        let message = e.to_string();
        // serde_yaml places a duplicate key at the mapping's start: name the repeat's line.
        if let Some(k) = message.strip_prefix("duplicate field `").and_then(|r| r.split_once('`')).map(|(k, _)| k) {
            let at: Vec<usize> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.trim_start().strip_prefix(k).is_some_and(|r| r.trim_start().starts_with(':')))
                .map(|(i, _)| i + 1)
                .collect();
            if let [first, second, ..] = at[..] {
                return ParseError {
                    message: format!("duplicate key `{k}` at line {second} (first given at line {first})"),
                    line: Some(second),
                };
            }
        }
        // Value checks below start their message with `key:`; that key's line
        // is the better answer (serde_yaml places them at the mapping's start).
        let key = message.split_once(':').map(|(k, _)| k.trim()).unwrap_or_default();
        let key_line = (!key.is_empty() && !key.contains(' '))
            .then(|| text.lines().position(|l| l.trim_start().strip_prefix(key).is_some_and(|r| r.starts_with(':'))))
            .flatten()
            .map(|i| i + 1);
        let line = key_line.or_else(|| e.location().map(|l| l.line()));
        match line {
            Some(n) if !message.contains(&format!("line {n}")) => {
                ParseError { message: format!("{message} (line {n})"), line }
            }
            _ => ParseError { message, line },
        }
    }
}

/// The file's contents: every key optional; absent keys keep the flag's value.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, deserialize_with = "output_format")]
    pub output: Option<OutputFormat>,
    pub output_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "ring_bytes")]
    pub ring_bytes: Option<u32>,
    pub conn_cap_bytes: Option<u64>,
    pub keep_tls_ciphertext: Option<bool>,
    pub metrics_addr: Option<SocketAddr>,
    pub stats_file: Option<PathBuf>,
    pub ready_file: Option<PathBuf>,
    pub reorder_window_ms: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub no_tls: Option<bool>,
    pub no_twins: Option<bool>,
    pub collector: Option<String>,
    pub agent_id: Option<String>,
    pub tls_dir: Option<PathBuf>,
    pub tls_cert_name: Option<String>,
    pub collector_name: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub spool_bytes: Option<u64>,
    #[serde(default, deserialize_with = "positive_usize")]
    pub max_conns: Option<usize>,
    pub policy: Option<PathBuf>,
    pub no_capture: Option<bool>,
    pub kube: Option<bool>,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub exe_hash_max_bytes: Option<u64>,
    pub redact_key_file: Option<PathBuf>,
    /// Redaction rules (see `crate::redact::config`).
    pub redaction: Option<crate::redact::RedactConfig>,
    pub heartbeat_ms: Option<u64>,
    pub test_clock_error_ms: Option<u64>,
}

fn output_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OutputFormat>, D::Error> {
    let s = String::deserialize(d)?;
    OutputFormat::from_str(&s, false).map(Some).map_err(|_| {
        let allowed: Vec<String> = OutputFormat::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        D::Error::custom(format!("output: `{s}` is not one of {}", allowed.join(", ")))
    })
}

fn ring_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if !n.is_power_of_two() || n < 4096 {
        return Err(D::Error::custom(format!("ring_bytes: {n} must be a power of two and at least 4096")));
    }
    Ok(Some(n))
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(D::Error::custom("max_conns: must be at least 1"));
    }
    Ok(Some(n))
}

impl FileConfig {
    /// Parses YAML text; an empty document is an empty configuration.
    pub fn parse(text: &str) -> Result<FileConfig, ParseError> {
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Ok(FileConfig::default());
        }
        serde_yaml::from_str(text).map_err(|e| ParseError::new(e, text))
    }

    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        FileConfig::parse(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Sets every value of `args` that `from_cli` says was not given on the
    /// command line to this file's value, where the file has one.
    pub fn apply(&self, args: &mut RunArgs, from_cli: impl Fn(&str) -> bool) {
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field && !from_cli(stringify!($field)) {
                    args.$field = v.clone().into();
                }
            )*};
        }
        take!(
            output,
            output_file,
            ring_bytes,
            conn_cap_bytes,
            keep_tls_ciphertext,
            metrics_addr,
            stats_file,
            ready_file
        );
        take!(reorder_window_ms, idle_timeout_s, no_tls, max_conns, policy, no_capture);
        take!(no_twins, collector, agent_id, tls_dir, tls_cert_name, collector_name, spool_dir, spool_bytes);
        take!(kube, kubeconfig, node_name, exe_hash_max_bytes, redact_key_file, heartbeat_ms, test_clock_error_ms);
        if let Some(r) = &self.redaction {
            args.redaction = r.clone();
        }
    }
}

/// Parses the command line and, with `--config`, merges the file under it.
pub fn parse_cli() -> Result<Cli, ConfigError> {
    parse_cli_from(std::env::args_os())
}

/// [`parse_cli`] for given arguments (tests). Exits like clap on bad flags.
pub fn parse_cli_from<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(path) = cli.config.clone() {
        let file = FileConfig::load(&path)?;
        file.apply(&mut cli.run, |id| matches.value_source(id) == Some(ValueSource::CommandLine));
        tracing::debug!(path = %path.display(), ?file, "configuration file applied");
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str], yaml: &str) -> Result<Cli, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut argv = vec!["wiretrail-agent", "--config", path.to_str().unwrap()];
        argv.extend(args);
        parse_cli_from(argv)
    }

    #[test]
    fn file_values_are_defaults_and_flags_override() {
        let yaml = "output: text\nring_bytes: 65536\nno_tls: true\nmetrics_addr: 127.0.0.1:9477\nmax_conns: 7\n";
        let c = cli(&["--ring-bytes", "8192"], yaml).unwrap();
        assert_eq!(c.run.output, OutputFormat::Text, "from the file");
        assert_eq!(c.run.ring_bytes, 8192, "the flag wins over the file");
        assert!(c.run.no_tls);
        assert_eq!(c.run.metrics_addr, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(c.run.max_conns, 7);
        assert_eq!(c.run.idle_timeout_s, 300, "absent from both: the built-in default");
        let c = cli(&["--output", "none"], yaml).unwrap();
        assert_eq!(c.run.output, OutputFormat::None);
        assert_eq!(c.run.ring_bytes, 65536);
    }

    #[test]
    fn every_run_flag_has_a_key() {
        // A flag added to RunArgs without a file key fails here: every long
        // flag of `run` must be accepted by the file parser.
        let yaml: String = Cli::command()
            .get_arguments()
            .filter(|a| {
                a.get_long().is_some() && !["log-level", "log-format", "config"].contains(&a.get_long().unwrap())
            })
            .map(|a| {
                let key = a.get_id().as_str().to_string();
                let value = match key.as_str() {
                    "output" => "jsonl",
                    "ring_bytes" => "4096",
                    "metrics_addr" => "127.0.0.1:1",
                    "no_tls" | "no_twins" | "no_capture" | "kube" | "keep_tls_ciphertext" => "false",
                    "output_file" | "stats_file" | "ready_file" | "tls_dir" | "spool_dir" | "kubeconfig"
                    | "redact_key_file" => "/tmp/x",
                    "collector" => "https://collector:7443",
                    "agent_id" | "tls_cert_name" | "collector_name" | "node_name" => "x",
                    _ => "1",
                };
                format!("{key}: {value}\n")
            })
            .collect();
        assert!(yaml.lines().count() >= 11, "{yaml}");
        let f = FileConfig::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(f.ring_bytes, Some(4096));
        assert_eq!(f.no_tls, Some(false));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = FileConfig::parse("output: jsonl\nring_byte: 4096\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = e.to_string();
        assert!(e.contains("unknown field `ring_byte`") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let e = FileConfig::parse("output: xml\n").unwrap_err().to_string();
        assert!(e.contains("output: `xml` is not one of jsonl, text, none") && e.contains("line 1"), "{e}");
        let e = FileConfig::parse("no_tls: false\nring_bytes: 5000\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = e.to_string();
        assert!(e.contains("ring_bytes: 5000 must be a power of two") && e.contains("(line 2)"), "{e}");
        let e = FileConfig::parse("metrics_addr: localhost\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = FileConfig::parse("output: text\nidle_timeout_s: -3\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = FileConfig::parse("# limits\nmax_conns: 0\n").unwrap_err().to_string();
        assert!(e.contains("max_conns: must be at least 1") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn duplicate_key_is_reported_at_its_second_line() {
        let e = FileConfig::parse("# agent\nagent_id: a\nspool_bytes: 100\n\ncollector: \"http://x\"\nagent_id: b\n")
            .unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        let e = e.to_string();
        assert!(e.starts_with("duplicate key `agent_id` at line 6"), "{e}");
    }

    #[test]
    fn empty_and_comment_only_files_change_nothing() {
        assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
        assert_eq!(FileConfig::parse("# nothing yet\n\n").unwrap(), FileConfig::default());
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = parse_cli_from(["wiretrail-agent", "--config", "/nonexistent/agent.yaml"]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/agent.yaml"), "{e}");
    }

    #[test]
    fn shipped_configmap_config_parses() {
        // The Kubernetes ConfigMap and the systemd example carry this schema.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for p in ["deploy/kubernetes/base/agent.yaml", "deploy/systemd/agent.yaml"] {
            let f = FileConfig::load(&root.join(p)).unwrap_or_else(|e| panic!("{e}"));
            assert!(f.output.is_some() && f.metrics_addr.is_some() && f.ring_bytes.is_some(), "{p}: {f:?}");
        }
    }
}
