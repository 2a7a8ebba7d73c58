//! Checkpoint signing key rotation on a running collector (mTLS, one server):
//! only an admin may rotate; the rotation is a `key_rotation` entry covered
//! by a checkpoint of the old key; checkpoints before and after verify from
//! the first key, proofs span the rotation, bundles from before and after
//! verify offline, and a checkpoint signed by a key no rotation introduced
//! (or by the retired key, for a later size) is refused. The server's TLS
//! certificate is replaced on the same running collector: new connections
//! get the new certificate and the reload is a `tls_reload` entry; an
//! unusable one is refused (entry), the previous one stays in force.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use wiretrail_collector::export;
use wiretrail_collector::tls::TlsFiles;
use wiretrail_log::bundle::{Files, MANIFEST, Manifest, sha256_hex, verify_bundle};
use wiretrail_log::merkle::{Checkpoint, Hash, Signer, Verifier, verify_consistency, verify_inclusion};
use wiretrail_log::verify::background::VerifyConfig;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::keys_client::KeysClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{
    Batch, ConsistencyProofRequest, Filter, InclusionProofRequest, IssueCheckpointRequest, KeyHistoryRequest,
    RotateSigningKeyRequest, SearchRequest,
};

async fn ship(ch: Channel, b: Batch) {
    let mut s = IngestClient::new(ch).ingest(tokio_stream::iter(vec![b])).await.unwrap().into_inner();
    s.next().await.unwrap().unwrap();
}

fn hashes(v: &[Vec<u8>]) -> Vec<Hash> {
    v.iter().map(|h| h.as_slice().try_into().unwrap()).collect()
}

/// `files` with `name` replaced and the manifest rehashed (so only the
/// content check can catch the change).
fn with_file(files: &Files, name: &str, bytes: Option<Vec<u8>>) -> Files {
    let mut f = files.clone();
    match bytes {
        Some(b) => f.insert(name.into(), b),
        None => f.remove(name),
    };
    let mut m: Manifest = serde_json::from_slice(&f[MANIFEST]).unwrap();
    m.files = f.iter().filter(|(k, _)| *k != MANIFEST).map(|(k, v)| (k.clone(), sha256_hex(v))).collect();
    f.insert(MANIFEST.into(), m.canonical());
    f
}

fn append_checkpoint_line(dir: &std::path::Path, note: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("checkpoints.jsonl")).unwrap();
    writeln!(f, "{}", serde_json::json!({ "note": note })).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_keeps_the_chain_of_trust() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::generate(certs_dir.path(), &["agent", "security", "admin"]).unwrap();
    let logs = common::logs::capture_logs();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(certs_dir.path(), "collector"));
    cfg.verify = VerifyConfig { interval: Duration::from_secs(1), full_interval: Duration::from_secs(2) };
    let srv = Server::start(cfg.clone()).await;
    let (agent, sec, admin) = (
        mtls(srv.addr, certs_dir.path(), "agent").await,
        mtls(srv.addr, certs_dir.path(), "security").await,
        mtls(srv.addr, certs_dir.path(), "admin").await,
    );
    let first = Verifier::parse(&std::fs::read_to_string(data.path().join("verifier.key")).unwrap()).unwrap();
    ship(agent.clone(), batch("node-a", "b", 0, 4)).await;
    let mut q = QueryClient::new(sec.clone());
    let cp1 = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(cp1.verifier_key, first.key_string());
    let all = Filter { agent_id: "node-a".into(), ..Default::default() };
    let before = export::export(sec.clone(), all.clone(), |_| {}).await.unwrap();
    assert!(!before.contains_key("keys.jsonl"), "no rotation yet, no key chain");

    // Only an admin may rotate.
    for ch in [agent.clone(), sec.clone()] {
        let e = KeysClient::new(ch).rotate_signing_key(RotateSigningKeyRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("RotateSigningKey needs role admin"), "{}", e.message());
    }
    let r = KeysClient::new(admin.clone()).rotate_signing_key(RotateSigningKeyRequest {}).await.unwrap().into_inner();
    assert_eq!(r.old_key, first.key_string());
    let new = Verifier::parse(&r.new_key).unwrap();
    assert_ne!(r.new_key, r.old_key);
    // The rotation entry is covered by a checkpoint of the OLD key.
    let old_cp = first.open(&r.old_key_checkpoint).expect("old key signed the checkpoint covering the entry");
    assert_eq!(old_cp.checkpoint.size, r.old_key_last_size);
    assert!(r.entry_index < r.old_key_last_size);
    assert!(new.open(&r.old_key_checkpoint).is_err());
    let entries = {
        let f = Filter { entry_kind: "key_rotation".into(), ..Default::default() };
        let mut s = q
            .search(SearchRequest { filter: Some(f), follow: false, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut v = Vec::new();
        while let Some(x) = s.next().await {
            v.push(x.unwrap());
        }
        v
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].leaf_index, r.entry_index);
    let e = entries[0].decoded.clone().unwrap().entry.unwrap();
    assert!(e.subject.contains("CN=admin"), "who rotated: {}", e.subject);
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap();
    assert_eq!((d["old_key"].as_str(), d["new_key"].as_str()), (Some(&*r.old_key), Some(&*r.new_key)));
    let leaf_h = wiretrail_log::merkle::leaf_hash(&entries[0].leaf);
    let p = q
        .inclusion_proof(InclusionProofRequest { leaf_index: r.entry_index, tree_size: r.old_key_last_size })
        .await
        .unwrap()
        .into_inner();
    verify_inclusion(r.entry_index, r.old_key_last_size, &leaf_h, &hashes(&p.hashes), &old_cp.checkpoint.root).unwrap();

    // After: the new key signs; proofs span the rotation.
    ship(agent.clone(), batch("node-a", "b", 1, 4)).await;
    let cp2 = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(cp2.verifier_key, r.new_key, "checkpoints after the rotation are signed by the new key");
    assert!(cp2.size > r.old_key_last_size);
    let cp2s = new.open(&cp2.note).unwrap();
    assert!(first.open(&cp2.note).is_err(), "the old key no longer signs");
    let c = q
        .consistency_proof(ConsistencyProofRequest { from_size: cp1.size, to_size: cp2.size })
        .await
        .unwrap()
        .into_inner();
    let root1: Hash = cp1.root_hash.as_slice().try_into().unwrap();
    verify_consistency(cp1.size, cp2.size, &root1, &cp2s.checkpoint.root, &hashes(&c.hashes)).unwrap();
    // Background verification accepts checkpoints of both keys.
    eventually("a background verification past the rotation", || async {
        logs.text()
            .lines()
            .filter(|l| l.contains("background verification OK"))
            .filter_map(|l| l.split("verified_size=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .find(|s| *s >= cp2.size)
    })
    .await;
    assert_eq!(logs.count(&["verification_failed"]), 0, "{}", logs.text());
    let h = KeysClient::new(sec.clone()).key_history(KeyHistoryRequest {}).await.unwrap().into_inner();
    assert_eq!((h.first_key.as_str(), h.links.len()), (first.key_string().as_str(), 1));

    // Bundles from before and after the rotation verify from the first key.
    let after = export::export(sec.clone(), all.clone(), |_| {}).await.unwrap();
    assert!(after.contains_key("keys.jsonl"));
    verify_bundle(&before, Some(&first.key_string())).unwrap();
    let rep = verify_bundle(&after, Some(&first.key_string())).unwrap();
    assert!(rep.tree_size > r.old_key_last_size && rep.records == 8, "{rep:?}");
    verify_bundle(&after, Some(&r.new_key)).expect("pinning the rotated-in key works too");
    let e = verify_bundle(&with_file(&after, "keys.jsonl", None), Some(&first.key_string())).unwrap_err().to_string();
    assert!(e.contains("checkpoint.txt: signature or format invalid"), "{e}");
    // A chain naming a key no rotation entry introduced is refused.
    let forged = Signer::from_seed(&first.name, &[7; 32]).unwrap().verifier().key_string();
    let chain = String::from_utf8(after["keys.jsonl"].clone()).unwrap().replace(&r.new_key, &forged);
    let e = verify_bundle(&with_file(&after, "keys.jsonl", Some(chain.into_bytes())), Some(&first.key_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("keys.jsonl: key rotation 0") && e.contains("not "), "{e}");
    let certs_b = tempfile::tempdir().unwrap();
    tls_reload_is_recorded(srv.addr, certs_dir.path(), certs_b.path()).await;
    srv.stop().await;

    // Offline: `verify` from the first key follows the history.
    let dir = data.path();
    let verify = || wiretrail_log::verify::verify(dir, &first, None, |_, _| {});
    let (rep, _) = verify().unwrap();
    assert_eq!((rep.first_bad, rep.problem.clone()), (None, None));
    assert!(rep.checkpoints_checked >= 3 && rep.verified_size >= cp2.size, "{rep:?}");
    let pristine = std::fs::read(dir.join("checkpoints.jsonl")).unwrap();
    let root_now = cp2s.checkpoint.root;
    // Forged checkpoints at the latest size (so only their signature can be wrong).
    let ring = wiretrail_log::store::load_keyring(dir, &first).unwrap();
    let last = wiretrail_log::store::load_checkpoints(dir, &ring).unwrap().last().unwrap().checkpoint.size;
    let forge = |seed: &[u8; 32], size: u64| {
        Signer::from_seed(&first.name, seed)
            .unwrap()
            .sign(&Checkpoint { origin: first.name.clone(), size, root: root_now })
            .note
    };
    // A checkpoint by a key outside the history is refused ...
    append_checkpoint_line(dir, &forge(&[7; 32], last));
    let e = verify().unwrap_err().to_string();
    assert!(e.contains("no key of the log's key history"), "{e}");
    std::fs::write(dir.join("checkpoints.jsonl"), &pristine).unwrap();
    // ... and so is one by the retired key for a size after its range.
    let old_seed: [u8; 32] =
        hex::decode(std::fs::read_to_string(dir.join("signing.key")).unwrap().trim()).unwrap().try_into().unwrap();
    append_checkpoint_line(dir, &forge(&old_seed, last));
    let e = verify().unwrap_err().to_string();
    assert!(e.contains(&format!("may sign only sizes 0..={}", r.old_key_last_size)), "{e}");
    std::fs::write(dir.join("checkpoints.jsonl"), &pristine).unwrap();
    // The key in force signing a second root for a signed size: a fork.
    let seed_file = dir.join(format!("keys/signing-{}.key", new.id_hex()));
    let new_seed: [u8; 32] =
        hex::decode(std::fs::read_to_string(seed_file).unwrap().trim()).unwrap().try_into().unwrap();
    append_checkpoint_line(dir, &forge(&new_seed, last));
    let (rep, _) = verify().unwrap();
    assert!(rep.problem.as_deref().unwrap_or("").contains("states a different root"), "{rep:?}");
    std::fs::write(dir.join("checkpoints.jsonl"), &pristine).unwrap();
    // A history line pointing at a leaf that is not the rotation entry is found.
    let hist_path = dir.join("keys/history.jsonl");
    let hist = std::fs::read_to_string(&hist_path).unwrap();
    std::fs::write(&hist_path, hist.replace(&format!("\"entry_index\":{}", r.entry_index), "\"entry_index\":0"))
        .unwrap();
    let (rep, _) = verify().unwrap();
    assert_eq!(rep.first_bad, Some(0), "{rep:?}");
    assert!(rep.problem.as_deref().unwrap().contains("not a key_rotation entry"), "{rep:?}");
    std::fs::write(&hist_path, &hist).unwrap();

    // A restarted collector signs with the rotated-in key.
    let srv = Server::start(cfg).await;
    let agent = mtls(srv.addr, certs_b.path(), "agent").await;
    ship(agent, batch("node-a", "b", 2, 4)).await;
    let sec = mtls(srv.addr, certs_b.path(), "security").await;
    let cp3 = QueryClient::new(sec.clone()).issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    assert_eq!(cp3.verifier_key, r.new_key);
    new.open(&cp3.note).unwrap();
    // A second rotation: the chain has two links, followed from the first key.
    let admin = mtls(srv.addr, certs_b.path(), "admin").await;
    let r2 = KeysClient::new(admin).rotate_signing_key(RotateSigningKeyRequest {}).await.unwrap().into_inner();
    assert_eq!(r2.old_key, r.new_key);
    new.open(&r2.old_key_checkpoint).expect("the second key signed the checkpoint covering the second rotation");
    let third = export::export(sec, all, |_| {}).await.unwrap();
    assert_eq!(String::from_utf8(third["keys.jsonl"].clone()).unwrap().lines().count(), 2);
    let rep = verify_bundle(&third, Some(&first.key_string())).unwrap();
    assert!(rep.tree_size > r2.old_key_last_size, "{rep:?}");
    srv.stop().await;
    let (rep, _) = verify().unwrap();
    assert_eq!(rep.first_bad, None, "{rep:?}");
}

/// The certificate the collector at `addr` presents to a new connection
/// (trusting and authenticating with the files of `dir`), as SHA-256 hex.
async fn served_cert(addr: std::net::SocketAddr, dir: &std::path::Path) -> Result<String, String> {
    use tokio_rustls::rustls::{ClientConfig, pki_types::ServerName};
    let files = TlsFiles::in_dir(dir, "security");
    let (certs, key, roots) = wiretrail_collector::tls::load(&files).map_err(|e| e.to_string())?;
    let cfg = ClientConfig::builder_with_provider(wiretrail_collector::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("collector").unwrap();
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = s.get_ref().1.peer_certificates().ok_or("no server certificate")?[0].clone();
    Ok(wiretrail_collector::tls::reload::CertInfo::of(&peer).sha256)
}

fn pem_sha256(path: &std::path::Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap();
    wiretrail_collector::tls::reload::CertInfo::of(&der).sha256
}

/// `tls_reload` entries (details), read with the certificates of `dir`.
async fn tls_entries(addr: std::net::SocketAddr, dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut q = QueryClient::new(mtls(addr, dir, "security").await);
    let f = Filter { entry_kind: "tls_reload".into(), ..Default::default() };
    let mut s =
        q.search(SearchRequest { filter: Some(f), follow: false, ..Default::default() }).await.unwrap().into_inner();
    let mut v = Vec::new();
    while let Some(x) = s.next().await {
        v.push(serde_json::from_str(&x.unwrap().decoded.unwrap().entry.unwrap().detail_json).unwrap());
    }
    v
}

/// Replaces the served files in `served` with a new CA's (from `next`):
/// new connections see the new certificate and the reload is in the log; an
/// unusable certificate file is refused, recorded, and the new one stays.
async fn tls_reload_is_recorded(addr: std::net::SocketAddr, served: &std::path::Path, next: &std::path::Path) {
    certs::generate(next, &["agent", "security", "admin"]).unwrap();
    let new_fp = pem_sha256(&next.join("collector.pem"));
    assert_ne!(served_cert(addr, served).await.unwrap(), new_fp);
    for f in ["ca.pem", "collector.key", "collector.pem"] {
        let tmp = served.join(format!("{f}.tmp"));
        std::fs::copy(next.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, served.join(f)).unwrap();
    }
    let got = eventually("the new certificate on a new connection", || async {
        served_cert(addr, next).await.ok().filter(|fp| *fp == new_fp)
    })
    .await;
    assert_eq!(got, new_fp);
    let ok = eventually("a tls_reload entry for the new certificate", || async {
        tls_entries(addr, next).await.into_iter().find(|d| d["ok"] == true && d["certificate"]["sha256"] == new_fp)
    })
    .await;
    assert!(ok["certificate"]["subject"].as_str().unwrap().contains("collector"), "{ok}");
    assert!(ok["certificate"]["not_after"].as_str().unwrap().len() >= 20, "{ok}");
    // An unusable certificate: refused, recorded, the previous one served.
    std::fs::write(served.join("collector.pem"), b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let refused = eventually("a refused tls_reload entry", || async {
        tls_entries(addr, next).await.into_iter().find(|d| d["ok"] == false)
    })
    .await;
    assert_eq!(refused["kept"]["sha256"], new_fp.as_str(), "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("collector.pem"), "{refused}");
    assert_eq!(served_cert(addr, next).await.unwrap(), new_fp, "the previous certificate stays in force");
    std::fs::copy(next.join("collector.pem"), served.join("collector.pem")).unwrap();
}
