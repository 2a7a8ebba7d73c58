//! Evidence cannot be rewritten or forged through ingest: a batch reusing a
//! stored (agent, boot, seq) with other content is kept as a conflict (with
//! an alert), never dropped as a duplicate; a certificate cannot ship under
//! another's agent id unless the roles file binds it; lost keys are never
//! silently replaced.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use common::*;
use prost::Message;
use wiretrail_collector::tls::TlsFiles;
use wiretrail_log::store::{StoreConfig, StoreError, Writer};
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::{Batch, Filter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_duplicate_is_kept_and_alerted() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(d.path())).await;
    for s in 0..3 {
        send(srv.addr, vec![batch("agent-c", "b", s, 5)]).await.remove(0).unwrap();
    }
    // Same seq, same content: a duplicate.
    let a = send(srv.addr, vec![batch("agent-c", "b", 1, 5)]).await.remove(0).unwrap();
    assert!(a.duplicate && !a.conflict && a.first_leaf_index == 5);
    // Same seq, other content: kept whole as a conflict entry.
    let mut forged = batch("agent-c", "b", 1, 5);
    forged.records[2].payload = b"SELECT 'forged'".to_vec();
    let a = send(srv.addr, vec![forged.clone()]).await.remove(0).unwrap();
    assert!(a.conflict && !a.duplicate, "{a:?}");
    assert_eq!(a.first_leaf_index, 15);
    // Retried: the same conflict entry, not a second one.
    let again = send(srv.addr, vec![forged.clone()]).await.remove(0).unwrap();
    assert_eq!((again.conflict, again.first_leaf_index), (true, 15));
    let e = search(srv.addr, Filter { entry_kind: "batch_conflict".into(), ..Default::default() }).await;
    assert_eq!(e.len(), 1);
    let entry = e[0].decoded.clone().unwrap().entry.unwrap();
    assert_eq!(entry.subject, "agent-c");
    let kept = Batch::decode(entry.content.as_slice()).unwrap();
    assert_eq!(kept.records[2].payload, b"SELECT 'forged'".to_vec(), "the conflicting content is kept");
    let detail: serde_json::Value = serde_json::from_str(&entry.detail_json).unwrap();
    assert_eq!(detail["seq"], 1);
    assert_ne!(detail["stored_sha256"], detail["received_sha256"]);
    // The original batch is untouched and the sequence goes on.
    let orig = search(srv.addr, Filter { payload_text: "SELECT 7 FROM".into(), ..Default::default() }).await;
    assert_eq!(orig.len(), 1);
    let a = send(srv.addr, vec![batch("agent-c", "b", 3, 5)]).await.remove(0).unwrap();
    assert_eq!(a.first_leaf_index, 18, "after the conflict entry and the access entries of the two searches");
    eventually("conflict alert", || async {
        alerts(srv.addr).await.into_iter().find(|a| a.kind == "batch_conflict" && a.leaf_index == 15)
    })
    .await;
    srv.stop().await;
}

async fn ship(ch: tonic::transport::Channel, b: Batch) -> Result<wiretrail_proto::v1::Ack, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut s = IngestClient::new(ch).ingest(tokio_stream::iter(vec![b])).await?.into_inner();
    s.next().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_agent_id_is_refused_unless_the_roles_file_binds_it() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::generate(certs_dir.path(), &["agent", "intruder", "security"]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(certs_dir.path(), "collector"));
    let srv = Server::start(cfg.clone()).await;
    let agent = mtls(srv.addr, certs_dir.path(), "agent").await;
    let intruder = mtls(srv.addr, certs_dir.path(), "intruder").await;
    ship(agent.clone(), batch("node-a", "b", 0, 3)).await.unwrap();
    // Another certificate under node-a's id and next seq: refused, alerted.
    let e = ship(intruder.clone(), batch("node-a", "b", 1, 3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("CN=agent"), "{}", e.message());
    let e = ship(intruder.clone(), batch("node-a", "b", 1, 3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // The genuine batch 1 is stored, not dropped.
    let a = ship(agent.clone(), batch("node-a", "b", 1, 3)).await.unwrap();
    assert!(!a.duplicate && !a.conflict);
    let sec = mtls(srv.addr, certs_dir.path(), "security").await;
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(sec);
    let refused = {
        use tokio_stream::StreamExt;
        let f = Filter { entry_kind: "agent_id_refused".into(), ..Default::default() };
        let mut s = q
            .search(wiretrail_proto::v1::SearchRequest { filter: Some(f), follow: false, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut v = Vec::new();
        while let Some(r) = s.next().await {
            v.push(r.unwrap());
        }
        v
    };
    assert_eq!(refused.len(), 1, "one refusal entry per (agent id, identity)");
    let detail = refused[0].decoded.clone().unwrap().entry.unwrap().detail_json;
    assert!(detail.contains("CN=intruder") && detail.contains("CN=agent"), "{detail}");
    let alert = eventually("agent_id_refused alert", || {
        let mut q = q.clone();
        async move {
            use tokio_stream::StreamExt;
            let req =
                wiretrail_proto::v1::AlertsRequest { since_id: 0, kind: "agent_id_refused".into(), follow: false };
            let mut s = q.alerts(req).await.unwrap().into_inner();
            s.next().await.map(|a| a.unwrap())
        }
    })
    .await;
    assert_eq!((alert.identity_key.as_str(), alert.severity.as_str()), ("node-a", "high"));
    srv.stop().await;

    // A roles file binding both certificates to node-a lets either ship for it.
    let roles = certs_dir.path().join("roles.yaml");
    std::fs::write(
        &roles,
        "version: 1\nidentities:\n  - identity: \"CN=agent;*\"\n    agent_ids: [node-a]\n  - identity: \"CN=intruder;*\"\n    agent_ids: [\"node-*\"]\n",
    )
    .unwrap();
    cfg.roles = Some(roles);
    let srv = Server::start(cfg).await;
    let intruder = mtls(srv.addr, certs_dir.path(), "intruder").await;
    let a = ship(intruder, batch("node-a", "b", 2, 3)).await.unwrap();
    assert!(!a.duplicate);
    let agent = mtls(srv.addr, certs_dir.path(), "agent").await;
    ship(agent.clone(), batch("node-a", "b", 3, 3)).await.unwrap();
    // node-b is bound to the intruder's certificate only.
    let e = ship(agent, batch("node-b", "b", 0, 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    srv.stop().await;
}

#[test]
fn lost_signing_key_is_a_start_up_error_and_no_key_is_replaced() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut w, shared) = Writer::open(d.path(), StoreConfig::default()).unwrap();
        w.append(&[b"leaf".to_vec()]).unwrap();
        w.commit().unwrap();
        shared.issue_checkpoint().unwrap();
    }
    let verifier = std::fs::read(d.path().join("verifier.key")).unwrap();
    std::fs::remove_file(d.path().join("signing.key")).unwrap();
    for _ in 0..2 {
        match Writer::open(d.path(), StoreConfig::default()) {
            Err(StoreError::KeyMissing(p)) => assert!(p.ends_with("signing.key")),
            Err(e) => panic!("expected KeyMissing, got {e}"),
            Ok(_) => panic!("opened with a lost signing key"),
        }
        assert!(!d.path().join("signing.key").exists(), "a new signing key was written");
        assert_eq!(std::fs::read(d.path().join("verifier.key")).unwrap(), verifier, "verifier.key was replaced");
    }
    // A verifier key that does not match the signing key is refused, not overwritten.
    let other = tempfile::tempdir().unwrap();
    drop(Writer::open(other.path(), StoreConfig::default()).unwrap());
    std::fs::copy(other.path().join("signing.key"), d.path().join("signing.key")).unwrap();
    match Writer::open(d.path(), StoreConfig::default()) {
        Err(StoreError::KeyMismatch(_)) => {}
        Err(e) => panic!("expected KeyMismatch, got {e}"),
        Ok(_) => panic!("opened with a foreign signing key"),
    }
    assert_eq!(std::fs::read(d.path().join("verifier.key")).unwrap(), verifier);
}
