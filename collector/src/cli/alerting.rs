//! `serve` flags for alerts: when an agent is silent, and where alerts are delivered.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::alerts::delivery::syslog::SyslogConfig;
use crate::alerts::delivery::webhook::WebhookConfig;

/// Alerting flags of `wiretrail serve`.
#[derive(clap::Args, Debug)]
pub(super) struct AlertingArgs {
    /// Raise `agent_silent` when an agent's heartbeats stop for longer than this (seconds, ≥ 1).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    silence_after: u64,
    /// POST every alert as JSON to this URL (http://host:port/path); repeatable.
    #[arg(long = "alert-webhook")]
    webhooks: Vec<String>,
    /// File holding the HMAC-SHA256 key for the webhooks' `X-Wiretrail-Signature` header.
    #[arg(long)]
    alert_webhook_secret_file: Option<PathBuf>,
    /// Send every alert to this syslog receiver (host:port, RFC 5424 over TCP, octet counting); repeatable.
    #[arg(long = "alert-syslog")]
    syslogs: Vec<String>,
    /// CA file (PEM) of the syslog receivers' certificates: use TLS (RFC 5425).
    #[arg(long)]
    alert_syslog_ca: Option<PathBuf>,
    /// TLS server name expected from the syslog receivers (default: their host).
    #[arg(long)]
    alert_syslog_name: Option<String>,
    /// Most alerts waiting per destination; beyond it the oldest are passed over (counted,
    /// logged, still in the store).
    #[arg(long, default_value_t = 100_000)]
    alert_queue_max: u64,
    /// First retry delay after a failed delivery (ms); doubles up to 60 s.
    #[arg(long, default_value_t = 500)]
    alert_retry_ms: u64,
}

impl AlertingArgs {
    /// Puts the settings into `cfg`.
    pub(super) fn apply(self, cfg: &mut crate::ServeConfig) -> anyhow::Result<()> {
        cfg.silence.after = Duration::from_secs(self.silence_after);
        let secret = match &self.alert_webhook_secret_file {
            Some(p) => {
                let s = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let s = s.trim_ascii().to_vec();
                if s.is_empty() {
                    bail!("{} is empty", p.display());
                }
                Some(s)
            }
            None => None,
        };
        let d = &mut cfg.delivery;
        d.webhooks = self
            .webhooks
            .into_iter()
            .map(|url| WebhookConfig { url, secret: secret.clone(), timeout: Duration::from_secs(10) })
            .collect();
        d.syslog = self
            .syslogs
            .into_iter()
            .map(|addr| SyslogConfig {
                addr,
                tls_ca: self.alert_syslog_ca.clone(),
                tls_name: self.alert_syslog_name.clone(),
                timeout: Duration::from_secs(10),
            })
            .collect();
        if d.webhooks.is_empty() && secret.is_some() {
            bail!("--alert-webhook-secret-file without --alert-webhook");
        }
        d.queue_max = self.alert_queue_max.max(1);
        d.backoff_initial = Duration::from_millis(self.alert_retry_ms.max(1));
        d.backoff_max = Duration::from_secs(60).max(d.backoff_initial);
        Ok(())
    }
}
