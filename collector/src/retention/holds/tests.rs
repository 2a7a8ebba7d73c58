//! Holds across the logs sharing a store: order-independent, lifts named by
//! their placement, another log's lift counted once signed.

use std::sync::Mutex;

use proptest::prelude::*;
use wiretrail_proto::v1::CollectorEntry;

use super::*;

/// Appends into memory, numbering from 100.
#[derive(Default)]
struct Mem(Mutex<Vec<CollectorEntry>>);

impl Append for Mem {
    fn append(&self, e: CollectorEntry) -> Result<u64, RetentionError> {
        let mut v = self.0.lock().unwrap();
        v.push(e);
        Ok(99 + v.len() as u64)
    }
}

fn mine() -> Holds {
    Holds { origin: "here".into(), ..Default::default() }
}

fn agent(a: &str) -> HoldFilter {
    HoldFilter { selector: Selector { agent: Some(a.into()), ..Default::default() }, ..Default::default() }
}

fn placed_at(origin: &str, leaf: u64, case: &str, a: &str) -> LogEntry {
    let h = Hold {
        case: case.into(),
        filter: agent(a),
        by: "admin".into(),
        placed_ns: leaf as i64,
        entry_leaf: 0,
        origin: String::new(),
    };
    let e = entry::new(entry::HOLD_PLACED, 1, case, serde_json::to_value(&h).unwrap(), Vec::new());
    LogEntry { origin: origin.into(), leaf, entry: e, signed: true }
}

fn lifted_at(origin: &str, leaf: u64, case: &str, of: (&str, u64), signed: bool) -> LogEntry {
    let d = serde_json::json!({ "case": case, "by": "admin", "placed_entry": of.1, "placed_origin": of.0 });
    LogEntry { origin: origin.into(), leaf, entry: entry::new(entry::HOLD_LIFTED, 2, case, d, Vec::new()), signed }
}

fn keys(h: &Holds) -> Vec<(String, u64, String)> {
    h.list().into_iter().map(|h| (h.origin, h.entry_leaf, h.case)).collect()
}

fn record(a: &str) -> StoredLeaf {
    StoredLeaf { agent_id: a.into(), ..Default::default() }
}

#[test]
fn a_hold_placed_in_another_log_covers_records_here() {
    let v = mine().with_logs(&[placed_at("there", 5, "C-1", "held")]);
    assert_eq!(v.covering(&record("held")), vec!["C-1"]);
    assert!(v.covering(&record("other")).is_empty());
    assert_eq!(keys(&v), vec![("there".into(), 5, "C-1".into())]);
}

#[test]
fn another_logs_lift_counts_once_signed_and_names_its_placement() {
    let place = placed_at("a", 5, "C-1", "held");
    let unsigned = lifted_at("b", 9, "C-1", ("a", 5), false);
    assert_eq!(keys(&mine().with_logs(&[place.clone(), unsigned.clone()])).len(), 1, "not signed yet: still held");
    let signed = LogEntry { signed: true, ..unsigned };
    assert!(mine().with_logs(&[place.clone(), signed.clone()]).list().is_empty());
    // A lift naming an older placement of the same case does not end a newer one.
    let again = placed_at("c", 3, "C-1", "held");
    let stale = lifted_at("b", 10, "C-1", ("c", 2), true);
    assert_eq!(keys(&mine().with_logs(&[place, signed, again, stale])), vec![("c".into(), 3, "C-1".into())]);
}

#[test]
fn placing_a_case_held_elsewhere_is_refused_and_lifting_it_here_names_the_placement() {
    let app = Mem::default();
    let mut local = mine();
    let shared = vec![placed_at("there", 5, "C-1", "held")];
    let view = local.with_logs(&shared);
    let err = local.place(&view, &app, "C-1", agent("x"), "admin", 1).unwrap_err();
    assert!(err.to_string().contains("placed at collector there"), "{err}");
    assert!(app.0.lock().unwrap().is_empty(), "nothing recorded for a refused placement");
    let lifted = local.lift(&view, &app, "C-1", "admin", 2).unwrap();
    assert_eq!((lifted.origin.as_str(), lifted.entry_leaf), ("there", 5));
    let e = app.0.lock().unwrap()[0].clone();
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap();
    assert_eq!((d["placed_origin"].as_str(), d["placed_entry"].as_u64()), (Some("there"), Some(5)));
    // This log's own lift counts at once, before its row is signed or even read.
    assert!(local.with_logs(&shared).list().is_empty());
    let own = lifted_at("here", 100, "C-1", ("there", 5), false);
    assert!(local.with_logs(&[shared[0].clone(), own]).list().is_empty());
    // Rebuilt from this log alone, the lift still ends that placement.
    let mut rebuilt = mine();
    rebuilt.apply("here", 100, &e);
    assert!(rebuilt.with_logs(&shared).list().is_empty());
    assert!(local.lift(&local.with_logs(&shared), &app, "C-1", "admin", 3).is_err(), "nothing left to lift");
}

#[test]
fn a_case_placed_at_two_collectors_is_lifted_at_both() {
    let app = Mem::default();
    let mut local = mine();
    let shared = vec![placed_at("a", 5, "C-1", "x"), placed_at("b", 7, "C-1", "y")];
    local.lift(&local.with_logs(&shared), &app, "C-1", "admin", 2).unwrap();
    assert_eq!(app.0.lock().unwrap().len(), 2, "one lift entry per placement");
    assert!(local.with_logs(&shared).list().is_empty());
}

#[test]
fn a_lift_that_names_no_placement_ends_its_own_logs_holds_of_the_case_only() {
    let mut h = mine();
    h.apply("here", 1, &placed_at("here", 1, "C-1", "x").entry);
    let old = entry::new(entry::HOLD_LIFTED, 2, "C-1", serde_json::json!({ "case": "C-1" }), Vec::new());
    let v = h.with_logs(&[
        placed_at("there", 4, "C-1", "x"),
        LogEntry { origin: "there".into(), leaf: 6, entry: old.clone(), signed: true },
    ]);
    assert_eq!(keys(&v).len(), 2, "not applied to other logs' holds");
    h.apply("here", 2, &old);
    assert!(h.list().is_empty());
}

proptest! {
    /// The holds in force do not depend on the order the logs' entries are read in.
    #[test]
    fn the_order_of_the_entries_does_not_matter(ops in proptest::collection::vec((0u8..3, 0u64..6, any::<bool>()), 1..24), seed in any::<u64>()) {
        let origins = ["a", "b", "c"];
        let mut entries = Vec::new();
        for (k, (o, n, lift)) in ops.into_iter().enumerate() {
            let origin = origins[o as usize];
            let leaf = 10 + k as u64;
            entries.push(if lift {
                lifted_at(origin, leaf, "C", (origins[(n % 3) as usize], 10 + n), n % 2 == 0)
            } else {
                placed_at(origin, leaf, "C", "x")
            });
        }
        let want = keys(&mine().with_logs(&entries));
        let mut shuffled = entries.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(keys(&mine().with_logs(&shuffled)), want);
    }
}
