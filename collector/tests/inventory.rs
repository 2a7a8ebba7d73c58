//! Identity inventory, registry and alerts, in process: ingest records from
//! a registered and an unregistered identity, check the inventory and the
//! alerts, reload the registry, rebuild the index from the log.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{
    Ack, Alert, AlertsRequest, Batch, Direction, Endpoint, InventoryEntry, InventoryRequest, InventoryResponse,
    PolicyDecision, Record, RecordKind,
};

const API: &str = "k8s:payments/api";
const BATCHJOB: &str = "host:node-b:/system.slice/batch.service:/usr/bin/batch";
const CRON: &str = "k8s:ops/cron";
const SCANNER: &str = "host:node-z::/bin/scan";
const POLICY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

const REGISTRY_V1: &str = "\
version: 1
identities:
  - match: {k8s_namespace: payments, k8s_service_account: api}
    custodian: payments-team@bank.example
    purpose: \"Payment initiation API\"
  - match: {exe: /bin/scan}
    custodian: secops@bank.example
    purpose: Vulnerability scanner
";

/// Registers the batch job and the scanner; the payments API is no longer registered.
const REGISTRY_V2: &str = "\
version: 1
identities:
  - match: {host: node-?, exe: \"/usr/bin/batch*\"}
    custodian: batch-team@bank.example
    purpose: Nightly settlement batch
  - match: {exe: /bin/scan}
    custodian: secops@bank.example
    purpose: Vulnerability scanner
";

fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn api_identity() -> HashMap<String, String> {
    map(&[
        ("k8s_namespace", "payments"),
        ("k8s_service_account", "api"),
        ("k8s_pod", "api-7d9f-abcde"),
        ("cgroup_path", "/kubepods/pod1/c1"),
        ("exe", "/app/api"),
    ])
}

fn batch_identity() -> HashMap<String, String> {
    map(&[("cgroup_path", "/system.slice/batch.service"), ("exe", "/usr/bin/batch")])
}

fn ledger_identity() -> HashMap<String, String> {
    map(&[("k8s_namespace", "ledger"), ("k8s_service_account", "db"), ("zone", "data")])
}

fn chunk(
    t: i64,
    host: &str,
    identity: HashMap<String, String>,
    dir: Direction,
    remote: (&str, u32),
    payload: &str,
) -> Record {
    Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: t,
        direction: dir as i32,
        remote: Some(Endpoint { address: remote.0.into(), port: remote.1 }),
        identity,
        payload: payload.as_bytes().to_vec(),
        host: host.into(),
        ..Default::default()
    }
}

fn decision(t: i64, verdict: &str) -> Record {
    Record {
        kind: RecordKind::PolicyDecision as i32,
        capture_time_ns: t,
        direction: Direction::Egress as i32,
        local: Some(Endpoint { address: "10.0.1.4".into(), port: 40112 }),
        remote: Some(Endpoint { address: "10.1.0.7".into(), port: 5432 }),
        identity: api_identity(),
        peer_identity: ledger_identity(),
        host: "node-a".into(),
        decision: Some(PolicyDecision {
            verdict: verdict.into(),
            rule: if verdict == "allow" { "api-to-ledger".into() } else { "default-deny".into() },
            rule_line: if verdict == "allow" { 12 } else { 0 },
            policy_sha256: POLICY.into(),
            local_zone: "payments".into(),
            peer_zone: "data".into(),
            hook: "connect4".into(),
            mode: if verdict == "allow" { String::new() } else { "enforce".into() },
            direction: "egress".into(),
        }),
        ..Default::default()
    }
}

/// A client that sends numbered batches for one agent.
struct Agent {
    client: IngestClient<tonic::transport::Channel>,
    seq: u64,
}

impl Agent {
    async fn new(addr: std::net::SocketAddr) -> Agent {
        Agent { client: IngestClient::new(channel(addr).await), seq: 0 }
    }

    async fn send(&mut self, records: Vec<Record>) -> Ack {
        let b = Batch {
            agent_id: "agent-inv".into(),
            boot_id: "boot-1".into(),
            seq: self.seq,
            records,
            ..Default::default()
        };
        self.seq += 1;
        let mut acks = self.client.ingest(tokio_stream::iter(vec![b])).await.unwrap().into_inner();
        acks.next().await.unwrap().unwrap()
    }
}

async fn inventory(q: &mut QueryClient<tonic::transport::Channel>, shadow_only: bool) -> InventoryResponse {
    q.inventory(InventoryRequest { shadow_only }).await.unwrap().into_inner()
}

/// The inventory once `n` records are indexed.
async fn inventory_at(q: &mut QueryClient<tonic::transport::Channel>, n: u64) -> InventoryResponse {
    for _ in 0..500 {
        let r = inventory(q, false).await;
        if r.indexed >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the index did not reach {n} records");
}

async fn alerts(q: &mut QueryClient<tonic::transport::Channel>, kind: &str) -> Vec<Alert> {
    let mut s = q.alerts(AlertsRequest { since_id: 0, kind: kind.into(), follow: false }).await.unwrap().into_inner();
    let mut v = Vec::new();
    while let Some(a) = s.next().await {
        v.push(a.unwrap());
    }
    v
}

fn entry<'a>(r: &'a InventoryResponse, key: &str) -> &'a InventoryEntry {
    r.entries.iter().find(|e| e.identity_key == key).unwrap_or_else(|| panic!("{key} not in the inventory: {r:?}"))
}

fn detail(a: &Alert) -> serde_json::Value {
    serde_json::from_str(&a.detail_json).unwrap()
}

fn write(path: &Path, text: &str) {
    // Write then rename: the watcher never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(data: &Path, registry: &Path, txn_rows: usize) -> wiretrail_collector::ServeConfig {
    let mut cfg = plain_config(data);
    cfg.registry = Some(registry.to_path_buf());
    cfg.registry_check_interval = Duration::from_millis(50);
    cfg.index.txn_rows = txn_rows;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_alerts_registry_reload_and_rebuild() {
    let logs = common::logs::capture_logs();
    let data = tempfile::tempdir().unwrap();
    let reg = data.path().join("registry.yaml");
    write(&reg, REGISTRY_V1);
    // Small index transactions: identities span several of them.
    let srv = Server::start(config(&data.path().join("log"), &reg, 3)).await;
    let mut agent = Agent::new(srv.addr).await;
    let mut q = QueryClient::new(channel(srv.addr).await);

    let mut peered = chunk(3_000, "node-c", api_identity(), Direction::Ingress, ("10.0.1.9", 50000), "hello");
    peered.peer_identity = ledger_identity();
    let ack = agent
        .send(vec![
            chunk(1_000, "node-a", api_identity(), Direction::Egress, ("10.0.0.5", 443), "GET / HTTP"), // leaf 0
            chunk(2_000, "node-b", batch_identity(), Direction::Ingress, ("10.0.0.9", 5432), "1234567"), // leaf 1
            peered,                                                                                     // leaf 2
            chunk(2_500, "node-b", batch_identity(), Direction::Egress, ("10.0.0.9", 5432), "abc"),     // leaf 3
            Record {
                kind: RecordKind::Heartbeat as i32,
                capture_time_ns: 2_600,
                host: "node-a".into(),
                ..Default::default()
            },
            decision(3_100, "deny"),  // leaf 5
            decision(3_200, "allow"), // leaf 6
            decision(3_300, "audit"), // leaf 7
        ])
        .await;
    assert_eq!((ack.first_leaf_index, ack.last_leaf_index), (0, 7));

    let inv = inventory_at(&mut q, 8).await;
    assert_eq!(inv.entries.len(), 2, "heartbeats are not workloads: {inv:?}");
    let api = entry(&inv, API);
    assert!(!api.shadow && !api.shadow_alerted);
    assert_eq!(api.custodian, "payments-team@bank.example");
    assert_eq!(api.purpose, "Payment initiation API");
    assert_eq!((api.first_seen_ns, api.last_seen_ns), (1_000, 3_300));
    assert_eq!((api.first_leaf_index, api.last_leaf_index), (0, 7));
    assert_eq!(api.records, 5);
    assert_eq!((api.bytes, api.tx_bytes, api.rx_bytes), (15, 10, 5));
    assert_eq!(api.hosts, vec!["node-a", "node-c"]);
    // Decision records name the peer workload: its identity key, not its address.
    assert_eq!(api.peers, vec!["10.0.0.5:443", "k8s:ledger/db"]);
    assert_eq!(api.attributes.get("k8s_pod").map(String::as_str), Some("api-7d9f-abcde"));
    assert_eq!(api.attributes.get("host").map(String::as_str), Some("node-a"));
    let job = entry(&inv, BATCHJOB);
    assert!(job.shadow && job.shadow_alerted);
    assert_eq!((job.custodian.as_str(), job.purpose.as_str()), ("", ""));
    assert_eq!((job.first_seen_ns, job.last_seen_ns, job.records), (2_000, 2_500, 2));
    assert_eq!((job.bytes, job.tx_bytes, job.rx_bytes), (10, 3, 7));
    assert_eq!(job.hosts, vec!["node-b"]);
    assert_eq!(job.peers, vec!["10.0.0.9:5432"]);
    let shadow = inventory(&mut q, true).await;
    assert_eq!(shadow.entries.iter().map(|e| e.identity_key.as_str()).collect::<Vec<_>>(), vec![BATCHJOB]);

    // Alerts: one shadow identity (the batch job, at its first record), one denial, one violation.
    let all = alerts(&mut q, "").await;
    let kinds: Vec<(&str, &str, u64)> =
        all.iter().map(|a| (a.kind.as_str(), a.identity_key.as_str(), a.leaf_index)).collect();
    assert_eq!(kinds, vec![("shadow_identity", BATCHJOB, 1), ("policy_denied", API, 5), ("policy_violation", API, 7)]);
    let shadow_alert = &all[0];
    assert_eq!((shadow_alert.severity.as_str(), shadow_alert.time_ns), ("medium", 2_000));
    assert_eq!(detail(shadow_alert)["reason"], "first_seen");
    let denied = &all[1];
    assert_eq!((denied.severity.as_str(), denied.time_ns), ("high", 3_100));
    let d = detail(denied);
    assert_eq!(d["identity_key"], API);
    assert_eq!(d["peer_identity_key"], "k8s:ledger/db");
    assert_eq!(d["identity"]["k8s_pod"], "api-7d9f-abcde");
    assert_eq!(d["peer_identity"]["zone"], "data");
    assert_eq!(d["policy_sha256"], POLICY);
    assert_eq!((d["local_zone"].as_str(), d["peer_zone"].as_str()), (Some("payments"), Some("data")));
    assert_eq!(d["rule"], "default-deny");
    assert_eq!(d["destination"], serde_json::json!({"address": "10.1.0.7", "port": 5432}));
    assert_eq!(all[2].severity, "medium");
    assert_eq!(alerts(&mut q, "policy_denied").await.len(), 1);
    let bad = q.alerts(AlertsRequest { kind: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // More traffic from the shadow identity, plus a scanner with more peers
    // than are kept: still one shadow alert.
    let mut more: Vec<Record> = (0..3)
        .map(|i| chunk(4_000 + i, "node-b", batch_identity(), Direction::Egress, ("10.0.0.10", 80), "x"))
        .collect();
    more.extend((0..300u32).map(|p| {
        chunk(5_000 + p as i64, "node-z", map(&[("exe", "/bin/scan")]), Direction::Egress, ("10.9.0.1", 1000 + p), "")
    }));
    let ack = agent.send(more).await;
    let inv = inventory_at(&mut q, ack.last_leaf_index + 1).await;
    assert_eq!(entry(&inv, BATCHJOB).records, 5);
    let scan = entry(&inv, SCANNER);
    assert_eq!((scan.peers.len(), scan.peers_overflow, scan.records), (256, 44, 300));
    assert!(!scan.shadow);
    assert_eq!(alerts(&mut q, "shadow_identity").await.len(), 1);

    // An invalid registry is rejected (the collector read it and said so,
    // naming the file and the line); the one in force stays.
    write(&reg, "version: 1\nidentities:\n  - match: {exe: /x}\n    purpose: no custodian\n");
    let rejected = format!("{}: line 3", reg.display());
    logs.wait_for_line(&["identity registry rejected", &rejected]).await;
    let inv = inventory(&mut q, false).await;
    assert_eq!(entry(&inv, API).custodian, "payments-team@bank.example");
    assert!(entry(&inv, BATCHJOB).shadow);

    // A new registry: the batch job is registered (its old alert stays), the
    // API is not any more.
    let mut follow = q
        .alerts(AlertsRequest { since_id: all.last().unwrap().id, kind: String::new(), follow: true })
        .await
        .unwrap()
        .into_inner();
    write(&reg, REGISTRY_V2);
    let mut inv = inventory(&mut q, false).await;
    for _ in 0..200 {
        if !entry(&inv, BATCHJOB).shadow {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        inv = inventory(&mut q, false).await;
    }
    let job = entry(&inv, BATCHJOB);
    assert!(!job.shadow && job.shadow_alerted, "{job:?}");
    assert_eq!((job.custodian.as_str(), job.purpose.as_str()), ("batch-team@bank.example", "Nightly settlement batch"));
    let api = entry(&inv, API);
    assert!(api.shadow && !api.shadow_alerted);
    // The API, now shadow and never alerted, is raised at the next record, as
    // is the new identity that record comes from.
    let cron = map(&[("k8s_namespace", "ops"), ("k8s_service_account", "cron")]);
    let ack = agent.send(vec![chunk(9_000, "node-a", cron, Direction::Egress, ("10.0.0.1", 53), "q")]).await;
    let mut next =
        async || tokio::time::timeout(Duration::from_secs(10), follow.next()).await.unwrap().unwrap().unwrap();
    let (a, b) = (next().await, next().await);
    assert_eq!(
        (a.kind.as_str(), a.identity_key.as_str(), a.leaf_index),
        ("shadow_identity", API, ack.first_leaf_index)
    );
    assert_eq!(detail(&a)["reason"], "registry_changed");
    assert_eq!(a.time_ns, 9_000);
    assert_eq!(
        (b.kind.as_str(), b.identity_key.as_str(), b.leaf_index),
        ("shadow_identity", CRON, ack.first_leaf_index)
    );
    // A deny arrives on the follow stream as it is indexed.
    let ack = agent.send(vec![decision(9_500, "deny")]).await;
    let c = next().await;
    assert_eq!((c.kind.as_str(), c.leaf_index), ("policy_denied", ack.first_leaf_index));
    drop(follow);
    let shadow_alerts = alerts(&mut q, "shadow_identity").await;
    assert_eq!(shadow_alerts.iter().map(|a| a.identity_key.as_str()).collect::<Vec<_>>(), vec![BATCHJOB, API, CRON]);
    let before = inventory_at(&mut q, ack.last_leaf_index + 1).await;
    let policy_before: Vec<(String, u64, String)> = alerts(&mut q, "")
        .await
        .into_iter()
        .filter(|a| a.kind != "shadow_identity")
        .map(|a| (a.kind, a.leaf_index, a.detail_json))
        .collect();
    srv.stop().await;

    // Rebuild the index (and so the inventory) from the log, in one transaction this time.
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(data.path().join("log").join(f));
    }
    let srv = Server::start(config(&data.path().join("log"), &reg, 20_000)).await;
    let mut q = QueryClient::new(channel(srv.addr).await);
    let after = inventory_at(&mut q, before.indexed).await;
    assert_eq!(after.indexed, before.indexed);
    // Which shadow alerts exist depends on the registry history, which the
    // log does not hold; everything else is the same.
    let strip = |r: &InventoryResponse| {
        r.entries.iter().cloned().map(|e| InventoryEntry { shadow_alerted: false, ..e }).collect::<Vec<_>>()
    };
    assert_eq!(strip(&after), strip(&before));
    let policy_after: Vec<(String, u64, String)> = alerts(&mut q, "")
        .await
        .into_iter()
        .filter(|a| a.kind != "shadow_identity")
        .map(|a| (a.kind, a.leaf_index, a.detail_json))
        .collect();
    assert_eq!(policy_after, policy_before);
    srv.stop().await;
}

#[tokio::test]
async fn invalid_registry_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let reg = data.path().join("registry.yaml");
    write(&reg, "version: 1\nidentities:\n  - match: {exe: /x}\n    custodian: a\n    purpose: b\n    owner: c\n");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wiretrail_collector::run(listener, config(data.path(), &reg, 100), async {}).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}: line 6: ", reg.display())), "{msg}");
    assert!(msg.contains("owner"), "{msg}");
}

/// Registry for the anomaly test: the API's business hours in New York, the
/// scanner retired on 30 November 2026.
const REGISTRY_SCHEDULE: &str = "\
version: 1
new_peer_learning_hours: 24
identities:
  - match: {k8s_namespace: payments, k8s_service_account: api}
    custodian: payments-team@bank.example
    purpose: \"Payment initiation API\"
    hours: {days: mon-fri, from: \"07:00\", to: \"19:00\", tz: America/New_York}
  - match: {exe: /bin/scan}
    custodian: secops@bank.example
    purpose: Vulnerability scanner
    retired: 2026-11-30
";

fn utc(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_anomalies_new_peer_outside_hours_and_retired() {
    let d = tempfile::tempdir().unwrap();
    let reg = d.path().join("registry.yaml");
    write(&reg, REGISTRY_SCHEDULE);
    let server = Server::start(config(&d.path().join("data"), &reg, 1000)).await;
    let mut agent = Agent::new(server.addr).await;
    let mut q = QueryClient::new(channel(server.addr).await);
    let api = |t: &str, remote: (&str, u32)| chunk(utc(t), "node-a", api_identity(), Direction::Egress, remote, "x");
    let scan =
        |t: &str| chunk(utc(t), "node-z", map(&[("exe", "/bin/scan")]), Direction::Egress, ("10.0.0.9", 80), "x");
    let mut sent = 0u64;
    let mut pass = async |agent: &mut Agent, q: &mut QueryClient<_>, records: Vec<Record>| {
        sent += records.len() as u64;
        agent.send(records).await;
        inventory_at(q, sent).await;
    };

    // Wednesday 10:00 in New York; the scanner the day before its retirement.
    pass(&mut agent, &mut q, vec![api("2026-12-02T15:00:00Z", ("10.1.0.7", 5432)), scan("2026-11-29T12:00:00Z")]).await;
    // Within the API's first 24 hours: a known peer and a new one (both baseline).
    pass(
        &mut agent,
        &mut q,
        vec![api("2026-12-02T16:00:00Z", ("10.1.0.7", 5432)), api("2026-12-02T17:00:00Z", ("10.9.9.9", 443))],
    )
    .await;
    assert!(alerts(&mut q, "new_peer").await.is_empty());
    assert!(alerts(&mut q, "outside_hours").await.is_empty());
    assert!(alerts(&mut q, "retired_identity_active").await.is_empty());

    // Thursday 16:00 New York, 30 h after it was first seen: a peer it never
    // talked to (twice: one alert). Saturday twice, Sunday once: one alert per
    // local day. The retired scanner talks twice on 1 December: one alert.
    pass(
        &mut agent,
        &mut q,
        vec![
            api("2026-12-03T21:00:00Z", ("10.6.6.6", 22)),
            api("2026-12-03T21:05:00Z", ("10.6.6.6", 22)),
            api("2026-12-05T15:00:00Z", ("10.1.0.7", 5432)),
            api("2026-12-05T16:00:00Z", ("10.1.0.7", 5432)),
            api("2026-12-06T15:00:00Z", ("10.1.0.7", 5432)),
            scan("2026-12-01T12:00:00Z"),
            scan("2026-12-01T13:00:00Z"),
        ],
    )
    .await;
    // The peer is stored now: talking to it again is no news.
    pass(&mut agent, &mut q, vec![api("2026-12-04T15:00:00Z", ("10.6.6.6", 22))]).await;

    let np = alerts(&mut q, "new_peer").await;
    assert_eq!(np.len(), 1, "{np:?}");
    assert_eq!((np[0].identity_key.as_str(), np[0].severity.as_str()), (API, "medium"));
    assert_eq!(detail(&np[0])["peer"], "10.6.6.6:22");
    assert_eq!(np[0].time_ns, utc("2026-12-03T21:00:00Z"));

    let oh = alerts(&mut q, "outside_hours").await;
    let days: Vec<(String, String)> = oh
        .iter()
        .map(|a| (detail(a)["period"].as_str().unwrap().into(), detail(a)["local_time"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        days,
        [
            ("2026-12-05".to_string(), "2026-12-05T10:00:00".to_string()),
            ("2026-12-06".to_string(), "2026-12-06T10:00:00".to_string())
        ],
        "{oh:?}"
    );
    assert!(detail(&oh[0])["hours"].as_str().unwrap().contains("America/New_York"));

    let rt = alerts(&mut q, "retired_identity_active").await;
    assert_eq!(rt.len(), 1, "{rt:?}");
    assert_eq!((rt[0].identity_key.as_str(), rt[0].severity.as_str()), (SCANNER, "high"));
    assert_eq!(detail(&rt[0])["retired_since_ns"], utc("2026-11-30T00:00:00Z"));
    assert_eq!(rt[0].time_ns, utc("2026-12-01T12:00:00Z"));
    server.stop().await;
}
