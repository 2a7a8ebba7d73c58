//! Clustered mode against real ClickHouse servers started here (Debian's
//! 18.16: two replicas of one shard + ZooKeeper, ReplicatedMergeTree +
//! Distributed, insert_quorum=2). One cluster for the binary, one test
//! running the scenarios in order (each in its own database).

mod common;
#[path = "clickhouse/expiry.rs"]
mod expiry;
#[path = "clickhouse/holds.rs"]
mod holds;
#[path = "clickhouse/orphans.rs"]
mod orphans;
#[path = "clickhouse/search.rs"]
mod search;

use std::time::Duration;

use common::clickhouse::{Cluster, Modern, sql};
use common::*;
use wiretrail_collector::clickhouse::ClickHouseConfig;
use wiretrail_collector::clickhouse::reader::Reader;
use wiretrail_proto::v1::Filter;

fn ch(url: &str, db: &str) -> ClickHouseConfig {
    ch_with(url, db, Some("wt"), 2)
}

fn ch_with(url: &str, db: &str, cluster: Option<&str>, quorum: u32) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.into(),
        database: db.into(),
        cluster: cluster.map(String::from),
        quorum,
        user: None,
        password: None,
        timeout: Duration::from_secs(5),
        orphan_after: None,
    }
}

fn config(dir: &std::path::Path, origin: &str, ch: ClickHouseConfig) -> wiretrail_collector::ServeConfig {
    let mut c = plain_config(dir);
    c.store.origin = origin.into();
    c.clickhouse = Some(ch);
    c
}

/// Starts a collector; a start-up failure (e.g. ClickHouse refused the schema) is shown.
async fn start(cfg: wiretrail_collector::ServeConfig) -> Server {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    Server::start(cfg).await
}

/// Two collectors write to one ClickHouse cluster; queried as one; verified per log.
async fn two_collectors_queried_as_one(url: &str) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s1 = start(config(d1.path(), "collector-a", ch(url, "two"))).await;
    let s2 = start(config(d2.path(), "collector-b", ch(url, "two"))).await;
    for (s, agent) in [(&s1, "agent-a"), (&s2, "agent-b")] {
        let acks = send(s.addr, (0..3).map(|seq| batch(agent, "b1", seq, 10)).collect()).await;
        assert_eq!(acks.len(), 3, "{acks:?}");
        for a in acks {
            a.expect("batch acknowledged");
        }
    }
    // Either collector answers an all-logs search with both logs' records
    // (behind one Service a search lands on either), each naming its log; the
    // access is in the answering collector's own log, naming the logs read.
    // A plain search reads the collector's own log (exports prove its leaves).
    let pod1 = Filter { identity: vec!["pod=pod-1".into()], ..Default::default() };
    let own = search(s1.addr, pod1.clone()).await;
    assert_eq!(own.len(), 10, "a plain search reads the collector's own log");
    assert!(own.iter().all(|r| r.origin == "collector-a"), "own-log results name their log");
    for s in [&s1, &s2] {
        let got = search_all_logs(s.addr, pod1.clone()).await.expect("all-logs search");
        let mut from: Vec<(&str, u64)> = got.iter().map(|r| (r.origin.as_str(), r.leaf_index)).collect();
        from.sort();
        from.dedup();
        assert_eq!(got.len(), 20, "pod-1 is every third of 30 records in each of two logs: {from:?}");
        assert_eq!(from.len(), 20, "each (log, leaf) once");
        for origin in ["collector-a", "collector-b"] {
            assert_eq!(got.iter().filter(|r| r.origin == origin).count(), 10, "{from:?}");
        }
        for r in &got {
            let d = r.decoded.as_ref().unwrap();
            assert_eq!(d.record.as_ref().unwrap().identity.get("pod").map(String::as_str), Some("pod-1"), "{d:?}");
            assert_eq!(
                <wiretrail_proto::v1::StoredLeaf as prost::Message>::decode(&r.leaf[..]).unwrap(),
                *d,
                "leaf bytes as stored"
            );
        }
    }
    let access = search(s2.addr, Filter { entry_kind: "access".into(), ..Default::default() }).await;
    let detail: serde_json::Value =
        serde_json::from_str(&access.last().unwrap().decoded.as_ref().unwrap().entry.as_ref().unwrap().detail_json)
            .unwrap();
    assert_eq!(detail["store"], "clickhouse", "{detail}");
    assert_eq!(detail["origins"], serde_json::json!(["collector-a", "collector-b"]), "{detail}");
    assert!(access.iter().all(|r| r.origin == "collector-b"), "access entries come from the collector's own log");
    // Refused, with the reason: follow, access entries, a collector without ClickHouse.
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(channel(s1.addr).await);
    let req = |follow, kind: &str| wiretrail_proto::v1::SearchRequest {
        filter: Some(Filter { entry_kind: kind.into(), ..Default::default() }),
        follow,
        all_logs: true,
    };
    for (follow, kind, why) in [(true, "", "follow"), (false, "access", "access entries")] {
        let e = q.search(req(follow, kind)).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains(why), "{e}");
    }
    let d3 = tempfile::tempdir().unwrap();
    let plain = start(plain_config(d3.path())).await;
    let e = search_all_logs(plain.addr, Filter::default()).await.expect_err("refused");
    assert!(e.message().contains("does not write to ClickHouse"), "{e}");
    plain.stop().await;
    s1.stop().await;
    s2.stop().await;
    let r = Reader::open(&ch(url, "two")).await.unwrap();
    let hits = r.search(&pod1).await.unwrap();
    let mut origins: Vec<&str> = hits.iter().map(|h| h.origin.as_str()).collect();
    origins.dedup();
    assert_eq!(hits.len(), 20, "pod-1 is every third of 30 records in each of two logs");
    assert!(origins.contains(&"collector-a") && origins.contains(&"collector-b"), "{origins:?}");
    let text = r.search(&Filter { payload_text: "SELECT 7 FROM".into(), ..Default::default() }).await.unwrap();
    assert_eq!(text.len(), 2, "record 7 of each log");
    let reports = r.verify().await.unwrap();
    assert_eq!(reports.len(), 2);
    for rep in &reports {
        assert!(rep.ok, "{rep:?}");
        assert_eq!(rep.leaves, rep.verified_size, "final checkpoint covers every leaf: {rep:?}");
        assert!(rep.leaves >= 30, "{rep:?}");
    }
}

/// One replica down with quorum 2: the batch is refused (no ack); once the
/// replica is back a new batch is acknowledged (its group inserts the refused
/// leaves, read back from the local log, and its own, as the commit thread
/// holds them), the retry is acknowledged, and nothing is lost.
async fn replica_down_refuses_then_recovers(cl: &mut Cluster) {
    let url = cl.replicas[0].url();
    let d = tempfile::tempdir().unwrap();
    let s = start(config(d.path(), "collector-q", ch(&url, "quorum"))).await;
    for a in send(s.addr, vec![batch("agent-q", "b1", 0, 10)]).await {
        a.expect("acknowledged with both replicas up");
    }
    tokio::task::block_in_place(|| cl.replicas[1].kill());
    let refused = send(s.addr, vec![batch("agent-q", "b1", 1, 10)]).await;
    let err = refused[0].as_ref().expect_err("no ack while a quorum replica is down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not yet in ClickHouse"), "{err:?}");
    tokio::task::block_in_place(|| cl.replicas[1].restart()).expect("replica restarts");
    // New batches (each refused one stays in the local log) until one is acknowledged.
    let (next, addr) = (std::cell::Cell::new(2u64), s.addr);
    let ack = eventually("a new batch is acknowledged once the replica is back", || {
        let seq = next.replace(next.get() + 1);
        async move { send(addr, vec![batch("agent-q", "b1", seq, 10)]).await.pop().and_then(|a| a.ok()) }
    })
    .await;
    assert!(!ack.duplicate, "{ack:?}");
    let sent = next.get();
    let retry = send(s.addr, vec![batch("agent-q", "b1", 1, 10)]).await.pop().unwrap().expect("the retry is acked");
    assert!(retry.duplicate, "the retry is the batch already in the local log: {retry:?}");
    s.stop().await;
    let r = Reader::open(&ch(&url, "quorum")).await.unwrap();
    let every = Filter { agent_id: "agent-q".into(), limit: 100_000, ..Default::default() };
    let hits = r.search(&every).await.unwrap();
    assert_eq!(hits.len() as u64, 10 * sent, "every batch sent, acknowledged or refused, is in ClickHouse");
    let reports = r.verify().await.unwrap();
    assert!(reports[0].ok, "{:?}", reports[0]);
}

/// A second log may not reuse an origin name registered with another key.
async fn origin_names_are_unique(url: &str) {
    let d = tempfile::tempdir().unwrap();
    let store = wiretrail_log::store::StoreConfig { origin: "collector-a".into(), ..Default::default() };
    let (_w, shared) = wiretrail_log::store::Writer::open(d.path(), store).unwrap();
    let err = wiretrail_collector::clickhouse::writer::Sink::open(ch(url, "two"), shared).await.err().expect("refused");
    assert!(err.to_string().contains("already registered in ClickHouse with another key"), "{err}");
}

/// SIGKILL a collector mid-ingest and delete its data directory: every
/// acknowledged record is in ClickHouse, and the rows verify against a signed
/// checkpoint covering every acknowledged leaf.
async fn sigkill_and_lost_disk(url: &str) {
    use std::process::{Command, Stdio};
    use tokio_stream::StreamExt;
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0", "--checkpoint-secs", "1"])
        .args(["--origin", "collector-k", "--clickhouse", url, "--clickhouse-database", "killed"])
        .args(["--clickhouse-cluster", "wt", "--clickhouse-quorum", "2", "--data-dir"])
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);
    // The auditor's copy of the log's first key, taken out of band before the disk is lost.
    let key =
        eventually("verifier.key written", || async { std::fs::read_to_string(d.path().join("verifier.key")).ok() })
            .await;
    let key = wiretrail_log::merkle::Verifier::parse(&key).unwrap();
    let mut c = wiretrail_proto::v1::ingest_client::IngestClient::new(
        eventually("collector up", || async {
            tonic::transport::Endpoint::new(format!("http://{addr}")).unwrap().connect().await.ok()
        })
        .await,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        for seq in 0..10_000 {
            if tx.send(batch("agent-k", "b1", seq, 20)).await.is_err() {
                return;
            }
        }
    });
    let mut acks = c.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut last_acked = None;
    // Kill mid-ingest once 30 batches are acknowledged and ClickHouse holds a checkpoint of this log.
    let shipped = "SELECT count() FROM killed.checkpoints WHERE origin = 'collector-k' FORMAT TSV";
    while let Some(a) = acks.next().await {
        let a = a.expect("acknowledged");
        last_acked = Some(a.last_leaf_index);
        if a.seq >= 30 && a.seq % 10 == 0 && sql(url, shipped).await.trim() != "0" {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    feeder.abort();
    std::fs::remove_dir_all(d.path()).unwrap();
    let last = last_acked.expect("some batches acknowledged");
    let r = Reader::open(&ch(url, "killed")).await.unwrap();
    let rep = r.verify().await.unwrap().into_iter().find(|r| r.origin == "collector-k").unwrap();
    assert!(rep.problems.is_empty(), "{rep:?}");
    assert!(rep.leaves > last, "every acknowledged leaf (0..={last}) is in ClickHouse: {rep:?}");
    assert!(rep.verified_size > last, "every acknowledged leaf (0..={last}) is under a signed checkpoint: {rep:?}");
    let hits = r.search(&Filter { agent_id: "agent-k".into(), limit: 1_000_000, ..Default::default() }).await.unwrap();
    assert!(hits.len() as u64 > last, "every acknowledged record is queryable: {} <= {last}", hits.len());
    // The collector and its disk are gone: an evidence bundle from ClickHouse
    // alone proves every acknowledged record under the log's pinned key.
    let pins = wiretrail_collector::clickhouse::verify::Pins::from([("collector-k".to_string(), key.clone())]);
    let filter = Filter { agent_id: "agent-k".into(), limit: 1_000_000, ..Default::default() };
    let export = r.export(&filter, &pins).await.unwrap();
    assert!(!export.truncated);
    let bundles = export.bundles;
    assert_eq!(bundles.len(), 1);
    let b = &bundles[0];
    let report = wiretrail_log::bundle::verify_bundle(&b.files, Some(&key.key_string())).expect("bundle verifies");
    assert!(report.key_pinned && !report.manifest_signed, "{report:?}");
    assert_eq!(report.records + b.after_checkpoint, hits.len() as u64);
    let exported = bundle_leaves(&b.files);
    let acked: Vec<u64> = hits.iter().map(|h| h.leaf_index).filter(|i| *i <= last).collect();
    assert!(acked.iter().all(|i| exported.contains(i)), "every acknowledged record is in the bundle");
    // One leaf's proof, as the command line prints it, checks against its signed checkpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["prove", "--clickhouse", url, "--clickhouse-database", "killed", "--origin", "collector-k"])
        .args(["--leaf", &acked[acked.len() / 2].to_string()])
        .env_remove("WIRETRAIL_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let signed = key.open(p["checkpoint"].as_str().unwrap()).expect("checkpoint signed by the pinned key");
    let hex32 = |v: &serde_json::Value| -> [u8; 32] { hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
    let proof: Vec<[u8; 32]> = p["hashes"].as_array().unwrap().iter().map(hex32).collect();
    assert_eq!(p["tree_size"], signed.checkpoint.size);
    wiretrail_log::merkle::verify_inclusion(
        p["leaf_index"].as_u64().unwrap(),
        signed.checkpoint.size,
        &hex32(&p["leaf_hash"]),
        &proof,
        &signed.checkpoint.root,
    )
    .expect("the printed proof verifies");
}

/// The leaf indexes of a bundle's records.
fn bundle_leaves(files: &wiretrail_log::bundle::Files) -> Vec<u64> {
    let text = String::from_utf8(files["records.jsonl"].clone()).unwrap();
    common::cli::json_lines(&text).iter().map(|l| l["leaf_index"].as_u64().unwrap()).collect()
}

/// The inventory and alerts of both collectors' logs, from ClickHouse alone
/// on the command line: one workload across two logs, each alert naming its log.
async fn inventory_and_alerts_across_logs(url: &str) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
            .args(args)
            .args(["--clickhouse", url, "--clickhouse-database", "two", "--json"])
            .env_remove("WIRETRAIL_CLICKHOUSE_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        common::cli::json_lines(&String::from_utf8_lossy(&out.stdout))
    };
    let inv = run(&["inventory"]);
    assert_eq!(inv.len(), 1, "both agents' records are one workload on node-a: {inv:?}");
    assert_eq!(inv[0]["identity_key"], "host:node-a::");
    assert_eq!(inv[0]["records"], 60, "30 records in each of two logs");
    assert_eq!(inv[0]["hosts"], serde_json::json!(["node-a"]));
    let logs = [&inv[0]["first_origin"], &inv[0]["last_origin"]];
    assert!(logs.iter().all(|o| *o == "collector-a" || *o == "collector-b"), "{inv:?}");
    // The first record's (origin, leaf) is a record of that workload at its first-seen time.
    let at = sql(
        url,
        &format!(
            "SELECT kind, time_ns FROM two.leaves WHERE origin = '{}' AND leaf_index = {} LIMIT 1 FORMAT TSV",
            inv[0]["first_origin"].as_str().unwrap(),
            inv[0]["first_leaf_index"]
        ),
    )
    .await;
    assert_eq!(at.trim(), format!("record\t{}", inv[0]["first_seen_ns"]), "{inv:?}");
    let shadow = run(&["alerts", "--kind", "shadow_identity"]);
    assert_eq!(shadow.len(), 1, "one shadow identity, alerted once across both logs: {shadow:?}");
    assert_eq!(shadow[0]["origin"], inv[0]["first_origin"], "raised by the workload's first record");
    assert_eq!(shadow[0]["leaf_index"], inv[0]["first_leaf_index"]);
}

/// Both collectors' logs exported from ClickHouse: one bundle per log, each
/// checked offline by `wiretrail verify-bundle`.
async fn exported_per_log(url: &str) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("bundles");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
            .args(args)
            .env_remove("WIRETRAIL_CLICKHOUSE_URL")
            .output()
            .unwrap()
    };
    let e = run(&[
        "export",
        "--clickhouse",
        url,
        "--clickhouse-database",
        "two",
        "--identity",
        "pod=pod-1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    for origin in ["collector-a", "collector-b"] {
        let b = dir.join(origin);
        let v = run(&["verify-bundle", b.to_str().unwrap()]);
        assert!(!v.status.success(), "an unsigned manifest is refused unless accepted");
        let v = run(&["verify-bundle", "--allow-unsigned", b.to_str().unwrap()]);
        assert!(v.status.success(), "{origin}: {}", String::from_utf8_lossy(&v.stderr));
        let files = wiretrail_log::bundle::read(&dir.join(origin)).unwrap();
        assert_eq!(bundle_leaves(&files).len(), 10, "pod-1 is every third of 30 records");
    }
    // ClickHouse's text search is looser (it sees the whole leaf): the export
    // keeps what the filter matches (the payload), as a verifier reads query.json.
    let r = Reader::open(&ch(url, "two")).await.unwrap();
    let host_text = Filter { payload_text: "node-a".into(), ..Default::default() };
    assert!(r.search(&host_text).await.unwrap().len() >= 60, "the host name is in every leaf");
    assert!(r.export(&host_text, &Default::default()).await.unwrap().bundles.is_empty());
    // A case goes to a collector's access log: refused when reading ClickHouse.
    let case = run(&["export", "--clickhouse", url, "--case", "C-1", "--out", out.path().join("c").to_str().unwrap()]);
    assert!(!case.status.success());
    assert!(
        String::from_utf8_lossy(&case.stderr).contains("--case is recorded"),
        "{}",
        String::from_utf8_lossy(&case.stderr)
    );
    // Into a directory that is not empty: refused.
    let again = run(&["export", "--clickhouse", url, "--clickhouse-database", "two", "--out", dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&again.stderr));
}

/// A row changed in ClickHouse (bytes, or moved to another index) is named by verify.
async fn tamper_is_named(url: &str) {
    let d = tempfile::tempdir().unwrap();
    let s = start(config(d.path(), "collector-t", ch(url, "tamper"))).await;
    for a in send(s.addr, vec![batch("agent-t", "b1", 0, 10)]).await {
        a.expect("acknowledged");
    }
    s.stop().await;
    let r = Reader::open(&ch(url, "tamper")).await.unwrap();
    assert!(r.verify().await.unwrap()[0].ok);
    // Leaf 4's bytes changed (its stored hash kept), inserted as a replacing row.
    sql(
        url,
        "INSERT INTO tamper.leaves SELECT origin, leaf_index, received, received_ns, time_ns, kind, agent_id, identity, \
         peer, protocol, host, replaceOne(leaf, 'SELECT', 'DELETE'), leaf_hash, prev_hash FROM tamper.leaves \
         WHERE leaf_index = 4",
    )
    .await;
    let rep = r.verify().await.unwrap().remove(0);
    assert!(!rep.ok);
    assert_eq!(rep.first_bad_leaf, Some(4), "{rep:?}");
    // Nothing is exported or proven from a log that does not verify.
    let err = r.export(&Filter::default(), &Default::default()).await.err().expect("export refused");
    assert!(err.to_string().contains("collector-t does not verify") && err.to_string().contains("leaf 4"), "{err}");
    let err = r.prove("collector-t", 1, None).await.expect_err("proof refused");
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clustered_mode_on_clickhouse_18_16() {
    let mut cl = tokio::task::spawn_blocking(Cluster::start).await.unwrap().expect("ClickHouse 18.16 cluster starts");
    let url = cl.replicas[0].url();
    assert!(sql(&url, "SELECT version() FORMAT TSV").await.starts_with("18.16"));
    two_collectors_queried_as_one(&url).await;
    search::all_logs_search_reads_past_candidates_the_filter_drops(&url).await;
    exported_per_log(&url).await;
    inventory_and_alerts_across_logs(&url).await;
    origin_names_are_unique(&url).await;
    sigkill_and_lost_disk(&url).await;
    tamper_is_named(&url).await;
    expiry::expired_rows_leave_clickhouse(&url, ch(&url, "expiry"), ch_with(&url, "expiry_copy", None, 0)).await;
    holds::a_hold_placed_at_one_collector_holds_every_log(&url, ch(&url, "holds")).await;
    orphans::an_orphaned_log_is_expired_by_a_live_collector(&url, ch(&url, "orphans")).await;
    replica_down_refuses_then_recovers(&mut cl).await;
}

/// A log whose signing key was rotated verifies from ClickHouse by following
/// the rotation entry; a pinned first key makes the check independent of the
/// key registered in the database, and a wrong pin is named.
async fn rotation_and_pinned_keys(url: &str) {
    use wiretrail_collector::clickhouse::verify::{KeySource, Pins};
    use wiretrail_log::merkle::Verifier;
    use wiretrail_proto::v1::{RotateSigningKeyRequest, keys_client::KeysClient};
    let cfg = ch_with(url, "rotated", None, 0);
    let d = tempfile::tempdir().unwrap();
    let s = start(config(d.path(), "collector-r", cfg.clone())).await;
    for a in send(s.addr, vec![batch("agent-r", "b1", 0, 5)]).await {
        a.expect("acknowledged");
    }
    let rot = KeysClient::new(channel(s.addr).await)
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    for a in send(s.addr, vec![batch("agent-r", "b1", 1, 5)]).await {
        a.expect("acknowledged after the rotation");
    }
    s.stop().await;
    let first_file = d.path().join("verifier.key");
    let first = Verifier::parse(&std::fs::read_to_string(&first_file).unwrap()).unwrap();
    assert_eq!(rot.old_key, first.key_string());
    let r = Reader::open(&cfg).await.unwrap();
    let rep = r.verify().await.unwrap().remove(0);
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.rotations, 1, "{rep:?}");
    assert_eq!(rep.key_source, KeySource::ClickHouse);
    assert!(
        rep.verified_size == rep.leaves && rep.verified_size > rot.old_key_last_size,
        "the new key's checkpoints verified: {rep:?}"
    );
    let pinned = r.verify_pinned(&Pins::from([("collector-r".to_string(), first.clone())])).await.unwrap().remove(0);
    assert!(pinned.ok && pinned.key_source == KeySource::Pinned && pinned.rotations == 1, "{pinned:?}");
    // Exported across the rotation: the bundle carries the key chain from the pinned first key.
    let pins = Pins::from([("collector-r".to_string(), first.clone())]);
    let b = r.export(&Filter::default(), &pins).await.unwrap().bundles.remove(0);
    assert!(b.files.contains_key("keys.jsonl") && b.tree_size > rot.old_key_last_size);
    let report = wiretrail_log::bundle::verify_bundle(&b.files, Some(&first.key_string())).expect("verifies");
    assert_eq!(report.records, 10);
    // One leaf's proof across the rotation: checked from the first key alone.
    let p = r.prove("collector-r", 2, Some(&first)).await.unwrap();
    assert_eq!(p.signing_key, rot.new_key);
    let chain: String = p.key_chain.iter().map(|l| format!("{l}\n")).collect();
    let links = wiretrail_log::keychain::links_from_jsonl(&chain).unwrap();
    let ring = wiretrail_log::keychain::follow_chain(&first, &links).expect("the chain holds from the first key");
    let signed = ring.open(&p.checkpoint).expect("checkpoint signed by the key in force");
    let hex32 = |s: &str| -> [u8; 32] { hex::decode(s).unwrap().try_into().unwrap() };
    let proof: Vec<[u8; 32]> = p.hashes.iter().map(|h| hex32(h)).collect();
    wiretrail_log::merkle::verify_inclusion(2, p.tree_size, &hex32(&p.leaf_hash), &proof, &signed.checkpoint.root)
        .expect("the proof verifies");
    // Another log's key pinned for this origin: refused, whatever the database says.
    let other = tempfile::tempdir().unwrap();
    drop(wiretrail_log::store::Writer::open(other.path(), Default::default()).unwrap());
    let other_file = other.path().join("verifier.key");
    let other_key = Verifier::parse(&std::fs::read_to_string(&other_file).unwrap()).unwrap();
    let wrong = r.verify_pinned(&Pins::from([("collector-r".to_string(), other_key)])).await.unwrap().remove(0);
    assert!(!wrong.ok, "{wrong:?}");
    assert!(wrong.problems.iter().any(|p| p.contains("is not the pinned key")), "{wrong:?}");
    // A pinned origin ClickHouse does not hold fails too.
    let absent = r.verify_pinned(&Pins::from([("collector-x".to_string(), first)])).await.unwrap();
    assert!(absent.iter().any(|a| a.origin == "collector-x" && !a.ok), "{absent:?}");
    // The same from the command line.
    let cli = |pin: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
            .args(["verify", "--clickhouse", url, "--clickhouse-database", "rotated", "--verifier-key"])
            .arg(format!("collector-r={}", pin.display()))
            .env_remove("WIRETRAIL_CLICKHOUSE_URL")
            .output()
            .unwrap()
    };
    let ok = cli(&first_file);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"key_source\": \"pinned\""));
    let bad = cli(&other_file);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("is not the pinned key"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
}

/// The collector's own inventory and alerts once its index holds `records` records.
async fn indexed_view(
    addr: std::net::SocketAddr,
    records: u64,
) -> (wiretrail_proto::v1::InventoryResponse, Vec<wiretrail_proto::v1::Alert>) {
    use wiretrail_proto::v1::{InventoryRequest, query_client::QueryClient};
    let inv = eventually("the index holds every record", || async {
        let mut q = QueryClient::new(channel(addr).await);
        let inv = q.inventory(InventoryRequest { shadow_only: false }).await.unwrap().into_inner();
        (inv.entries.iter().map(|e| e.records).sum::<u64>() == records).then_some(inv)
    })
    .await;
    (inv.clone(), alerts(addr).await.into_iter().filter(|a| a.leaf_index < inv.indexed).collect())
}

/// The inventory and alerts derived from ClickHouse alone equal the ones the
/// collector's indexer kept from its own log.
async fn derived_as_the_collector_indexes(
    cfg: &ClickHouseConfig,
    inventory: &wiretrail_proto::v1::InventoryResponse,
    alerts: &[wiretrail_proto::v1::Alert],
) {
    let registry = std::sync::Arc::new(wiretrail_collector::registry::RegistryHandle::open(None).unwrap());
    let d = Reader::open(cfg).await.unwrap().derive(registry).await.unwrap();
    assert_eq!((d.origins(), d.missing()), (&["collector-m".to_string()][..], 0));
    let derived: Vec<_> = d.inventory(false).unwrap().into_iter().map(|i| i.entry).collect();
    assert!(!derived.is_empty());
    assert_eq!(derived, inventory.entries, "inventory from ClickHouse = the collector's");
    let derived: Vec<_> =
        d.alerts(None).unwrap().into_iter().map(|a| a.alert).filter(|a| a.leaf_index < inventory.indexed).collect();
    assert!(!alerts.is_empty(), "the collector raised alerts (shadow identities)");
    assert_eq!(derived, alerts, "alerts from ClickHouse = the collector's");
}

/// The modern engine (26.9): the schema with codecs and a skip index, RowBinary
/// with validation on; ingest -> query -> verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_engine_26_9() {
    let m = tokio::task::spawn_blocking(Modern::start).await.unwrap().expect("chdb (ClickHouse 26.9) starts");
    let url = m.url();
    let v = sql(&url, "SELECT version() FORMAT TSV").await;
    assert!(v.starts_with("26.9"), "{v:?}");
    let cfg = ch_with(&url, "modern", None, 0);
    let d = tempfile::tempdir().unwrap();
    let s = start(config(d.path(), "collector-m", cfg.clone())).await;
    for a in send(s.addr, (0..2).map(|seq| batch("agent-m", "b1", seq, 10)).collect()).await {
        a.expect("acknowledged");
    }
    let (inventory, alerts) = indexed_view(s.addr, 20).await;
    s.stop().await;
    let ddl = sql(&url, "SHOW CREATE TABLE modern.leaves FORMAT TSVRaw").await;
    assert!(ddl.contains("CODEC(ZSTD(3))") && ddl.contains("bloom_filter") && !ddl.contains("ngrambf"), "{ddl}");
    let r = Reader::open(&cfg).await.unwrap();
    let hits = r.search(&Filter { app_protocol: "postgres".into(), ..Default::default() }).await.unwrap();
    assert_eq!(hits.len(), 10, "every other record of 20 is postgres");
    let rep = r.verify().await.unwrap().remove(0);
    assert!(rep.ok && rep.verified_size == rep.leaves && rep.leaves >= 20, "{rep:?}");
    derived_as_the_collector_indexes(&cfg, &inventory, &alerts).await;
    rotation_and_pinned_keys(&url).await;
    expiry::expired_rows_leave_clickhouse(
        &url,
        ch_with(&url, "expiry", None, 0),
        ch_with(&url, "expiry_copy", None, 0),
    )
    .await;
    expiry::a_blocked_deletion_is_named_and_retried(&url, ch_with(&url, "blocked", None, 0)).await;
    // The same from the command line.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
            .args(args)
            .args(["--clickhouse", &url, "--clickhouse-database", "modern"])
            .env_remove("WIRETRAIL_CLICKHOUSE_URL")
            .output()
            .unwrap()
    };
    let q = cli(&["query", "--json", "--protocol", "postgres"]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let lines = common::cli::json_lines(&String::from_utf8_lossy(&q.stdout));
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l["origin"] == "collector-m"), "{lines:?}");
    let v = cli(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    sql(&url, "ALTER TABLE modern.leaves UPDATE leaf = replaceOne(leaf, 'SELECT', 'DELETE') WHERE leaf_index = 3 SETTINGS mutations_sync = 1").await;
    let v = cli(&["verify"]);
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("\"first_bad_leaf\": 3"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}
