//! `wiretrail inventory`: the workload identities seen, their custodians, shadow ones flagged.

use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{InventoryEntry, InventoryRequest};

use super::{Conn, connect};
use crate::clickhouse::derive::LeafRef;

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
    /// Derive the inventory of every collector's log stored in ClickHouse instead (see docs/clickhouse.md).
    #[command(flatten)]
    clickhouse: crate::clickhouse::ClickHouseArgs,
    /// With --clickhouse: the identity registry to judge against (default: none, every identity is shadow).
    #[arg(long, requires = "url")]
    registry: Option<std::path::PathBuf>,
}

/// The entries of every log in ClickHouse, with the logs of their first and last records.
async fn from_clickhouse(a: &InventoryArgs) -> anyhow::Result<(Vec<InventoryEntry>, Vec<Option<(LeafRef, LeafRef)>>)> {
    let cfg = a.clickhouse.config().expect("url is set");
    let registry = std::sync::Arc::new(crate::registry::RegistryHandle::open(a.registry.clone())?);
    let r = crate::clickhouse::reader::Reader::open(&cfg).await?;
    eprintln!("reading ClickHouse at {} (database {})", cfg.url, cfg.database);
    let d = r.derive(registry).await?;
    super::alerts::report_read(&d);
    let (entries, logs) = d.inventory(a.shadow)?.into_iter().map(|i| (i.entry, Some((i.first, i.last)))).unzip();
    Ok((entries, logs))
}

/// Runs `wiretrail inventory`.
pub(super) async fn run(a: InventoryArgs) -> anyhow::Result<()> {
    let (entries, logs, indexed) = if a.clickhouse.url.is_some() {
        let (entries, logs) = from_clickhouse(&a).await?;
        (entries, logs, None)
    } else {
        let mut q = QueryClient::new(connect(&a.conn).await?);
        let resp = q.inventory(InventoryRequest { shadow_only: a.shadow }).await?.into_inner();
        let n = resp.entries.len();
        (resp.entries, vec![None; n], Some(resp.indexed))
    };
    if a.json {
        for (e, logs) in entries.iter().zip(&logs) {
            let mut line = serde_json::json!({
                "identity_key": e.identity_key, "shadow": e.shadow, "shadow_alerted": e.shadow_alerted,
                "custodian": e.custodian, "purpose": e.purpose,
                "first_seen_ns": e.first_seen_ns, "last_seen_ns": e.last_seen_ns,
                "first_leaf_index": e.first_leaf_index, "last_leaf_index": e.last_leaf_index,
                "records": e.records, "bytes": e.bytes, "tx_bytes": e.tx_bytes, "rx_bytes": e.rx_bytes,
                "hosts": e.hosts, "peers": e.peers, "peers_overflow": e.peers_overflow,
                "attributes": e.attributes,
            });
            if let Some((first, last)) = logs {
                line["first_origin"] = first.origin.clone().into();
                line["last_origin"] = last.origin.clone().into();
            }
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "{:<36}  {:<32}  {:>9}  {:>12}  {:<30}  {:<30}  {:>5}  {:>5}  identity key (for filters)",
        "workload", "custodian", "records", "bytes", "first seen (UTC)", "last seen (UTC)", "hosts", "peers"
    );
    for e in &entries {
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
    let shadow = entries.iter().filter(|e| e.shadow).count();
    match indexed {
        Some(n) => eprintln!("{} identities ({shadow} shadow) in the first {n} records", entries.len()),
        None => eprintln!("{} identities ({shadow} shadow) in every log stored in ClickHouse", entries.len()),
    }
    Ok(())
}
