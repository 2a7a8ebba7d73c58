use super::*;
use sha2::Digest;
use wiretrail_log::entry;

fn deletion(first: u64, end: u64, content: Vec<u8>, digest_of: &[u8]) -> Vec<u8> {
    let detail = serde_json::json!({
        "first_leaf": first,
        "end_leaf": end,
        "kept_hashes_sha256": hex::encode(sha2::Sha256::digest(digest_of)),
    });
    entry::leaf(entry::new(RETENTION_DELETION, 1, "seg", detail, content), "")
}

fn hashes(n: u8) -> Vec<u8> {
    (0..n).flat_map(|i| [i; 32]).collect()
}

#[test]
fn a_deletion_entry_gives_its_range_and_kept_hashes() {
    let c = hashes(3);
    let e = expired_of(&deletion(4, 7, c.clone(), &c), 9).unwrap();
    assert_eq!((e.first, e.end, e.entry_leaf), (4, 7, 9));
    assert_eq!(e.hash_of(5), Some(&[1u8; 32]));
    assert_eq!(e.hash_of(7), None);
    assert_eq!(e.hash_of(3), None);
}

#[test]
fn malformed_deletion_entries_are_refused_with_why() {
    let c = hashes(3);
    let why = |leaf: Vec<u8>, at: u64| expired_of(&leaf, at).unwrap_err();
    assert!(why(deletion(4, 7, c[..64].to_vec(), &c[..64]), 9).contains("64 bytes of hashes for 3 leaves"));
    assert!(why(deletion(4, 7, c.clone(), b"other"), 9).contains("do not match the digest"));
    assert!(why(deletion(4, 7, c.clone(), &c), 6).contains("not a range before it"));
    assert!(why(deletion(7, 7, Vec::new(), b""), 9).contains("not a range before it"));
    let other = entry::leaf(entry::new(entry::HOLD_PLACED, 1, "x", serde_json::json!({}), Vec::new()), "");
    assert!(why(other, 9).contains("holds a hold_placed entry"));
    assert!(why(b"\xff\xff".to_vec(), 9).contains("does not decode"));
}

#[test]
fn ranges_merge_and_subtract() {
    assert_eq!(merged(vec![(6, 9), (0, 3), (3, 6), (12, 15)]), vec![(0, 9), (12, 15)]);
    assert_eq!(minus(&[(0, 9), (12, 15)], &[(0, 3)]), vec![(3, 9), (12, 15)]);
    assert_eq!(minus(&[(0, 9)], &[(2, 4), (6, 7)]), vec![(0, 2), (4, 6), (7, 9)]);
    assert_eq!(minus(&[(0, 9)], &[(0, 9)]), vec![]);
    assert_eq!(deleted_in(&[(0, 3), (5, 9)], 2, 7), 3, "leaves 2, 5 and 6");
    assert_eq!(deleted_in(&[(0, 3), (5, 9)], 0, 100), 7);
    assert_eq!(
        condition(&[(0, 3), (5, 6)]),
        "((leaf_index >= 0 AND leaf_index < 3) OR (leaf_index >= 5 AND leaf_index < 6))"
    );
}

fn deletion_of(origin: &str, first: u64, end: u64) -> Vec<u8> {
    let c = hashes((end - first) as u8);
    let detail = serde_json::json!({
        "origin": origin,
        "first_leaf": first,
        "end_leaf": end,
        "kept_hashes_sha256": hex::encode(sha2::Sha256::digest(&c)),
    });
    entry::leaf(entry::new(RETENTION_DELETION, 1, "orphan", detail, c), "")
}

#[test]
fn an_entry_naming_another_log_deletes_from_that_log() {
    // Held by log "a" at its leaf 2, for leaves 4..7 of the orphaned log "x".
    let (of, e) = expired_in(&deletion_of("x", 4, 7), 2, "a").unwrap();
    assert_eq!((of.as_str(), e.first, e.end, e.entry_leaf, e.by.as_deref()), ("x", 4, 7, 2, Some("a")));
    // Naming its own log: its own range, which must come before it.
    let (of, e) = expired_in(&deletion_of("a", 0, 3), 5, "a").unwrap();
    assert_eq!((of.as_str(), e.by), ("a", None));
    assert!(expired_in(&deletion_of("a", 4, 7), 2, "a").is_err());
}

#[test]
fn overlapping_ranges_become_disjoint_with_their_hashes() {
    let r = |first: u64, end: u64, entry_leaf: u64| Expired {
        first,
        end,
        entry_leaf,
        hashes: (first..end).map(|i| [i as u8; 32]).collect(),
        by: None,
        entry_hash: [0; 32],
    };
    let d = disjoint(vec![r(3, 8, 20), r(0, 5, 10), r(0, 2, 11), r(9, 10, 30)]);
    assert_eq!(
        d.iter().map(|e| (e.first, e.end, e.entry_leaf)).collect::<Vec<_>>(),
        vec![(0, 5, 10), (5, 8, 20), (9, 10, 30)]
    );
    for e in &d {
        for i in e.first..e.end {
            assert_eq!(e.hash_of(i), Some(&[i as u8; 32]), "leaf {i}");
        }
    }
}
