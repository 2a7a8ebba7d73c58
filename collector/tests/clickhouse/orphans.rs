//! The log of a collector that is gone for good is expired by a live one (a
//! scenario of `clickhouse.rs`, run against its servers).
use std::time::Duration;

use super::common::clickhouse::sql;
use super::common::*;
use super::{Reader, config, start};
use wiretrail_collector::clickhouse::ClickHouseConfig;
use wiretrail_proto::v1 as pb;
use wiretrail_proto::v1::retention_client::RetentionClient;

/// Collector X records two batches (agent-old, agent-kept), a hold on
/// agent-kept is placed at X, and X goes with its disk. Collector Y (orphan
/// time 2 s; records 60 s, the clock 2 minutes ahead) finds X's log
/// orphaned and expires it: agent-old's records go, by a deletion entry in
/// Y's log naming X; the held ones and X's own entries stay. X's log still
/// verifies from ClickHouse (the kept hashes in Y's entry stand in). The
/// hold lifted at Y, the rest of X's records go too.
pub async fn an_orphaned_log_is_expired_by_a_live_collector(url: &str, cfg: ClickHouseConfig) {
    let dx = tempfile::tempdir().unwrap();
    let mut cx = config(dx.path(), "orphan-x", cfg.clone());
    cx.checkpoint_interval = Duration::from_millis(200);
    let x = start(cx).await;
    let mut rx = RetentionClient::new(channel(x.addr).await);
    let filter = pb::HoldFilter { agent: "agent-kept".into(), ..Default::default() };
    rx.hold_place(pb::HoldPlaceRequest { case_id: "CASE-O".into(), filter: Some(filter) }).await.expect("hold placed");
    for a in send(x.addr, vec![batch("agent-old", "b", 0, 3), batch("agent-kept", "b", 0, 3)]).await {
        a.expect("acknowledged");
    }
    x.stop().await;
    drop(dx);

    let d = &cfg.database;
    let count = |origin: &str, what: &str| {
        format!("SELECT count() FROM {d}.leaves WHERE origin = '{origin}' AND {what} FORMAT TSV")
    };
    let (old, kept) = (count("orphan-x", "agent_id = 'agent-old'"), count("orphan-x", "agent_id = 'agent-kept'"));
    let entries_x = count("orphan-x", "kind LIKE 'entry:%'");
    let before = sql(url, &entries_x).await;
    assert_eq!((sql(url, &old).await.trim(), sql(url, &kept).await.trim()), ("3", "3"));

    let dy = tempfile::tempdir().unwrap();
    let policy = dy.path().join("retention.yaml");
    std::fs::write(&policy, "communications: 60s\ncollector_entries: 1h\n").unwrap();
    let mut cy = config(
        &dy.path().join("data"),
        "orphan-y",
        ClickHouseConfig { orphan_after: Some(Duration::from_secs(2)), ..cfg.clone() },
    );
    cy.checkpoint_interval = Duration::from_millis(200);
    cy.retention = wiretrail_collector::retention::RetentionConfig {
        file: Some(policy),
        interval: Some(Duration::from_millis(300)),
        clock_offset_ns: 120_000_000_000,
    };
    let y = start(cy).await;
    let by_y = count("orphan-y", "kind = 'entry:retention_deletion'");
    eventually("Y expires the orphaned log's unheld records", || async {
        (sql(url, &old).await.trim() == "0" && sql(url, &by_y).await.trim() == "1").then_some(())
    })
    .await;
    assert_eq!(sql(url, &kept).await.trim(), "3", "held records stay");
    assert_eq!(sql(url, &entries_x).await, before, "the orphaned log's own entries stay");
    let rep = verified(&cfg, 3).await;
    assert_eq!(rep.verified_size, rep.leaves, "{rep:?}");

    // Lifted at Y: the rest goes.
    let mut ry = RetentionClient::new(channel(y.addr).await);
    let lifted = ry.hold_lift(pb::HoldLiftRequest { case_id: "CASE-O".into() }).await.expect("lifted at Y");
    assert_eq!(lifted.into_inner().hold.unwrap().origin, "orphan-x");
    eventually("Y expires the records held before", || async {
        (sql(url, &kept).await.trim() == "0" && sql(url, &by_y).await.trim() == "2").then_some(())
    })
    .await;
    verified(&cfg, 6).await;
    y.stop().await;

    // Another log's deletion entry counts only when that log verifies and
    // its signed tree holds that entry: a second row inserted at the index of
    // Y's entry, claiming the same leaves with their real hashes, makes Y's
    // log fail, and X's deleted leaves are no longer explained.
    let r = Reader::open(&cfg).await.unwrap();
    let (mut ex, _) = r.expired(Some("orphan-x")).await.unwrap();
    let real = ex.remove("orphan-x").unwrap().into_iter().find(|e| e.first == 1).expect("Y's first deletion");
    assert_eq!(real.by.as_deref(), Some("orphan-y"));
    let content: Vec<u8> = real.hashes.concat();
    let detail = serde_json::json!({ "origin": "orphan-x", "first_leaf": 1, "end_leaf": 4, "forged": true,
        "kept_hashes_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content)) });
    let leaf = wiretrail_log::entry::leaf(
        wiretrail_log::entry::new(wiretrail_log::entry::RETENTION_DELETION, 1, "forged", detail, content),
        "",
    );
    let h = wiretrail_log::merkle::leaf_hash(&leaf);
    let row =
        wiretrail_collector::clickhouse::writer::LeafRow::new("orphan-y", real.entry_leaf, leaf, h, [0u8; 32]).unwrap();
    let client = ::clickhouse::Client::default().with_url(url).with_database(d).with_validation(false);
    let mut ins = client
        .insert::<wiretrail_collector::clickhouse::writer::LeafRow>("leaves")
        .await
        .unwrap()
        .with_setting("insert_distributed_sync", "1");
    ins.write(&row).await.unwrap();
    ins.end().await.unwrap();
    let reps = r.verify().await.unwrap();
    let y = reps.iter().find(|r| r.origin == "orphan-y").unwrap();
    assert!(!y.ok && y.problems.iter().any(|p| p.contains("two different rows")), "{y:?}");
    let x = reps.iter().find(|r| r.origin == "orphan-x").unwrap();
    assert!(!x.ok && x.first_bad_leaf == Some(1), "{x:?}");
    let named = format!("entry of log orphan-y at leaf {} that would explain it does not count", real.entry_leaf);
    assert!(x.problems.iter().any(|p| p.contains(&named) && p.contains("does not verify")), "{x:?}");
}

/// Waits until both logs verify from ClickHouse with `n` of X's leaves
/// verified by kept hashes (Y's entry counts once a checkpoint of Y covers
/// it); X's report.
async fn verified(cfg: &ClickHouseConfig, n: u64) -> wiretrail_collector::clickhouse::verify::OriginReport {
    eventually("both logs verify from ClickHouse", || async {
        let reps = Reader::open(cfg).await.unwrap().verify().await.unwrap();
        let y_ok = reps.iter().any(|r| r.origin == "orphan-y" && r.ok);
        let x = reps.into_iter().find(|r| r.origin == "orphan-x")?;
        (y_ok && x.ok && x.expired == n && x.expired_by.get("orphan-y") == Some(&n)).then_some(x)
    })
    .await
}
