//! The identity inventory: every workload identity seen in the log, kept in
//! the index database and updated by the indexer in the same transaction as
//! the rest of the index (so it is rebuilt from the log like the index).
//!
//! Custodian, purpose and the shadow flag are not stored: they are resolved
//! against the registry in force when the inventory is read, so a registry
//! change applies to everything already seen. The inventory stores the
//! attributes of each identity's latest record for that purpose.

mod key;
mod update;

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use wiretrail_proto::v1::InventoryEntry;

use crate::registry::Registry;
pub use key::{identity_key, identity_key_into, identity_label};
pub use update::{PEER_CAP, Pass, Tracker};

/// Tables of the inventory (created with the index).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inventory(
  key TEXT PRIMARY KEY, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
  first_leaf INTEGER NOT NULL, last_leaf INTEGER NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL,
  tx_bytes INTEGER NOT NULL, rx_bytes INTEGER NOT NULL, peers_overflow INTEGER NOT NULL,
  alerted INTEGER NOT NULL, attrs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inventory_hosts(key TEXT NOT NULL, host TEXT NOT NULL, PRIMARY KEY(key, host));
CREATE TABLE IF NOT EXISTS inventory_peers(
  key TEXT NOT NULL, peer TEXT NOT NULL, records INTEGER NOT NULL, PRIMARY KEY(key, peer));
CREATE TABLE IF NOT EXISTS inventory_anomalies(
  key TEXT NOT NULL, kind TEXT NOT NULL, period TEXT NOT NULL, PRIMARY KEY(key, kind, period));
";

/// Statements emptying the inventory (index rebuild).
pub const CLEAR: &str = "DELETE FROM inventory; DELETE FROM inventory_hosts; DELETE FROM inventory_peers;
DELETE FROM inventory_anomalies;";

/// Decodes the stored attributes JSON.
pub(crate) fn decode_attrs(json: &str) -> rusqlite::Result<BTreeMap<String, String>> {
    serde_json::from_str(json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// The inventory, custodian and purpose resolved against `registry`; only
/// shadow identities when `shadow_only`. Sorted by identity key.
pub fn list(c: &Connection, registry: &Registry, shadow_only: bool) -> rusqlite::Result<Vec<InventoryEntry>> {
    let mut stmt = c.prepare_cached(
        "SELECT key,first_seen,last_seen,first_leaf,last_leaf,records,bytes,tx_bytes,rx_bytes,peers_overflow,alerted,attrs
         FROM inventory ORDER BY key",
    )?;
    let mut hosts = c.prepare_cached("SELECT host FROM inventory_hosts WHERE key = ? ORDER BY host")?;
    let mut peers = c.prepare_cached("SELECT peer FROM inventory_peers WHERE key = ? ORDER BY peer")?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let attributes = decode_attrs(&r.get::<_, String>(11)?)?;
        let entry = registry.resolve(&attributes);
        if shadow_only && entry.is_some() {
            continue;
        }
        let key: String = r.get(0)?;
        let u = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
        out.push(InventoryEntry {
            first_seen_ns: r.get(1)?,
            last_seen_ns: r.get(2)?,
            first_leaf_index: u(3)?,
            last_leaf_index: u(4)?,
            records: u(5)?,
            bytes: u(6)?,
            tx_bytes: u(7)?,
            rx_bytes: u(8)?,
            peers_overflow: u(9)?,
            shadow_alerted: r.get::<_, i64>(10)? != 0,
            hosts: hosts.query_map(params![key], |r| r.get(0))?.collect::<Result<_, _>>()?,
            peers: peers.query_map(params![key], |r| r.get(0))?.collect::<Result<_, _>>()?,
            custodian: entry.map(|e| e.custodian.clone()).unwrap_or_default(),
            purpose: entry.map(|e| e.purpose.clone()).unwrap_or_default(),
            shadow: entry.is_none(),
            attributes: attributes.into_iter().collect(),
            identity_key: key,
        });
    }
    Ok(out)
}
