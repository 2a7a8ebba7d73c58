//! Tamper tests: flipped, truncated and reordered bytes on disk are caught by verify
//! with the index of the first bad record. Each runs on a log of compressed
//! frames (the default) and on one of uncompressed frames.

use std::os::unix::fs::FileExt;
use std::path::Path;

use wiretrail_log::frame::HEADER_LEN;
use wiretrail_log::merkle::Verifier;
use wiretrail_log::store::{StoreConfig, Writer};
use wiretrail_log::verify::verify;

const N: u64 = 100;
const LEAF: usize = 50;
/// Both frame formats: compressed (zstd level 1) and not.
const FORMATS: [Option<i32>; 2] = [Some(1), None];

/// A log of N equal-sized leaves with checkpoints at 40 and N, in a fresh directory.
fn make_log(compression: Option<i32>) -> (tempfile::TempDir, Verifier) {
    let d = tempfile::tempdir().unwrap();
    let (mut w, shared) = Writer::open(d.path(), StoreConfig { compression, ..Default::default() }).unwrap();
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
    // The format asked for is the one on disk.
    let word = u32::from_le_bytes(std::fs::read(segment(d.path())).unwrap()[..4].try_into().unwrap());
    assert_eq!(word & wiretrail_log::frame::COMPRESSED != 0, compression.is_some());
    let v = shared.verifier();
    (d, v)
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join("seg-00000000000000000000.wtl")
}

/// Offset of leaf `i`'s frame (from `log/offsets`).
fn frame_off(dir: &Path, i: u64) -> usize {
    let mut b = [0u8; 8];
    std::fs::File::open(dir.join("log/offsets")).unwrap().read_exact_at(&mut b, i * 8).unwrap();
    u64::from_le_bytes(b) as usize
}

/// Offset of a byte inside the stored body of leaf `i`: its middle (in a
/// compressed body, the compressed data rather than the zstd frame header).
fn body_byte(dir: &Path, i: u64) -> usize {
    let (a, b) = (frame_off(dir, i), frame_off(dir, i + 1));
    a + HEADER_LEN + (b - a - HEADER_LEN) / 2
}

fn first_bad(dir: &Path, v: &Verifier) -> (Option<u64>, String) {
    let (r, _) = verify(dir, v, None, |_, _| {}).unwrap();
    (r.first_bad, r.problem.unwrap_or_default())
}

#[test]
fn clean_log_verifies() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let (r, _) = verify(d.path(), &v, None, |_, _| {}).unwrap();
        assert_eq!((r.first_bad, r.leaves, r.checkpoints_checked), (None, N, 2), "{c:?}");
        assert_eq!(r.leaf_bytes, N * LEAF as u64, "{c:?}");
    }
}

#[test]
fn flipped_payload_byte_is_found() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let mut b = std::fs::read(segment(d.path())).unwrap();
        b[body_byte(d.path(), 57)] ^= 0x01;
        std::fs::write(segment(d.path()), b).unwrap();
        let (bad, why) = first_bad(d.path(), &v);
        assert_eq!(bad, Some(57), "{c:?}: {why}");
        assert!(why.contains("leaf hash"), "{c:?}: {why}");
    }
}

#[test]
fn flipped_header_byte_is_found() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let mut b = std::fs::read(segment(d.path())).unwrap();
        b[frame_off(d.path(), 12) + 20] ^= 0x80; // inside the stored hash
        std::fs::write(segment(d.path()), b).unwrap();
        assert_eq!(first_bad(d.path(), &v).0, Some(12), "{c:?}");
    }
}

#[test]
fn truncation_is_found() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let f = std::fs::OpenOptions::new().write(true).open(segment(d.path())).unwrap();
        f.set_len(frame_off(d.path(), 90) as u64 + 7).unwrap();
        let (bad, why) = first_bad(d.path(), &v);
        assert_eq!(bad, Some(90), "{c:?}: {why}");
        // Cut exactly at a frame boundary: the signed checkpoint still covers more.
        f.set_len(frame_off(d.path(), 80) as u64).unwrap();
        let (bad, why) = first_bad(d.path(), &v);
        assert_eq!(bad, Some(80), "{c:?}: {why}");
        assert!(why.contains("truncated"), "{why}");
    }
}

#[test]
fn reordered_records_are_found() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let mut b = std::fs::read(segment(d.path())).unwrap();
        let (a, m, e) = (frame_off(d.path(), 20), frame_off(d.path(), 21), frame_off(d.path(), 22));
        let swapped: Vec<u8> = [&b[m..e], &b[a..m]].concat();
        b[a..e].copy_from_slice(&swapped);
        std::fs::write(segment(d.path()), b).unwrap();
        assert_eq!(first_bad(d.path(), &v).0, Some(20), "{c:?}");
    }
}

/// A forger who rewrites a record together with its stored hash, index and the
/// hashes file is still caught by the signed checkpoint root.
#[test]
fn consistent_forgery_is_caught_by_checkpoint() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let b = std::fs::read(segment(d.path())).unwrap();
        let (off, end) = (frame_off(d.path(), 50), frame_off(d.path(), 51));
        let forged = format!("{:0>width$}", 999, width = LEAF).into_bytes();
        // A whole new frame in the writer's own format, in place of leaf 50's.
        let mut frame = Vec::new();
        let h = wiretrail_log::frame::Encoder::new(c).unwrap().encode(&mut frame, 50, &forged);
        let forged_seg = [&b[..off], &frame[..], &b[end..]].concat();
        std::fs::write(segment(d.path()), forged_seg).unwrap();
        let hp = d.path().join("log/hashes");
        let mut hb = std::fs::read(&hp).unwrap();
        hb[50 * 32..51 * 32].copy_from_slice(&h);
        std::fs::write(&hp, hb).unwrap();
        let (bad, why) = first_bad(d.path(), &v);
        assert_eq!(bad, Some(40), "{c:?}: {why}");
        assert!(why.contains("40..100"), "{why}");
    }
}

#[test]
fn forged_checkpoint_signature_is_refused() {
    let (d, v) = make_log(Some(1));
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
    for c in FORMATS {
        bounded_run(c);
    }
}

fn bounded_run(c: Option<i32>) {
    let (d, v) = make_log(c);
    let f = std::fs::OpenOptions::new().write(true).open(segment(d.path())).unwrap();
    let cut = frame_off(d.path(), 90) as u64 + 7;
    let flip = body_byte(d.path(), 33);
    f.set_len(cut).unwrap();
    let never = std::sync::atomic::AtomicBool::new(false);
    let bounded = |d: &Path| {
        let (r, state) = wiretrail_log::verify::verify_upto(
            d,
            &wiretrail_log::store::load_keyring(d, &v).unwrap(),
            None,
            Some(40),
            2,
            &never,
            |_, _| {},
        )
        .unwrap();
        (r.first_bad, r.leaves, r.checkpoints_checked, state.map(|s| s.frontier.size))
    };
    assert_eq!(bounded(d.path()), (None, 40, 1, Some(40)));
    let mut b = std::fs::read(segment(d.path())).unwrap();
    b[flip] ^= 0x04;
    std::fs::write(segment(d.path()), b).unwrap();
    assert_eq!(bounded(d.path()).0, Some(33), "{c:?}");
}

/// The derived hashes file must agree with the segment, leaf by leaf.
#[test]
fn a_hashes_file_entry_that_differs_is_found() {
    for c in FORMATS {
        let (d, v) = make_log(c);
        let hp = d.path().join("log/hashes");
        let mut hb = std::fs::read(&hp).unwrap();
        hb[30 * 32 + 7] ^= 1;
        std::fs::write(&hp, hb).unwrap();
        let (bad, why) = first_bad(d.path(), &v);
        assert_eq!(bad, Some(30), "{c:?}: {why}");
        assert!(why.contains("hashes file"), "{c:?}: {why}");
    }
}
