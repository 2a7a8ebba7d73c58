//! Start-up snapshots (`store::snapshot`, `ingest::state`): a start from a
//! snapshot plus the leaves after it finds the same state as a scan of the
//! whole log, and a snapshot that does not describe the log is not used.

use prost::Message;
use wiretrail_collector::ingest::state::LogState;
use wiretrail_log::entry;
use wiretrail_log::store::tree::TreeCache;
use wiretrail_log::store::{StoreConfig, Writer, snapshot};
use wiretrail_proto::v1::{Record, StoredLeaf};

const T0: i64 = 1_700_000_000_000_000_000;

/// Leaves of batch `seq` of `agent` (boot "b"), `n` records.
fn batch(agent: &str, seq: u64, n: u32, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            StoredLeaf {
                agent_id: agent.into(),
                boot_id: "b".into(),
                seq,
                index_in_batch: k,
                batch_records: n,
                peer_identity: format!("spiffe://t/{agent}"),
                batch_sha256: vec![seq as u8; 32],
                received_time_ns: T0 + seq as i64,
                record: Some(Record { payload: format!("{tag} {seq}.{k}").into_bytes(), ..Default::default() }),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect()
}

/// Batch `seq` of `agent`: one heartbeat record captured at `t`.
fn heartbeat(agent: &str, seq: u64, t: i64) -> Vec<Vec<u8>> {
    let mut l = StoredLeaf::decode(batch(agent, seq, 1, "hb").remove(0).as_slice()).unwrap();
    let r = l.record.as_mut().unwrap();
    (r.kind, r.capture_time_ns) = (wiretrail_proto::v1::RecordKind::Heartbeat as i32, t);
    vec![l.encode_to_vec()]
}

fn entry_leaf(kind: &str, subject: &str, detail: serde_json::Value) -> Vec<Vec<u8>> {
    vec![entry::leaf(entry::new(kind, T0, subject, detail, Vec::new()), "")]
}

/// Appends and commits `leaves` as one batch, telling `state` about entries as the commit thread does.
fn commit(w: &mut Writer, state: Option<&mut LogState>, leaves: Vec<Vec<u8>>) {
    let i = w.append(&leaves).unwrap();
    w.commit().unwrap();
    if let Some(st) = state.filter(|_| leaves.len() == 1) {
        st.entry_committed(i, &leaves[0]);
    }
}

fn config() -> StoreConfig {
    StoreConfig { segment_bytes: 4096, ..Default::default() }
}

#[test]
fn a_start_from_the_snapshot_finds_what_a_full_scan_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut w, shared) = Writer::open(&dir, config()).unwrap();
    for seq in 0..20 {
        commit(&mut w, None, batch("a", seq, 3, "first"));
    }
    commit(&mut w, None, heartbeat("a", 20, T0 + 5));
    commit(
        &mut w,
        None,
        entry_leaf(entry::HOLD_PLACED, "CASE-1", serde_json::json!({"case": "CASE-1", "by": "x", "placed_ns": T0})),
    );
    commit(&mut w, None, entry_leaf(entry::AGENT_SILENT, "a", serde_json::json!({})));
    let conflict = serde_json::json!({"boot_id": "b", "seq": 1, "received_sha256": "abcd"});
    commit(&mut w, None, entry_leaf(entry::BATCH_CONFLICT, "a", conflict));
    commit(&mut w, None, entry_leaf(entry::AGENT_ID_REFUSED, "a", serde_json::json!({"identity": "spiffe://t/x"})));
    let (mut st, opened) = LogState::open(&shared).unwrap();
    assert_eq!(opened.from_snapshot, 0);
    assert_eq!(opened.scanned, shared.size());
    assert_eq!(st.hold_entries, vec![61]);
    assert_eq!(st.heartbeats.get("a"), Some(&(60, T0 + 5)));
    st.maybe_save(&w, true);
    let at = shared.size();
    // After the snapshot: more batches of both agents, a hold lifted, the agent back, a conflict.
    for seq in 21..31 {
        commit(&mut w, Some(&mut st), batch("a", seq, 2, "later"));
        commit(&mut w, Some(&mut st), batch("c", seq - 21, 1, "other"));
    }
    let c_beat = w.appended();
    commit(&mut w, Some(&mut st), heartbeat("c", 10, T0 + 9));
    commit(&mut w, Some(&mut st), entry_leaf(entry::HOLD_LIFTED, "CASE-1", serde_json::json!({})));
    commit(&mut w, Some(&mut st), entry_leaf(entry::AGENT_RETURNED, "a", serde_json::json!({})));
    commit(
        &mut w,
        Some(&mut st),
        entry_leaf(
            entry::BATCH_CONFLICT,
            "a",
            serde_json::json!({"boot_id": "b", "seq": 3, "received_sha256": "00ff"}),
        ),
    );
    shared.issue_checkpoint().unwrap();
    let size = shared.size();
    let root = shared.root(size).unwrap();

    let (from_snap, opened) = LogState::open(&shared).unwrap();
    assert_eq!((opened.from_snapshot, opened.scanned), (at, size - at));
    snapshot::remove_all(&dir).unwrap();
    let (scanned, opened) = LogState::open(&shared).unwrap();
    assert_eq!((opened.from_snapshot, opened.scanned), (0, size));
    assert_eq!(from_snap.dedup, scanned.dedup, "batch table from the snapshot + tail");
    assert_eq!(from_snap.hold_entries, scanned.hold_entries);
    assert_eq!(from_snap.heartbeats, scanned.heartbeats);
    let beats = [("a".to_string(), (60, T0 + 5)), ("c".to_string(), (c_beat, T0 + 9))];
    assert_eq!(scanned.heartbeats, beats.into_iter().collect());
    assert_eq!(scanned.hold_entries.len(), 2);
    // What the commit thread learns from the entries it commits (batches
    // reach its table through ingest, not this harness) is the same.
    assert_eq!(st.dedup.liveness(), scanned.dedup.liveness(), "liveness kept by the commit thread");
    assert_eq!(st.hold_entries, scanned.hold_entries, "hold entries kept by the commit thread");

    // The tree cache: reopening from its snapshot gives the same root.
    let mut scanned = scanned;
    scanned.maybe_save(&w, true);
    drop((w, shared));
    let (w, shared) = Writer::open(&dir, config()).unwrap();
    assert!(w.tree_from_snapshot(), "the tree snapshot was not used");
    assert_eq!(shared.root(size).unwrap(), root);
    drop((w, shared));
}

#[test]
fn a_snapshot_that_does_not_describe_the_log_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (mut wa, sa) = Writer::open(&a, config()).unwrap();
    let (mut wb, sb) = Writer::open(&b, config()).unwrap();
    for seq in 0..5 {
        commit(&mut wa, None, batch("a", seq, 2, "log a"));
        commit(&mut wb, None, batch("a", seq, 2, "log b"));
    }
    let (mut st_b, _) = LogState::open(&sb).unwrap();
    st_b.maybe_save(&wb, true);
    // Log b's snapshots copied into log a (same size, other leaves): ignored.
    std::fs::create_dir_all(snapshot::state_dir(&a)).unwrap();
    for name in ["commit.snap", "tree.snap"] {
        std::fs::copy(snapshot::state_dir(&b).join(name), snapshot::state_dir(&a).join(name)).unwrap();
    }
    let (_, opened) = LogState::open(&sa).unwrap();
    assert_eq!(opened.from_snapshot, 0, "another log's snapshot was used");
    // A torn snapshot file: ignored.
    let p = snapshot::state_dir(&b).join("commit.snap");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len / 2).unwrap();
    let (_, opened) = LogState::open(&sb).unwrap();
    assert_eq!(opened.from_snapshot, 0, "a torn snapshot was used");

    // A tree snapshot whose size and last leaf match but whose nodes are
    // wrong: caught by the signed checkpoint's root at open, tree rebuilt.
    sa.issue_checkpoint().unwrap();
    let size = sa.size();
    let root = sa.root(size).unwrap();
    let last = sa.leaf_hash(size - 1).unwrap();
    let mut forged = TreeCache::default();
    for i in 0..size {
        forged.push(if i + 1 == size { last } else { [i as u8; 32] });
    }
    snapshot::save(&a, "tree", size, Some(last), forged.encode()).unwrap();
    drop((wa, sa));
    let (wa, sa) = Writer::open(&a, config()).expect("a wrong tree snapshot is rebuilt, not fatal");
    assert!(!wa.tree_from_snapshot());
    assert_eq!(sa.root(size).unwrap(), root);
}
