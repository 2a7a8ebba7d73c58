//! Alerts, live: the table so far, then the API's follow stream as
//! server-sent events.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use tokio_stream::StreamExt;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Alert, AlertsRequest};

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, row, table, time};
use super::principal::Principal;

/// Filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    /// One alert kind ("" = all).
    pub kind: String,
    /// Only alerts after this id.
    pub since_id: u64,
}

/// One alert as table cells.
pub fn cells(a: &Alert) -> Vec<String> {
    vec![
        a.id.to_string(),
        time(a.time_ns),
        format!("<span class=\"sev-{s}\">{s}</span>", s = esc(&a.severity)),
        esc(&a.kind),
        esc(&a.identity_key),
        format!("<a href=\"/record/{l}\">{l}</a>", l = a.leaf_index),
        format!("<code>{}</code>", esc(&a.detail_json)),
    ]
}

/// The alerts table header.
pub const HEAD: [&str; 7] = ["Id", "Time (UTC)", "Severity", "Kind", "Identity", "Record", "Detail"];

/// Alerts of `kind` stored so far.
pub async fn list(c: &Console, who: &Principal, kind: &str) -> Result<Vec<Alert>, Failure> {
    let mut q = QueryClient::new(c.backend.channel(who).await?);
    let mut s = q.alerts(AlertsRequest { since_id: 0, kind: kind.to_string(), follow: false }).await?.into_inner();
    let mut out = Vec::new();
    while let Some(a) = s.next().await {
        out.push(a?);
    }
    Ok(out)
}

/// `GET /alerts`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Html<String>, Failure> {
    let alerts = list(&c, &who, &p.kind).await?;
    let last = alerts.last().map(|a| a.id).unwrap_or(0);
    let rows: Vec<_> = alerts.iter().rev().map(cells).collect();
    let live = format!("/alerts/follow?kind={}&since_id={last}", super::html::url(&p.kind));
    let t = table("alerts", &HEAD, &rows).replacen(
        "<tbody>",
        &format!("<tbody data-live=\"{}\" data-order=\"top\" data-status=\"live\">", esc(&live)),
        1,
    );
    let body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/alerts\">{}<div class=\"actions\"><button type=\"submit\">Filter</button></div></form>\
         <p id=\"live\" role=\"status\" aria-live=\"polite\">live: {} alerts</p>{t}",
        input("kind", "Kind", &p.kind, "shadow_identity"),
        rows.len()
    );
    Ok(Html(frame(&who, "/alerts", "Alerts", &body)))
}

/// `GET /alerts/follow`: new alerts as server-sent events.
pub async fn follow(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Response, Failure> {
    let mut q = QueryClient::new(c.backend.channel(&who).await?);
    let s = q.alerts(AlertsRequest { since_id: p.since_id, kind: p.kind, follow: true }).await?.into_inner();
    let events = s.map(|a| {
        Ok::<_, Infallible>(match a {
            Ok(a) => Event::default().data(row(&cells(&a))),
            Err(e) => Event::default().event("failure").data(e.message().replace('\n', " ")),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
