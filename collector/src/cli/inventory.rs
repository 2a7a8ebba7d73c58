//! `wiretrail inventory`: the workload identities seen, their custodians, shadow ones flagged.

use wiretrail_proto::v1::InventoryRequest;
use wiretrail_proto::v1::query_client::QueryClient;

use super::{Conn, connect};

/// Arguments of `wiretrail inventory`.
#[derive(clap::Args)]
pub(super) struct InventoryArgs {
    /// Collector connection.
    #[command(flatten)]
    conn: Conn,
    /// Only identities that no registry entry matches.
    #[arg(long)]
    shadow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `wiretrail inventory`.
pub(super) async fn run(a: InventoryArgs) -> anyhow::Result<()> {
    let mut q = QueryClient::new(connect(&a.conn).await?);
    let resp = q.inventory(InventoryRequest { shadow_only: a.shadow }).await?.into_inner();
    if a.json {
        for e in &resp.entries {
            let line = serde_json::json!({
                "identity_key": e.identity_key, "shadow": e.shadow, "shadow_alerted": e.shadow_alerted,
                "custodian": e.custodian, "purpose": e.purpose,
                "first_seen_ns": e.first_seen_ns, "last_seen_ns": e.last_seen_ns,
                "first_leaf_index": e.first_leaf_index, "last_leaf_index": e.last_leaf_index,
                "records": e.records, "bytes": e.bytes, "tx_bytes": e.tx_bytes, "rx_bytes": e.rx_bytes,
                "hosts": e.hosts, "peers": e.peers, "peers_overflow": e.peers_overflow,
                "attributes": e.attributes,
            });
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "{:<36}  {:<32}  {:>9}  {:>12}  {:<30}  {:<30}  {:>5}  {:>5}  identity key (for filters)",
        "workload", "custodian", "records", "bytes", "first seen (UTC)", "last seen (UTC)", "hosts", "peers"
    );
    for e in &resp.entries {
        let custodian = if e.shadow { "SHADOW (no registry entry)".to_string() } else { e.custodian.clone() };
        let peers = if e.peers_overflow > 0 { format!("{}+", e.peers.len()) } else { e.peers.len().to_string() };
        println!(
            "{:<36}  {:<32}  {:>9}  {:>12}  {:<30}  {:<30}  {:>5}  {:>5}  {}",
            wiretrail_log::text::escape(&crate::inventory::identity_label(&e.identity_key)),
            wiretrail_log::text::escape(&custodian),
            e.records,
            e.bytes,
            crate::when::fmt_ns(e.first_seen_ns),
            crate::when::fmt_ns(e.last_seen_ns),
            e.hosts.len(),
            peers,
            wiretrail_log::text::escape(&e.identity_key)
        );
    }
    let shadow = resp.entries.iter().filter(|e| e.shadow).count();
    eprintln!("{} identities ({shadow} shadow) in the first {} records", resp.entries.len(), resp.indexed);
    Ok(())
}
