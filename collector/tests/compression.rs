//! Compressed frames in the embedded store: a log mixing uncompressed frames
//! (written before compression, or with it off) and compressed ones reads,
//! recovers and verifies; a damaged compressed body is found by `verify` and
//! by recovery at open, both naming the leaf.

use std::os::unix::fs::FileExt;
use std::path::Path;

use prost::Message;
use wiretrail_log::frame::{COMPRESSED, HEADER_LEN};
use wiretrail_log::store::{StoreConfig, StoreError, Writer};
use wiretrail_proto::v1::{Record, StoredLeaf};

/// A stored leaf that compresses: a record with an HTTP-like payload and a per-leaf id.
fn leaf(i: u64) -> Vec<u8> {
    let payload =
        format!("POST /v2/payments/{i:08} HTTP/1.1\r\nHost: pay.internal\r\nContent-Type: application/json\r\n\r\n")
            .repeat(4);
    StoredLeaf {
        agent_id: "agent-z".into(),
        received_time_ns: 1_700_000_000_000_000_000 + i as i64,
        record: Some(Record { app_protocol: "http".into(), payload: payload.into_bytes(), ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn config(compression: Option<i32>) -> StoreConfig {
    StoreConfig { compression, ..Default::default() }
}

/// Appends leaves `from..to`, one batch each, commits and issues a checkpoint.
fn write(dir: &Path, compression: Option<i32>, from: u64, to: u64) {
    let (mut w, shared) = Writer::open(dir, config(compression)).unwrap();
    for i in from..to {
        assert_eq!(w.append(&[leaf(i)]).unwrap(), i);
    }
    w.commit().unwrap();
    shared.issue_checkpoint().unwrap();
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log/seg-00000000000000000000.wtl")
}

fn frame_offset(dir: &Path, i: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(dir.join("log/offsets")).unwrap().read_exact_at(&mut b, i * 8).unwrap();
    u64::from_le_bytes(b)
}

/// The length word of leaf `i`'s frame.
fn length_word(dir: &Path, i: u64) -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open(segment(dir)).unwrap().read_exact_at(&mut b, frame_offset(dir, i)).unwrap();
    u32::from_le_bytes(b)
}

fn verify(dir: &Path) -> wiretrail_log::verify::Report {
    let v = wiretrail_log::store::load_verifier(dir).unwrap();
    wiretrail_log::verify::verify(dir, &v, None, |_, _| {}).unwrap().0
}

#[test]
fn old_uncompressed_frames_and_new_compressed_ones_read_recover_and_verify() {
    let d = tempfile::tempdir().unwrap();
    // Leaves 0..50 as a store without compression wrote them, 50..100 compressed.
    write(d.path(), None, 0, 50);
    write(d.path(), Some(1), 50, 100);
    assert_eq!(length_word(d.path(), 49) & COMPRESSED, 0, "leaf 49 was written compressed");
    assert_ne!(length_word(d.path(), 50) & COMPRESSED, 0, "leaf 50 was written uncompressed");
    let on_disk = std::fs::metadata(segment(d.path())).unwrap().len();
    let leaf_bytes: u64 = (0..100).map(|i| leaf(i).len() as u64).sum();
    let r = verify(d.path());
    assert_eq!((r.first_bad, r.leaves, r.checkpoints_checked), (None, 100, 2), "{:?}", r.problem);
    assert_eq!((r.bytes, r.leaf_bytes), (on_disk, leaf_bytes));
    let (old_part, new_part) = (frame_offset(d.path(), 50), on_disk - frame_offset(d.path(), 50));
    let new_leaves: u64 = (50..100).map(|i| leaf(i).len() as u64).sum();
    assert_eq!(old_part, leaf_bytes - new_leaves + 50 * HEADER_LEN as u64, "the old frames are not as they were");
    assert!(new_part < new_leaves / 2, "{new_part} bytes on disk for {new_leaves} leaf bytes");

    // The derived files are rebuilt from both kinds of frame.
    for f in ["log/hashes", "log/offsets"] {
        std::fs::remove_file(d.path().join(f)).unwrap();
    }
    let (w, shared) = Writer::open(d.path(), config(Some(3))).unwrap();
    assert_eq!(shared.size(), 100);
    assert!(w.recovered_cuts().is_empty());
    for i in [0, 49, 50, 99] {
        assert_eq!(shared.read_leaf(i).unwrap(), leaf(i), "leaf {i}");
        assert_eq!(shared.leaf_hash(i).unwrap(), wiretrail_log::merkle::leaf_hash(&leaf(i)));
    }
    let all: Vec<(u64, Vec<u8>)> = shared.iter(0, 100).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all, (0..100).map(|i| (i, leaf(i))).collect::<Vec<_>>());
    let from_middle: Vec<u64> = shared.iter(48, 52).unwrap().map(|r| r.unwrap().0).collect();
    assert_eq!(from_middle, vec![48, 49, 50, 51]);
}

/// Flips a bit in the middle of leaf `i`'s compressed body; returns its frame offset.
fn damage(dir: &Path, i: u64) -> u64 {
    let off = frame_offset(dir, i);
    let len = (length_word(dir, i) & !COMPRESSED) as u64;
    assert_ne!(length_word(dir, i) & COMPRESSED, 0, "leaf {i} is not compressed");
    let at = off + HEADER_LEN as u64 + len / 2;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(segment(dir)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    off
}

#[test]
fn a_damaged_compressed_body_is_found_by_verify_and_by_recovery() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), Some(1), 0, 60);
    let off = damage(d.path(), 37);

    let r = verify(d.path());
    assert_eq!(r.first_bad, Some(37), "{:?}", r.problem);
    assert!(r.problem.as_deref().unwrap_or_default().contains("leaf hash"), "{:?}", r.problem);

    // Reading it through the store names it too.
    {
        let (_w, shared) = Writer::open(d.path(), config(Some(1))).unwrap();
        let e = shared.read_leaf(37).unwrap_err().to_string();
        assert!(e.contains("leaf 37"), "{e}");
        let e = shared.iter(30, 60).unwrap().find_map(|r| r.err()).expect("the iterator read leaf 37").to_string();
        assert!(e.contains("leaf 37"), "{e}");
    }

    // With the derived files gone, recovery re-reads the frame and stops there.
    for f in ["log/hashes", "log/offsets"] {
        std::fs::remove_file(d.path().join(f)).unwrap();
    }
    let before = std::fs::read(segment(d.path())).unwrap();
    match Writer::open(d.path(), config(Some(1))) {
        Err(StoreError::NeedsRepair { leaf, offset, problem, .. }) => {
            assert_eq!((leaf, offset), (37, off), "{problem}");
        }
        Err(e) => panic!("expected NeedsRepair, got {e}"),
        Ok(_) => panic!("the store opened over a damaged leaf"),
    }
    assert_eq!(std::fs::read(segment(d.path())).unwrap(), before, "recovery changed the segment");
}
