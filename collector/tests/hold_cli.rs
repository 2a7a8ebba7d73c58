//! Legal holds and early deletion through the `wiretrail` CLI over mTLS:
//! only the admin places and lifts holds; a deletion under a hold is refused
//! with the reason and the refusal is in the log; once lifted, the same
//! deletion goes and reading a deleted record says so.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use common::cli::{cli, ingest_tls, json_lines, ok};
use common::*;
use wiretrail_collector::tls::TlsFiles;

const S: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_early_deletion_through_the_cli() {
    let certs_dir = tempfile::tempdir().unwrap();
    let dir = certs_dir.path();
    certs::generate(dir, &["agent", "rita:reviewer", "admin"]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("retention.yaml");
    std::fs::write(&policy, "communications: 60s\n").unwrap();
    let mut cfg = plain_config(&data.path().join("data"));
    cfg.tls = Some(TlsFiles::in_dir(dir, "collector"));
    cfg.store.segment_bytes = 1;
    cfg.checkpoint_interval = std::time::Duration::from_millis(100);
    cfg.retention = wiretrail_collector::retention::RetentionConfig {
        file: Some(policy),
        interval: None,
        // Records received now are two minutes old to retention: past their 60 s.
        clock_offset_ns: 120 * S,
    };
    let srv = Server::start(cfg).await;
    let addr = srv.addr;

    // The hold first (leaf 0), then one batch of 3 records in a segment of its own (leaves 1..4).
    let place = ["hold", "place", "--case", "CASE-7", "--agent", "node-*"];
    let (code, _, err) = cli(addr, dir, "rita", &place).await;
    assert!(code != 0 && err.contains("needs role admin"), "a reviewer placed a hold: {code} {err}");
    let placed = json_lines(&ok(addr, dir, "admin", &place).await);
    assert_eq!((placed[0]["case"].as_str(), placed[0]["entry_leaf"].as_u64()), (Some("CASE-7"), Some(0)));
    assert!(placed[0]["placed_by"].as_str().unwrap().contains("admin"), "{placed:?}");
    ingest_tls(addr, dir, batch("node-1", "b", 0, 3)).await;
    // A later append closes the batch's segment; a checkpoint then covers it.
    ok(addr, dir, "admin", &["hold", "place", "--case", "CASE-8", "--agent", "nobody"]).await;
    let listed = json_lines(&ok(addr, dir, "admin", &["hold", "list"]).await);
    assert_eq!(listed.iter().map(|h| h["case"].as_str().unwrap()).collect::<Vec<_>>(), ["CASE-7", "CASE-8"]);

    let delete = ["retention", "delete", "--leaf", "1", "--to", "3"];
    let refused = eventually("a refusal naming the hold", || async {
        let (code, _, err) = cli(addr, dir, "admin", &delete).await;
        (code != 0 && err.contains("legal hold: CASE-7")).then_some(err)
    })
    .await;
    assert!(
        refused.starts_with("error: deletion refused: ") && refused.trim_end().ends_with("[FailedPrecondition]"),
        "{refused}"
    );
    assert!(refused.contains("recorded"), "{refused}");
    let refusals = json_lines(&ok(addr, dir, "rita", &["query", "--json", "--entry-kind", "retention_refused"]).await);
    assert!(!refusals.is_empty(), "the refusal is in the log");

    ok(addr, dir, "admin", &["hold", "lift", "--case", "CASE-7"]).await;
    let deleted = json_lines(&ok(addr, dir, "admin", &delete).await);
    assert_eq!((deleted[0]["first_leaf"].as_u64(), deleted[0]["end_leaf"].as_u64()), (Some(1), Some(4)), "{deleted:?}");
    let (code, _, err) = cli(addr, dir, "rita", &["view", "--leaf", "2"]).await;
    assert!(code != 0 && err.contains("deleted by retention"), "{code} {err}");
    srv.stop().await;
}
