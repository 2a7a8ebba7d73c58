//! No single client can stop the collector: an oversized record or message is
//! refused for its stream only, with a clear status; follow streams are
//! bounded per client and overall while checkpoints, searches, inventory and
//! ingest keep answering; bad ids are refused; an unreadable (derived) index
//! is rebuilt instead of preventing the start.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use wiretrail_collector::query::limits::QueryLimits;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, InventoryRequest, IssueCheckpointRequest, SearchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_and_message_are_refused_for_that_stream_only() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(d.path());
    cfg.max_message_bytes = 24 << 20;
    let srv = Server::start(cfg).await;
    send(srv.addr, vec![batch("agent-big", "b", 0, 2)]).await.remove(0).unwrap();
    // A 17 MB record: under the message limit, over the leaf limit.
    let mut big = batch("agent-big", "b", 1, 2);
    big.records[1].payload = vec![b'x'; 17 << 20];
    let e = send(srv.addr, vec![big]).await.remove(0).unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("record 1") && e.message().contains("at most"), "{}", e.message());
    // A message over the limit: a status saying so, not a silent end of stream.
    let mut huge = batch("agent-big", "b", 1, 1);
    huge.records[0].payload = vec![b'y'; 25 << 20];
    let r = send(srv.addr, vec![huge]).await;
    let e = r.first().expect("a status, not a silent end").as_ref().unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("too large"), "{}", e.message());
    // Everyone else (and the same agent with a normal batch) goes on.
    send(srv.addr, vec![batch("agent-other", "b", 0, 2)]).await.remove(0).unwrap();
    let a = send(srv.addr, vec![batch("agent-big", "b", 1, 2)]).await.remove(0).unwrap();
    assert_eq!(a.first_leaf_index, 4);
    // Control characters in ids are refused.
    let e = send(srv.addr, vec![batch("agent\n2026-01-01 INFO forged", "b", 0, 1)]).await.remove(0).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("\\n"), "{}", e.message());
    srv.stop().await;
}

/// With only 4 blocking threads, 24 follow streams must hold none of them.
#[test]
fn follow_streams_are_bounded_and_do_not_starve_checkpoints_or_queries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = plain_config(d.path());
        cfg.query = QueryLimits { follow_per_client: 24, follow_total: 30, concurrent_work: 2 };
        let srv = Server::start(cfg).await;
        send(srv.addr, vec![batch("agent-f", "b", 0, 3)]).await.remove(0).unwrap();
        let mut q = QueryClient::new(channel(srv.addr).await);
        let follow = SearchRequest { filter: Some(Filter::default()), follow: true, ..Default::default() };
        let t = Duration::from_secs(10);
        let mut streams = Vec::new();
        for i in 0..24 {
            let mut s = q.search(follow.clone()).await.unwrap().into_inner();
            for _ in 0..3 {
                let r = tokio::time::timeout(t, s.next()).await;
                r.unwrap_or_else(|_| panic!("follow stream {i} stalled (are idle followers holding threads?)"))
                    .unwrap()
                    .unwrap();
            }
            streams.push(s);
        }
        // The 25th from the same client: refused with RESOURCE_EXHAUSTED.
        let e = match q.search(follow.clone()).await {
            Err(e) => e,
            Ok(r) => r.into_inner().next().await.unwrap().unwrap_err(),
        };
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        // Checkpoints, searches, inventory and ingest keep answering.
        let cp = tokio::time::timeout(t, q.issue_checkpoint(IssueCheckpointRequest {})).await.expect("checkpoint hung");
        assert_eq!(cp.unwrap().into_inner().size, 3 + 24, "3 records, an access entry per search");
        let mut s = tokio::time::timeout(
            t,
            q.search(SearchRequest { filter: Some(Filter::default()), follow: false, ..Default::default() }),
        )
        .await
        .expect("search hung")
        .unwrap()
        .into_inner();
        let mut n = 0;
        // The new batch lands after the access entries (24 searches, the checkpoint, this search).
        let first_new = 3 + 24 + 2;
        while let Some(r) = tokio::time::timeout(t, s.next()).await.expect("search stalled") {
            r.unwrap();
            n += 1;
        }
        assert_eq!(n, 3);
        tokio::time::timeout(t, q.inventory(InventoryRequest { shadow_only: false }))
            .await
            .expect("inventory hung")
            .unwrap();
        tokio::time::timeout(t, send(srv.addr, vec![batch("agent-f", "b", 1, 3)]))
            .await
            .expect("ingest hung")
            .remove(0)
            .unwrap();
        // The followers see the new records.
        for s in streams.iter_mut().take(3) {
            let r = tokio::time::timeout(t, s.next()).await.expect("follower stalled").unwrap().unwrap();
            assert_eq!(r.leaf_index, first_new);
        }
        // Closing one frees its place.
        drop(streams.pop());
        let mut again = None;
        for _ in 0..50 {
            match q.search(follow.clone()).await {
                Ok(r) => {
                    again = Some(r.into_inner());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let mut again = again.expect("a place was freed");
        tokio::time::timeout(t, again.next()).await.unwrap().unwrap().unwrap();
        drop(streams);
        drop(again);
        srv.stop().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_index_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(d.path())).await;
    send(srv.addr, vec![batch("agent-i", "b", 0, 4)]).await.remove(0).unwrap();
    srv.stop().await;
    for f in ["index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(d.path().join("index.sqlite"), vec![0x5au8; 8192]).unwrap();
    let srv = Server::start(plain_config(d.path())).await;
    let r = search(srv.addr, Filter { identity: vec!["pod=pod-1".into()], ..Default::default() }).await;
    assert_eq!(r.iter().map(|r| r.leaf_index).collect::<Vec<_>>(), vec![1]);
    srv.stop().await;
}

/// Damage inside the index (its header, schema and progress row intact) is
/// found by the indexer's page check after start, off the start-up path, and
/// the index is rebuilt from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_index_pages_are_found_after_start_and_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(d.path())).await;
    for seq in 0..10 {
        send(srv.addr, vec![batch("agent-p", "b", seq, 100)]).await.remove(0).unwrap();
    }
    let all = Filter { identity: vec!["pod=pod-1".into()], ..Default::default() };
    let before = search(srv.addr, all.clone()).await.iter().map(|r| r.leaf_index).collect::<Vec<_>>();
    assert_eq!(before.len(), 333);
    srv.stop().await;
    let c = wiretrail_collector::index::open(d.path()).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    assert!(wiretrail_collector::index::damaged(&c).is_none());
    drop(c);
    // The last page is a page of the records' tables.
    let p = d.path().join("index.sqlite");
    let len = std::fs::metadata(&p).unwrap().len();
    assert!(len >= 8 * 4096, "index of {len} bytes");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5au8; 4096], len - 4096).unwrap();
    drop(f);
    let srv = Server::start(plain_config(d.path())).await;
    let aside = || {
        std::fs::read_dir(d.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("unreadable-"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !aside() {
        assert!(std::time::Instant::now() < deadline, "the damaged index was not moved aside within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = search(srv.addr, all).await.iter().map(|r| r.leaf_index).collect::<Vec<_>>();
    assert_eq!(after, before, "search after the rebuild");
    srv.stop().await;
}
