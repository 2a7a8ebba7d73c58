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
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use tokio_stream::StreamExt;
use wiretrail_log::store::{list_segments, load_checkpoints, load_verifier, segment_name};
use wiretrail_log::verify::verify;
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
/// Small segments, so that the run rolls to new segment files (about 11 batches each).
const SEGMENT_BYTES: &str = "131072";
/// Most batches sent and not yet acknowledged (well under a segment's worth).
const WINDOW: usize = 4;

/// A collector process, SIGKILLed and reaped when dropped (a failing test
/// must not leave it using the mount).
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wiretrail serve` on `dir`, checkpointing every `checkpoint_secs`.
fn spawn(dir: &Path, log: &Path, checkpoint_secs: &str) -> (Collector, std::net::SocketAddr) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wiretrail"));
    // SAFETY: prctl is async-signal-safe; the child dies with the test thread
    // that spawned it, even when the test binary is killed.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let mut child = cmd
        .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0", "--checkpoint-secs", checkpoint_secs])
        .args(["--segment-bytes", SEGMENT_BYTES, "--data-dir"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);
    (Collector(child), addr)
}

/// A new data directory under the mount that exists durably (as a
/// deployment creates it): everything in it is the collector's doing.
fn data_dir(mount: &Path, name: &str) -> std::path::PathBuf {
    let dir = mount.join(name);
    std::fs::create_dir(&dir).unwrap();
    sync_dir(&dir);
    sync_dir(mount);
    dir
}

/// The last lines of a collector's log.
fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The number of leaves in the log of the restarted collector (a checkpoint
/// issued now covers every durable leaf); panics with its log when it did
/// not come back.
async fn recovered_size(child: &mut Collector, addr: std::net::SocketAddr, log: &Path) -> u64 {
    let mut q = QueryClient::new(channel(addr).await);
    match q.issue_checkpoint(IssueCheckpointRequest {}).await {
        Ok(r) => r.into_inner().size,
        Err(e) => {
            let t = std::time::Instant::now();
            let status = loop {
                match child.0.try_wait().unwrap() {
                    Some(s) => break s.to_string(),
                    None if t.elapsed() > std::time::Duration::from_secs(10) => break "still running".into(),
                    None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            };
            panic!("the collector did not come back after the crash ({e}; {status}); its log:\n{}", tail(log))
        }
    }
}

/// Every leaf of every acked batch is found by a search, with its batch's seq.
async fn assert_all_found(addr: std::net::SocketAddr, acked: &[Ack], log: &Path) {
    // Leaves of acked batches (access entries of earlier searches sit between them).
    let want: u64 = acked.iter().map(|a| a.last_leaf_index - a.first_leaf_index + 1).sum();
    let found = eventually("the acked leaves in the index", || async {
        let v = search(addr, Filter { agent_id: AGENT.into(), ..Default::default() }).await;
        (v.len() as u64 >= want).then_some(v)
    })
    .await;
    for a in acked {
        for i in a.first_leaf_index..=a.last_leaf_index {
            let l = found.iter().find(|r| r.leaf_index == i).and_then(|r| r.decoded.as_ref());
            assert_eq!(
                l.map(|l| (l.agent_id.as_str(), l.seq)),
                Some((AGENT, a.seq)),
                "acked batch {} (leaves {}..={}) lost leaf {i} in the crash; collector log:\n{}",
                a.seq,
                a.first_leaf_index,
                a.last_leaf_index,
                tail(log)
            );
        }
    }
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

/// Streams batches `from`, `from + 1`, ... with at most `WINDOW` unacknowledged,
/// and SIGKILLs the collector at the ack of the first batch of a new segment
/// once `ACKS` batches are acked: acked data then sits in a segment that a
/// roll created during the run, and the batches still in flight cannot fill
/// it (a further roll would fsync it and hide a missing fsync before the
/// ack). Returns every ack received.
async fn ingest_then_kill(child: &mut Collector, addr: std::net::SocketAddr, dir: &Path, from: u64) -> Vec<Ack> {
    let mut c = IngestClient::new(channel(addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(WINDOW);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let mut acks = c.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let w = window.clone();
    let feeder = tokio::spawn(async move {
        for seq in from..from + 10 * ACKS as u64 {
            w.acquire().await.unwrap().forget();
            if tx.send(compressible_batch(AGENT, "b1", seq, N)).await.is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    let mut killed = false;
    while let Some(a) = acks.next().await {
        let a = a.unwrap();
        window.add_permits(1);
        let starts_segment = dir.join("log").join(segment_name(a.first_leaf_index)).exists();
        acked.push(a);
        if acked.len() >= ACKS && starts_segment {
            child.0.kill().unwrap();
            killed = true;
            break;
        }
    }
    assert!(killed, "no batch started a new segment in {} acks", acked.len());
    child.0.wait().unwrap();
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
    let dir = data_dir(fs.path(), "collector");

    let (mut child, addr) = spawn(&dir, &logs.path().join("first.log"), "1");
    // Some batches, then a checkpoint handed to a client (it signs what is acked so far).
    let mut acked: Vec<Ack> = send(addr, (0..FIRST).map(|s| compressible_batch(AGENT, "b1", s, N)).collect())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut q = QueryClient::new(channel(addr).await);
    let published = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(published.size, acked.last().unwrap().last_leaf_index + 1);
    // Then batches streamed until the kill.
    acked.extend(ingest_then_kill(&mut child, addr, &dir, FIRST).await);
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

    let second_log = logs.path().join("second.log");
    let (mut child, addr) = spawn(&dir, &second_log, "1");
    let last = acked.last().unwrap();
    let want = last.last_leaf_index + 1;
    let size = recovered_size(&mut child, addr, &second_log).await;
    let lost: Vec<u64> = acked.iter().filter(|a| a.last_leaf_index >= size).map(|a| a.seq).collect();
    assert!(
        lost.is_empty(),
        "the log holds {size} leaves after the crash but {want} were acknowledged: acked batches {lost:?} lost; \
         collector log:\n{}",
        tail(&second_log)
    );
    assert_all_found(addr, &acked, &second_log).await;
    // The dedup state came back with the log: a retry of the last acked batch is a duplicate.
    let again = send(addr, vec![compressible_batch(AGENT, "b1", last.seq, N)]).await;
    let a = again[0].as_ref().unwrap();
    assert!(a.duplicate && a.first_leaf_index == last.first_leaf_index, "{a:?}");
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().unwrap().success());

    let verifier = load_verifier(&dir).unwrap();
    let (r, _) = verify(&dir, &verifier, None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
    assert!(
        r.bytes < r.leaf_bytes,
        "the frames were not compressed: {} bytes for {} leaf bytes",
        r.bytes,
        r.leaf_bytes
    );
    assert!(r.leaves >= want);
    // The checkpoint a client was given survived too.
    let cps = load_checkpoints(&dir, &wiretrail_log::store::load_keyring(&dir, &verifier).unwrap()).unwrap();
    assert!(
        cps.iter().any(|c| c.note == published.note),
        "the checkpoint of size {} handed out before the crash is gone ({} checkpoints on disk)",
        published.size,
        cps.len()
    );
    assert!(r.checkpoints_checked >= 1);
    std::fs::remove_dir_all(&dir).unwrap();
    sync_dir(fs.path());
}

/// The first acks of a fresh data directory, before any segment roll or
/// checkpoint: only the store's sync of `log/` after creating the first
/// segment makes that segment's name durable, and only the commit's
/// fdatasync its frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_acks_in_a_new_data_directory_survive_a_crash() {
    let mut fs = wiretrail_lazyfs::shared();
    let logs = tempfile::tempdir().unwrap();
    let dir = data_dir(fs.path(), "fresh");
    let (mut child, addr) = spawn(&dir, &logs.path().join("first.log"), "3600");
    let acked: Vec<Ack> = send(addr, (0..5).map(|s| compressible_batch(AGENT, "b1", s, N)).collect())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(acked.len(), 5);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let forgotten = fs.crash().unwrap();
    assert!(forgotten.unsynced_files > 0, "the crash forgot nothing: {forgotten:?}");

    let second_log = logs.path().join("second.log");
    let (mut child, addr) = spawn(&dir, &second_log, "3600");
    let size = recovered_size(&mut child, addr, &second_log).await;
    // Leaves of acked batches (access entries of earlier searches sit between them).
    let want: u64 = acked.iter().map(|a| a.last_leaf_index - a.first_leaf_index + 1).sum();
    assert_eq!(
        size,
        want,
        "{want} leaves were acknowledged, the log holds {size} after the crash:\n{}",
        tail(&second_log)
    );
    assert_all_found(addr, &acked, &second_log).await;
    drop(child);
    std::fs::remove_dir_all(&dir).unwrap();
    sync_dir(fs.path());
}
