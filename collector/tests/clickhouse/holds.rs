//! Legal holds shared by the collectors of one ClickHouse (a scenario of
//! `clickhouse.rs`, run against its servers).
use std::time::Duration;

use super::common::clickhouse::sql;
use super::common::*;
use super::{Reader, config, start};
use wiretrail_collector::clickhouse::ClickHouseConfig;
use wiretrail_proto::v1 as pb;
use wiretrail_proto::v1::retention_client::RetentionClient;

async fn holds_at(addr: std::net::SocketAddr) -> Vec<pb::Hold> {
    let mut c = RetentionClient::new(channel(addr).await);
    c.hold_list(pb::HoldListRequest {}).await.expect("hold list").into_inner().holds
}

/// A hold placed at collector A keeps collector B's matching records, though
/// B's retention would delete them (records 60 s, the clock 2 minutes ahead):
/// B deletes only its unheld segment, and lists the hold as A's. Lifted at B,
/// the held segment goes; A sees the lift once B has signed it, and the case
/// can be placed again. Both logs verify from ClickHouse.
pub async fn a_hold_placed_at_one_collector_holds_every_log(url: &str, cfg: ClickHouseConfig) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ca = config(da.path(), "hold-a", cfg.clone());
    ca.checkpoint_interval = Duration::from_millis(200);
    let a = start(ca).await;
    let filter = pb::HoldFilter { agent: "agent-held".into(), ..Default::default() };
    let mut ra = RetentionClient::new(channel(a.addr).await);
    let placed = ra
        .hold_place(pb::HoldPlaceRequest { case_id: "CASE-H".into(), filter: Some(filter.clone()) })
        .await
        .expect("hold placed at A")
        .into_inner()
        .hold
        .unwrap();
    assert_eq!(placed.origin, "hold-a");

    let policy = db.path().join("retention.yaml");
    std::fs::write(&policy, "communications: 60s\ncollector_entries: 1h\n").unwrap();
    let mut cb = config(&db.path().join("data"), "hold-b", cfg.clone());
    cb.store.segment_bytes = 1;
    cb.checkpoint_interval = Duration::from_millis(200);
    cb.retention = wiretrail_collector::retention::RetentionConfig {
        file: Some(policy),
        interval: Some(Duration::from_millis(200)),
        clock_offset_ns: 120_000_000_000,
    };
    let b = start(cb).await;
    // One segment per batch; the free one first, so that its deletion entry
    // closes the held one's segment.
    for a in send(b.addr, vec![batch("agent-free", "b", 0, 3), batch("agent-held", "b", 0, 3)]).await {
        a.expect("acknowledged");
    }
    let d = &cfg.database;
    let records = format!("SELECT count() FROM {d}.leaves WHERE origin = 'hold-b' AND kind = 'record' FORMAT TSV");
    let deletions = format!(
        "SELECT count() FROM {d}.leaves WHERE origin = 'hold-b' AND kind = 'entry:retention_deletion' FORMAT TSV"
    );
    eventually("B deletes its unheld segment", || async {
        (sql(url, &deletions).await.trim() == "1" && sql(url, &records).await.trim() == "3").then_some(())
    })
    .await;
    // Several passes later the held segment is still there.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(sql(url, &records).await.trim(), "3", "A's hold keeps B's records of agent-held");
    assert_eq!(sql(url, &deletions).await.trim(), "1");
    let at_b = holds_at(b.addr).await;
    assert_eq!(at_b.len(), 1, "{at_b:?}");
    assert_eq!(
        (at_b[0].case_id.as_str(), at_b[0].origin.as_str(), at_b[0].entry_leaf),
        ("CASE-H", "hold-a", placed.entry_leaf)
    );
    // The same case again, at B: refused, naming A.
    let mut rb = RetentionClient::new(channel(b.addr).await);
    let again = rb.hold_place(pb::HoldPlaceRequest { case_id: "CASE-H".into(), filter: Some(filter.clone()) }).await;
    let err = again.expect_err("CASE-H is held at A");
    assert!(err.message().contains("placed at collector hold-a"), "{err:?}");

    // Lifted at B: B's held segment goes; A sees the lift once B signed it.
    let lifted =
        rb.hold_lift(pb::HoldLiftRequest { case_id: "CASE-H".into() }).await.expect("lifted at B").into_inner();
    assert_eq!(lifted.hold.unwrap().origin, "hold-a");
    assert!(holds_at(b.addr).await.is_empty());
    eventually("B deletes the segment held before", || async {
        (sql(url, &deletions).await.trim() == "2" && sql(url, &records).await.trim() == "0").then_some(())
    })
    .await;
    eventually("A no longer lists the hold", || async { holds_at(a.addr).await.is_empty().then_some(()) }).await;
    ra.hold_place(pb::HoldPlaceRequest { case_id: "CASE-H".into(), filter: Some(filter) })
        .await
        .expect("the case placed again at A after its lift");
    a.stop().await;
    b.stop().await;
    let reader = Reader::open(&cfg).await.unwrap();
    for rep in reader.verify().await.unwrap() {
        assert!(rep.ok && rep.problems.is_empty(), "{rep:?}");
    }
}
