//! The index's candidate SQL across generations of `identity` and `endpoints`.

use std::sync::Arc;

use rusqlite::Connection;
use wiretrail_proto::v1::{Endpoint, Filter, Record, StoredLeaf};

use crate::index::gens::GEN_LEAVES;
use wiretrail_log::filter::Query;

/// A record at leaf `i`: pod `pod`, talking to `addr`, captured at `t`.
fn leaf(i: u64, t: i64, pod: &str, addr: &str) -> (u64, StoredLeaf) {
    let r = Record {
        capture_time_ns: t,
        remote: Some(Endpoint { address: addr.into(), port: 5432 }),
        identity: [("pod".to_string(), pod.to_string())].into(),
        app_protocol: "postgres".into(),
        host: "h".into(),
        ..Default::default()
    };
    (i, StoredLeaf { agent_id: "a".into(), record: Some(r), ..Default::default() })
}

/// Candidate leaves of `f` between `after` and `before` (exclusive), as a search pages them.
fn candidates(c: &Connection, f: Filter, after: i64, before: u64) -> Vec<i64> {
    let (sql, args) = super::candidate_sql(&Query::new(f).unwrap());
    let mut params: Vec<rusqlite::types::Value> = vec![after.into(), (before as i64).into(), 10_000i64.into()];
    params.extend(args);
    let mut st = c.prepare(&sql).unwrap();
    st.query_map(rusqlite::params_from_iter(params), |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn identity_and_peer_candidates_come_from_every_generation_in_the_bounds_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::index::open(dir.path()).unwrap();
    let g = GEN_LEAVES;
    // Generations 0, 1 and 3 (none in 2); capture times grow with the leaf, except
    // the last leaf of generation 1, captured late.
    let leaves = vec![
        leaf(5, 1_000, "x", "10.0.0.1"),
        leaf(9, 1_100, "y", "10.0.0.2"),
        leaf(g + 1, 2_000, "x", "10.0.0.2"),
        leaf(2 * g - 1, 9_000, "x", "10.0.0.1"),
        leaf(3 * g + 7, 4_000, "x", "10.0.0.1"),
    ];
    let end = 3 * g + 8;
    let registry = Arc::new(crate::registry::RegistryHandle::open(None).unwrap());
    let mut tracker = crate::inventory::Tracker::new(registry);
    crate::index::index_leaves(&mut c, &crate::index::db_path(dir.path()), &mut tracker, &leaves, end).unwrap();
    let pod = |p: &str| Filter { identity: vec![format!("pod={p}")], ..Default::default() };
    let peer = |a: &str| Filter { peer_address: a.into(), ..Default::default() };
    let (g, gi) = (g as i64, end);

    assert_eq!(candidates(&c, pod("x"), -1, gi), vec![5, g + 1, 2 * g - 1, 3 * g + 7]);
    assert_eq!(candidates(&c, pod("y"), -1, gi), vec![9]);
    assert_eq!(candidates(&c, peer("10.0.0.1"), -1, gi), vec![5, 2 * g - 1, 3 * g + 7]);
    // Paging: after a leaf of generation 1, and before the index's mark.
    assert_eq!(candidates(&c, pod("x"), g + 1, gi), vec![2 * g - 1, 3 * g + 7]);
    assert_eq!(candidates(&c, pod("x"), -1, (3 * g + 7) as u64), vec![5, g + 1, 2 * g - 1]);
    assert_eq!(candidates(&c, peer("10.0.0.2"), 9, gi), vec![g + 1]);
    // A window: generation 1's span (2,000..=9,000) overlaps [3,000, 5,000) but
    // only generation 3's leaf is in it.
    let window = |mut f: Filter, from: i64, to: i64| {
        f.from_time_ns = from;
        f.to_time_ns = to;
        f
    };
    assert_eq!(candidates(&c, window(pod("x"), 3_000, 5_000), -1, gi), vec![3 * g + 7]);
    assert_eq!(candidates(&c, window(pod("x"), 1_500, 10_000), -1, gi), vec![g + 1, 2 * g - 1, 3 * g + 7]);
    assert_eq!(candidates(&c, window(peer("10.0.0.1"), 8_000, 9_001), -1, gi), vec![2 * g - 1]);
    assert_eq!(candidates(&c, window(peer("10.0.0.1"), 1, 999), -1, gi), Vec::<i64>::new());
    // Both: an identity and a peer.
    let both = Filter { peer_address: "10.0.0.2".into(), ..pod("x") };
    assert_eq!(candidates(&c, both, -1, gi), vec![g + 1]);
}

#[test]
fn a_windowed_identity_search_seeks_the_generations_key_range() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::index::open(dir.path()).unwrap();
    let f = Filter { identity: vec!["pod=x".into()], from_time_ns: 1, to_time_ns: 2, ..Default::default() };
    let (sql, args) = super::candidate_sql(&Query::new(f).unwrap());
    let mut params: Vec<rusqlite::types::Value> = vec![(-1i64).into(), 10i64.into(), 10i64.into()];
    params.extend(args);
    let plan: Vec<String> = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("SEARCH i USING PRIMARY KEY (g=? AND kv=? AND t>? AND t<?)"), "{plan}");
}

#[test]
fn agent_host_protocol_and_entry_kind_candidates_come_through_dims() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::index::open(dir.path()).unwrap();
    let with = |i: u64, agent: &str, host: &str, proto: &str| {
        let (i, mut l) = leaf(i, 1_000 + i as i64, "x", "10.0.0.1");
        l.agent_id = agent.into();
        let r = l.record.as_mut().unwrap();
        r.host = host.into();
        r.app_protocol = proto.into();
        (i, l)
    };
    let entry = |i: u64, kind: &str| {
        let e = wiretrail_log::entry::new(kind, 1_000 + i as i64, "s", serde_json::json!({}), Vec::new());
        (i, StoredLeaf { agent_id: "collector".into(), entry: Some(e), ..Default::default() })
    };
    let leaves = vec![
        with(0, "a1", "h1", "http"),
        with(1, "a2", "h1", "postgres"),
        entry(2, wiretrail_log::entry::ACCESS),
        with(3, "a1", "h2", "postgres"),
        entry(4, wiretrail_log::entry::RECOVERY),
        with(GEN_LEAVES + 5, "a2", "h2", "http"),
    ];
    let end = GEN_LEAVES + 6;
    let registry = Arc::new(crate::registry::RegistryHandle::open(None).unwrap());
    let mut tracker = crate::inventory::Tracker::new(registry);
    crate::index::index_leaves(&mut c, &crate::index::db_path(dir.path()), &mut tracker, &leaves, end).unwrap();
    let g = GEN_LEAVES as i64;
    let ask = |f: Filter| candidates(&c, f, -1, end);
    assert_eq!(ask(Filter { agent_id: "a1".into(), ..Default::default() }), vec![0, 3]);
    assert_eq!(ask(Filter { host: "h2".into(), ..Default::default() }), vec![3, g + 5]);
    assert_eq!(ask(Filter { app_protocol: "http".into(), ..Default::default() }), vec![0, g + 5]);
    assert_eq!(ask(Filter { app_protocol: "http".into(), host: "h1".into(), ..Default::default() }), vec![0]);
    assert_eq!(ask(Filter { app_protocol: "mysql".into(), ..Default::default() }), Vec::<i64>::new());
    assert_eq!(ask(Filter { entry_kind: "*".into(), ..Default::default() }), vec![4], "access entries left out");
    assert_eq!(ask(Filter { entry_kind: wiretrail_log::entry::ACCESS.into(), ..Default::default() }), vec![2]);
    let window = Filter { host: "h1".into(), from_time_ns: 1_001, to_time_ns: 1_002, ..Default::default() };
    assert_eq!(ask(window), vec![1]);
}
