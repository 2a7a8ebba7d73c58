//! `wiretrail alerts`: shadow identities, policy denials and violations, gaps,
//! clocks, silent and returning agents, the collector's own incidents.

use tokio_stream::StreamExt;
use wiretrail_proto::v1::AlertsRequest;
use wiretrail_proto::v1::query_client::QueryClient;

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
    #[arg(long)]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `wiretrail alerts`.
pub(super) async fn run(a: AlertsArgs) -> anyhow::Result<()> {
    let mut q = QueryClient::new(connect(&a.conn).await?);
    let req = AlertsRequest { since_id: a.after_id, kind: a.kind, follow: a.follow };
    let not_before = a.since.map_or(0, |d| wiretrail_log::store::now_ns().saturating_sub(d.as_nanos() as i64));
    let mut s = q.alerts(req).await?.into_inner();
    if !a.json {
        println!(
            "{:>6}  {:<30}  {:<16}  {:<8}  {:<40}  {:>10}  detail",
            "id", "time (UTC)", "kind", "severity", "workload", "leaf"
        );
    }
    while let Some(alert) = s.next().await {
        let alert = alert?;
        if alert.time_ns < not_before {
            continue;
        }
        let detail: serde_json::Value =
            serde_json::from_str(&alert.detail_json).unwrap_or(serde_json::Value::String(alert.detail_json.clone()));
        if a.json {
            let line = serde_json::json!({
                "id": alert.id, "time_ns": alert.time_ns, "kind": alert.kind, "severity": alert.severity,
                "identity_key": alert.identity_key, "leaf_index": alert.leaf_index, "detail": detail,
            });
            println!("{line}");
        } else {
            println!(
                "{:>6}  {:<30}  {:<16}  {:<8}  {:<40}  {:>10}  {}",
                alert.id,
                crate::when::fmt_ns(alert.time_ns),
                alert.kind,
                alert.severity,
                wiretrail_log::text::escape(&crate::inventory::identity_label(&alert.identity_key)),
                alert.leaf_index,
                wiretrail_log::text::escape(&alert.detail_json)
            );
        }
    }
    Ok(())
}
