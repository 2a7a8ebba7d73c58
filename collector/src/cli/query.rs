//! `wiretrail query`: records from a collector (its Query API; in clustered
//! mode it answers from every collector's log) or from ClickHouse directly,
//! as a table or JSON lines; each names the log (origin) of its leaf.

use tokio_stream::StreamExt;
use wiretrail_proto::v1::SearchRequest;

use super::{Case, Conn, FilterArgs, client};
use crate::when::fmt_ns;
use wiretrail_log::text::escape;

/// The first 60 characters of a payload, control characters as dots.
fn snippet(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).chars().take(60).map(|c| if c.is_control() { '.' } else { c }).collect()
}

/// Which records a collector searches.
pub(super) struct Scope {
    /// Keep streaming new records (until interrupted).
    pub follow: bool,
    /// Every collector's log in ClickHouse (clustered mode).
    pub all_logs: bool,
}

/// Search through a collector.
pub(super) async fn from_collector(
    conn: &Conn,
    case: &Case,
    filter: &FilterArgs,
    scope: Scope,
    json: bool,
) -> anyhow::Result<()> {
    let mut q = client(conn, case).await?;
    let req = SearchRequest { filter: Some(filter.filter()?), follow: scope.follow, all_logs: scope.all_logs };
    let mut s = q.search(req).await?.into_inner();
    if !json {
        println!(
            "{:<24}  {:>10}  {:<30}  {:<12}  {:<10}  {:<22}  {:<9}  {:<24}  payload",
            "log", "leaf", "capture (UTC)", "agent", "host", "peer", "protocol", "shipped by (certificate)"
        );
    }
    while let Some(r) = s.next().await {
        let r = r?;
        let l = r.decoded.unwrap_or_default();
        if json {
            let mut v = wiretrail_log::record_json::to_json(r.leaf_index, &l);
            if !r.origin.is_empty() {
                v["origin"] = serde_json::Value::String(r.origin);
            }
            println!("{v}");
            continue;
        }
        if let Some(e) = &l.entry {
            println!(
                "{:<24}  {:>10}  {:<30}  {:<12}  {:<10}  entry {} {}: {}",
                escape(&r.origin),
                r.leaf_index,
                fmt_ns(e.time_ns),
                escape(&l.agent_id),
                "",
                e.kind,
                escape(&e.subject),
                escape(&e.detail_json)
            );
            continue;
        }
        let rec = l.record.unwrap_or_default();
        let peer = rec.remote.map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_default();
        println!(
            "{:<24}  {:>10}  {:<30}  {:<12}  {:<10}  {:<22}  {:<9}  {:<24}  {}",
            escape(&r.origin),
            r.leaf_index,
            fmt_ns(rec.capture_time_ns),
            escape(&l.agent_id),
            escape(&rec.host),
            escape(&peer),
            escape(&rec.app_protocol),
            escape(&r.shipped_by),
            snippet(&rec.payload)
        );
    }
    Ok(())
}

/// Search every collector's log stored in ClickHouse.
pub(super) async fn from_clickhouse(
    args: &crate::clickhouse::ClickHouseArgs,
    filter: &FilterArgs,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = args.config().expect("url is set");
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    let q = wiretrail_log::filter::Query::new(filter.filter()?)?;
    for h in r.search_matching(&q).await? {
        if json {
            let mut v = wiretrail_log::record_json::to_json(h.leaf_index, &h.leaf);
            v["origin"] = serde_json::Value::String(h.origin);
            println!("{v}");
        } else {
            let rec = h.leaf.record.clone().unwrap_or_default();
            println!(
                "{:<24}  {:>10}  {:<30}  {:<12}  {:<9}  {}",
                escape(&h.origin),
                h.leaf_index,
                fmt_ns(rec.capture_time_ns),
                escape(&h.leaf.agent_id),
                escape(&rec.app_protocol),
                snippet(&rec.payload)
            );
        }
    }
    Ok(())
}
