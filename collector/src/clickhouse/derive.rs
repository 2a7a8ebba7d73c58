//! The inventory and the alerts of every log stored in ClickHouse, from
//! ClickHouse alone.
//!
//! They are derived the way a collector's indexer derives them from its own
//! log ([`crate::inventory::Tracker`], [`crate::alerts`]), into an in-memory
//! database: every leaf of every log is read once (one row per leaf) in
//! receive order, each log's leaves put back in leaf order (as its indexer
//! reads them; a leaf received before the one ahead of it in its log waits
//! for it), so the registry,
//! learning periods, schedules and clocks judge them as the indexer does,
//! across all logs together (an identity served by two collectors is one
//! inventory entry). Positions in
//! that merged stream are mapped back to (origin, leaf index) for the output,
//! so every alert names the leaf that raised it (`wiretrail prove` proves
//! it). The rows are not verified here: `wiretrail verify --clickhouse` does
//! that.
//!
//! Cost: one scan of the table, sorted by receive time; 16 bytes of memory
//! per leaf for the position map, plus the leaves held back behind a leaf
//! that has not come yet (at most [`HELD_MAX`] per log: then that leaf is
//! skipped and counted, [`Derived::missing`], and if it comes after all it
//! is counted again, [`Derived::late`]; the command line prints both).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;
use rusqlite::Connection;
use wiretrail_proto::v1::{Alert, InventoryEntry, StoredLeaf};

use super::ClickHouseError;
use super::reader::Reader;
use super::schema::LEAVES;
use crate::alerts::Kind;
use crate::inventory::Tracker;
use crate::registry::RegistryHandle;

/// Leaves per transaction of the in-memory database.
const CHUNK: usize = 20_000;

/// A leaf of one of the logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeafRef {
    /// The log.
    pub origin: String,
    /// The leaf index in it.
    pub leaf_index: u64,
}

/// An inventory entry across all logs.
#[derive(Debug)]
pub struct Identity {
    /// The entry; its `first_leaf_index` and `last_leaf_index` are those of [`Identity::first`] and [`Identity::last`].
    pub entry: InventoryEntry,
    /// Its first record.
    pub first: LeafRef,
    /// Its last record.
    pub last: LeafRef,
}

/// An alert and the leaf that raised it.
#[derive(Debug)]
pub struct LogAlert {
    /// The alert; its `leaf_index` is `leaf.leaf_index`.
    pub alert: Alert,
    /// The raising leaf.
    pub leaf: LeafRef,
}

/// What the pass derived.
pub struct Derived {
    db: Connection,
    origins: Vec<String>,
    /// Position in the merged stream -> (origin number, leaf index).
    positions: Vec<(u32, u64)>,
    registry: Arc<RegistryHandle>,
    out_of_order: u64,
    missing: u64,
    late: u64,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Row {
    origin: String,
    leaf_index: u64,
    #[serde(with = "serde_bytes")]
    leaf: Vec<u8>,
}

fn sqlite(what: &'static str) -> impl Fn(rusqlite::Error) -> ClickHouseError {
    move |e| ClickHouseError::Derive(format!("{what}: {e}"))
}

impl Reader {
    /// Reads every leaf of every log and derives the inventory and alerts,
    /// judged against `registry`.
    pub async fn derive(&self, registry: Arc<RegistryHandle>) -> Result<Derived, ClickHouseError> {
        let db = Connection::open_in_memory().map_err(sqlite("the database"))?;
        db.execute_batch(crate::inventory::SCHEMA).map_err(sqlite("the database"))?;
        db.execute_batch(crate::alerts::SCHEMA).map_err(sqlite("the database"))?;
        let mut d =
            Derived { db, origins: Vec::new(), positions: Vec::new(), registry, out_of_order: 0, missing: 0, late: 0 };
        let mut tracker = Tracker::new(d.registry.clone());
        let what = "reading every leaf";
        let mut cursor = self
            .client
            .query(&format!(
                "SELECT origin, leaf_index, leaf FROM {LEAVES} \
                 ORDER BY received_ns, origin, leaf_index LIMIT 1 BY origin, leaf_index"
            ))
            .fetch::<Row>()
            .map_err(ClickHouseError::query(what))?;
        // Ranges retention deleted have no rows: not missing.
        let (mut expired, bad) = self.expired(None).await?;
        for (origin, leaf, why) in &bad {
            tracing::warn!(%origin, leaf, %why, "a retention_deletion entry in ClickHouse is malformed; its range is not skipped");
        }
        let mut logs: Vec<Order> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut chunk: Vec<(u64, StoredLeaf)> = Vec::with_capacity(CHUNK);
        let mut ready = Vec::new();
        loop {
            let row = cursor.next().await.map_err(ClickHouseError::query(what))?;
            let Some(r) = row else { break };
            let o = match by_name.get(&r.origin) {
                Some(&o) => o,
                None => {
                    by_name.insert(r.origin.clone(), d.origins.len());
                    let ranges = expired.remove(&r.origin).unwrap_or_default();
                    d.origins.push(r.origin);
                    // Merged: entries are not verified here; overlapping ranges must not count twice.
                    logs.push(Order {
                        expired: super::expiry::merged(ranges.iter().map(|e| (e.first, e.end)).collect()),
                        ..Default::default()
                    });
                    d.origins.len() - 1
                }
            };
            logs[o].push(r.leaf_index, r.leaf, &mut ready);
            for (i, bytes) in ready.drain(..) {
                d.take(&mut tracker, &mut chunk, o, i, bytes)?;
            }
        }
        // Leaves held back behind a leaf ClickHouse does not have.
        for (o, log) in logs.iter_mut().enumerate() {
            d.out_of_order += log.out_of_order;
            d.late += log.late;
            d.missing += log.flush(&mut ready);
            for (i, bytes) in ready.drain(..) {
                d.take(&mut tracker, &mut chunk, o, i, bytes)?;
            }
        }
        d.observe(&mut tracker, &chunk)?;
        Ok(d)
    }
}

/// Puts one log's leaves back in leaf order when ClickHouse returns them by
/// receive time (two ingest streams may append in another order than they
/// received): leaves arriving before their predecessor wait for it.
#[derive(Default)]
struct Order {
    next: u64,
    held: BTreeMap<u64, Vec<u8>>,
    out_of_order: u64,
    missing: u64,
    late: u64,
    /// Ranges retention deleted, sorted: skipped, not waited for.
    expired: Vec<(u64, u64)>,
}

/// Most leaves held back per log before the missing one is given up on.
const HELD_MAX: usize = 100_000;

impl Order {
    /// Accepts leaf `i`; appends what can go in order to `ready`.
    fn push(&mut self, i: u64, bytes: Vec<u8>, ready: &mut Vec<(u64, Vec<u8>)>) {
        self.skip_expired();
        if self.expired_end(i).is_some() {
            // A row retention deleted that ClickHouse has not removed yet: not judged.
            return;
        }
        if i < self.next {
            // One row per leaf is read: a leaf given up on as missing came after all.
            self.late += 1;
            return;
        }
        if i > self.next {
            self.out_of_order += 1;
            self.held.insert(i, bytes);
            if self.held.len() > HELD_MAX {
                // Leaf `next` is not coming: go on from the first held one.
                let first = *self.held.keys().next().expect("held");
                self.missing += self.absent(first);
                self.next = first;
            } else {
                return;
            }
        } else {
            ready.push((i, bytes));
            self.next = i + 1;
        }
        self.skip_expired();
        while let Some(b) = self.held.remove(&self.next) {
            ready.push((self.next, b));
            self.next += 1;
            self.skip_expired();
        }
    }

    /// Moves `next` past a range retention deleted.
    fn skip_expired(&mut self) {
        if let Some(end) = self.expired_end(self.next) {
            self.next = end;
        }
    }

    /// The end of the deleted range (sorted, merged) holding leaf `i`.
    fn expired_end(&self, i: u64) -> Option<u64> {
        let k = self.expired.partition_point(|r| r.0 <= i);
        let &(_, end) = self.expired.get(k.checked_sub(1)?)?;
        (i < end).then_some(end)
    }

    /// Leaves of `[next, to)` that are missing: neither here nor deleted by retention.
    fn absent(&self, to: u64) -> u64 {
        let deleted = super::expiry::deleted_in(&self.expired, self.next, to);
        to.saturating_sub(self.next).saturating_sub(deleted)
    }

    /// Everything still held, in leaf order; returns how many leaves were skipped in all.
    fn flush(&mut self, ready: &mut Vec<(u64, Vec<u8>)>) -> u64 {
        for (i, b) in std::mem::take(&mut self.held) {
            self.missing += self.absent(i);
            ready.push((i, b));
            self.next = i + 1;
        }
        self.missing
    }
}

impl Derived {
    /// Feeds one chunk through the inventory and alert upkeep, as the indexer does.
    fn observe(&mut self, tracker: &mut Tracker, leaves: &[(u64, StoredLeaf)]) -> Result<(), ClickHouseError> {
        let err = sqlite("the inventory and alerts");
        let tx = self.db.transaction().map_err(&err)?;
        let swept = {
            let mut pass = tracker.pass(&tx);
            let empty = wiretrail_proto::v1::Record::default();
            for (i, leaf) in leaves {
                if let Some(e) = &leaf.entry {
                    pass.observe_entry(*i, e).map_err(&err)?;
                    continue;
                }
                let r = leaf.record.as_ref().unwrap_or(&empty);
                pass.observe(*i, r).map_err(&err)?;
                pass.observe_agent(*i, &leaf.agent_id, r).map_err(&err)?;
            }
            pass.finish().map_err(&err)?.0
        };
        tx.commit().map_err(&err)?;
        tracker.committed(swept);
        Ok(())
    }

    /// Takes leaf `i` of log `o` into the stream.
    fn take(
        &mut self,
        tracker: &mut Tracker,
        chunk: &mut Vec<(u64, StoredLeaf)>,
        o: usize,
        i: u64,
        bytes: Vec<u8>,
    ) -> Result<(), ClickHouseError> {
        let leaf = StoredLeaf::decode(bytes.as_slice())
            .map_err(|e| ClickHouseError::Derive(format!("leaf {i} of {} does not decode: {e}", self.origins[o])))?;
        chunk.push((self.positions.len() as u64, leaf));
        self.positions.push((o as u32, i));
        if chunk.len() == CHUNK {
            self.observe(tracker, chunk)?;
            chunk.clear();
        }
        Ok(())
    }

    /// Leaves skipped inside the logs' runs of leaves: missing from
    /// ClickHouse (`wiretrail verify --clickhouse` names them) or, counted
    /// again in [`Derived::late`], arriving too late to be judged.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Leaves that came after their log had been taken past them (a leaf
    /// counted in [`Derived::missing`] arrived more than [`HELD_MAX`] leaves
    /// late): not judged.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Leaves ClickHouse returned before a leaf that precedes them in their log.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Leaves read, across all logs.
    pub fn leaves(&self) -> u64 {
        self.positions.len() as u64
    }

    /// The logs read, in order of their first leaf.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn leaf(&self, position: u64) -> LeafRef {
        let (o, leaf_index) = self.positions[position as usize];
        LeafRef { origin: self.origins[o as usize].clone(), leaf_index }
    }

    /// The inventory, custodians resolved against the registry; only shadow
    /// identities when `shadow_only`. Sorted by identity key.
    pub fn inventory(&self, shadow_only: bool) -> Result<Vec<Identity>, ClickHouseError> {
        let entries =
            crate::inventory::list(&self.db, &self.registry.get(), shadow_only).map_err(sqlite("the inventory"))?;
        Ok(entries
            .into_iter()
            .map(|mut entry| {
                let (first, last) = (self.leaf(entry.first_leaf_index), self.leaf(entry.last_leaf_index));
                entry.first_leaf_index = first.leaf_index;
                entry.last_leaf_index = last.leaf_index;
                Identity { entry, first, last }
            })
            .collect())
    }

    /// The alerts of `kind` (all when `None`), in the order they were raised.
    pub fn alerts(&self, kind: Option<Kind>) -> Result<Vec<LogAlert>, ClickHouseError> {
        let list = crate::alerts::list(&self.db, 0, kind, i64::MAX as u64).map_err(sqlite("the alerts"))?;
        Ok(list
            .into_iter()
            .map(|mut alert| {
                let leaf = self.leaf(alert.leaf_index);
                alert.leaf_index = leaf.leaf_index;
                LogAlert { alert, leaf }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{HELD_MAX, Order};

    fn feed(o: &mut Order, order: &[u64]) -> Vec<u64> {
        let mut ready = Vec::new();
        for &i in order {
            o.push(i, vec![i as u8], &mut ready);
        }
        ready
            .into_iter()
            .map(|(i, b)| {
                assert_eq!(b, vec![i as u8]);
                i
            })
            .collect()
    }

    #[test]
    fn leaves_received_out_of_order_are_put_back_in_leaf_order() {
        let mut o = Order::default();
        assert_eq!(feed(&mut o, &[0, 2, 3, 1, 4, 4, 6, 5]), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(o.out_of_order, 3);
        let mut rest = Vec::new();
        assert_eq!(o.flush(&mut rest), 0);
        assert!(rest.is_empty());
    }

    #[test]
    fn ranges_retention_deleted_are_neither_waited_for_nor_missing() {
        let mut o = Order { expired: vec![(0, 3), (5, 7)], ..Default::default() };
        // 1 is a deleted row ClickHouse still holds: dropped, not judged.
        assert_eq!(feed(&mut o, &[3, 1, 4, 8, 7, 10]), vec![3, 4, 7, 8]);
        assert_eq!((o.out_of_order, o.late), (2, 0));
        let mut rest = Vec::new();
        assert_eq!(o.flush(&mut rest), 1, "only leaf 9 is missing");
        assert_eq!(rest.iter().map(|r| r.0).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn overlapping_ranges_from_unverified_entries_never_underflow() {
        let mut o = Order { expired: vec![(0, 5), (3, 7)], ..Default::default() };
        assert_eq!(feed(&mut o, &[9]), Vec::<u64>::new());
        let mut rest = Vec::new();
        assert_eq!(o.flush(&mut rest), 2, "leaves 7 and 8");
    }

    #[test]
    fn a_missing_leaf_is_skipped_and_counted_and_counted_again_if_late() {
        let mut o = Order::default();
        assert_eq!(feed(&mut o, &[0, 1, 3, 4]), vec![0, 1]);
        let mut rest = Vec::new();
        assert_eq!(o.flush(&mut rest), 1, "leaf 2 never came");
        assert_eq!(rest.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4]);
        // Past the bound, the stream goes on without waiting for the end.
        let mut o = Order::default();
        let late: Vec<u64> = (1..=HELD_MAX as u64 + 1).collect();
        let got = feed(&mut o, &late);
        assert_eq!(got.len(), HELD_MAX + 1);
        assert_eq!(got[0], 1);
        assert_eq!(o.missing, 1);
        assert!(feed(&mut o, &[0]).is_empty());
        assert_eq!(o.late, 1);
    }
}
