//! Review marks through the `wiretrail` CLI over mTLS with certificates from
//! `cargo xtask certs`: a reviewer marks records and a conversation, marks
//! are listed by reviewer, item, action and time (from the log's tail and,
//! once indexed, from the index), `wiretrail view` shows a record's marks,
//! other roles are refused, and the log with its marks verifies.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::path::Path;

use common::cli::{cli, ingest_tls as ingest, json_lines, ok};
use common::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use wiretrail_collector::tls::TlsFiles;
use wiretrail_proto::v1::InventoryRequest;
use wiretrail_proto::v1::query_client::QueryClient;

const CLIENTS: [&str; 4] = ["agent", "rita:reviewer", "auditor", "admin"];

/// The mark leaf indexes `review list --json ARGS` returns (as the auditor).
async fn listed(addr: SocketAddr, dir: &Path, args: &[&str]) -> Vec<u64> {
    let mut a = vec!["review", "list", "--json"];
    a.extend_from_slice(args);
    json_lines(&ok(addr, dir, "auditor", &a).await).iter().map(|m| m["leaf_index"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_marks_round_trip_through_the_cli() {
    let certs_dir = tempfile::tempdir().unwrap();
    let dir = certs_dir.path();
    certs::generate(dir, &CLIENTS).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(dir, "collector"));
    let srv = Server::start(cfg).await;
    let addr = srv.addr;
    // Leaves 0..14: record(i) has conn_id i % 7 (agent node-1, boot b).
    ingest(addr, dir, batch("node-1", "b", 0, 14)).await;

    // --- Marks by the reviewer: records 1 and 2; conversation 3 (leaves 3 and 10).
    let before = wiretrail_log::store::now_ns();
    let out = ok(
        addr,
        dir,
        "rita",
        &[
            "review",
            "mark",
            "--leaf",
            "1",
            "--leaf",
            "2",
            "--action",
            "escalated",
            "--comment",
            "odd query",
            "--case",
            "C-7",
        ],
    )
    .await;
    let m1 = json_lines(&out)[0].clone();
    let m1_leaf = m1["leaf_index"].as_u64().unwrap();
    assert!(m1_leaf >= 14, "{m1}");
    let reviewer = m1["reviewer"].as_str().unwrap().to_string();
    assert!(reviewer.starts_with("CN=rita") && reviewer.contains("spiffe://wiretrail/role/reviewer/rita"), "{m1}");
    let out =
        ok(addr, dir, "rita", &["review", "mark", "--conn", "node-1/b/3", "--action", "closed", "--comment", "fine"])
            .await;
    let m2_leaf = json_lines(&out)[0]["leaf_index"].as_u64().unwrap();
    assert!(m2_leaf > m1_leaf);

    // --- Refusals: other roles, unknown actions, items that are not records.
    for who in ["agent", "auditor", "admin"] {
        let (code, _, err) =
            cli(addr, dir, who, &["review", "mark", "--leaf", "1", "--action", "closed", "--comment", "x"]).await;
        assert!(code != 0 && err.contains("ReviewMark needs role reviewer"), "{who}: {err}");
    }
    let (code, _, err) =
        cli(addr, dir, "rita", &["review", "mark", "--leaf", "1", "--action", "approve", "--comment", "x"]).await;
    assert!(code != 0 && err.contains("unknown review action") && err.contains("approve"), "{err}");
    let entry = m1_leaf.to_string();
    let (code, _, err) =
        cli(addr, dir, "rita", &["review", "mark", "--leaf", &entry, "--action", "closed", "--comment", "x"]).await;
    assert!(code != 0 && err.contains("is a collector entry, not a record"), "{err}");
    let (code, _, err) =
        cli(addr, dir, "rita", &["review", "mark", "--leaf", "999999", "--action", "closed", "--comment", "x"]).await;
    assert!(code != 0 && err.contains("beyond the log's size"), "{err}");
    let (code, _, err) = cli(addr, dir, "agent", &["review", "list"]).await;
    assert!(code != 0 && err.contains("ReviewList needs role reviewer or auditor"), "{err}");

    // --- Listing (marks still in the log's unindexed tail or already indexed).
    let check = |phase: &'static str| async move {
        assert_eq!(listed(addr, dir, &[]).await, [m1_leaf, m2_leaf], "{phase}: all");
        assert_eq!(listed(addr, dir, &["--leaf", "1"]).await, [m1_leaf], "{phase}: leaf 1");
        assert_eq!(listed(addr, dir, &["--leaf", "10"]).await, [m2_leaf], "{phase}: leaf 10 (conversation 3)");
        assert!(listed(addr, dir, &["--leaf", "4"]).await.is_empty(), "{phase}: leaf 4");
        assert_eq!(listed(addr, dir, &["--conn", "node-1/b/3"]).await, [m2_leaf], "{phase}: conversation");
        assert_eq!(listed(addr, dir, &["--action", "escalated"]).await, [m1_leaf], "{phase}: action");
        assert_eq!(listed(addr, dir, &["--reviewer", "*role/reviewer/rita*"]).await.len(), 2, "{phase}: reviewer");
        assert!(listed(addr, dir, &["--reviewer", "*role/reviewer/bob*"]).await.is_empty(), "{phase}: other reviewer");
        assert_eq!(listed(addr, dir, &["--since", "1h"]).await.len(), 2, "{phase}: since");
        assert!(listed(addr, dir, &["--to-ns", &before.to_string()]).await.is_empty(), "{phase}: before the marks");
    };
    check("tail").await;
    let full = json_lines(&ok(addr, dir, "rita", &["review", "list", "--json", "--action", "escalated"]).await);
    assert_eq!(
        (full[0]["comment"].as_str(), full[0]["case_id"].as_str(), full[0]["leaves"].clone()),
        (Some("odd query"), Some("C-7"), serde_json::json!([1, 2]))
    );
    assert_eq!(full[0]["reviewer"].as_str(), Some(reviewer.as_str()));

    // --- `wiretrail view` shows a record's marks (by leaf and by conversation).
    let v = json_lines(&ok(addr, dir, "rita", &["view", "--leaf", "1", "--to", "3"]).await);
    let marks = |i: usize| -> Vec<u64> {
        v[i]["review_marks"].as_array().unwrap().iter().map(|m| m["leaf_index"].as_u64().unwrap()).collect()
    };
    assert_eq!((marks(0), marks(1), marks(2)), (vec![m1_leaf], vec![m1_leaf], vec![m2_leaf]));
    let text = ok(addr, dir, "rita", &["view", "--leaf", "3", "--text"]).await;
    assert!(text.contains("reviewed:") && text.contains("closed") && text.contains("fine"), "{text}");

    // --- Once indexed: a record ingested after the marks shows in the
    // inventory only when the indexer has passed them; the same answers.
    ingest(addr, dir, batch("node-1", "b", 1, 1)).await;
    let ch = {
        let r = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(r("ca.pem")))
            .identity(Identity::from_pem(r("auditor.pem"), r("auditor.key")))
            .domain_name("collector");
        Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
    };
    let q = QueryClient::new(ch);
    eventually("the late record indexed", || {
        let mut q = q.clone();
        async move {
            let inv = q.inventory(InventoryRequest { shadow_only: false }).await.unwrap().into_inner();
            (inv.entries.iter().map(|e| e.records).sum::<u64>() >= 15).then_some(())
        }
    })
    .await;
    check("indexed").await;

    // --- An export over mTLS is sealed: signed manifest, the export's own
    // access record (the search by the same certificate) inside.
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("b");
    ok(addr, dir, "rita", &["export", "--out", bundle.to_str().unwrap(), "--identity", "pod=pod-1", "--case", "C-8"])
        .await;
    let vb = std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["verify-bundle", bundle.to_str().unwrap(), "--key", data.path().join("verifier.key").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&vb.stderr);
    assert!(vb.status.success() && stderr.contains("manifest signed"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&vb.stdout).unwrap();
    assert_eq!(report["manifest_signed"], true, "{report}");
    let access: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("access.json")).unwrap()).unwrap();
    assert_eq!(access["leaf_index"], report["access_leaf"], "{report}");
    assert_eq!(
        (access["detail"]["identity"].as_str(), access["detail"]["case_id"].as_str()),
        (Some(reviewer.as_str()), Some("C-8"))
    );

    // --- The marks are in the log the checkpoints cover: verify passes.
    srv.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["verify", "--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("OK:"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["leaves"].as_u64().unwrap() > m2_leaf, "{report}");
}
