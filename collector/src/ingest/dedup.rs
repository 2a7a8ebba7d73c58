//! What the commit thread knows about stored batches: the leaf range and
//! content hash of every (agent id, boot id, seq), the owner of every agent
//! id, and the conflicts and refusals already recorded. Found at start from
//! a snapshot plus the leaves after it, or from a scan of the log (see
//! [`super::state`]); changed only by the commit thread, with an undo list so
//! a group whose fsync fails leaves no trace.
//!
//! Batches whose segments retention deleted before the table was scanned are
//! not in it: a boot's sequence may start after a deleted range, and a batch
//! re-sent from before it (years later, as retention goes) would be judged a
//! conflict.

use std::collections::{HashMap, HashSet};

use wiretrail_log::entry;
use wiretrail_log::store::{Deleted, LeafBatch, StoreError};

/// One stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its seq, and the last seq it stands for (a gap batch covering lost seqs).
    pub from: u64,
    /// Last seq it stands for.
    pub to: u64,
    /// First and last leaf.
    pub first: u64,
    /// Last leaf.
    pub last: u64,
    /// Content hash (empty for batches stored before hashes were kept).
    pub hash: Vec<u8>,
}

/// Key of a batch sequence.
pub type BootKey = (String, String);

/// A recorded conflict: (agent id, boot id, seq, received content hash).
pub type ConflictKey = (String, String, u64, Vec<u8>);

enum Undo {
    Push(BootKey),
    Owner(String),
    Refused((String, String)),
    Conflict(ConflictKey),
}

/// The commit thread's table.
#[derive(Default)]
pub struct Dedup {
    /// Stored batches per (agent, boot), in seq order.
    ranges: HashMap<BootKey, Vec<Stored>>,
    /// Owner identity of each agent id.
    owners: HashMap<String, String>,
    /// (agent id, identity) pairs whose refusal is already in the log.
    refused: HashSet<(String, String)>,
    /// Conflicts already in the log, with the entry's leaf.
    conflicts: HashMap<ConflictKey, u64>,
    /// Latest liveness entry (`agent_silent`/`agent_returned`) per agent id
    /// and its time, found by the scan at start (for the silence monitor).
    liveness: HashMap<String, (String, i64)>,
    /// Changes of the current group.
    undo: Vec<Undo>,
}

/// Equal tables: the same batches, owners, refusals, conflicts and liveness
/// (a group's undo list is not compared).
impl PartialEq for Dedup {
    fn eq(&self, o: &Dedup) -> bool {
        (&self.ranges, &self.owners, &self.refused, &self.conflicts, &self.liveness)
            == (&o.ranges, &o.owners, &o.refused, &o.conflicts, &o.liveness)
    }
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let batches: usize = self.ranges.values().map(Vec::len).sum();
        f.debug_struct("Dedup")
            .field("boots", &self.ranges.len())
            .field("batches", &batches)
            .field("owners", &self.owners)
            .field("refused", &self.refused)
            .field("conflicts", &self.conflicts.len())
            .field("liveness", &self.liveness)
            .finish()
    }
}

/// Where a batch stands against what is stored.
pub enum Seq<'a> {
    /// The next one expected.
    New,
    /// Already stored with the same content.
    Duplicate(&'a Stored),
    /// Already stored with other content.
    Conflict(&'a Stored),
    /// Ahead of the sequence: the collector expects this seq.
    Ahead(u64),
}

fn detail(e: &wiretrail_proto::v1::CollectorEntry) -> serde_json::Value {
    serde_json::from_str(&e.detail_json).unwrap_or_default()
}

impl Dedup {
    /// The latest liveness entry of each agent in the log at start: its kind and time.
    pub fn liveness(&self) -> &HashMap<String, (String, i64)> {
        &self.liveness
    }

    /// Agent ids with stored batches.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.owners.keys().map(String::as_str)
    }

    /// The leaf ranges (first, last) of `agent_id`'s stored batches, newest first, across boots.
    pub fn batches_newest_first(&self, agent_id: &str) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .ranges
            .iter()
            .filter(|((a, _), _)| a == agent_id)
            .flat_map(|(_, batches)| batches.iter().map(|b| (b.first, b.last)))
            .collect();
        v.sort_unstable_by_key(|b| std::cmp::Reverse(b.1));
        v
    }

    /// Applies leaf `i` of the log, read in order (a scan at start).
    /// `deleted` is the leaf ranges retention deleted.
    pub fn apply(&mut self, i: u64, k: LeafBatch, deleted: &[Deleted]) -> Result<(), StoreError> {
        if let Some(e) = &k.entry {
            self.apply_entry(i, e);
            return Ok(());
        }
        self.owners.entry(k.agent_id.clone()).or_insert_with(|| k.peer_identity.clone());
        let v = self.ranges.entry((k.agent_id, k.boot_id)).or_default();
        match v.last_mut() {
            Some(s) if s.from == k.seq && k.index_in_batch > 0 => s.last = i,
            last => {
                let next = last.as_ref().map(|s| s.to + 1).unwrap_or(0);
                // Retention deletes whole segments: the batches before a
                // deleted range may be gone, so the sequence resumes later.
                let prev = last.as_ref().map(|s| s.last);
                let resumes_after_deletion =
                    k.seq > next && deleted.iter().any(|d| prev.is_none_or(|p| d.first > p) && d.end <= i);
                if k.seq != next && !resumes_after_deletion {
                    return Err(StoreError::Inconsistent(format!(
                        "leaf {i}: batch seq {} where {next} was due",
                        k.seq
                    )));
                }
                let to = k.covers_through_seq.max(k.seq);
                v.push(Stored { from: k.seq, to, first: i, last: i, hash: k.batch_sha256 });
            }
        }
        Ok(())
    }

    /// Applies collector entry `e` at leaf `i` (at start, and as entries are committed).
    pub fn apply_entry(&mut self, i: u64, e: &wiretrail_proto::v1::CollectorEntry) {
        let det = detail(e);
        let s = |f: &str| det[f].as_str().unwrap_or_default().to_string();
        match e.kind.as_str() {
            entry::AGENT_ID_REFUSED => {
                self.refused.insert((e.subject.clone(), s("identity")));
            }
            entry::BATCH_CONFLICT => {
                let key = (e.subject.clone(), s("boot_id"), det["seq"].as_u64().unwrap_or(0));
                let h = hex::decode(s("received_sha256")).unwrap_or_default();
                self.conflicts.insert((key.0, key.1, key.2, h), i);
            }
            entry::AGENT_SILENT | entry::AGENT_RETURNED => {
                self.liveness.insert(e.subject.clone(), (e.kind.clone(), e.time_ns));
            }
            _ => {}
        }
    }

    /// Where (agent, boot, seq) with content `hash` stands.
    pub fn check(&self, key: &BootKey, seq: u64, hash: &[u8]) -> Seq<'_> {
        let Some(v) = self.ranges.get(key) else {
            return if seq == 0 { Seq::New } else { Seq::Ahead(0) };
        };
        let next = v.last().map(|s| s.to + 1).unwrap_or(0);
        if seq == next {
            return Seq::New;
        }
        if seq > next {
            return Seq::Ahead(next);
        }
        let s = &v[v.partition_point(|s| s.to < seq)];
        if s.from == seq && (s.hash.is_empty() || s.hash == hash) { Seq::Duplicate(s) } else { Seq::Conflict(s) }
    }

    /// Records a stored batch (seqs `from..=to`, leaves `first..=last`).
    pub fn push(&mut self, key: BootKey, s: Stored) {
        self.ranges.entry(key.clone()).or_default().push(s);
        self.undo.push(Undo::Push(key));
    }

    /// The owner of `agent_id`, if any.
    pub fn owner(&self, agent_id: &str) -> Option<&str> {
        self.owners.get(agent_id).map(String::as_str)
    }

    /// Makes `identity` the owner of `agent_id`.
    pub fn set_owner(&mut self, agent_id: &str, identity: &str) {
        self.owners.insert(agent_id.to_string(), identity.to_string());
        self.undo.push(Undo::Owner(agent_id.to_string()));
    }

    /// Whether the refusal of (agent id, identity) is already in the log; marks it as such.
    pub fn refusal_recorded(&mut self, agent_id: &str, identity: &str) -> bool {
        let k = (agent_id.to_string(), identity.to_string());
        if self.refused.contains(&k) {
            return true;
        }
        self.refused.insert(k.clone());
        self.undo.push(Undo::Refused(k));
        false
    }

    /// The leaf of the conflict entry already recorded for `k`.
    pub fn conflict(&self, k: &ConflictKey) -> Option<u64> {
        self.conflicts.get(k).copied()
    }

    /// Records the conflict entry of `k` at `leaf`.
    pub fn add_conflict(&mut self, k: ConflictKey, leaf: u64) {
        self.conflicts.insert(k.clone(), leaf);
        self.undo.push(Undo::Conflict(k));
    }

    /// The group was committed: its changes stay.
    pub fn commit_group(&mut self) {
        self.undo.clear();
    }

    /// The group's fsync failed: forget its changes.
    pub fn rollback_group(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Push(k) => {
                    if let Some(v) = self.ranges.get_mut(&k) {
                        v.pop();
                    }
                }
                Undo::Owner(a) => {
                    self.owners.remove(&a);
                }
                Undo::Refused(k) => {
                    self.refused.remove(&k);
                }
                Undo::Conflict(k) => {
                    self.conflicts.remove(&k);
                }
            }
        }
    }
}

/// Snapshot encoding of a [`Dedup`] (see [`super::state`]).
#[derive(Clone, PartialEq, prost::Message)]
struct DedupSnap {
    #[prost(message, repeated, tag = "1")]
    boots: Vec<BootSnap>,
    /// Agent id, owner identity.
    #[prost(message, repeated, tag = "2")]
    owners: Vec<PairSnap>,
    /// Agent id, refused identity.
    #[prost(message, repeated, tag = "3")]
    refused: Vec<PairSnap>,
    #[prost(message, repeated, tag = "4")]
    conflicts: Vec<ConflictSnap>,
    /// Agent id, kind; time in `LivenessSnap`.
    #[prost(message, repeated, tag = "5")]
    liveness: Vec<LivenessSnap>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BootSnap {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(string, tag = "2")]
    boot_id: String,
    /// Per batch: from, to, first, last (4 values each).
    #[prost(uint64, repeated, tag = "3")]
    ranges: Vec<u64>,
    /// Per batch: its content hash.
    #[prost(bytes = "vec", repeated, tag = "4")]
    hashes: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PairSnap {
    #[prost(string, tag = "1")]
    a: String,
    #[prost(string, tag = "2")]
    b: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConflictSnap {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(string, tag = "2")]
    boot_id: String,
    #[prost(uint64, tag = "3")]
    seq: u64,
    #[prost(bytes = "vec", tag = "4")]
    hash: Vec<u8>,
    #[prost(uint64, tag = "5")]
    leaf: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LivenessSnap {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(string, tag = "2")]
    kind: String,
    #[prost(int64, tag = "3")]
    time_ns: i64,
}

impl Dedup {
    /// The table as a snapshot body; only between groups (nothing to undo).
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        debug_assert!(self.undo.is_empty(), "snapshot taken inside a group");
        let pairs = |it: &mut dyn Iterator<Item = (&String, &String)>| {
            it.map(|(a, b)| PairSnap { a: a.clone(), b: b.clone() }).collect::<Vec<_>>()
        };
        DedupSnap {
            boots: self
                .ranges
                .iter()
                .map(|((a, b), v)| BootSnap {
                    agent_id: a.clone(),
                    boot_id: b.clone(),
                    ranges: v.iter().flat_map(|s| [s.from, s.to, s.first, s.last]).collect(),
                    hashes: v.iter().map(|s| s.hash.clone()).collect(),
                })
                .collect(),
            owners: pairs(&mut self.owners.iter()),
            refused: pairs(&mut self.refused.iter().map(|(a, b)| (a, b))),
            conflicts: self
                .conflicts
                .iter()
                .map(|((a, b, seq, h), leaf)| ConflictSnap {
                    agent_id: a.clone(),
                    boot_id: b.clone(),
                    seq: *seq,
                    hash: h.clone(),
                    leaf: *leaf,
                })
                .collect(),
            liveness: self
                .liveness
                .iter()
                .map(|(a, (k, t))| LivenessSnap { agent_id: a.clone(), kind: k.clone(), time_ns: *t })
                .collect(),
        }
        .encode_to_vec()
    }

    /// The table of a snapshot body; `None` when it does not decode or contradicts itself.
    pub fn decode(body: &[u8]) -> Option<Dedup> {
        use prost::Message;
        let s = DedupSnap::decode(body).ok()?;
        let mut d = Dedup::default();
        for b in s.boots {
            if b.ranges.len() != 4 * b.hashes.len() {
                return None;
            }
            let v = b
                .ranges
                .chunks_exact(4)
                .zip(b.hashes)
                .map(|(r, hash)| Stored { from: r[0], to: r[1], first: r[2], last: r[3], hash })
                .collect();
            d.ranges.insert((b.agent_id, b.boot_id), v);
        }
        d.owners = s.owners.into_iter().map(|p| (p.a, p.b)).collect();
        d.refused = s.refused.into_iter().map(|p| (p.a, p.b)).collect();
        d.conflicts = s.conflicts.into_iter().map(|c| ((c.agent_id, c.boot_id, c.seq, c.hash), c.leaf)).collect();
        d.liveness = s.liveness.into_iter().map(|l| (l.agent_id, (l.kind, l.time_ns))).collect();
        Some(d)
    }
}
