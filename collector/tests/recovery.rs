//! Recovery never destroys acknowledged or checkpointed data: a frame
//! corrupted mid-log (derived files deleted) stops the start-up with its leaf
//! index and byte offset and changes nothing; `wiretrail repair` restores or
//! cuts (keeping a copy) and appends the repair to the log; a torn trailing
//! batch is removed whole so its retry is stored whole.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wiretrail_log::frame::{COMPRESSED, HEADER_LEN};
use wiretrail_log::store::repair::repair;
use wiretrail_log::store::{StoreConfig, StoreError, Writer};
use wiretrail_proto::v1::Filter;

fn seg(dir: &Path) -> PathBuf {
    dir.join("log").join("seg-00000000000000000000.wtl")
}

fn offset_of(dir: &Path, leaf: u64) -> u64 {
    let o = std::fs::read(dir.join("log/offsets")).unwrap();
    u64::from_le_bytes(o[leaf as usize * 8..leaf as usize * 8 + 8].try_into().unwrap())
}

/// Batch `s` of the test log: odd batches hold compressible records (stored
/// as compressed frames), even ones short records (stored uncompressed).
fn batch_of(s: u64) -> wiretrail_proto::v1::Batch {
    if s % 2 == 1 { compressible_batch("agent-r", "b", s, 10) } else { batch("agent-r", "b", s, 10) }
}

/// The length word of the frame at `off`.
fn word_at(seg: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(seg[off..off + 4].try_into().unwrap())
}

/// 20 batches of 10 records; a checkpoint after `checkpoint_after` batches
/// (the one a stopping collector issues: a checkpoint request would itself
/// be an access entry, a leaf).
async fn build(dir: &Path, checkpoint_after: u64) {
    let mut srv = Server::start(plain_config(dir)).await;
    for s in 0..20 {
        send(srv.addr, vec![batch_of(s)]).await.remove(0).unwrap();
        if s + 1 == checkpoint_after {
            srv.stop().await;
            srv = Server::start(plain_config(dir)).await;
        }
    }
    // Stop without the final checkpoint covering everything: drop the server
    // task by stopping it, then drop checkpoints past `checkpoint_after`.
    srv.stop().await;
    let p = dir.join("checkpoints.jsonl");
    let text = std::fs::read_to_string(&p).unwrap();
    let keep: Vec<&str> = text.lines().filter(|l| !l.contains("\\n200\\n")).collect();
    std::fs::write(&p, keep.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn remove_derived(dir: &Path) {
    for f in ["log/hashes", "log/offsets"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
}

fn open_err(dir: &Path) -> StoreError {
    match Writer::open(dir, StoreConfig::default()) {
        Ok(_) => panic!("the store opened"),
        Err(e) => e,
    }
}

fn verify_ok(dir: &Path) {
    let v = wiretrail_log::store::load_verifier(dir).unwrap();
    let (r, _) = wiretrail_log::verify::verify(dir, &v, None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_length_mid_log_is_refused_then_restored_by_repair() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), 20).await; // everything checkpointed (200 leaves)
    let off = offset_of(d.path(), 170);
    let mut b = std::fs::read(seg(d.path())).unwrap();
    assert_ne!(word_at(&b, off as usize) & COMPRESSED, 0, "leaf 170 is not compressed");
    b[off as usize + 2] ^= 0x40; // the length field of leaf 170
    std::fs::write(seg(d.path()), &b).unwrap();
    remove_derived(d.path());

    match open_err(d.path()) {
        StoreError::NeedsRepair { leaf, offset, .. } => assert_eq!((leaf, offset), (170, off)),
        e => panic!("expected NeedsRepair, got {e}"),
    }
    assert_eq!(std::fs::read(seg(d.path())).unwrap(), b, "recovery changed the segment");
    let e = open_err(d.path()).to_string();
    assert!(e.contains("leaf 170") && e.contains(&format!("offset {off}")) && e.contains("repair"), "{e}");

    let plan = repair(d.path(), true).unwrap();
    assert_eq!(plan.actions.len(), 1);
    assert_eq!((plan.actions[0].action.as_str(), plan.actions[0].leaf), ("restore", 170));
    assert_eq!(std::fs::read(seg(d.path())).unwrap(), b, "a dry run changed the segment");

    let plan = repair(d.path(), false).unwrap();
    assert_eq!(plan.actions[0].action, "restore");
    let copy = plan.actions[0].copy.clone().unwrap();
    assert_eq!(std::fs::read(copy).unwrap(), b[off as usize..off as usize + HEADER_LEN].to_vec());
    verify_ok(d.path());
    let srv = Server::start(plain_config(d.path())).await;
    let all = search(srv.addr, Filter { agent_id: "agent-r".into(), ..Default::default() }).await;
    assert_eq!(all.len(), 200, "all 200 acknowledged records are there");
    let e = search(srv.addr, Filter { entry_kind: "repair".into(), ..Default::default() }).await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].leaf_index, 200);
    srv.stop().await;
    verify_ok(d.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrestorable_frame_is_cut_with_a_copy_but_never_when_checkpointed() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), 15).await; // leaves 0..150 checkpointed, 150..200 not
    let original = std::fs::read(seg(d.path())).unwrap();

    // A checkpointed leaf whose bytes are damaged: repair refuses to cut it.
    let off = offset_of(d.path(), 120) as usize;
    let mut b = original.clone();
    assert_eq!(word_at(&b, off) & COMPRESSED, 0, "leaf 120 is compressed");
    b[off + HEADER_LEN + 5] ^= 1;
    std::fs::write(seg(d.path()), &b).unwrap();
    remove_derived(d.path());
    assert!(matches!(open_err(d.path()), StoreError::NeedsRepair { leaf: 120, .. }));
    let e = repair(d.path(), false).unwrap_err().to_string();
    assert!(e.contains("checkpoint") && e.contains("backup"), "{e}");
    assert_eq!(std::fs::read(seg(d.path())).unwrap(), b, "refused repair changed the segment");

    // An acknowledged but not checkpointed leaf: cut, with a copy of every byte.
    let off = offset_of_from(&original, 170);
    let mut b = original.clone();
    // In the middle of the compressed body (in its compressed data).
    let len = (word_at(&b, off) & !COMPRESSED) as usize;
    assert_ne!(word_at(&b, off) & COMPRESSED, 0, "leaf 170 is not compressed");
    b[off + HEADER_LEN + len / 2] ^= 1;
    std::fs::write(seg(d.path()), &b).unwrap();
    assert!(matches!(open_err(d.path()), StoreError::NeedsRepair { leaf: 170, .. }));
    let plan = repair(d.path(), true).unwrap();
    assert_eq!((plan.actions[0].action.as_str(), plan.actions[0].leaf, plan.size), ("cut", 170, 170));
    assert_eq!(plan.actions[0].bytes, (b.len() - off) as u64);
    let plan = repair(d.path(), false).unwrap();
    let copy =
        plan.actions[0].copy.clone().unwrap().join("seg-00000000000000000000.wtl.from-".to_string() + &off.to_string());
    assert_eq!(std::fs::read(copy).unwrap(), b[off..].to_vec(), "the copy holds every cut byte");
    verify_ok(d.path());
    let srv = Server::start(plain_config(d.path())).await;
    let e = search(srv.addr, Filter { entry_kind: "repair".into(), ..Default::default() }).await;
    assert_eq!(e.len(), 1);
    let al =
        eventually("repair alert", || async { alerts(srv.addr).await.into_iter().find(|a| a.kind == "repair") }).await;
    assert_eq!(al.leaf_index, 170);
    srv.stop().await;
    verify_ok(d.path());
}

/// Offset of leaf `i` found by walking the frames of a segment's bytes.
fn offset_of_from(seg: &[u8], i: u64) -> usize {
    let mut off = 0;
    for _ in 0..i {
        off += HEADER_LEN + (word_at(seg, off) & !COMPRESSED) as usize;
    }
    off
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_trailing_batch_is_removed_whole_and_its_retry_stored_whole() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), 19).await; // batch 19 (leaves 190..200) not checkpointed
    // As if the collector died while writing batch 19: only 4 whole frames and
    // part of a fifth reached the disk.
    assert_ne!(word_at(&std::fs::read(seg(d.path())).unwrap(), offset_of(d.path(), 194) as usize) & COMPRESSED, 0);
    let cut_at = offset_of(d.path(), 194) + 30;
    std::fs::OpenOptions::new().write(true).open(seg(d.path())).unwrap().set_len(cut_at).unwrap();
    remove_derived(d.path());
    let srv = Server::start(plain_config(d.path())).await;
    let a = send(srv.addr, vec![batch_of(19)]).await.remove(0).unwrap();
    assert!(!a.duplicate, "the retry of a torn batch was taken for a duplicate");
    let rec = search(srv.addr, Filter { entry_kind: "recovery".into(), ..Default::default() }).await;
    assert_eq!(rec.len(), 1, "the cut is recorded");
    assert_eq!(rec[0].leaf_index, 190);
    assert_eq!((a.first_leaf_index, a.last_leaf_index), (191, 200));
    let all = search(srv.addr, Filter { agent_id: "agent-r".into(), ..Default::default() }).await;
    let seq19: Vec<u32> =
        all.iter().map(|r| r.decoded.clone().unwrap()).filter(|l| l.seq == 19).map(|l| l.index_in_batch).collect();
    assert_eq!(seq19, (0..10).collect::<Vec<u32>>());
    srv.stop().await;
    verify_ok(d.path());
}
