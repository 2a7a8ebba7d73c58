//! Retention classes, expiry deletion and legal holds on the embedded store.
//! Time comes from a test clock; segments are one batch each (tiny `segment_bytes`).
//! The last test runs the collector (holds and deletion over gRPC, periodic passes).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use wiretrail_collector::retention::{
    Append, Clock, HoldFilter, LogEntry, Retention, RetentionError, Selector, SharedHolds,
};
use wiretrail_log::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use wiretrail_log::store::{Log, StoreConfig, StoreError, Writer, segment_name};
use wiretrail_proto::v1::{Record, StoredLeaf};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_000_000 * S;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const POLICY: &str = "communications: 1h\ncollector_entries: 1h\nclasses:\n  - name: short\n    duration: 2s\n    match: { identity: \"pod=short-*\" }\n";

fn leaf(agent: &str, pod: &str, t: i64) -> Vec<u8> {
    StoredLeaf {
        agent_id: agent.into(),
        received_time_ns: t,
        record: Some(Record {
            app_protocol: "postgres".into(),
            identity: [("pod".to_string(), pod.to_string())].into(),
            payload: format!("SELECT 1 -- {pod}").into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

struct Store {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
    shared: Arc<Log>,
    clock: Arc<TestClock>,
    retention: Retention,
}

fn config() -> StoreConfig {
    StoreConfig { segment_bytes: 1, ..Default::default() }
}

/// A store of four segments (one batch each), signed:
/// 0..3 short-lived; 3..6 short-lived plus one 1h record; 6..9 short-lived of agent "held"; 9..10 1h.
/// (Every later append starts a segment of its own.)
fn store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut w, shared) = Writer::open(&dir, config()).unwrap();
    let short = |a: &str| (0..3).map(|i| leaf(a, &format!("short-{i}"), T0)).collect::<Vec<_>>();
    w.append(&short("a")).unwrap();
    w.append(&[leaf("a", "short-1", T0), leaf("a", "long-1", T0), leaf("a", "short-2", T0)]).unwrap();
    w.append(&short("held")).unwrap();
    w.append(&[leaf("a", "long-2", T0)]).unwrap();
    w.commit().unwrap();
    shared.issue_checkpoint().unwrap();
    assert_eq!(shared.closed_segments(), vec![(0, 3), (3, 6), (6, 9)]);
    std::fs::write(tmp.path().join("retention.yaml"), POLICY).unwrap();
    let writer = Arc::new(Mutex::new(w));
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let holds = hold_entries(&shared);
    let retention =
        Retention::open(shared.clone(), writer.clone(), Some(tmp.path().join("retention.yaml")), clock.clone(), &holds)
            .unwrap();
    Store { _tmp: tmp, dir, writer, shared, clock, retention }
}

/// The leaves of the hold entries (the collector's commit state keeps them;
/// these test logs repeat batch seqs, which its batch table would refuse).
fn hold_entries(shared: &Log) -> Vec<u64> {
    let hold = |e: &wiretrail_proto::v1::CollectorEntry| e.kind == "hold_placed" || e.kind == "hold_lifted";
    (shared.iter(0, shared.size()).unwrap())
        .map(Result::unwrap)
        .filter(|(_, b)| wiretrail_log::store::LeafBatch::decode_leaf(b).unwrap().entry.is_some_and(|e| hold(&e)))
        .map(|(i, _)| i)
        .collect()
}

fn seg(dir: &Path, first: u64) -> PathBuf {
    dir.join("log").join(segment_name(first))
}

fn entry_at(shared: &Log, i: u64) -> wiretrail_proto::v1::CollectorEntry {
    StoredLeaf::decode(shared.read_leaf(i).unwrap().as_slice()).unwrap().entry.expect("a collector entry")
}

fn held_agent() -> HoldFilter {
    HoldFilter { selector: Selector { agent: Some("held".into()), ..Default::default() }, ..Default::default() }
}

#[test]
fn expiry_deletes_only_expired_segments_and_holds_block_until_lifted() {
    let s = store();
    s.retention.place_hold("CASE-1", held_agent(), "admin@test").unwrap();
    // Before expiry nothing goes.
    s.clock.0.store(T0 + S, Ordering::SeqCst);
    let r = s.retention.pass().unwrap();
    assert!(r.deleted.is_empty(), "nothing is expired yet: {r:?}");
    // 3 s later: the short-lived segment goes; the one with a 1h record and the held one stay.
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(0, 3)], "{r:?}");
    assert_eq!(r.held, 1, "{r:?}");
    assert!(!seg(&s.dir, 0).exists(), "expired segment removed");
    assert!(seg(&s.dir, 3).exists(), "segment with an unexpired record stays whole");
    assert!(seg(&s.dir, 6).exists(), "held segment stays");
    // The deletion is an entry holding the kept hashes; reading a deleted leaf says so.
    let d = &r.deleted[0];
    let e = entry_at(&s.shared, d.entry_leaf);
    assert_eq!(e.kind, "retention_deletion");
    assert_eq!(e.content.len(), 3 * 32);
    assert_eq!(&e.content[32..64], &leaf_hash(&leaf("a", "short-1", T0)));
    match s.shared.read_leaf(1) {
        Err(StoreError::Deleted { leaf: 1, entry, .. }) => assert_eq!(entry, d.entry_leaf),
        other => panic!("reading a deleted leaf: {other:?}"),
    }
    assert!(s.shared.read_leaf(4).is_ok());
    // Lifting the hold lets the held segment go at the next pass.
    s.retention.lift_hold("CASE-1", "admin@test").unwrap();
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(6, 9)], "{r:?}");
    assert!(seg(&s.dir, 3).exists());
}

/// The holds of the other collectors sharing a store (clustered mode), as a
/// test sets them; each read counted.
struct Shared {
    entries: Mutex<Result<Vec<LogEntry>, String>>,
    /// From this read on (1-based), `later` is answered instead.
    switch_at: Option<(usize, Vec<LogEntry>)>,
    reads: std::sync::atomic::AtomicUsize,
}

impl SharedHolds for Shared {
    fn hold_entries(&self) -> Result<Vec<LogEntry>, String> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        match &self.switch_at {
            Some((at, later)) if n >= *at => Ok(later.clone()),
            _ => self.entries.lock().unwrap().clone(),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared { entries: Mutex::new(Ok(Vec::new())), switch_at: None, reads: Default::default() }
    }
}

fn with_shared(s: Store, holds: Arc<Shared>) -> Store {
    let Store { _tmp, dir, writer, shared, clock, retention } = s;
    Store { retention: retention.with_shared_holds(holds), _tmp, dir, writer, shared, clock }
}

/// `kind` entry of collector `origin` at `leaf`, signed.
fn shared_entry(origin: &str, leaf: u64, kind: &str, detail: serde_json::Value) -> LogEntry {
    let entry = wiretrail_log::entry::new(kind, T0, "CASE-X", detail, Vec::new());
    LogEntry { origin: origin.into(), leaf, entry, signed: true }
}

fn placed_elsewhere(agent: &str) -> LogEntry {
    let filter = serde_json::json!({ "agent": agent });
    let d = serde_json::json!({ "case": "CASE-X", "filter": filter, "by": "admin@b", "placed_ns": T0 });
    shared_entry("collector-b", 7, "hold_placed", d)
}

#[test]
fn holds_placed_at_other_collectors_keep_records_here_and_unknown_holds_delete_nothing() {
    let shared = Arc::new(Shared::default());
    *shared.entries.lock().unwrap() = Ok(vec![placed_elsewhere("held")]);
    let s = with_shared(store(), shared.clone());
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let listed = s.retention.holds().unwrap();
    assert_eq!((listed[0].case.as_str(), listed[0].origin.as_str()), ("CASE-X", "collector-b"));
    let err = s.retention.place_hold("CASE-X", HoldFilter::default(), "admin@test").unwrap_err();
    assert!(err.to_string().contains("placed at collector collector-b"), "{err}");
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(0, 3)], "{r:?}");
    assert_eq!(r.held, 1, "the segment of agent `held` is kept by the other collector's hold: {r:?}");
    let err = s.retention.request_deletion(7, 7, "admin@test").unwrap_err();
    assert!(err.to_string().contains("legal hold: CASE-X"), "{err}");

    // ClickHouse unreadable: no pass, no request, no placement; nothing deleted.
    *shared.entries.lock().unwrap() = Err("connection refused".into());
    for err in [
        s.retention.pass().map(|_| ()).unwrap_err(),
        s.retention.request_deletion(7, 7, "admin@test").map(|_| ()).unwrap_err(),
        s.retention.place_hold("CASE-Y", held_agent(), "admin@test").map(|_| ()).unwrap_err(),
        s.retention.holds().map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(&err, RetentionError::SharedHolds(m) if m.contains("connection refused")), "{err}");
    }
    assert!(seg(&s.dir, 6).exists());

    // A deletion request must name this log: leaf numbers are per collector.
    let own = s.shared.verifier().name;
    s.retention.check_origin(&own).unwrap();
    assert!(s.retention.check_origin("").unwrap_err().to_string().contains("must name its log"));
    let err = s.retention.check_origin("collector-b").unwrap_err().to_string();
    assert!(err.contains(&format!("this collector keeps log {own}")), "{err}");

    // Lifted at the other collector (signed there): the segment goes.
    let lift =
        serde_json::json!({ "case": "CASE-X", "by": "admin@b", "placed_entry": 7, "placed_origin": "collector-b" });
    *shared.entries.lock().unwrap() =
        Ok(vec![placed_elsewhere("held"), shared_entry("collector-b", 9, "hold_lifted", lift)]);
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(6, 9)], "{r:?}");
}

#[test]
fn a_hold_placed_elsewhere_while_a_pass_runs_is_read_again_before_each_deletion() {
    // The first read (the pass's start) knows no hold; every later one knows a
    // hold on agent `a`, placed at another collector meanwhile.
    let shared = Arc::new(Shared { switch_at: Some((2, vec![placed_elsewhere("a")])), ..Default::default() });
    let s = with_shared(store(), shared.clone());
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(6, 9)], "{r:?}");
    assert_eq!(r.held, 1, "{r:?}");
    assert!(seg(&s.dir, 0).exists(), "agent a's segment, judged deletable at first, is kept");
    assert_eq!(shared.reads.load(Ordering::SeqCst), 3, "read at the start and before each of two deletions");
}

#[test]
fn early_deletion_is_refused_and_recorded() {
    let s = store();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let err = s.retention.request_deletion(4, 4, "admin@test").unwrap_err();
    let RetentionError::Refused { why, entry } = &err else { panic!("expected a refusal, got {err}") };
    assert!(why.contains("expires only at"), "{why}");
    let e = entry_at(&s.shared, *entry);
    assert_eq!(e.kind, "retention_refused");
    let detail: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap();
    assert_eq!(detail["by"], "admin@test");
    assert_eq!(detail["first_leaf"], 4);
    assert_eq!(detail["segments"][0], "seg-00000000000000000003.wtl");
    assert!(seg(&s.dir, 3).exists());
    // Under hold: refused too, and recorded.
    s.retention.place_hold("CASE-2", held_agent(), "admin@test").unwrap();
    let err = s.retention.request_deletion(7, 7, "admin@test").unwrap_err();
    assert!(err.to_string().contains("legal hold: CASE-2"), "{err}");
    // The open segment: refused.
    let last = s.shared.size() - 1;
    let err = s.retention.request_deletion(last, last, "admin@test").unwrap_err();
    assert!(err.to_string().contains("being appended to"), "{err}");
    // A range is all or none: 0..3 is expired but 3..6 is not.
    let err = s.retention.request_deletion(1, 5, "admin@test").unwrap_err();
    assert!(err.to_string().contains("seg-00000000000000000003.wtl: leaf 4"), "{err}");
    assert!(seg(&s.dir, 0).exists());
    // Expired and unheld: done.
    let d = s.retention.request_deletion(1, 2, "admin@test").unwrap();
    assert_eq!(d.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(0, 3)]);
    assert!(!seg(&s.dir, 0).exists());
}

#[test]
fn proofs_from_before_the_deletion_still_verify_and_verify_passes() {
    let s = store();
    let old = s.shared.latest_checkpoint().unwrap().checkpoint;
    let incl = s.shared.inclusion_proof(1, old.size).unwrap();
    let l1 = leaf_hash(&s.shared.read_leaf(1).unwrap());
    // An older checkpoint (3 leaves) and its consistency proof to `old`.
    let root3 = s.shared.root(3).unwrap();
    let cons = s.shared.consistency_proof(3, old.size).unwrap();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let r = s.retention.pass().unwrap();
    assert_eq!(r.deleted.len(), 2);
    let cp = s.shared.issue_checkpoint().unwrap().checkpoint;
    assert!(cp.size > old.size);
    // The store still proves the same, and links the old checkpoint to the new one.
    assert_eq!(s.shared.root(old.size).unwrap(), old.root);
    assert_eq!(s.shared.inclusion_proof(1, old.size).unwrap(), incl);
    verify_inclusion(1, old.size, &l1, &incl, &old.root).unwrap();
    verify_consistency(3, old.size, &root3, &old.root, &cons).unwrap();
    let link = s.shared.consistency_proof(old.size, cp.size).unwrap();
    verify_consistency(old.size, cp.size, &old.root, &cp.root, &link).unwrap();
    let incl_new = s.shared.inclusion_proof(1, cp.size).unwrap();
    verify_inclusion(1, cp.size, &l1, &incl_new, &cp.root).unwrap();
    // Full verification passes, the deleted leaves by kept hash only.
    let v = wiretrail_log::store::load_verifier(&s.dir).unwrap();
    let (report, _) = wiretrail_log::verify::verify(&s.dir, &v, None, |_, _| {}).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    assert_eq!(report.kept_hash_only, 6, "{report:?}");
    assert_eq!(report.verified_size, cp.size);
    // A flipped byte in a kept hash is caught.
    let kept = s.dir.join("log/seg-00000000000000000000.kept");
    let mut b = std::fs::read(&kept).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&kept, b).unwrap();
    std::fs::remove_file(s.dir.join("log/hashes")).unwrap();
    let (report, _) = wiretrail_log::verify::verify(&s.dir, &v, None, |_, _| {}).unwrap();
    assert!(report.first_bad.is_some(), "a altered kept hash must fail verification: {report:?}");
}

/// Closes the writer and reopens the store (as a restart does).
fn reopen(s: Store) -> (tempfile::TempDir, PathBuf, Writer, Arc<Log>) {
    let Store { _tmp, dir, writer, shared, retention, .. } = s;
    drop(retention);
    drop(shared);
    drop(Arc::try_unwrap(writer).ok().expect("only owner").into_inner().unwrap());
    let (w, shared) = Writer::open(&dir, config()).unwrap();
    (_tmp, dir, w, shared)
}

#[test]
fn restart_after_deletion_opens_cleanly_even_with_derived_files_rebuilt() {
    let s = store();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let r = s.retention.pass().unwrap();
    let deleted = r.deleted.clone();
    let size = s.shared.size();
    let root = s.shared.root(size).unwrap();
    let (_tmp, dir, w, shared) = reopen(s);
    assert_eq!(shared.size(), size);
    assert_eq!(shared.deleted(), deleted);
    assert!(matches!(shared.read_leaf(0), Err(StoreError::Deleted { .. })));
    drop((w, shared));
    // Derived files lost: the deleted ranges' hashes come from the kept files.
    std::fs::remove_file(dir.join("log/hashes")).unwrap();
    std::fs::remove_file(dir.join("log/offsets")).unwrap();
    let (_w, shared) = Writer::open(&dir, config()).unwrap();
    assert_eq!(shared.size(), size);
    assert_eq!(shared.root(size).unwrap(), root);
    assert_eq!(shared.read_leaf(4).unwrap(), leaf("a", "long-1", T0));
    let n = shared.iter(0, size).unwrap().count() as u64;
    assert_eq!(n, size - 6, "iteration skips the deleted leaves");
    drop((_w, shared));
    // `wiretrail repair` accounts for the deleted ranges: nothing to do.
    let plan = wiretrail_log::store::repair::repair(&dir, true).unwrap();
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.size, size);
}

#[test]
fn a_crash_between_the_entry_and_the_unlink_is_finished_at_start() {
    let s = store();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let copy = std::fs::read(seg(&s.dir, 0)).unwrap();
    let d = s.retention.request_deletion(0, 0, "admin@test").unwrap().remove(0);
    let kept = s.dir.join("log/seg-00000000000000000000.kept");
    let done = std::fs::read(&kept).unwrap();
    let (_tmp, dir, w, shared) = reopen(s);
    drop((w, shared));
    // As if the crash came after the entry was durable and before the kept
    // file was marked done and the segment unlinked.
    std::fs::write(seg(&dir, 0), &copy).unwrap();
    let mut pending = done.clone();
    pending[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&kept, &pending).unwrap();
    let (w, shared) = Writer::open(&dir, config()).unwrap();
    assert!(!seg(&dir, 0).exists(), "the interrupted deletion is finished at open");
    assert_eq!(shared.deleted(), vec![d.clone()]);
    assert_eq!(std::fs::read(&kept).unwrap(), done);
    drop((w, shared));
    // A deletion whose entry never became durable is abandoned: the segment stays.
    let (w, shared) = Writer::open(&dir, config()).unwrap();
    shared.begin_deletion(3).unwrap();
    drop((w, shared));
    let (_w, shared) = Writer::open(&dir, config()).unwrap();
    assert!(seg(&dir, 3).exists());
    assert!(!dir.join("log/seg-00000000000000000003.kept").exists());
    assert!(shared.read_leaf(4).is_ok());
    let v = wiretrail_log::store::load_verifier(&dir).unwrap();
    let (report, _) = wiretrail_log::verify::verify(&dir, &v, None, |_, _| {}).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
}

#[test]
fn holds_are_rebuilt_from_the_log() {
    let s = store();
    s.retention.place_hold("CASE-A", held_agent(), "admin@test").unwrap();
    s.retention.place_hold("CASE-B", HoldFilter::default(), "admin@test").unwrap();
    s.retention.lift_hold("CASE-B", "admin@test").unwrap();
    assert!(s.retention.place_hold("CASE-A", HoldFilter::default(), "admin@test").is_err());
    let (_tmp, _dir, w, shared) = reopen(s);
    let app: Arc<dyn Append> = Arc::new(Mutex::new(w));
    let clock = Arc::new(TestClock(AtomicI64::new(T0 + 3 * S)));
    let holds = hold_entries(&shared);
    let r = Retention::open(shared, app, None, clock, &holds).unwrap();
    let holds = r.holds().unwrap();
    assert_eq!(holds.iter().map(|h| h.case.as_str()).collect::<Vec<_>>(), vec!["CASE-A"]);
    assert_eq!(holds[0].filter, held_agent());
}

async fn view(addr: std::net::SocketAddr, leaf: u64) -> Result<(), tonic::Status> {
    use tokio_stream::StreamExt;
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(common::channel(addr).await);
    let mut s = q.view(wiretrail_proto::v1::ViewRequest { first_leaf: leaf, last_leaf: leaf }).await?.into_inner();
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

async fn deleted_view(addr: std::net::SocketAddr, leaf: u64) -> Option<String> {
    match view(addr, leaf).await {
        Err(e) if e.code() == tonic::Code::NotFound && e.message().contains("deleted by retention") => {
            Some(e.message().to_string())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_deletes_expired_segments_and_honours_holds_over_grpc() {
    use wiretrail_proto::v1 as pb;
    use wiretrail_proto::v1::retention_client::RetentionClient;
    let logs = common::logs::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let policy = tmp.path().join("retention.yaml");
    std::fs::write(&policy, "communications: 60s\ncollector_entries: 1h\n").unwrap();
    let mut cfg = common::plain_config(&dir);
    cfg.store.segment_bytes = 1;
    cfg.checkpoint_interval = std::time::Duration::from_millis(200);
    cfg.retention = wiretrail_collector::retention::RetentionConfig {
        file: Some(policy.clone()),
        interval: Some(std::time::Duration::from_millis(200)),
        // Records received now are 2 minutes old to retention: past their 60 s.
        clock_offset_ns: 120 * S,
    };
    let server = common::Server::start(cfg.clone()).await;
    let mut rc = RetentionClient::new(common::channel(server.addr).await);
    let filter = pb::HoldFilter { agent: "held".into(), ..Default::default() };
    let placed =
        rc.hold_place(pb::HoldPlaceRequest { case_id: "C-9".into(), filter: Some(filter) }).await.unwrap().into_inner();
    assert_eq!(placed.hold.unwrap().entry_leaf, 0);
    // Leaves 1..4 (agent held, sent first so no deletion entry lands before it), then 4..7 and
    // 7..10 (agent free): one segment each.
    for a in common::send(server.addr, vec![common::batch("held", "b", 0, 3)]).await {
        a.unwrap();
    }
    for a in common::send(server.addr, vec![common::batch("free", "b", 0, 3), common::batch("free", "b", 1, 3)]).await {
        a.unwrap();
    }
    let msg = common::eventually("the expired segments deleted", || deleted_view(server.addr, 7)).await;
    assert!(msg.contains("retention_deletion entry at leaf"), "{msg}");
    assert!(deleted_view(server.addr, 4).await.is_some());
    view(server.addr, 2).await.expect("held records stay");
    let other = pb::RetentionDeleteRequest { first_leaf: 2, last_leaf: 0, origin: "another-log".into() };
    let e = rc.retention_delete(other).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "a request naming another log is refused: {e:?}");
    let e = rc.retention_delete(pb::RetentionDeleteRequest { first_leaf: 2, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("legal hold: C-9") && e.message().contains("recorded"), "{e:?}");
    let holds = rc.hold_list(pb::HoldListRequest {}).await.unwrap().into_inner().holds;
    assert_eq!(holds.iter().map(|h| h.case_id.as_str()).collect::<Vec<_>>(), ["C-9"]);
    rc.hold_lift(pb::HoldLiftRequest { case_id: "C-9".into() }).await.unwrap();
    common::eventually("the held segment deleted after the lift", || deleted_view(server.addr, 2)).await;
    let kinds = |k: &str| pb::Filter { entry_kind: k.into(), ..Default::default() };
    let deletions = common::eventually("deletion entries indexed", || async {
        let v = common::search(server.addr, kinds("retention_deletion")).await;
        (v.len() >= 3).then_some(v)
    })
    .await;
    assert_eq!(deletions.len(), 3);
    let refusals = common::search(server.addr, kinds("retention_refused")).await;
    assert_eq!(refusals.len(), 1);
    assert!(common::search(server.addr, pb::Filter { agent_id: "free".into(), ..Default::default() }).await.is_empty());
    server.stop().await;
    let v = wiretrail_log::store::load_verifier(&dir).unwrap();
    let (report, _) = wiretrail_log::verify::verify(&dir, &v, None, |_, _| {}).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    assert_eq!(report.kept_hash_only, 9, "{report:?}");
    // A restart opens the store with the segments gone and still says why;
    // background verification (full at start) passes, the deleted leaves by kept hash.
    let server = common::Server::start(cfg).await;
    logs.wait_for_line(&["background verification OK", "kept_hash_only=9"]).await;
    assert_eq!(logs.count(&["ALERT verification_failed"]), 0, "{}", logs.text());
    assert!(deleted_view(server.addr, 1).await.is_some());
    assert!(deleted_view(server.addr, 9).await.is_some());
    view(server.addr, 0).await.unwrap();
    server.stop().await;
}

#[test]
fn a_reader_started_before_a_deletion_skips_the_deleted_segment() {
    let s = store();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let size = s.shared.size();
    let it = s.shared.iter(0, size).unwrap();
    s.retention.request_deletion(0, 2, "admin@test").unwrap();
    let got: Vec<u64> = it.map(|r| r.unwrap().0).collect();
    assert_eq!(got, (3..size).collect::<Vec<_>>());
}

#[test]
fn a_segment_next_to_a_deleted_one_keeps_its_own_range() {
    let s = store();
    s.clock.0.store(T0 + 3 * S, Ordering::SeqCst);
    let root = s.shared.root(10).unwrap();
    // The later segment first, then the one before the range already gone.
    let d = s.retention.request_deletion(7, 7, "admin@test").unwrap();
    assert_eq!(d.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(6, 9)]);
    assert_eq!(&s.shared.closed_segments()[..2], &[(0, 3), (3, 6)]);
    let d = s.retention.request_deletion(0, 0, "admin@test").unwrap();
    assert_eq!(d.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(0, 3)]);
    let (_tmp, dir, w, shared) = reopen(s);
    drop((w, shared));
    std::fs::remove_file(dir.join("log/hashes")).unwrap();
    std::fs::remove_file(dir.join("log/offsets")).unwrap();
    let (_w, shared) = Writer::open(&dir, config()).unwrap();
    assert_eq!(shared.root(10).unwrap(), root);
    assert_eq!(shared.read_leaf(4).unwrap(), leaf("a", "long-1", T0));
    let v = wiretrail_log::store::load_verifier(&dir).unwrap();
    let (report, _) = wiretrail_log::verify::verify(&dir, &v, None, |_, _| {}).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    assert_eq!(report.kept_hash_only, 6, "{report:?}");
}

/// A leaf of batch `seq` of agent `a`, boot `b` (two records per batch).
fn batch_leaf(seq: u64, index: u32, pod: &str) -> Vec<u8> {
    let mut l = StoredLeaf::decode(leaf("a", pod, T0).as_slice()).unwrap();
    (l.boot_id, l.seq, l.index_in_batch, l.batch_records) = ("b".into(), seq, index, 2);
    l.encode_to_vec()
}

#[test]
fn the_batch_table_rebuilds_when_an_agents_first_batches_were_deleted() {
    use wiretrail_collector::ingest::dedup::Seq;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut w, shared) = Writer::open(&dir, config()).unwrap();
    // Batch 0 short-lived (its segment expires), batch 1 kept an hour.
    w.append(&[batch_leaf(0, 0, "short-0"), batch_leaf(0, 1, "short-1")]).unwrap();
    w.append(&[batch_leaf(1, 0, "long-0"), batch_leaf(1, 1, "long-1")]).unwrap();
    w.append(&[leaf("other", "long-2", T0)]).unwrap();
    w.commit().unwrap();
    shared.issue_checkpoint().unwrap();
    std::fs::write(tmp.path().join("retention.yaml"), POLICY).unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(T0 + 3 * S)));
    let writer = Arc::new(Mutex::new(w));
    let r =
        Retention::open(shared.clone(), writer.clone(), Some(tmp.path().join("retention.yaml")), clock, &[]).unwrap();
    let report = r.pass().unwrap();
    assert_eq!(report.deleted.iter().map(|d| (d.first, d.end)).collect::<Vec<_>>(), vec![(0, 2)], "{report:?}");
    // What the collector does at start: the table is rebuilt from what is left.
    let (state, _) = wiretrail_collector::ingest::state::LogState::open(&shared)
        .expect("a boot whose first batches were deleted is not an inconsistency");
    let d = state.dedup;
    let key = ("a".to_string(), "b".to_string());
    assert!(matches!(d.check(&key, 2, b""), Seq::New), "the next batch continues the sequence");
    assert!(matches!(d.check(&key, 3, b""), Seq::Ahead(2)));
    assert!(matches!(d.check(&key, 1, b""), Seq::Duplicate(s) if (s.first, s.last) == (2, 3)));
}
