//! A conversation: the exchanges of one connection (agent, boot, connection
//! id) on a timeline, both directions in their own lane.

use std::fmt::Write;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Html;
use wiretrail_proto::v1::{Direction, Filter};

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, table, time};
use super::principal::Principal;

/// Most records of one agent read to find a conversation.
pub const MAX_RECORDS: u64 = 10_000;

/// Which connection.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    /// Agent id.
    pub agent: String,
    /// Boot id.
    pub boot: String,
    /// Connection id.
    pub conn: String,
}

/// The timeline: one lane per direction, a mark per record at its capture time.
fn timeline(points: &[(i64, bool, u64, usize)]) -> String {
    let (Some(t0), Some(t1)) = (points.iter().map(|p| p.0).min(), points.iter().map(|p| p.0).max()) else {
        return String::new();
    };
    let span = (t1 - t0).max(1) as f64;
    let (w, left) = (900.0, 90.0);
    let mut s = format!(
        "<svg id=\"timeline\" role=\"img\" aria-label=\"Timeline of the conversation\" viewBox=\"0 0 1000 110\" width=\"100%\">\
         <text x=\"4\" y=\"34\">egress →</text><text x=\"4\" y=\"84\">← ingress</text>\
         <line x1=\"{left}\" y1=\"30\" x2=\"{r}\" y2=\"30\" stroke=\"#d0d7de\"/><line x1=\"{left}\" y1=\"80\" x2=\"{r}\" y2=\"80\" stroke=\"#d0d7de\"/>",
        r = left + w
    );
    for (t, egress, leaf, len) in points {
        let x = left + (*t - t0) as f64 / span * w;
        let y = if *egress { 30 } else { 80 };
        let h = 6.0 + (*len as f64).log2().max(0.0) * 2.0;
        let _ = write!(
            s,
            "<a href=\"/record/{leaf}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"5\" height=\"{h:.1}\" fill=\"{}\"><title>leaf {leaf}: {len} bytes</title></rect></a>",
            x - 2.5,
            y as f64 - h / 2.0,
            if *egress { "#1f6feb" } else { "#bf3989" }
        );
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"106\">{}</text><text x=\"800\" y=\"106\">{}</text></svg>",
        esc(&crate::when::fmt_ns(t0)),
        esc(&crate::when::fmt_ns(t1))
    );
    s
}

/// `GET /conversation`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Html<String>, Failure> {
    let form = format!(
        "<form class=\"filters\" method=\"get\" action=\"/conversation\">{}{}{}\
         <div class=\"actions\"><button type=\"submit\">Show</button></div></form>",
        input("agent", "Agent id", &p.agent, "node-1"),
        input("boot", "Boot id", &p.boot, ""),
        input("conn", "Connection id", &p.conn, "3")
    );
    if p.agent.is_empty() {
        let body = format!("{form}<p class=\"hint\">Open a conversation from a search result or a record.</p>");
        return Ok(Html(frame(&who, "/conversation", "Conversation", &body)));
    }
    let conn: u64 = p.conn.trim().parse().map_err(|_| Failure::Input(format!("connection id {:?}", p.conn)))?;
    // The API's search (authorized and logged), narrowed to the connection here.
    let filter = Filter { agent_id: p.agent.clone(), limit: MAX_RECORDS, ..Default::default() };
    let results = super::search::run(&c, &who, "", filter).await?;
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for r in &results {
        let l = r.decoded.clone().unwrap_or_default();
        let rec = l.record.clone().unwrap_or_default();
        if rec.conn_id != conn || (!p.boot.is_empty() && l.boot_id != p.boot) {
            continue;
        }
        let egress = rec.direction() != Direction::Ingress;
        points.push((rec.capture_time_ns, egress, r.leaf_index, rec.payload.len()));
        let arrow = if egress { "→ egress" } else { "← ingress" };
        rows.push(vec![
            super::search::leaf_link(r, &c.origin),
            time(rec.capture_time_ns),
            arrow.to_string(),
            esc(rec.kind().as_str_name()),
            rec.payload.len().to_string(),
            format!("<span class=\"payload\">{}</span>", super::html::preview(&rec.payload, 100)),
        ]);
    }
    let body = format!(
        "{form}<p>{} records of connection {conn} (agent {}, boot {}).</p>{}{}\
         <h2>Mark this conversation reviewed</h2>{}",
        rows.len(),
        esc(&p.agent),
        esc(&p.boot),
        timeline(&points),
        table("exchanges", &["Leaf", "Captured (UTC)", "Side", "Kind", "Bytes", "Payload"], &rows),
        super::review::mark_form("", Some((&p.agent, &p.boot, conn)))
    );
    Ok(Html(frame(&who, "/conversation", "Conversation", &body)))
}
