//! What the commit thread knows about the log at start, found without
//! rescanning it: the batch table ([`Dedup`]), the leaf indices of the
//! legal-hold entries (from which retention rebuilds the holds in force,
//! reading only those leaves) and each agent's newest heartbeat leaf (from
//! which the silence monitor is seeded, reading one leaf per agent).
//!
//! The commit thread saves it, with the store's tree cache, every
//! [`SNAPSHOT_EVERY`] committed leaves and when it stops (see
//! `wiretrail_log::store::snapshot` for the file and the checks made before use).
//! At start the snapshot is loaded and only the leaves after it are scanned;
//! without a usable snapshot the whole log is scanned, as before snapshots.

use std::collections::HashMap;

use prost::Message;

use super::dedup::Dedup;
use wiretrail_log::entry;
use wiretrail_log::store::{LeafBatch, Log, StoreError, Writer, snapshot};

/// Name of the snapshot.
pub const SNAPSHOT: &str = "commit";
/// Leaves committed between two snapshots.
pub const SNAPSHOT_EVERY: u64 = 1 << 20;

/// The commit thread's view of the log.
#[derive(Default)]
pub struct LogState {
    /// Stored batches, owners, conflicts, refusals, liveness.
    pub dedup: Dedup,
    /// Leaf indices of the `hold_placed` / `hold_lifted` entries, ascending.
    pub hold_entries: Vec<u64>,
    /// Per agent id: the leaf and capture time of its newest heartbeat record.
    pub heartbeats: HashMap<String, (u64, i64)>,
    /// Log size of the last snapshot saved or loaded.
    saved_at: u64,
}

/// Snapshot body.
#[derive(Clone, PartialEq, prost::Message)]
struct StateSnap {
    /// [`Dedup::encode`].
    #[prost(bytes = "vec", tag = "1")]
    dedup: Vec<u8>,
    /// Leaf indices of hold entries.
    #[prost(uint64, repeated, tag = "2")]
    hold_entries: Vec<u64>,
    /// Newest heartbeat per agent.
    #[prost(message, repeated, tag = "3")]
    heartbeats: Vec<BeatSnap>,
}

/// An agent's newest heartbeat.
#[derive(Clone, PartialEq, prost::Message)]
struct BeatSnap {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(uint64, tag = "2")]
    leaf: u64,
    #[prost(int64, tag = "3")]
    time_ns: i64,
}

/// How [`LogState::open`] found the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Leaves covered by the snapshot used (0: none).
    pub from_snapshot: u64,
    /// Leaves scanned after it.
    pub scanned: u64,
}

impl LogState {
    /// The state of the committed log: the snapshot when it matches the log, then a scan of the leaves after it.
    pub fn open(shared: &Log) -> Result<(LogState, Opened), StoreError> {
        let size = shared.size();
        let loaded = snapshot::load(shared.dir(), SNAPSHOT)
            .filter(|l| l.matches(size, |i| shared.leaf_hash(i).ok()))
            .and_then(|l| {
                let s = StateSnap::decode(l.body.as_slice()).ok();
                let st = s.and_then(|s| {
                    Some(LogState {
                        dedup: Dedup::decode(&s.dedup)?,
                        hold_entries: s.hold_entries,
                        heartbeats: s.heartbeats.into_iter().map(|b| (b.agent_id, (b.leaf, b.time_ns))).collect(),
                        saved_at: l.size,
                    })
                });
                if st.is_none() {
                    tracing::warn!("commit snapshot does not decode; scanning the log");
                }
                st
            });
        let mut st = loaded.unwrap_or_default();
        let from = st.saved_at;
        st.scan(shared, from, size)?;
        let opened = Opened { from_snapshot: from, scanned: size - from };
        tracing::info!(leaves = size, from_snapshot = from, scanned = size - from, "commit state ready");
        Ok((st, opened))
    }

    /// Applies leaves `from..to` in order.
    fn scan(&mut self, shared: &Log, from: u64, to: u64) -> Result<(), StoreError> {
        let deleted = shared.deleted();
        for item in shared.iter(from, to)? {
            let (i, leaf) = item?;
            let k = LeafBatch::decode_leaf(&leaf)
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
            if let Some(e) = &k.entry {
                self.note_hold(i, e);
            }
            if let Some(r) = k.record.as_ref().filter(|_| k.is_heartbeat()) {
                self.heartbeat_committed(k.agent_id.clone(), i, r.capture_time_ns);
            }
            self.dedup.apply(i, k, &deleted)?;
        }
        Ok(())
    }

    fn note_hold(&mut self, i: u64, e: &wiretrail_proto::v1::CollectorEntry) {
        if e.kind == entry::HOLD_PLACED || e.kind == entry::HOLD_LIFTED {
            self.hold_entries.push(i);
        }
    }

    /// An entry leaf committed at `i` (after its group's fsync).
    pub fn entry_committed(&mut self, i: u64, leaf: &[u8]) {
        match LeafBatch::decode_leaf(leaf) {
            Ok(LeafBatch { entry: Some(e), .. }) => {
                self.note_hold(i, &e);
                self.dedup.apply_entry(i, &e);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(leaf = i, error = %e, "committed entry leaf does not decode"),
        }
    }

    /// A heartbeat record of `agent_id` committed at `leaf`, captured at `time_ns`.
    pub fn heartbeat_committed(&mut self, agent_id: String, leaf: u64, time_ns: i64) {
        let e = self.heartbeats.entry(agent_id).or_insert((leaf, time_ns));
        if time_ns >= e.1 {
            *e = (leaf, time_ns);
        }
    }

    /// Saves the snapshot (and the store's tree cache) when [`SNAPSHOT_EVERY`]
    /// leaves were committed since the last one, or always when `force`.
    /// Only between groups. A failure is logged: the next start scans more.
    pub fn maybe_save(&mut self, writer: &Writer, force: bool) {
        let size = writer.log().size();
        if size == self.saved_at || (!force && size - self.saved_at < SNAPSHOT_EVERY) {
            return;
        }
        let t = std::time::Instant::now();
        let heartbeats = (self.heartbeats.iter())
            .map(|(a, &(leaf, time_ns))| BeatSnap { agent_id: a.clone(), leaf, time_ns })
            .collect();
        let body = StateSnap { dedup: self.dedup.encode(), hold_entries: self.hold_entries.clone(), heartbeats }
            .encode_to_vec();
        let res = writer.save_tree_snapshot().and_then(|(tree_size, last)| {
            debug_assert_eq!(tree_size, size);
            snapshot::save(writer.log().dir(), SNAPSHOT, tree_size, last, body)
        });
        match res {
            Ok(()) => {
                self.saved_at = size;
                tracing::info!(size, ms = t.elapsed().as_millis() as u64, "start-up snapshot saved");
            }
            Err(e) => tracing::warn!(size, error = %e, "start-up snapshot not saved; the next start scans more"),
        }
    }
}
