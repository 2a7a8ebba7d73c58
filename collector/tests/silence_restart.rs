//! Silence across the collector's own restarts: an agent that stops while
//! the collector is down is still reported once the collector is back (its
//! last heartbeat is read from the log), and a silence alerted before a
//! restart is not alerted again; the agent's return states the whole hole.

mod common;

use std::time::Duration;

use common::{Server, alerts, eventually, plain_config, send};
use wiretrail_proto::v1::{Batch, Heartbeat, Record, RecordKind};

const AFTER: Duration = Duration::from_millis(400);

fn heartbeat_batch(seq: u64, number: u64, t: i64) -> Batch {
    let r = Record {
        kind: RecordKind::Heartbeat as i32,
        capture_time_ns: t,
        host: "node-a".into(),
        heartbeat: Some(Heartbeat { number, interval_ms: 100, kernel_events: 10 * number, ..Default::default() }),
        ..Default::default()
    };
    Batch { agent_id: "a1".into(), boot_id: "boot-1".into(), seq, records: vec![r], ..Default::default() }
}

fn config(dir: &std::path::Path) -> wiretrail_collector::ServeConfig {
    let mut cfg = plain_config(dir);
    cfg.silence.after = AFTER;
    cfg
}

async fn silent_alerts(s: &Server) -> Vec<wiretrail_proto::v1::Alert> {
    alerts(s.addr).await.into_iter().filter(|a| a.kind == "agent_silent").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_gone_while_the_collector_was_down_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let now = wiretrail_log::store::now_ns();
    let s = Server::start(config(dir.path())).await;
    let acks = send(s.addr, vec![heartbeat_batch(0, 1, now)]).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    // Stopped before the threshold: this collector never saw the agent silent.
    s.stop().await;
    // The agent sends nothing more; the collector is down for longer than the threshold.
    tokio::time::sleep(AFTER + Duration::from_millis(100)).await;

    let s = Server::start(config(dir.path())).await;
    let alert =
        eventually("the silence alert after the restart", || async { silent_alerts(&s).await.into_iter().next() })
            .await;
    let detail: serde_json::Value = serde_json::from_str(&alert.detail_json).unwrap();
    assert_eq!(detail["agent_id"], "a1", "{detail}");
    assert_eq!(detail["known_from_log_at_start"], true, "{detail}");
    assert_eq!(detail["last_heartbeat"]["number"], 1, "{detail}");
    assert_eq!(detail["last_heartbeat"]["time_ns"], now, "{detail}");
    assert!(detail["silent_for_ns"].as_i64().unwrap() > AFTER.as_nanos() as i64, "{detail}");
    s.stop().await;

    // Restarted again while the agent is still silent: the open alert is not raised twice.
    let s = Server::start(config(dir.path())).await;
    tokio::time::sleep(AFTER * 3).await;
    let again = silent_alerts(&s).await;
    assert_eq!(again.len(), 1, "{again:?}");

    // It comes back: one return alert whose hole runs from the heartbeat before the first restart.
    let back_t = wiretrail_log::store::now_ns();
    let acks = send(s.addr, vec![heartbeat_batch(1, 30, back_t)]).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    let back = eventually("the return alert", || async {
        alerts(s.addr).await.into_iter().find(|a| a.kind == "agent_returned")
    })
    .await;
    let detail: serde_json::Value = serde_json::from_str(&back.detail_json).unwrap();
    assert_eq!((detail["hole_from_ns"].as_i64(), detail["hole_to_ns"].as_i64()), (Some(now), Some(back_t)), "{detail}");
    assert_eq!(detail["restarted"], false, "{detail}");
    assert_eq!(detail["across_hole"]["heartbeats_missed"], 28, "{detail}");
    s.stop().await;
}
