//! Collector and agent as processes with mTLS, as root: records reach the
//! collector within seconds, survive a 30 s collector outage and a SIGKILL of
//! the collector, and are stored exactly once.
#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

mod support;

use serde_json::Value;
use support::*;
use wiretrail_tests::{agent::Agent, collector::Collector, free_port, nginx::Nginx, require_root, serial, wait_until};

/// Sets up certificates, a collector and an agent shipping to it.
fn setup(dir: &std::path::Path) -> (Collector, Agent) {
    let certs = dir.join("certs");
    certs::generate(&certs, &["agent", "security"]).expect("certificates");
    let port = free_port();
    let collector = Collector::start(&dir.join("data"), &certs, port);
    let agent = Agent::start(&[
        "--collector",
        &format!("https://127.0.0.1:{port}"),
        "--agent-id",
        "agent",
        "--tls-dir",
        certs.to_str().unwrap(),
        "--spool-dir",
        dir.join("spool").to_str().unwrap(),
    ]);
    (collector, agent)
}

fn curl(addr: SocketAddr, marker: &str) {
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "-H", &format!("X-Wiretrail-Marker: {marker}")])
        .arg(format!("http://{addr}/index.html"))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Records of the agent's local output whose bytes contain `marker`.
fn local_with(recs: &Records, marker: &str) -> usize {
    recs.0.iter().filter(|r| r.parts().iter().any(|p| find(&p.raw.0, marker.as_bytes()).is_some())).count()
}

/// Collector records of curl's HTTP/1.1 requests containing `marker`, by leaf
/// index (each must be unique). The CLI's own searches carry the marker too:
/// they are TLS (HTTP/2) to the collector, and their rustls plaintext is captured.
fn stored_with(c: &Collector, marker: &str) -> Vec<Value> {
    c.query(&["--text", marker, "--protocol", "http1"])
}

#[test]
fn records_reach_the_collector_within_two_seconds_with_the_agent_identity() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let (collector, agent) = setup(dir.path());
    let marker = "wt-quick-7f21";
    curl(addr, marker);
    let t0 = Instant::now();
    let found = wait_until(Duration::from_secs(2), || !stored_with(&collector, marker).is_empty());
    let elapsed = t0.elapsed();
    assert!(found, "curl traffic not queryable at the collector within 2 s:\n{}", collector.log());
    eprintln!("queryable after {elapsed:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let stored = stored_with(&collector, marker);
    assert!(
        stored
            .iter()
            .all(|r| r["agent_id"] == "agent" && r["peer_identity"].as_str().is_some_and(|p| p.contains("agent")))
    );
    // One record per exchange, holding both ends (curl and nginx are on this host).
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let r = &stored[0];
    assert_eq!(
        (r["kind"].as_str(), r["app_protocol"].as_str(), r["comm"].as_str()),
        (Some("RECORD_KIND_EXCHANGE"), Some("http1"), Some("curl"))
    );
    assert_eq!(r["witness"]["comm"], "nginx", "{r}");
    assert!(r["peer_workload_identity"]["exe"].as_str().is_some_and(|e| e.ends_with("nginx")), "{r}");
    assert_eq!(r["parts"].as_array().map(Vec::len), Some(2), "{r}");
    // The same record is found by either end's identity.
    let by_nginx = collector.query(&[
        "--text",
        marker,
        "--identity",
        r["peer_workload_identity"]["exe"].as_str().map(|e| format!("exe={e}")).unwrap().as_str(),
    ]);
    assert_eq!(by_nginx.len(), 1, "not found by the server's identity: {by_nginx:#?}");
    // Provenance: the certificate that shipped it, with its role.
    assert!(r["shipped_by"].as_str().is_some_and(|s| s.contains("spiffe://wiretrail/role/agent/agent")), "{r}");
    // The reads are in the access log, under their case, with whose records came back.
    let cased = collector.query(&["--text", marker, "--protocol", "http1", "--case", "E2E-7"]);
    assert_eq!(cased.len(), 1);
    let log = collector.cli_json("access-log", &["--case-id", "E2E-7"]);
    assert_eq!(log.len(), 1, "{log:#?}");
    let a = &log[0];
    assert_eq!(
        (a["action"].as_str(), a["role"].as_str(), a["returned"].as_u64()),
        (Some("search"), Some("reviewer"), Some(1))
    );
    assert!(a["identity"].as_str().is_some_and(|i| i.contains("CN=security")), "{a}");
    assert_eq!(a["detail"]["filter"]["payload_text"], marker, "{a}");
    let nginx_key = a["workloads"].as_array().unwrap().iter().find(|w| w.as_str().unwrap().ends_with("nginx")).cloned();
    let nginx_key = nginx_key.unwrap_or_else(|| panic!("the server's workload is among whose records came back: {a}"));
    let whose = collector.cli_json("access-log", &["--workload", nginx_key.as_str().unwrap(), "--action", "search"]);
    assert!(whose.iter().any(|e| e["case_id"] == "E2E-7"), "{whose:#?}");
    drop(collector);
    drop(agent);
}

#[test]
fn collector_outage_and_sigkill_lose_nothing_and_store_nothing_twice() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let (mut collector, agent) = setup(dir.path());
    let port = collector.port;
    let mut markers = Vec::new();
    for i in 0..3 {
        let m = format!("wt-before-{i}-a1");
        curl(addr, &m);
        markers.push(m);
    }
    // 30 s outage while traffic continues.
    collector.stop();
    let outage = Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let m = format!("wt-outage-{i}-b2");
        curl(addr, &m);
        markers.push(m);
        i += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut collector = Collector::start(&dir.path().join("data"), &dir.path().join("certs"), port);
    // SIGKILL mid-ingest: keep traffic flowing while the collector dies.
    for i in 0..5 {
        let m = format!("wt-kill-{i}-c3");
        curl(addr, &m);
        markers.push(m);
    }
    std::thread::sleep(Duration::from_millis(300));
    collector.kill9();
    for i in 0..3 {
        let m = format!("wt-after-kill-{i}-d4");
        curl(addr, &m);
        markers.push(m);
    }
    let collector = Collector::start(&dir.path().join("data"), &dir.path().join("certs"), port);
    std::thread::sleep(Duration::from_secs(2));
    let (local, stats) = agent.stop();
    let local = Records::parse(&local);
    assert_eq!(stats["ship_closed"], 0);
    // Every record the agent produced for each request is stored exactly once.
    for m in &markers {
        let want = local_with(&local, m);
        assert_eq!(want, 1, "{m}: one record holds the request (both ends paired)");
        let ok = wait_until(Duration::from_secs(60), || stored_with(&collector, m).len() >= want);
        let got = stored_with(&collector, m);
        assert!(ok, "{m}: collector has {} of {want} records:\n{}", got.len(), collector.log());
        assert_eq!(got.len(), want, "{m}: stored {} times for {want} records (duplicates?)", got.len());
        let mut leaves: Vec<u64> = got.iter().map(|r| r["leaf_index"].as_u64().unwrap()).collect();
        leaves.dedup();
        assert_eq!(leaves.len(), want);
    }
    let (ok, out) = collector.verify();
    assert!(ok, "verify failed after the outage and SIGKILL:\n{out}");
}
