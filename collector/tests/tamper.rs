//! Tamper tests: flipped, truncated and reordered bytes on disk are caught by verify
//! with the index of the first bad record.

use std::path::Path;

use wiretrail_collector::merkle::Verifier;
use wiretrail_collector::store::{StoreConfig, Writer, frame::HEADER_LEN};
use wiretrail_collector::verify::verify;

const N: u64 = 100;
const LEAF: usize = 50;

/// A log of N equal-sized leaves with checkpoints at 40 and N.
fn make_log(dir: &Path) -> Verifier {
    let (mut w, shared) = Writer::open(dir, StoreConfig::default()).unwrap();
    for i in 0..N {
        let leaf = format!("{i:0>width$}", width = LEAF).into_bytes();
        w.append(&[leaf]).unwrap();
        if i == 39 {
            w.commit().unwrap();
            shared.issue_checkpoint().unwrap();
        }
    }
    w.commit().unwrap();
    shared.issue_checkpoint().unwrap();
    shared.verifier()
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join("seg-00000000000000000000.wtl")
}

fn frame_off(i: u64) -> usize {
    i as usize * (HEADER_LEN + LEAF)
}

fn first_bad(dir: &Path, v: &Verifier) -> (Option<u64>, String) {
    let (r, _) = verify(dir, v, None, |_, _| {}).unwrap();
    (r.first_bad, r.problem.unwrap_or_default())
}

#[test]
fn clean_log_verifies() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let (r, _) = verify(d.path(), &v, None, |_, _| {}).unwrap();
    assert_eq!((r.first_bad, r.leaves, r.checkpoints_checked), (None, N, 2));
}

#[test]
fn flipped_payload_byte_is_found() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let mut b = std::fs::read(segment(d.path())).unwrap();
    b[frame_off(57) + HEADER_LEN + 3] ^= 0x01;
    std::fs::write(segment(d.path()), b).unwrap();
    assert_eq!(first_bad(d.path(), &v).0, Some(57));
}

#[test]
fn flipped_header_byte_is_found() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let mut b = std::fs::read(segment(d.path())).unwrap();
    b[frame_off(12) + 20] ^= 0x80; // inside the stored hash
    std::fs::write(segment(d.path()), b).unwrap();
    assert_eq!(first_bad(d.path(), &v).0, Some(12));
}

#[test]
fn truncation_is_found() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let f = std::fs::OpenOptions::new().write(true).open(segment(d.path())).unwrap();
    f.set_len(frame_off(90) as u64 + 7).unwrap();
    let (bad, why) = first_bad(d.path(), &v);
    assert_eq!(bad, Some(90), "{why}");
    // Cut exactly at a frame boundary: the signed checkpoint still covers more.
    f.set_len(frame_off(80) as u64).unwrap();
    let (bad, why) = first_bad(d.path(), &v);
    assert_eq!(bad, Some(80), "{why}");
    assert!(why.contains("truncated"), "{why}");
}

#[test]
fn reordered_records_are_found() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let mut b = std::fs::read(segment(d.path())).unwrap();
    let (a, c) = (frame_off(20), frame_off(21));
    let first: Vec<u8> = b[a..c].to_vec();
    let second: Vec<u8> = b[c..c + (c - a)].to_vec();
    b[a..c].copy_from_slice(&second);
    b[c..c + (c - a)].copy_from_slice(&first);
    std::fs::write(segment(d.path()), b).unwrap();
    assert_eq!(first_bad(d.path(), &v).0, Some(20));
}

/// A forger who rewrites a record together with its stored hash, index and the
/// hashes file is still caught by the signed checkpoint root.
#[test]
fn consistent_forgery_is_caught_by_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let mut b = std::fs::read(segment(d.path())).unwrap();
    let off = frame_off(50);
    let forged = format!("{:0>width$}", 999, width = LEAF).into_bytes();
    let h = wiretrail_collector::merkle::leaf_hash(&forged);
    b[off + 12..off + 44].copy_from_slice(&h);
    b[off + HEADER_LEN..off + HEADER_LEN + LEAF].copy_from_slice(&forged);
    std::fs::write(segment(d.path()), b).unwrap();
    let hp = d.path().join("log/hashes");
    let mut hb = std::fs::read(&hp).unwrap();
    hb[50 * 32..51 * 32].copy_from_slice(&h);
    std::fs::write(&hp, hb).unwrap();
    let (bad, why) = first_bad(d.path(), &v);
    assert_eq!(bad, Some(40), "{why}");
    assert!(why.contains("40..100"), "{why}");
}

#[test]
fn forged_checkpoint_signature_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let p = d.path().join("checkpoints.jsonl");
    let s = std::fs::read_to_string(&p).unwrap().replacen("\\n40\\n", "\\n41\\n", 1);
    std::fs::write(&p, s).unwrap();
    assert!(verify(d.path(), &v, None, |_, _| {}).is_err());
}

/// A live collector's background verification stops at the latest
/// checkpoint it issued: bytes being appended after it (here a torn frame)
/// are not judged, while everything up to it still is.
#[test]
fn a_bounded_run_judges_only_up_to_its_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let v = make_log(d.path());
    let f = std::fs::OpenOptions::new().write(true).open(segment(d.path())).unwrap();
    f.set_len(frame_off(90) as u64 + 7).unwrap();
    let never = std::sync::atomic::AtomicBool::new(false);
    let bounded = |d: &Path| {
        let (r, state) = wiretrail_collector::verify::verify_upto(
            d,
            &wiretrail_collector::store::load_keyring(d, &v).unwrap(),
            None,
            Some(40),
            &never,
            |_, _| {},
        )
        .unwrap();
        (r.first_bad, r.leaves, r.checkpoints_checked, state.map(|s| s.frontier.size))
    };
    assert_eq!(bounded(d.path()), (None, 40, 1, Some(40)));
    let mut b = std::fs::read(segment(d.path())).unwrap();
    b[frame_off(33) + HEADER_LEN + 1] ^= 0x04;
    std::fs::write(segment(d.path()), b).unwrap();
    assert_eq!(bounded(d.path()).0, Some(33));
}
