//! Continuous verification: a running collector finds a byte flipped in its
//! log on disk by itself, raises one `verification_failed` alert naming the
//! leaf, and keeps the finding in its log.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use wiretrail_log::verify::background::VerifyConfig;
use wiretrail_proto::v1::IssueCheckpointRequest;
use wiretrail_proto::v1::query_client::QueryClient;

/// Offset of leaf `i`'s frame in its segment (from `log/offsets`).
fn frame_offset(dir: &std::path::Path, i: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(dir.join("log/offsets")).unwrap().read_exact_at(&mut b, i * 8).unwrap();
    u64::from_le_bytes(b)
}

fn failures(alerts: &[wiretrail_proto::v1::Alert]) -> Vec<serde_json::Value> {
    alerts
        .iter()
        .filter(|a| a.kind == "verification_failed")
        .map(|a| serde_json::from_str(&a.detail_json).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_byte_flipped_on_disk_is_found_by_the_running_collector() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(d.path());
    // Incremental runs every second, full runs every two (whichever first
    // reads the flipped leaf finds it).
    cfg.verify = VerifyConfig { interval: Duration::from_secs(1), full_interval: Duration::from_secs(2) };
    let server = Server::start(cfg).await;
    let acks = send(server.addr, (0..4).map(|s| compressible_batch("node-a", "boot-1", s, 25)).collect()).await;
    assert!(acks.iter().all(|a| a.is_ok()), "{acks:?}");
    let mut q = QueryClient::new(channel(server.addr).await);
    let cp = q.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    let size = cp.size;
    assert_eq!(size, 100);
    // The flip must not land under the indexer (it would stop there, and
    // with it every alert after): let it index the 100 records first.
    eventually("the index to cover the records", || {
        let mut q = q.clone();
        async move {
            let inv = q.inventory(wiretrail_proto::v1::InventoryRequest { shadow_only: false }).await.ok()?;
            (inv.into_inner().indexed >= size).then_some(())
        }
    })
    .await;
    assert!(failures(&alerts(server.addr).await).is_empty(), "a clean log raised a verification alert");

    // Flip one payload byte of leaf 57 in place, as a failing disk would
    // (the middle of its body: compressed data, the leaf being compressed).
    let seg = d.path().join("log/seg-00000000000000000000.wtl");
    let body = frame_offset(d.path(), 57) + wiretrail_log::frame::HEADER_LEN as u64;
    let at = body + (frame_offset(d.path(), 58) - body) / 2;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();

    let found = eventually("a verification_failed alert", || async {
        let f = failures(&alerts(server.addr).await);
        (!f.is_empty()).then_some(f)
    })
    .await;
    let detail = &found[0];
    assert_eq!(detail["first_bad"], 57, "{detail}");
    assert!(detail["run"] == "full" || detail["run"] == "incremental", "{detail}");
    assert_eq!(detail["upto"], size, "{detail}");
    assert!(detail["problem"].as_str().unwrap().contains("leaf hash"), "{detail}");

    // Later runs see the same first bad leaf: still one alert (after two
    // more full runs).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = alerts(server.addr).await;
    assert_eq!(failures(&again).len(), 1, "the finding was appended more than once: {again:?}");
    server.stop().await;
}
