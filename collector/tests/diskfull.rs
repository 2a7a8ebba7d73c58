//! Disk full mid-batch (a small tmpfs): the batch is refused whole, nothing
//! of it stays in the log, the collector keeps running and accepts the retry
//! once space returns (no restart), records the outage as a
//! `storage_unavailable` entry with an alert, and `verify` passes. A search
//! meanwhile is refused: its access entry cannot be stored.

mod common;

use std::collections::BTreeMap;

use common::*;
use wiretrail_proto::v1::{Batch, Filter};

/// Batch `seq` of 40 records of ~3 kB each.
fn big_batch(seq: u64) -> Batch {
    let mut b = batch("agent-df", "boot-1", seq, 40);
    for r in &mut b.records {
        r.payload.resize(3000, b'#');
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_whole_batches_and_clears_without_restart() {
    let fs = Tmpfs::mount(24);
    let data = fs.path().join("data");
    let srv = Server::start(plain_config(&data)).await;
    for seq in 0..3 {
        let a = send(srv.addr, vec![big_batch(seq)]).await;
        assert!(a[0].is_ok(), "{a:?}");
    }
    let ballast = fs.fill();
    let mut refused = 0;
    let mut seq = 3;
    // Fill what is left: batches are refused (never half stored).
    while refused < 3 {
        match send(srv.addr, vec![big_batch(seq)]).await.remove(0) {
            Ok(_) => seq += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                assert!(s.message().contains("storage unavailable"), "{}", s.message());
                refused += 1;
            }
        }
    }
    // Reads now: each is logged first (small entries may still fit in the
    // files' last pages); once its access entry cannot be stored, a read is
    // refused and returns nothing.
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(channel(srv.addr).await);
    let req = wiretrail_proto::v1::SearchRequest {
        filter: Some(Filter { limit: 1, ..Default::default() }),
        follow: false,
        ..Default::default()
    };
    let mut refused_read = None;
    for _ in 0..500 {
        let mut s = q.search(req.clone()).await.unwrap().into_inner();
        match tokio_stream::StreamExt::next(&mut s).await {
            Some(Err(e)) => {
                refused_read = Some(e);
                break;
            }
            Some(Ok(r)) => assert_eq!(r.leaf_index, 0),
            None => panic!("a search returned nothing and no error"),
        }
    }
    let e = refused_read.expect("500 reads were logged on a full disk");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("storage unavailable"), "{}", e.message());
    // Space returns: the same batch is accepted, whole, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let a = send(srv.addr, vec![big_batch(seq)]).await.remove(0).expect("accepted once space returned");
    assert!(!a.duplicate && !a.conflict);
    assert_eq!(a.last_leaf_index - a.first_leaf_index, 39);
    let a = send(srv.addr, vec![big_batch(seq + 1)]).await.remove(0).unwrap();
    assert!(!a.duplicate);

    // Every stored batch is whole: 40 records, index_in_batch 0..40 in order.
    let leaves = search(srv.addr, Filter { agent_id: "agent-df".into(), ..Default::default() }).await;
    let mut by_seq: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for r in &leaves {
        let l = r.decoded.as_ref().unwrap();
        by_seq.entry(l.seq).or_default().push(l.index_in_batch);
    }
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), (0..seq + 2).collect::<Vec<_>>());
    for (s, idx) in &by_seq {
        assert_eq!(idx, &(0..40).collect::<Vec<u32>>(), "batch {s} is not whole");
    }
    // The outage is in the log and raised an alert.
    let e = search(srv.addr, Filter { entry_kind: "storage_unavailable".into(), ..Default::default() }).await;
    assert_eq!(e.len(), 1, "one storage_unavailable entry");
    let detail: serde_json::Value =
        serde_json::from_str(&e[0].decoded.as_ref().unwrap().entry.as_ref().unwrap().detail_json).unwrap();
    assert!(detail["refused_batches"].as_u64().unwrap() >= 3, "{detail}");
    eventually("storage alert", || async {
        let a = alerts(srv.addr).await;
        a.iter().any(|a| a.kind == "storage_unavailable" && a.severity == "high").then_some(())
    })
    .await;
    srv.stop().await;
    let v = wiretrail_log::store::load_verifier(&data).unwrap();
    let (r, _) = wiretrail_log::verify::verify(&data, &v, None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
}
