//! Who looks after orphaned logs, and the runs a judgement deletes.

use super::*;

fn ages(v: &[(&str, u64)]) -> BTreeMap<String, (u32, u64)> {
    v.iter().map(|(o, a)| (o.to_string(), (1_000_000 - *a as u32, *a))).collect()
}

#[test]
fn the_live_collector_with_the_smallest_origin_looks_after_the_orphans() {
    let day = Duration::from_secs(86_400);
    let seen = ages(&[("a-gone", 90_000), ("b-live", 30), ("c-live", 10), ("d-gone", 200_000)]);
    let (orphans, mine) = looked_after("b-live", &seen, day);
    let orphans: Vec<(String, u64)> = orphans.into_iter().map(|(o, (_, a))| (o, a)).collect();
    assert_eq!(orphans, vec![("a-gone".to_string(), 90_000), ("d-gone".to_string(), 200_000)]);
    assert!(mine, "a-gone is smaller but not live");
    assert!(!looked_after("c-live", &seen, day).1, "b-live does it");
    // Its own heartbeat not read yet (or late): a collector counts itself live.
    assert!(looked_after("a-new", &ages(&[("a-new", 99_999), ("b-live", 5)]), day).1);
    assert!(looked_after("z", &ages(&[("y", 100_000)]), day).1, "alone with an orphan");
    assert!(looked_after("x", &ages(&[("x", 1)]), day).0.is_empty(), "no orphans");
}

#[test]
fn runs_end_at_kept_leaves_gaps_and_their_cap() {
    let mut r = Runs::default();
    r.delete(0, "communications", 5);
    r.delete(1, "short", 9);
    r.keep(Some(100));
    r.delete(2, "communications", 1);
    r.delete(4, "communications", 1); // leaf 3 not judged (deleted before): a new run
    r.keep(Some(50));
    r.keep(None);
    assert_eq!(
        r.done.iter().map(|x| (x.first, x.end, x.expired_at_ns)).collect::<Vec<_>>(),
        vec![(0, 2, 9), (2, 3, 1), (4, 5, 1)]
    );
    assert_eq!(r.done[0].classes, BTreeSet::from(["communications".to_string(), "short".to_string()]));
    assert_eq!(r.next_ns, Some(50));
    let mut r = Runs::default();
    for i in 0..MAX_RUN + 3 {
        r.delete(i, "c", 0);
    }
    r.keep(None);
    assert_eq!(r.done.iter().map(|x| (x.first, x.end)).collect::<Vec<_>>(), vec![(0, MAX_RUN), (MAX_RUN, MAX_RUN + 3)]);
}

#[test]
fn the_heartbeat_is_a_minute_or_a_third_of_the_orphan_time() {
    let cfg = |after: Option<u64>| ClickHouseConfig {
        url: String::new(),
        database: String::new(),
        cluster: None,
        quorum: 0,
        user: None,
        password: None,
        timeout: Duration::from_secs(1),
        orphan_after: after.map(Duration::from_secs),
    };
    assert_eq!(heartbeat_every(&cfg(None)), Duration::from_secs(60));
    assert_eq!(heartbeat_every(&cfg(Some(7 * 86_400))), Duration::from_secs(60));
    assert_eq!(heartbeat_every(&cfg(Some(30))), Duration::from_secs(10));
    assert_eq!(heartbeat_every(&cfg(Some(1))), Duration::from_secs(1));
}
