//! Updating the inventory and raising alerts as the indexer consumes records.
//!
//! A [`Pass`] covers one index transaction: it accumulates per-identity
//! deltas in memory (one row write per identity per transaction) and stores
//! alerts as it meets the records that raise them.
//!
//! The pass's maps are keyed by identity key and peer, several lookups per
//! record on the indexer thread: they hash with foldhash (randomly seeded per
//! process, as hashbrown's default) rather than SipHash, and start sized for
//! the identities the previous pass met (growing them from empty in every
//! transaction was ~4 % of the indexer thread).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use wiretrail_proto::v1::Record;

use super::{decode_attrs, identity_key_into};
use crate::alerts::{self, Kind, NewAlert};
use crate::registry::{RecordAttributes, Registry, RegistryHandle};

/// Most peers kept per identity; records with further peers are counted in `peers_overflow`.
pub const PEER_CAP: u64 = 256;

/// A map hashed with foldhash (see the module doc).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Inventory state that lives across index transactions.
pub struct Tracker {
    /// The registry in force.
    registry: Arc<RegistryHandle>,
    /// Registry generation whose sweep for not-yet-alerted shadow identities is committed.
    swept: Option<u64>,
    /// Identities the last finished pass met (the next pass's map starts that large).
    keys_hint: Arc<AtomicUsize>,
}

impl Tracker {
    /// A tracker using `registry`.
    pub fn new(registry: Arc<RegistryHandle>) -> Self {
        Tracker { registry, swept: None, keys_hint: Arc::default() }
    }

    /// The registry it judges against.
    pub fn registry(&self) -> Arc<RegistryHandle> {
        self.registry.clone()
    }

    /// Starts a pass over records inside the transaction `c`.
    pub fn pass<'c>(&self, c: &'c Connection) -> Pass<'c> {
        let (generation, registry) = self.registry.snapshot();
        Pass {
            c,
            generation,
            sweep_pending: self.swept != Some(generation),
            registry,
            accs: FastMap::with_capacity_and_hasher(self.keys_hint.load(Ordering::Relaxed), Default::default()),
            keys_hint: self.keys_hint.clone(),
            order: Vec::new(),
            alerts: Vec::new(),
            key_buf: String::new(),
            peer_buf: String::new(),
        }
    }

    /// Records that a pass's transaction was committed; `swept` is what
    /// [`Pass::finish`] returned.
    pub fn committed(&mut self, swept: Option<u64>) {
        if swept.is_some() {
            self.swept = swept;
        }
    }
}

/// One identity's changes within a pass.
#[derive(Default)]
struct Acc {
    /// A row for it exists in the database.
    existed: bool,
    /// A shadow_identity alert was raised for it (stored or in this pass).
    alerted: bool,
    /// Smallest and largest capture time in this pass.
    first_seen: i64,
    last_seen: i64,
    /// First and last leaf in this pass.
    first_leaf: u64,
    last_leaf: u64,
    /// Records, payload bytes, egress and ingress payload bytes in this pass.
    records: u64,
    bytes: u64,
    tx: u64,
    rx: u64,
    /// First capture time stored before this pass (`None` for an identity new in it).
    stored_first_seen: Option<i64>,
    /// Peers stored for it before this pass (read at its first new peer in the pass).
    stored_peers: Option<u64>,
    /// Attributes of its latest record.
    attrs: BTreeMap<String, String>,
    /// Index of the registry entry `attrs` resolve to (`None`: shadow).
    entry: Option<usize>,
    /// Anomaly (kind, period) pairs already raised or found stored in this pass.
    anomalies: HashSet<(Kind, String)>,
    /// Hosts seen in this pass.
    hosts: Vec<String>,
    /// Peers in first-seen order with their record counts in this pass.
    peers: Vec<(String, u64)>,
    /// Position of each peer in `peers`.
    peer_pos: FastMap<String, usize>,
}

/// Makes `m` hold exactly the attributes of `a`; returns whether it changed.
/// When `m` has the same keys (an identity's records usually do: only a
/// value such as the pod name differs), values are overwritten in place
/// (`clone_from` reuses their buffers) instead of building a new map per record.
fn assign_attrs(m: &mut BTreeMap<String, String>, a: &RecordAttributes) -> bool {
    let same_keys = m.len() == a.identity.len() + 2
        && m.contains_key("host")
        && m.contains_key("uid")
        && a.identity.keys().all(|k| m.contains_key(k));
    if !same_keys {
        *m = a.to_map();
        return true;
    }
    let mut changed = false;
    let mut set = |k: &str, v: &str| {
        let slot = m.get_mut(k).expect("same keys");
        if slot != v {
            slot.clear();
            slot.push_str(v);
            changed = true;
        }
    };
    for (k, v) in a.identity {
        set(k, v);
    }
    set("host", a.host);
    set("uid", &a.uid);
    changed
}

/// Writes into `out` the peer an end talks to: the peer's identity key when
/// known, else the remote endpoint; false when it names neither.
fn peer_into(out: &mut String, side: &wiretrail_log::sides::SideView<'_>, host: &str) -> bool {
    use std::fmt::Write;
    if !side.peer_identity.is_empty() {
        identity_key_into(out, side.peer_identity, host);
        return true;
    }
    out.clear();
    match side.remote {
        Some(e) if !e.address.is_empty() => {
            let _ = write!(out, "{}:{}", e.address, e.port);
            true
        }
        _ => false,
    }
}

/// The inventory and alert updates of one index transaction.
pub struct Pass<'c> {
    /// The index transaction.
    c: &'c Connection,
    /// Generation of `registry`.
    generation: u64,
    /// Whether stored identities must be re-checked against a new registry before the next record.
    sweep_pending: bool,
    /// The registry in force for this pass.
    registry: Arc<Registry>,
    /// Changes per identity key.
    accs: FastMap<String, Acc>,
    /// Where [`Pass::finish`] leaves how many identities it met.
    keys_hint: Arc<AtomicUsize>,
    /// Identity keys in first-seen order (deterministic writes).
    order: Vec<String>,
    /// Alerts stored in this pass.
    alerts: Vec<NewAlert>,
    /// Buffers for the identity key and the peer of the record being observed.
    key_buf: String,
    peer_buf: String,
}

impl Pass<'_> {
    /// Accounts record `r` stored at leaf `leaf`: for each end it speaks for
    /// (both ends of a two-witness record).
    pub fn observe(&mut self, leaf: u64, r: &Record) -> rusqlite::Result<()> {
        if self.sweep_pending {
            self.sweep(leaf, r.capture_time_ns)?;
            self.sweep_pending = false;
        }
        if let Some(a) = alerts::from_decision(leaf, r) {
            alerts::insert(self.c, &a)?;
            self.alerts.push(a);
        }
        for side in wiretrail_log::sides::sides(r) {
            self.observe_side(leaf, r, &side)?;
        }
        Ok(())
    }

    fn observe_side(
        &mut self,
        leaf: u64,
        r: &Record,
        side: &wiretrail_log::sides::SideView<'_>,
    ) -> rusqlite::Result<()> {
        // Records that describe no workload (heartbeats, agent notices) are not inventoried.
        if side.identity.is_empty() {
            return Ok(());
        }
        // The key and peer are built in buffers kept across records (no allocation per record).
        let (mut key, mut peer) = (std::mem::take(&mut self.key_buf), std::mem::take(&mut self.peer_buf));
        identity_key_into(&mut key, side.identity, &r.host);
        let has_peer = peer_into(&mut peer, side, &r.host);
        let done = self.observe_identity(leaf, r, side, &key, has_peer.then_some(peer.as_str()));
        (self.key_buf, self.peer_buf) = (key, peer);
        done
    }

    /// [`Self::observe_side`] for the end whose identity key is `key`, talking to `peer`.
    fn observe_identity(
        &mut self,
        leaf: u64,
        r: &Record,
        side: &wiretrail_log::sides::SideView<'_>,
        key: &str,
        peer: Option<&str>,
    ) -> rusqlite::Result<()> {
        if !self.accs.contains_key(key) {
            let stored: Option<(bool, i64)> = self
                .c
                .prepare_cached("SELECT alerted, first_seen FROM inventory WHERE key = ?")?
                .query_row([key], |row| Ok((row.get::<_, i64>(0)? != 0, row.get(1)?)))
                .optional()?;
            let acc = Acc {
                existed: stored.is_some(),
                alerted: stored.is_some_and(|s| s.0),
                stored_first_seen: stored.map(|s| s.1),
                first_seen: r.capture_time_ns,
                last_seen: r.capture_time_ns,
                first_leaf: leaf,
                ..Default::default()
            };
            self.accs.insert(key.to_string(), acc);
            self.order.push(key.to_string());
        }
        let acc = self.accs.get_mut(key).expect("inserted above");
        acc.first_seen = acc.first_seen.min(r.capture_time_ns);
        acc.last_seen = acc.last_seen.max(r.capture_time_ns);
        acc.last_leaf = leaf;
        acc.records += 1;
        acc.bytes += side.tx + side.rx;
        acc.tx += side.tx;
        acc.rx += side.rx;
        if !acc.hosts.contains(&r.host) {
            acc.hosts.push(r.host.clone());
        }
        let mut new_peer = None;
        if let Some(p) = peer {
            match acc.peer_pos.get(p) {
                Some(&i) => acc.peers[i].1 += 1,
                None => {
                    acc.peer_pos.insert(p.to_string(), acc.peers.len());
                    acc.peers.push((p.to_string(), 1));
                    new_peer = acc
                        .stored_first_seen
                        .filter(|&first| r.capture_time_ns.saturating_sub(first) >= self.registry.new_peer_learning_ns)
                        .map(|first| (p, first));
                }
            }
        }
        let attrs = RecordAttributes { identity: side.identity, host: &r.host, uid: side.uid.to_string() };
        if assign_attrs(&mut acc.attrs, &attrs) {
            acc.entry = self.registry.entries.iter().position(|e| e.matches(&attrs));
        }
        let entry = acc.entry;
        if let Some((p, first)) = new_peer
            && self.never_talked(key, p)?
        {
            let detail = serde_json::json!({
                "peer": p, "identity_first_seen_ns": first,
                "learning_hours": self.registry.new_peer_learning_ns / 3_600_000_000_000,
            });
            self.anomaly(key, Kind::NewPeer, p.to_string(), r.capture_time_ns, leaf, detail)?;
        }
        self.check_schedule(key, entry, leaf, r.capture_time_ns, peer)?;
        let acc = self.accs.get_mut(key).expect("inserted above");
        if !acc.alerted && acc.entry.is_none() {
            acc.alerted = true;
            let first = !acc.existed && acc.records == 1;
            let a = NewAlert {
                time_ns: r.capture_time_ns,
                kind: Kind::ShadowIdentity,
                identity_key: key.to_string(),
                detail: serde_json::json!({
                    "reason": if first { "first_seen" } else { "unregistered" },
                    "attributes": acc.attrs,
                    "registry_sha256": self.registry.sha256,
                    "peer": peer,
                }),
                leaf_index: leaf,
            };
            alerts::insert(self.c, &a)?;
            self.alerts.push(a);
        }
        Ok(())
    }

    /// Whether `key` has no stored record with `peer` (and room to store one:
    /// past [`PEER_CAP`] peers, new ones cannot be told apart). The count of
    /// stored peers is read once per identity per pass: a point lookup per new
    /// peer, not a count of up to [`PEER_CAP`] rows (31 % of indexing time
    /// when every record met a peer new in its pass).
    fn never_talked(&mut self, key: &str, peer: &str) -> rusqlite::Result<bool> {
        let c = self.c;
        let acc = self.accs.get_mut(key).expect("observed identity");
        let stored = match acc.stored_peers {
            Some(n) => n,
            None => {
                let n = c
                    .prepare_cached("SELECT count(*) FROM inventory_peers WHERE key = ?")?
                    .query_row([key], |r| r.get::<_, i64>(0))? as u64;
                acc.stored_peers = Some(n);
                n
            }
        };
        if stored >= PEER_CAP {
            return Ok(false);
        }
        let known: bool = c
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM inventory_peers WHERE key = ?1 AND peer = ?2)")?
            .query_row(params![key, peer], |r| r.get(0))?;
        Ok(!known)
    }

    /// Raises `retired_identity_active` (once per UTC day) and
    /// `outside_hours` (once per local day) for a record of `key` at `t`.
    fn check_schedule(
        &mut self,
        key: &str,
        entry: Option<usize>,
        leaf: u64,
        t: i64,
        peer: Option<&str>,
    ) -> rusqlite::Result<()> {
        let Some(i) = entry else { return Ok(()) };
        let registry = self.registry.clone();
        let e = &registry.entries[i];
        if let Some(since) = e.retired
            && t >= since
        {
            let day = jiff::Timestamp::from_nanosecond(t as i128)
                .map(|ts| ts.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
                .unwrap_or_default();
            let detail = serde_json::json!({
                "retired_since_ns": since, "custodian": e.custodian, "purpose": e.purpose, "peer": peer,
                "registry_sha256": registry.sha256,
            });
            self.anomaly(key, Kind::RetiredActive, day, t, leaf, detail)?;
        }
        if let Some(h) = &e.hours
            && !h.contains(t)
        {
            let local = h.local(t);
            let detail = serde_json::json!({
                "hours": h.text(), "local_time": local.to_string(), "custodian": e.custodian, "peer": peer,
                "registry_sha256": registry.sha256,
            });
            self.anomaly(key, Kind::OutsideHours, local.date().to_string(), t, leaf, detail)?;
        }
        Ok(())
    }

    /// Raises the alerts about an agent's capture a record states: a gap
    /// record, a heartbeat whose clock breaks the rules.
    pub fn observe_agent(&mut self, leaf: u64, agent_id: &str, r: &Record) -> rusqlite::Result<()> {
        let a = match alerts::gap::from_gap(leaf, agent_id, r) {
            Some(a) => Some(a),
            None => alerts::clock::from_heartbeat(self.c, leaf, agent_id, r)?,
        };
        if let Some(a) = a {
            alerts::insert(self.c, &a)?;
            self.alerts.push(a);
        }
        Ok(())
    }

    /// Stores alert `kind` for `key` unless one was raised for the same `period`.
    fn anomaly(
        &mut self,
        key: &str,
        kind: Kind,
        period: String,
        time_ns: i64,
        leaf: u64,
        mut detail: serde_json::Value,
    ) -> rusqlite::Result<()> {
        let acc = self.accs.get_mut(key).expect("observed identity");
        if !acc.anomalies.insert((kind, period.clone())) {
            return Ok(());
        }
        let fresh = self
            .c
            .prepare_cached("INSERT OR IGNORE INTO inventory_anomalies(key, kind, period) VALUES (?, ?, ?)")?
            .execute(params![key, kind.as_str(), period])?;
        if fresh == 0 {
            return Ok(());
        }
        detail["period"] = period.into();
        let a = NewAlert { time_ns, kind, identity_key: key.to_string(), detail, leaf_index: leaf };
        alerts::insert(self.c, &a)?;
        self.alerts.push(a);
        Ok(())
    }

    /// Accounts a collector entry stored at `leaf` (alerts only; entries describe no workload).
    pub fn observe_entry(&mut self, leaf: u64, e: &wiretrail_proto::v1::CollectorEntry) -> rusqlite::Result<()> {
        if let Some(a) = alerts::from_entry(leaf, e) {
            alerts::insert(self.c, &a)?;
            self.alerts.push(a);
        }
        Ok(())
    }

    /// Raises shadow_identity alerts for stored identities that the registry
    /// of this pass leaves shadow and that were never alerted; `leaf` and
    /// `time_ns` are those of the next record, the one that raises them.
    fn sweep(&mut self, leaf: u64, time_ns: i64) -> rusqlite::Result<()> {
        let candidates: Vec<(String, String, i64)> = self
            .c
            .prepare_cached("SELECT key, attrs, last_leaf FROM inventory WHERE alerted = 0 ORDER BY key")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (key, attrs, last_leaf) in candidates {
            let attrs = decode_attrs(&attrs)?;
            if self.registry.resolve(&attrs).is_some() {
                continue;
            }
            self.c.prepare_cached("UPDATE inventory SET alerted = 1 WHERE key = ?")?.execute([&key])?;
            let a = NewAlert {
                time_ns,
                kind: Kind::ShadowIdentity,
                identity_key: key,
                detail: serde_json::json!({
                    "reason": "registry_changed",
                    "attributes": attrs,
                    "registry_sha256": self.registry.sha256,
                    "last_leaf_index": last_leaf,
                }),
                leaf_index: leaf,
            };
            alerts::insert(self.c, &a)?;
            self.alerts.push(a);
        }
        Ok(())
    }

    /// Writes the accumulated changes; returns the registry generation whose
    /// sweep this pass did (for [`Tracker::committed`]; `None` when it met no
    /// record, so the sweep waits for the next one) and the alerts stored, to
    /// log after commit.
    pub fn finish(mut self) -> rusqlite::Result<(Option<u64>, Vec<NewAlert>)> {
        let swept = (!self.sweep_pending).then_some(self.generation);
        self.keys_hint.store(self.accs.len(), Ordering::Relaxed);
        let c = self.c;
        let mut row = c.prepare_cached(
            "INSERT INTO inventory(key,first_seen,last_seen,first_leaf,last_leaf,records,bytes,tx_bytes,rx_bytes,
                                   peers_overflow,alerted,attrs)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)
             ON CONFLICT(key) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),
               last_seen = max(last_seen, excluded.last_seen), last_leaf = excluded.last_leaf,
               records = records + excluded.records, bytes = bytes + excluded.bytes,
               tx_bytes = tx_bytes + excluded.tx_bytes, rx_bytes = rx_bytes + excluded.rx_bytes,
               peers_overflow = peers_overflow + excluded.peers_overflow,
               alerted = max(alerted, excluded.alerted), attrs = excluded.attrs",
        )?;
        let mut host = c.prepare_cached("INSERT OR IGNORE INTO inventory_hosts(key,host) VALUES (?,?)")?;
        let mut count = c.prepare_cached("SELECT count(*) FROM inventory_peers WHERE key = ?")?;
        let mut bump =
            c.prepare_cached("UPDATE inventory_peers SET records = records + ? WHERE key = ? AND peer = ?")?;
        let mut add = c.prepare_cached("INSERT INTO inventory_peers(key,peer,records) VALUES (?,?,?)")?;
        for key in std::mem::take(&mut self.order) {
            let a = self.accs.remove(&key).expect("every ordered key has an accumulator");
            let mut kept: u64 = count.query_row([&key], |r| r.get::<_, i64>(0))? as u64;
            let mut overflow = 0u64;
            for (peer, n) in &a.peers {
                if bump.execute(params![*n as i64, key, peer])? == 1 {
                    continue;
                }
                if kept < PEER_CAP {
                    add.execute(params![key, peer, *n as i64])?;
                    kept += 1;
                } else {
                    overflow += n;
                }
            }
            for h in &a.hosts {
                host.execute(params![key, h])?;
            }
            let attrs = serde_json::to_string(&a.attrs).expect("string map serializes");
            row.execute(params![
                key,
                a.first_seen,
                a.last_seen,
                a.first_leaf as i64,
                a.last_leaf as i64,
                a.records as i64,
                a.bytes as i64,
                a.tx as i64,
                a.rx as i64,
                overflow as i64,
                a.alerted as i64,
                attrs
            ])?;
        }
        Ok((swept, self.alerts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(identity: &'a HashMap<String, String>, host: &'a str, uid: u32) -> RecordAttributes<'a> {
        RecordAttributes { identity, host, uid: uid.to_string() }
    }

    #[test]
    fn attributes_are_assigned_in_place_and_changes_reported() {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let pod_a: HashMap<String, String> = map(&[("k8s_pod", "api-1"), ("k8s_namespace", "pay")]);
        let pod_b: HashMap<String, String> = map(&[("k8s_pod", "api-2"), ("k8s_namespace", "pay")]);
        let other_keys: HashMap<String, String> = map(&[("exe", "/bin/x")]);
        let mut m = BTreeMap::new();
        for (a, changed) in [
            (attrs(&pod_a, "n1", 0), true),      // empty → first attributes
            (attrs(&pod_a, "n1", 0), false),     // the same
            (attrs(&pod_b, "n1", 0), true),      // a value changed
            (attrs(&pod_b, "n2", 7), true),      // host and uid changed
            (attrs(&other_keys, "n2", 7), true), // other keys
            (attrs(&pod_a, "n1", 0), true),      // back
        ] {
            assert_eq!(assign_attrs(&mut m, &a), changed, "{:?}", a.to_map());
            assert_eq!(m, a.to_map());
        }
    }
}
