//! In-process ingest tests: durable acks, dedup, sequencing, bad input, search, verify.

mod common;

use common::*;
use tokio_stream::StreamExt;
use wiretrail_log::merkle::Verifier;
use wiretrail_log::verify::verify;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Batch, Filter, InclusionProofRequest, IssueCheckpointRequest, SearchRequest};

async fn send(addr: std::net::SocketAddr, batches: Vec<Batch>) -> Vec<Result<wiretrail_proto::v1::Ack, tonic::Status>> {
    let mut c = IngestClient::new(channel(addr).await);
    let mut out = Vec::new();
    match c.ingest(tokio_stream::iter(batches)).await {
        Ok(resp) => {
            let mut s = resp.into_inner();
            while let Some(a) = s.next().await {
                let stop = a.is_err();
                out.push(a);
                if stop {
                    break;
                }
            }
        }
        Err(e) => out.push(Err(e)),
    }
    out
}

#[tokio::test]
async fn ingest_ack_dedup_search_verify() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(dir.path())).await;
    let acks = send(srv.addr, (0..5).map(|s| batch("agent-1", "boot-1", s, 10)).collect()).await;
    assert_eq!(acks.len(), 5);
    for (s, a) in acks.iter().enumerate() {
        let a = a.as_ref().unwrap();
        assert_eq!(
            (a.seq, a.first_leaf_index, a.last_leaf_index, a.duplicate),
            (s as u64, s as u64 * 10, s as u64 * 10 + 9, false)
        );
    }
    // A retry of batches 3 and 4 (e.g. after a lost ack) is stored once.
    let acks = send(
        srv.addr,
        vec![batch("agent-1", "boot-1", 3, 10), batch("agent-1", "boot-1", 4, 10), batch("agent-1", "boot-1", 5, 10)],
    )
    .await;
    let a: Vec<_> = acks.into_iter().map(Result::unwrap).collect();
    assert!(a[0].duplicate && a[0].first_leaf_index == 30);
    assert!(a[1].duplicate && a[1].last_leaf_index == 49);
    assert!(!a[2].duplicate && a[2].first_leaf_index == 50);
    // Another boot of the same agent has its own sequence.
    let a = send(srv.addr, vec![batch("agent-1", "boot-2", 0, 3)]).await;
    assert_eq!(a[0].as_ref().unwrap().first_leaf_index, 60);

    // Gap in the sequence, empty batch, missing ids: clear statuses, nothing stored.
    let a = send(srv.addr, vec![batch("agent-1", "boot-1", 9, 1)]).await;
    assert_eq!(a[0].as_ref().unwrap_err().code(), tonic::Code::FailedPrecondition);
    let a = send(srv.addr, vec![batch("agent-1", "boot-1", 6, 0)]).await;
    assert_eq!(a[0].as_ref().unwrap_err().code(), tonic::Code::InvalidArgument);
    let a = send(srv.addr, vec![batch("", "boot-1", 0, 1)]).await;
    assert_eq!(a[0].as_ref().unwrap_err().code(), tonic::Code::InvalidArgument);
    let a = send(srv.addr, vec![batch("agent-1", "boot-3", 0, 20_001)]).await;
    assert_eq!(a[0].as_ref().unwrap_err().code(), tonic::Code::ResourceExhausted);

    // Search by identity + protocol + time, payload text.
    let mut q = QueryClient::new(channel(srv.addr).await);
    let q0 = q.clone();
    let search = |f: Filter| {
        let mut q = q0.clone();
        async move {
            let mut s =
                q.search(SearchRequest { filter: Some(f), follow: false, ..Default::default() }).await?.into_inner();
            let mut v = Vec::new();
            while let Some(r) = s.next().await {
                v.push(r?);
            }
            Ok::<_, tonic::Status>(v)
        }
    };
    let r =
        search(Filter { identity: vec!["pod=pod-1".into()], app_protocol: "postgres".into(), ..Default::default() })
            .await
            .unwrap();
    let want: Vec<u64> = (0..60u64).filter(|i| i % 3 == 1 && i % 2 == 0).collect();
    assert_eq!(r.iter().map(|x| x.leaf_index).collect::<Vec<_>>(), want);
    let r = search(Filter { payload_text: "SELECT 42 ".into(), ..Default::default() }).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].leaf_index, 42);
    let r = search(Filter {
        from_time_ns: 1_000_010,
        to_time_ns: 1_000_013,
        agent_id: "agent-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(r.iter().map(|x| x.leaf_index).collect::<Vec<_>>(), vec![10, 11, 12]);
    let e = search(Filter { identity: vec!["novalue".into()], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = search(Filter { from_time_ns: 5, to_time_ns: 5, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Checkpoint + inclusion proof verify against it.
    // 63 records, and one access entry for each of the 3 searches answered.
    let cp = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(cp.size, 66);
    let v = Verifier::parse(&cp.verifier_key).unwrap();
    let sc = v.open(&cp.note).unwrap();
    let p = q.inclusion_proof(InclusionProofRequest { leaf_index: 42, tree_size: 66 }).await.unwrap().into_inner();
    let hashes: Vec<[u8; 32]> = p.hashes.iter().map(|h| h.as_slice().try_into().unwrap()).collect();
    let leaf = search(Filter { payload_text: "SELECT 42 ".into(), ..Default::default() }).await.unwrap().remove(0).leaf;
    wiretrail_log::merkle::verify_inclusion(
        42,
        66,
        &wiretrail_log::merkle::leaf_hash(&leaf),
        &hashes,
        &sc.checkpoint.root,
    )
    .unwrap();
    let e = q.inclusion_proof(InclusionProofRequest { leaf_index: 70, tree_size: 80 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    // The batch form gives the same proof; a leaf not below the size and an oversized batch are refused (unlogged).
    let proofs = |leaf_indexes: Vec<u64>| wiretrail_proto::v1::InclusionProofsRequest { leaf_indexes, tree_size: 66 };
    let ps = q.inclusion_proofs(proofs(vec![42, 7])).await.unwrap().into_inner().proofs;
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0].hashes, p.hashes);
    let e = q.inclusion_proofs(proofs(vec![1, 66])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = q.inclusion_proofs(proofs(vec![0; 10_001])).await.unwrap_err();
    assert!(e.message().contains("at most 10000"), "{e:?}");
    srv.stop().await;

    let (rep, state) = verify(dir.path(), &v, None, |_, _| {}).unwrap();
    assert_eq!(rep.first_bad, None, "{:?}", rep.problem);
    // And the access entries of the checkpoint, the proof, the batch of proofs and the last search.
    assert_eq!(rep.leaves, 70);
    assert!(rep.checkpoints_checked >= 1);
    // Restart: dedup survives, sequence continues.
    let srv = Server::start(plain_config(dir.path())).await;
    let a = send(srv.addr, vec![batch("agent-1", "boot-1", 5, 10), batch("agent-1", "boot-1", 6, 2)]).await;
    assert!(a[0].as_ref().unwrap().duplicate);
    assert_eq!(a[1].as_ref().unwrap().first_leaf_index, 70);
    srv.stop().await;
    // Incremental verification continues from the saved state.
    let (rep, _) = verify(dir.path(), &v, state, |_, _| {}).unwrap();
    assert_eq!(rep.first_bad, None, "{:?}", rep.problem);
    assert_eq!(rep.leaves, 2);
}
