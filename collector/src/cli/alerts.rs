//! `wiretrail alerts`: shadow identities, policy denials and violations, gaps,
//! clocks, silent and returning agents, the collector's own incidents.

use tokio_stream::StreamExt;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Alert, AlertsRequest};

use super::{Conn, connect};

/// Arguments of `wiretrail alerts`.
#[derive(clap::Args)]
pub(super) struct AlertsArgs {
    /// Collector connection.
    #[command(flatten)]
    conn: Conn,
    /// Only this kind: shadow_identity, policy_denied, policy_violation, agent_id_refused,
    /// batch_conflict, storage_unavailable, recovery, repair, verification_failed, new_peer,
    /// outside_hours, retired_identity_active, agent_silent, agent_returned, gap or clock.
    #[arg(long, default_value = "")]
    kind: String,
    /// Only alerts with a larger id (resume a previous listing).
    #[arg(long, default_value_t = 0)]
    after_id: u64,
    /// Only alerts raised in the last DURATION (90s, 15m, 1h, 2d, 1w).
    #[arg(long, value_parser = crate::when::parse_duration)]
    since: Option<std::time::Duration>,
    /// Keep streaming alerts as they are raised.
    #[arg(long, conflicts_with = "url")]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Derive the alerts of every collector's log stored in ClickHouse instead
    /// (see docs/clickhouse.md); ids are positions in this listing.
    #[command(flatten)]
    clickhouse: crate::clickhouse::ClickHouseArgs,
    /// With --clickhouse: the identity registry to judge against (default: none, every identity is shadow).
    #[arg(long, requires = "url")]
    registry: Option<std::path::PathBuf>,
}

/// Alerts to print, each with the log of its leaf when read from ClickHouse.
type Alerts = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = anyhow::Result<(Alert, Option<String>)>>>>;

/// The alerts of every log in ClickHouse, each with the log of its leaf.
async fn from_clickhouse(a: &AlertsArgs) -> anyhow::Result<Vec<(Alert, Option<String>)>> {
    let kind = crate::query::inventory::alerts_kind(&AlertsRequest { kind: a.kind.clone(), ..Default::default() })?;
    let cfg = a.clickhouse.config().expect("url is set");
    let registry = std::sync::Arc::new(crate::registry::RegistryHandle::open(a.registry.clone())?);
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    eprintln!("reading ClickHouse at {} (database {})", cfg.url, cfg.database);
    let d = r.derive(registry).await?;
    report_read(&d);
    Ok(d.alerts(kind)?
        .into_iter()
        .filter(|l| l.alert.id > a.after_id)
        .map(|l| (l.alert, Some(l.leaf.origin)))
        .collect())
}

/// Runs `wiretrail alerts`.
pub(super) async fn run(a: AlertsArgs) -> anyhow::Result<()> {
    let not_before = a.since.map_or(0, |d| wiretrail_log::store::now_ns().saturating_sub(d.as_nanos() as i64));
    let mut s: Alerts = if a.clickhouse.url.is_some() {
        Box::pin(tokio_stream::iter(from_clickhouse(&a).await?.into_iter().map(Ok)))
    } else {
        let mut q = QueryClient::new(connect(&a.conn).await?);
        let req = AlertsRequest { since_id: a.after_id, kind: a.kind.clone(), follow: a.follow };
        Box::pin(q.alerts(req).await?.into_inner().map(|r| r.map(|a| (a, None)).map_err(anyhow::Error::from)))
    };
    if !a.json {
        println!(
            "{:>6}  {:<30}  {:<16}  {:<8}  {:<40}  {:>10}  detail",
            "id", "time (UTC)", "kind", "severity", "workload", "leaf"
        );
    }
    while let Some(alert) = s.next().await {
        let (alert, origin) = alert?;
        if alert.time_ns < not_before {
            continue;
        }
        let detail: serde_json::Value =
            serde_json::from_str(&alert.detail_json).unwrap_or(serde_json::Value::String(alert.detail_json.clone()));
        if a.json {
            let mut line = serde_json::json!({
                "id": alert.id, "time_ns": alert.time_ns, "kind": alert.kind, "severity": alert.severity,
                "identity_key": alert.identity_key, "leaf_index": alert.leaf_index, "detail": detail,
            });
            if let Some(o) = origin {
                line["origin"] = o.into();
            }
            println!("{line}");
        } else {
            println!(
                "{:>6}  {:<30}  {:<16}  {:<8}  {:<40}  {:>10}  {}",
                alert.id,
                crate::when::fmt_ns(alert.time_ns),
                alert.kind,
                alert.severity,
                wiretrail_log::text::escape(&crate::inventory::identity_label(&alert.identity_key)),
                match &origin {
                    Some(o) => format!("{}:{}", wiretrail_log::text::escape(o), alert.leaf_index),
                    None => alert.leaf_index.to_string(),
                },
                wiretrail_log::text::escape(&alert.detail_json)
            );
        }
    }
    Ok(())
}

/// What a derivation from ClickHouse read, and what it could not judge.
pub(super) fn report_read(d: &crate::clickhouse::derive::Derived) {
    eprintln!("read {} leaves of {} logs from ClickHouse", d.leaves(), d.origins().len());
    if d.missing() > 0 {
        eprintln!(
            "WARNING: {} leaves are missing from their logs' runs in ClickHouse ({} of them arrived too late to be \
             judged): the inventory and alerts do not cover them; `wiretrail verify --clickhouse` names them",
            d.missing(),
            d.late()
        );
    }
}
