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
