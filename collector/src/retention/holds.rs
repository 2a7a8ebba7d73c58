//! Legal holds: a case id and a filter. Placing and lifting are
//! `hold_placed` / `hold_lifted` entries in the log; the set in force is
//! rebuilt at start from those entries ([`Holds::from_entries`]).

use std::collections::BTreeMap;

use wiretrail_proto::v1::StoredLeaf;

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
}

/// The holds in force, by case id.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    by_case: BTreeMap<String, Hold>,
}

impl Holds {
    /// Rebuilds the holds in force from the `hold_placed` / `hold_lifted`
    /// entries at leaves `leaves` (ascending); any other leaf there is an
    /// inconsistency.
    pub fn from_entries(shared: &Log, leaves: &[u64]) -> Result<Holds, RetentionError> {
        let mut h = Holds::default();
        for &i in leaves {
            let bytes = shared.read_leaf(i)?;
            let leaf = wiretrail_log::store::LeafBatch::decode_leaf(&bytes)
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
            match leaf.entry {
                Some(e) if e.kind == entry::HOLD_PLACED || e.kind == entry::HOLD_LIFTED => h.apply(i, &e),
                _ => return Err(StoreError::Inconsistent(format!("leaf {i} is not a hold entry")).into()),
            }
        }
        tracing::info!(holds = h.by_case.len(), entries = leaves.len(), "legal holds rebuilt from the log");
        Ok(h)
    }

    /// Applies one entry of the log (holds placed and lifted; others are ignored).
    pub fn apply(&mut self, leaf: u64, e: &wiretrail_proto::v1::CollectorEntry) {
        if e.kind == entry::HOLD_PLACED {
            match serde_json::from_str::<Hold>(&e.detail_json) {
                Ok(mut hold) => {
                    hold.entry_leaf = leaf;
                    self.by_case.insert(hold.case.clone(), hold);
                }
                Err(err) => tracing::warn!(leaf, error = %err, "unreadable hold_placed entry"),
            }
        } else if e.kind == entry::HOLD_LIFTED {
            self.by_case.remove(&e.subject);
        }
    }

    /// The holds in force.
    pub fn list(&self) -> Vec<Hold> {
        self.by_case.values().cloned().collect()
    }

    /// Case ids of the holds covering `leaf`.
    pub fn covering(&self, leaf: &StoredLeaf) -> Vec<String> {
        self.by_case.values().filter(|h| h.filter.matches(leaf)).map(|h| h.case.clone()).collect()
    }

    /// Places a hold (recorded first); a case id already held is refused.
    pub fn place(
        &mut self,
        app: &dyn Append,
        case: &str,
        filter: HoldFilter,
        by: &str,
        now_ns: i64,
    ) -> Result<Hold, RetentionError> {
        if case.is_empty() || case.len() > 256 || case.chars().any(char::is_control) {
            return Err(RetentionError::Invalid("a hold needs a case id of 1 to 256 printable characters".into()));
        }
        if self.by_case.contains_key(case) {
            return Err(RetentionError::Invalid(format!("case {case:?} already has a hold (lift it first)")));
        }
        let mut hold = Hold { case: case.into(), filter, by: by.into(), placed_ns: now_ns, entry_leaf: 0 };
        let detail = serde_json::to_value(&hold).expect("hold serializes");
        hold.entry_leaf = app.append(entry::new(entry::HOLD_PLACED, now_ns, case, detail, Vec::new()))?;
        tracing::info!(case, by, entry = hold.entry_leaf, "legal hold placed");
        self.by_case.insert(case.into(), hold.clone());
        Ok(hold)
    }

    /// Lifts the hold of `case` (recorded first); returns the lifted hold.
    pub fn lift(&mut self, app: &dyn Append, case: &str, by: &str, now_ns: i64) -> Result<Hold, RetentionError> {
        let Some(hold) = self.by_case.get(case).cloned() else {
            return Err(RetentionError::NotFound(format!("no hold for case {case:?}")));
        };
        let detail = serde_json::json!({ "case": case, "by": by, "placed_entry": hold.entry_leaf });
        let leaf = app.append(entry::new(entry::HOLD_LIFTED, now_ns, case, detail, Vec::new()))?;
        tracing::info!(case, by, entry = leaf, "legal hold lifted");
        self.by_case.remove(case);
        Ok(hold)
    }
}
