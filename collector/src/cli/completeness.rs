//! `wiretrail completeness`: per agent, over a window, heartbeats seen vs
//! expected, what the agent says it saw vs what was recorded, gaps by
//! reason, silences. Read through the Search API (records of the agent in
//! the window, and the collector's liveness entries about it).

use std::collections::BTreeMap;

use tokio_stream::StreamExt;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, SearchRequest};

use super::{Conn, connect};
use crate::completeness::{Builder, render};

/// Arguments of `wiretrail completeness`.
#[derive(clap::Args)]
pub(super) struct CompletenessArgs {
    /// Collector connection.
    #[command(flatten)]
    conn: Conn,
    /// Only this agent (default: every agent with records in the window).
    #[arg(long, default_value = "")]
    agent: String,
    /// The window (default: from the agent's first record until now).
    #[command(flatten)]
    window: super::window::WindowArgs,
    /// One JSON object per agent instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `wiretrail completeness`.
pub(super) async fn run(a: CompletenessArgs) -> anyhow::Result<()> {
    let w = a.window.window()?;
    let (from_ns, to_ns) = (w.from_ns, if w.to_ns == 0 { wiretrail_log::store::now_ns() } else { w.to_ns });
    let mut q = QueryClient::new(connect(&a.conn).await?).max_decoding_message_size(64 << 20);
    let mut builders: BTreeMap<String, Builder> = BTreeMap::new();
    let filter = Filter {
        from_time_ns: from_ns,
        to_time_ns: to_ns,
        agent_id: a.agent.clone(),
        limit: wiretrail_log::filter::MAX_LIMIT,
        ..Default::default()
    };
    let mut s = q
        .search(SearchRequest { filter: Some(filter.clone()), follow: false, ..Default::default() })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(hit) = s.next().await {
        let leaf = hit?.decoded.unwrap_or_default();
        n += 1;
        let Some(r) = &leaf.record else { continue };
        builders
            .entry(leaf.agent_id.clone())
            .or_insert_with(|| Builder::new(&leaf.agent_id, from_ns, to_ns))
            .record(&leaf.boot_id, r);
    }
    if n >= wiretrail_log::filter::MAX_LIMIT {
        anyhow::bail!(
            "more than {} records in the window; narrow it (--since, --from/--to)",
            wiretrail_log::filter::MAX_LIMIT
        );
    }
    for kind in [wiretrail_log::entry::AGENT_SILENT, wiretrail_log::entry::AGENT_RETURNED] {
        let f = Filter { entry_kind: kind.into(), ..filter.clone() };
        let mut s =
            q.search(SearchRequest { filter: Some(f), follow: false, ..Default::default() }).await?.into_inner();
        while let Some(hit) = s.next().await {
            let leaf = hit?.decoded.unwrap_or_default();
            if let Some(e) = &leaf.entry {
                builders
                    .entry(e.subject.clone())
                    .or_insert_with(|| Builder::new(&e.subject, from_ns, to_ns))
                    .entry(&e.kind, e.time_ns);
            }
        }
    }
    if builders.is_empty() && !a.agent.is_empty() {
        builders.insert(a.agent.clone(), Builder::new(&a.agent, from_ns, to_ns));
    }
    for (_, b) in builders {
        let r = b.finish();
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", render(&r));
        }
    }
    Ok(())
}
