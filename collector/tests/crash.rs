//! SIGKILL mid-ingest: no acknowledged record is lost and the collector restarts cleanly.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use tokio_stream::StreamExt;
use wiretrail_log::store::{StoreConfig, Writer};
use wiretrail_log::verify::verify;
use wiretrail_proto::v1::ingest_client::IngestClient;

fn spawn(dir: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0", "--checkpoint-secs", "1", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acked_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(dir.path());
    let mut c = IngestClient::new(channel(addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = c.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let feeder = tokio::spawn(async move {
        for seq in 0.. {
            if tx.send(compressible_batch("crash-agent", "b1", seq, 50)).await.is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while let Some(a) = acks.next().await {
        let a = a.unwrap();
        acked.push(a);
        if acked.len() == 200 {
            // Kill -9 while batches are still in flight.
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    feeder.abort();
    // Acks that were already on the wire when the process died are acked too.
    while let Some(Ok(a)) = acks.next().await {
        acked.push(a);
    }
    let last = acked.last().unwrap().last_leaf_index;

    // Restart cleanly; a retry of the last acked batch is a duplicate; the next one continues.
    let (mut child, addr) = spawn(dir.path());
    let mut c = IngestClient::new(channel(addr).await);
    let next_seq = acked.last().unwrap().seq + 1;
    let retry = vec![compressible_batch("crash-agent", "b1", next_seq - 1, 50)];
    let mut s = c.ingest(tokio_stream::iter(retry)).await.unwrap().into_inner();
    let a = s.next().await.unwrap().unwrap();
    assert!(a.duplicate);
    assert_eq!(a.last_leaf_index, last);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let (_w, shared) = Writer::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(shared.size() > last);
    for a in &acked {
        for i in [a.first_leaf_index, a.last_leaf_index] {
            let l = wiretrail_collector::query::decode(i, &shared.read_leaf(i).unwrap()).unwrap();
            assert_eq!((l.agent_id.as_str(), l.seq), ("crash-agent", a.seq));
        }
    }
    let (r, _) = verify(dir.path(), &shared.verifier(), None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
    assert!(r.checkpoints_checked >= 1);
    assert!(
        r.bytes < r.leaf_bytes,
        "the frames were not compressed: {} bytes for {} leaf bytes",
        r.bytes,
        r.leaf_bytes
    );
}
