//! `wiretrail access-log`: who read the evidence, when, and whose records came
//! back (auditor role; the listing is itself logged).

use tokio_stream::StreamExt;
use wiretrail_proto::v1::AccessLogRequest;

use super::{Case, Conn, client};
use wiretrail_log::text::escape;

/// Arguments of `wiretrail access-log`.
#[derive(clap::Args)]
pub(super) struct AccessLogArgs {
    /// Collector connection.
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    case: Case,
    /// Reader's certificate identity (glob, e.g. "*role/reviewer/alice*").
    #[arg(long, default_value = "")]
    who: String,
    #[command(flatten)]
    window: super::window::WindowArgs,
    /// Only accesses that returned records of this workload (identity key glob,
    /// as `wiretrail inventory` prints: k8s:<ns>/<sa> or host:<host>:<cgroup>:<exe>).
    #[arg(long, default_value = "")]
    workload: String,
    /// Only this action: search, view, inclusion_proof, consistency_proof,
    /// issue_checkpoint, latest_checkpoint, access_log, review_list, export_seal.
    #[arg(long, default_value = "")]
    action: String,
    /// Only accesses made under this case id.
    #[arg(long, default_value = "")]
    case_id: String,
    /// Most entries listed before following (0 = 1,000).
    #[arg(long, default_value_t = 0)]
    limit: u64,
    /// Keep streaming new accesses.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `wiretrail access-log`.
pub(super) async fn run(a: AccessLogArgs) -> anyhow::Result<()> {
    let mut q = client(&a.conn, &a.case).await?;
    let w = a.window.window()?;
    let req = AccessLogRequest {
        identity: a.who,
        from_time_ns: w.from_ns,
        to_time_ns: w.to_ns,
        workload: a.workload,
        action: a.action,
        case_id: a.case_id,
        follow: a.follow,
        limit: a.limit,
    };
    let mut s = q.access_log(req).await?.into_inner();
    if !a.json {
        println!(
            "{:>10}  {:<30}  {:<40}  {:<9}  {:<17}  {:<10}  {:>8}  workloads",
            "leaf", "time (UTC)", "who", "role", "action", "case", "returned"
        );
    }
    while let Some(r) = s.next().await {
        let r = r?;
        if a.json {
            let detail: serde_json::Value = serde_json::from_str(&r.detail_json).unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({"leaf_index": r.leaf_index, "time_ns": r.time_ns, "identity": r.identity,
                    "role": r.role, "action": r.action, "case_id": r.case_id, "purpose": r.purpose,
                    "returned": r.returned, "workloads": r.workloads, "detail": detail})
            );
        } else {
            let action = if r.purpose.is_empty() { r.action.clone() } else { format!("{} ({})", r.action, r.purpose) };
            println!(
                "{:>10}  {:<30}  {:<40}  {:<9}  {:<17}  {:<10}  {:>8}  {}",
                r.leaf_index,
                crate::when::fmt_ns(r.time_ns),
                escape(&r.identity),
                escape(&r.role),
                action,
                escape(&r.case_id),
                r.returned,
                escape(&r.workloads.join(" "))
            );
        }
    }
    Ok(())
}
