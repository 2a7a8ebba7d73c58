//! The access log (auditor role): who read what, when, under which case.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Html;
use tokio_stream::StreamExt;
use wiretrail_proto::v1::AccessLogRequest;
use wiretrail_proto::v1::query_client::QueryClient;

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, table, time};
use super::principal::Principal;

/// Filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    /// Glob over the reader's identity.
    pub identity: String,
    /// One action (search, view, ...).
    pub action: String,
    /// Glob over the workloads whose records were returned.
    pub workload: String,
    /// "last 1h".
    pub since: String,
}

/// `GET /access`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Html<String>, Failure> {
    let from_time_ns = match p.since.trim() {
        "" => 0,
        s => wiretrail_log::store::now_ns().saturating_sub(super::search::parse_since(s)?.as_nanos() as i64),
    };
    let req = AccessLogRequest {
        identity: p.identity.clone(),
        action: p.action.clone(),
        workload: p.workload.clone(),
        from_time_ns,
        limit: 500,
        ..Default::default()
    };
    let mut q = QueryClient::new(c.backend.channel(&who).await?);
    let mut s = q.access_log(req).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(a) = s.next().await {
        let a = a?;
        rows.push(vec![
            a.leaf_index.to_string(),
            time(a.time_ns),
            esc(&a.identity),
            esc(&a.role),
            esc(&a.action),
            esc(&a.case_id),
            esc(&a.purpose),
            a.returned.to_string(),
            esc(&a.workloads.join(" ")),
        ]);
    }
    rows.reverse();
    let body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/access\">{}{}{}{}\
         <div class=\"actions\"><button type=\"submit\">Filter</button></div></form>{}",
        input("identity", "Reader (glob)", &p.identity, "*role/reviewer*"),
        input("action", "Action", &p.action, "search"),
        input("workload", "Workload (glob)", &p.workload, "k8s:*"),
        input("since", "Since", &p.since, "last 1h"),
        table(
            "access",
            &["Leaf", "When (UTC)", "Reader", "Role", "Action", "Case", "Purpose", "Returned", "Workloads"],
            &rows
        )
    );
    Ok(Html(frame(&who, "/access", "Access log", &body)))
}
