//! Legal holds: a case id and a filter. Placing and lifting are
//! `hold_placed` / `hold_lifted` entries in the log; the set in force is
//! rebuilt at start from those entries ([`Holds::from_entries`]).
//!
//! A hold is named by its placement entry: (log, leaf). A lift names the
//! placement it ends (`placed_entry`, and `placed_origin` when the hold was
//! placed in another collector's log), so the set in force does not depend
//! on the order in which several logs' entries are read, nor on their
//! clocks.
//!
//! Clustered mode: collectors behind one Service share the holds. An admin's
//! request reaches one of them, and its entry goes into that collector's log
//! and so into ClickHouse; every collector reads the hold entries of all
//! logs from there ([`SharedHolds`]) before it judges, deletes, places,
//! lifts or lists ([`Holds::with_logs`]). A placement counts as soon as its
//! row is read (more holds only keep more); a lift from another log counts
//! once a signed checkpoint of that log covers it.

use std::collections::{BTreeMap, BTreeSet};

use wiretrail_proto::v1::{CollectorEntry, StoredLeaf};

use super::policy::Selector;
use super::{Append, RetentionError};
use wiretrail_log::entry;
use wiretrail_log::store::{Log, StoreError};

/// What a hold covers: a selector plus an optional received-time window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HoldFilter {
    /// Identity, protocol, agent globs.
    #[serde(flatten)]
    pub selector: Selector,
    /// Records received at or after this UTC ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ns: Option<i64>,
    /// Records received before this UTC ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ns: Option<i64>,
}

impl HoldFilter {
    /// Whether the hold covers `leaf`.
    pub fn matches(&self, leaf: &StoredLeaf) -> bool {
        let t = leaf.received_time_ns;
        self.from_ns.is_none_or(|f| t >= f) && self.to_ns.is_none_or(|e| t < e) && self.selector.matches(leaf)
    }
}

/// A hold in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// Case id.
    pub case: String,
    /// What it covers.
    pub filter: HoldFilter,
    /// Who placed it.
    pub by: String,
    /// When (UTC ns).
    pub placed_ns: i64,
    /// Leaf index of its `hold_placed` entry.
    #[serde(default)]
    pub entry_leaf: u64,
    /// The log (origin) of its `hold_placed` entry; not in the entry itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

/// A hold entry of one of the logs sharing a store, as read from there.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its log.
    pub origin: String,
    /// Its leaf index in that log.
    pub leaf: u64,
    /// The entry.
    pub entry: CollectorEntry,
    /// Whether a signed checkpoint of its log covers it.
    pub signed: bool,
}

/// Where the hold entries of every collector sharing the store are read
/// (clustered mode: ClickHouse, [`crate::clickhouse::holds::ClusterHolds`]).
pub trait SharedHolds: Send + Sync {
    /// Every `hold_placed` / `hold_lifted` entry of every log; blocking. An
    /// error means the holds in force are unknown: nothing may be deleted.
    fn hold_entries(&self) -> Result<Vec<LogEntry>, String>;
}

/// The holds in force, by (log, leaf of the placement).
#[derive(Debug, Clone, Default)]
pub struct Holds {
    /// This collector's log.
    origin: String,
    in_force: BTreeMap<(String, u64), Hold>,
    /// Placements this log's entries lifted (wherever they were placed).
    lifted: BTreeSet<(String, u64)>,
}

impl Holds {
    /// Rebuilds the holds in force from the `hold_placed` / `hold_lifted`
    /// entries at leaves `leaves` (ascending); any other leaf there is an
    /// inconsistency.
    pub fn from_entries(shared: &Log, leaves: &[u64]) -> Result<Holds, RetentionError> {
        let mut h = Holds { origin: shared.verifier().name, ..Default::default() };
        for &i in leaves {
            let bytes = shared.read_leaf(i)?;
            let leaf = wiretrail_log::store::LeafBatch::decode_leaf(&bytes)
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
            match leaf.entry {
                Some(e) if e.kind == entry::HOLD_PLACED || e.kind == entry::HOLD_LIFTED => {
                    let origin = h.origin.clone();
                    h.apply(&origin, i, &e)
                }
                _ => return Err(StoreError::Inconsistent(format!("leaf {i} is not a hold entry")).into()),
            }
        }
        tracing::info!(holds = h.in_force.len(), entries = leaves.len(), "legal holds rebuilt from the log");
        Ok(h)
    }

    /// Applies one entry of log `origin` at `leaf` (holds placed and lifted;
    /// others are ignored). A lift applied before its placement is lost:
    /// entries of one log come in leaf order; see [`Holds::with_logs`] for several.
    pub fn apply(&mut self, origin: &str, leaf: u64, e: &CollectorEntry) {
        if e.kind == entry::HOLD_PLACED {
            if let Some(hold) = placed(origin, leaf, e) {
                self.in_force.insert((origin.to_string(), leaf), hold);
            }
        } else if e.kind == entry::HOLD_LIFTED {
            match lifted(origin, e) {
                Some(key) => {
                    self.in_force.remove(&key);
                    if origin == self.origin {
                        self.lifted.insert(key);
                    }
                }
                // Not naming its placement: the case's holds placed in the same log.
                None => self.in_force.retain(|(o, _), h| !(o == origin && h.case == e.subject)),
            }
        }
    }

    /// These holds with the entries of every log sharing the store: their
    /// placements added, then the lifts that name a placement removed (a
    /// lift of another log counts once a signed checkpoint covers it; one of
    /// this log as soon as it is appended). The order of `entries` does not matter.
    pub fn with_logs(&self, entries: &[LogEntry]) -> Holds {
        let mut h = self.clone();
        for e in entries.iter().filter(|e| e.entry.kind == entry::HOLD_PLACED) {
            let key = (e.origin.clone(), e.leaf);
            if !h.in_force.contains_key(&key)
                && !h.lifted.contains(&key)
                && let Some(hold) = placed(&e.origin, e.leaf, &e.entry)
            {
                h.in_force.insert(key, hold);
            }
        }
        for e in entries.iter().filter(|e| e.entry.kind == entry::HOLD_LIFTED && e.signed) {
            match lifted(&e.origin, &e.entry) {
                Some(key) => {
                    h.in_force.remove(&key);
                }
                None => tracing::warn!(origin = %e.origin, leaf = e.leaf,
                    "a hold_lifted entry that names no placement is not applied to other logs' holds"),
            }
        }
        h
    }

    /// The holds in force, by case id (a case placed concurrently at two
    /// collectors appears twice).
    pub fn list(&self) -> Vec<Hold> {
        let mut v: Vec<Hold> = self.in_force.values().cloned().collect();
        v.sort_by(|a, b| (&a.case, a.placed_ns, &a.origin).cmp(&(&b.case, b.placed_ns, &b.origin)));
        v
    }

    /// Case ids of the holds covering `leaf`.
    pub fn covering(&self, leaf: &StoredLeaf) -> Vec<String> {
        self.in_force.values().filter(|h| h.filter.matches(leaf)).map(|h| h.case.clone()).collect()
    }

    /// Whether `other` has the same placements in force (the filters of a
    /// placement never change).
    pub fn same_placements(&self, other: &Holds) -> bool {
        self.in_force.keys().eq(other.in_force.keys())
    }

    /// The holds in force for `case`.
    fn of_case(&self, case: &str) -> Vec<Hold> {
        self.list().into_iter().filter(|h| h.case == case).collect()
    }

    /// Places a hold (recorded first) in this log; a case id that `view`
    /// (these holds, or every log's in clustered mode) already holds is refused.
    pub fn place(
        &mut self,
        view: &Holds,
        app: &dyn Append,
        case: &str,
        filter: HoldFilter,
        by: &str,
        now_ns: i64,
    ) -> Result<Hold, RetentionError> {
        if case.is_empty() || case.len() > 256 || case.chars().any(char::is_control) {
            return Err(RetentionError::Invalid("a hold needs a case id of 1 to 256 printable characters".into()));
        }
        if let Some(h) = view.of_case(case).first() {
            let at =
                if h.origin == self.origin { String::new() } else { format!(" (placed at collector {})", h.origin) };
            return Err(RetentionError::Invalid(format!("case {case:?} already has a hold{at} (lift it first)")));
        }
        let mut hold =
            Hold { case: case.into(), filter, by: by.into(), placed_ns: now_ns, entry_leaf: 0, origin: String::new() };
        let detail = serde_json::to_value(&hold).expect("hold serializes");
        hold.entry_leaf = app.append(entry::new(entry::HOLD_PLACED, now_ns, case, detail, Vec::new()))?;
        hold.origin = self.origin.clone();
        tracing::info!(case, by, entry = hold.entry_leaf, "legal hold placed");
        self.in_force.insert((hold.origin.clone(), hold.entry_leaf), hold.clone());
        Ok(hold)
    }

    /// Lifts every hold of `case` that `view` holds, wherever it was placed:
    /// one `hold_lifted` entry in this log per placement; returns the first lifted.
    pub fn lift(
        &mut self,
        view: &Holds,
        app: &dyn Append,
        case: &str,
        by: &str,
        now_ns: i64,
    ) -> Result<Hold, RetentionError> {
        let holds = view.of_case(case);
        if holds.is_empty() {
            return Err(RetentionError::NotFound(format!("no hold for case {case:?}")));
        }
        for h in &holds {
            let detail = serde_json::json!({ "case": case, "by": by, "placed_entry": h.entry_leaf,
                "placed_origin": h.origin });
            let leaf = app.append(entry::new(entry::HOLD_LIFTED, now_ns, case, detail, Vec::new()))?;
            tracing::info!(case, by, entry = leaf, placed_origin = %h.origin, placed_entry = h.entry_leaf,
                "legal hold lifted");
            self.in_force.remove(&(h.origin.clone(), h.entry_leaf));
            self.lifted.insert((h.origin.clone(), h.entry_leaf));
        }
        Ok(holds.into_iter().next().expect("one at least"))
    }
}

/// The hold a `hold_placed` entry of `origin` at `leaf` places.
fn placed(origin: &str, leaf: u64, e: &CollectorEntry) -> Option<Hold> {
    match serde_json::from_str::<Hold>(&e.detail_json) {
        Ok(mut hold) => {
            hold.entry_leaf = leaf;
            hold.origin = origin.to_string();
            Some(hold)
        }
        Err(err) => {
            tracing::warn!(origin, leaf, error = %err, "unreadable hold_placed entry");
            None
        }
    }
}

/// The placement (log, leaf) a `hold_lifted` entry of `origin` names; its own
/// log when it names none (lifts written before `placed_origin` existed).
fn lifted(origin: &str, e: &CollectorEntry) -> Option<(String, u64)> {
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).ok()?;
    let leaf = d["placed_entry"].as_u64()?;
    let from = d["placed_origin"].as_str().filter(|o| !o.is_empty()).unwrap_or(origin);
    Some((from.to_string(), leaf))
}

#[cfg(test)]
mod tests;
