//! Follow mode: a search with `follow` returns the existing matches, then
//! streams matching records as they are committed, and nothing else.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, SearchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_new_matching_records_only() {
    let data = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(data.path())).await;
    let mut ingest = IngestClient::new(channel(srv.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut acks = ingest.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    // Batch 0: records 0..6; pod-1 are records 1 and 4.
    tx.send(batch("agent-f", "b", 0, 6)).await.unwrap();
    acks.next().await.unwrap().unwrap();

    let mut q = QueryClient::new(channel(srv.addr).await);
    let mut s = q
        .search(SearchRequest {
            filter: Some(Filter { identity: vec!["pod=pod-1".into()], ..Default::default() }),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("follow stream stalled").unwrap().unwrap()
    };
    let payload =
        |r: wiretrail_proto::v1::SearchResult| String::from_utf8(r.decoded.unwrap().record.unwrap().payload).unwrap();
    assert_eq!(payload(next().await), "SELECT 1 FROM accounts");
    assert_eq!(payload(next().await), "SELECT 4 FROM accounts");

    // Batches 1 and 2 (records 6..18) arrive after the search started.
    for seq in 1..3 {
        tx.send(batch("agent-f", "b", seq, 6)).await.unwrap();
        acks.next().await.unwrap().unwrap();
    }
    for i in [7, 10, 13, 16] {
        assert_eq!(payload(next().await), format!("SELECT {i} FROM accounts"));
    }
    // Nothing else matches: the stream stays quiet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next()).await.is_err(),
        "a non-matching record was streamed"
    );
    drop(s);
    drop(tx);
    srv.stop().await;
}
