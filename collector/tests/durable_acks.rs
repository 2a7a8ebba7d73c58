//! An acknowledgement means the batch is durable: the collector runs with its
//! data directory on a file system that forgets every write not yet synced
//! (tests/lazyfs), is killed mid-ingest, the file system "loses power", and
//! every acknowledged batch must be there after the restart (root only).
//!
//! Unlike `crash.rs` (SIGKILL alone, which leaves the page cache intact),
//! this fails when an ack does not follow the segment's fdatasync, or when a
//! new segment's directory entry was not synced before batches in it were acked.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use tokio_stream::StreamExt;
use wiretrail_collector::store::{list_segments, load_checkpoints, load_verifier};
use wiretrail_collector::verify::verify;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Ack, Filter, IssueCheckpointRequest};

const AGENT: &str = "lazy-agent";
/// Records per batch.
const N: u64 = 50;
/// Batches acked before the checkpoint.
const FIRST: u64 = 20;
/// Acks to collect before the kill.
const ACKS: usize = 120;
/// Small segments, so that the run rolls to new segment files (about 8 batches each).
const SEGMENT_BYTES: &str = "65536";

fn spawn(dir: &Path, log: &Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0", "--checkpoint-secs", "1"])
        .args(["--segment-bytes", SEGMENT_BYTES, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).parse().unwrap();
    (child, addr)
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

/// Streams batches `from`, `from + 1`, ... until `ACKS` are acknowledged,
/// SIGKILLs the collector with batches still in flight; returns every ack received.
async fn ingest_then_kill(child: &mut Child, addr: std::net::SocketAddr, from: u64) -> Vec<Ack> {
    let mut c = IngestClient::new(channel(addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = c.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let feeder = tokio::spawn(async move {
        for seq in from..from + 10 * ACKS as u64 {
            if tx.send(batch(AGENT, "b1", seq, N)).await.is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while let Some(a) = acks.next().await {
        acked.push(a.unwrap());
        if acked.len() == ACKS {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    feeder.abort();
    // Acks already on the wire when the process died count too.
    while let Some(Ok(a)) = acks.next().await {
        acked.push(a);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_batches_survive_a_crash_that_forgets_unsynced_writes() {
    let mut fs = wiretrail_lazyfs::shared();
    let logs = tempfile::tempdir().unwrap();
    // The data directory exists durably (as a deployment creates it); all in it is the collector's doing.
    let dir = fs.path().join("collector");
    std::fs::create_dir(&dir).unwrap();
    sync_dir(&dir);
    sync_dir(fs.path());

    let (mut child, addr) = spawn(&dir, &logs.path().join("first.log"));
    // Some batches, then a checkpoint handed to a client (it signs what is acked so far).
    let mut acked: Vec<Ack> = send(addr, (0..FIRST).map(|s| batch(AGENT, "b1", s, N)).collect())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut q = QueryClient::new(channel(addr).await);
    let published = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(published.size, acked.last().unwrap().last_leaf_index + 1);
    // Then batches streamed until the kill.
    acked.extend(ingest_then_kill(&mut child, addr, FIRST).await);
    assert!(acked.len() >= ACKS);
    for (i, a) in acked.iter().enumerate() {
        assert_eq!((a.seq, a.duplicate, a.conflict), (i as u64, false, false));
    }
    let before_crash = list_segments(&dir.join("log")).unwrap().len();
    assert!(before_crash >= 3, "the run should roll segments ({before_crash} segment files)");

    let forgotten = fs.crash().unwrap();
    // Derived files (hashes, offsets, the index) are never synced before an
    // ack: a crash that forgot nothing would prove nothing.
    assert!(forgotten.unsynced_files > 0, "the crash forgot nothing: {forgotten:?}");
    eprintln!(
        "{} batches acked ({} leaves) in {before_crash} segment files; the crash forgot {forgotten:?}",
        acked.len(),
        acked.last().unwrap().last_leaf_index + 1
    );

    let (mut child, addr) = spawn(&dir, &logs.path().join("second.log"));
    let last = acked.last().unwrap();
    let want = last.last_leaf_index + 1;
    let found = eventually("the acked leaves in the index", || async {
        let v = search(addr, Filter { agent_id: AGENT.into(), ..Default::default() }).await;
        (v.len() as u64 >= want).then_some(v)
    })
    .await;
    for a in &acked {
        for i in a.first_leaf_index..=a.last_leaf_index {
            let r = found.iter().find(|r| r.leaf_index == i);
            let l = r.and_then(|r| r.decoded.as_ref());
            assert_eq!(
                l.map(|l| (l.agent_id.as_str(), l.seq)),
                Some((AGENT, a.seq)),
                "acked batch {} (leaves {}..={}) lost leaf {i} in the crash; collector log: {}",
                a.seq,
                a.first_leaf_index,
                a.last_leaf_index,
                std::fs::read_to_string(logs.path().join("second.log")).unwrap_or_default()
            );
        }
    }
    // The dedup state came back with the log: a retry of the last acked batch is a duplicate.
    let again = send(addr, vec![batch(AGENT, "b1", last.seq, N)]).await;
    let a = again[0].as_ref().unwrap();
    assert!(a.duplicate && a.first_leaf_index == last.first_leaf_index, "{a:?}");
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let verifier = load_verifier(&dir).unwrap();
    let (r, _) = verify(&dir, &verifier, None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
    assert!(r.leaves >= want);
    // The checkpoint a client was given survived too.
    let cps = load_checkpoints(&dir, &verifier).unwrap();
    assert!(
        cps.iter().any(|c| c.note == published.note),
        "the checkpoint of size {} handed out before the crash is gone ({} checkpoints on disk)",
        published.size,
        cps.len()
    );
    assert!(r.checkpoints_checked >= 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
