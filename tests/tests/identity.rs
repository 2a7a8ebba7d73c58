//! Workload identity on records, as root: a process in a cgroup named like a
//! containerd container carries the container id, its cgroup path, its exe and
//! the exe's SHA-256; with `--kube`, the pod a (fake) API server says the
//! container belongs to; and conversations between two local processes carry
//! each other's identity as `peer_identity`.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};
use wiretrail_tests::{
    agent::Agent,
    free_port,
    kube_api::{FakeKubeApi, pod},
    nginx::Nginx,
    require_root, serial, wait_until,
    workload::Cgroup,
};

const ID: &str = "5e1f0c2d3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `wiretrail-test-<pid>-<tag>.slice/cri-containerd-<id>.scope`: a cgroup named
/// like a containerd container's.
fn containerd_cgroup(tag: &str, id: &str) -> Cgroup {
    Cgroup::new(&format!("wiretrail-test-{}-{tag}.slice", std::process::id()), &format!("cri-containerd-{id}.scope"))
}

/// Runs curl for `url` inside `cg`; returns curl's pid.
fn curl_in(cg: &Cgroup, url: &str) -> u32 {
    let child = cg.command(None, "curl", &["-s", "-o", "/dev/null", url]).spawn().unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    pid
}

/// SHA-256 of a file, by coreutils (independent of the agent's code).
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().unwrap();
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{program} ({}): {e}", p.display()))
}

#[test]
fn records_carry_the_container_id_of_a_containerd_cgroup() {
    require_root();
    let _g = serial();
    let cg = containerd_cgroup("containerd", ID);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&["--no-tls"]);
    let pid = curl_in(&cg, &format!("http://{addr}/index.html"));
    // nginx (over 1 MiB) is hashed off the event path after its first records;
    // a later request's records carry the hash.
    std::thread::sleep(Duration::from_millis(1000));
    let later = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://{addr}/index.html")]).status();
    assert!(later.unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let mine: Vec<_> = recs.of_pid(pid).into_iter().filter(|r| r["type"] == "data").collect();
    assert!(!mine.is_empty(), "no records of curl");
    let rel = cg.path.clone();
    let curl_sha = sha256sum(&which("curl"));
    // curl (under 1 MiB) is hashed at first sight: every record has it.
    assert_eq!(mine[0]["identity"]["exe_sha256"], curl_sha.as_str(), "{}", mine[0]);
    for r in &mine {
        let id = &r["identity"];
        assert_eq!(r["uid"], 0, "{r}");
        assert_eq!(id["exe_sha256"], curl_sha.as_str(), "{id}");
        assert_eq!(id["container"]["id"], ID, "{r}");
        assert_eq!(id["container"]["runtime"], "containerd");
        assert_eq!(id["cgroup_path"], rel.as_str());
        assert!(id["exe"].as_str().is_some_and(|e| e.ends_with("/curl")), "{id}");
    }
    // Protocol records (made from the bytes after the fact) carry the identity too.
    let conns: Vec<&Value> = mine.iter().map(|r| &r["conn_id"]).collect();
    let parsed: Vec<_> = recs.0.iter().filter(|r| r["type"] == "record" && conns.contains(&&r["conn_id"])).collect();
    assert!(!parsed.is_empty(), "no protocol records of curl's connection");
    for r in &parsed {
        assert_eq!(r["identity"]["container"]["id"], ID, "{r}");
        assert_eq!(r["identity"]["cgroup_path"], rel.as_str(), "{r}");
    }
    // nginx, outside any container cgroup, carries no container.
    let server = recs.0.iter().find(|r| r["type"] == "data" && r["comm"] == "nginx").expect("nginx records");
    assert!(server["identity"]["container"].is_null(), "{server}");
    assert!(server["identity"]["exe"].as_str().is_some_and(|e| e.ends_with("/nginx")));
    let nginx_sha = sha256sum(&which("nginx"));
    let nginx: Vec<_> = recs.0.iter().filter(|r| r["comm"] == "nginx").collect();
    assert_eq!(nginx.last().unwrap()["identity"]["exe_sha256"], nginx_sha.as_str());
    assert!(
        nginx
            .iter()
            .all(|r| r["identity"]["exe_sha256"].is_null() || r["identity"]["exe_sha256"] == nginx_sha.as_str())
    );
}

#[test]
fn records_carry_the_pod_of_their_container() {
    require_root();
    let _g = serial();
    const POD_ID: &str = "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b";
    let cg = containerd_cgroup("kube", POD_ID);
    let api = FakeKubeApi::start();
    let labels = json!({"app.kubernetes.io/name": "checkout", "tier": "backend"});
    api.set_pods(vec![
        pod(
            "checkout-6f7d9-abcde",
            "shop",
            "2b1c7e0a-5d4f-4e3b-8a9c-0d1e2f3a4b5c",
            "test-node",
            "10.244.3.7",
            &[POD_ID],
            labels,
        ),
        // Not on this node: the field selector keeps it out.
        pod("other-0", "shop", "7e6d5c4b-3a2f-4e1d-9c8b-7a6f5e4d3c2b", "node-b", "10.244.9.9", &[ID], json!({})),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent =
        Agent::start(&["--no-tls", "--kube", "--kubeconfig", kubeconfig.to_str().unwrap(), "--node-name", "test-node"]);
    // The watch starts once the list is applied.
    let watching = wait_until(Duration::from_secs(30), || api.requests().iter().any(|r| r.contains("watch=true")));
    assert!(watching, "no watch request: {:?}\n{}", api.requests(), agent.log());
    let pid = curl_in(&cg, &format!("http://{addr}/index.html"));
    std::thread::sleep(Duration::from_millis(300));
    let (recs, stats) = agent.stop();
    let mine: Vec<_> = recs.of_pid(pid).into_iter().filter(|r| r["type"] == "data").collect();
    assert!(!mine.is_empty(), "no records of curl");
    for r in &mine {
        let p = &r["identity"]["pod"];
        assert_eq!(p["name"], "checkout-6f7d9-abcde", "{r}");
        assert_eq!(p["namespace"], "shop");
        assert_eq!(p["uid"], "2b1c7e0a-5d4f-4e3b-8a9c-0d1e2f3a4b5c");
        assert_eq!(p["service_account"], "sa-checkout-6f7d9-abcde");
        assert_eq!(p["node"], "test-node");
        assert_eq!(p["labels"], json!({"app.kubernetes.io/name": "checkout", "tier": "backend"}));
        assert_eq!(r["identity"]["container"]["id"], POD_ID);
    }
    // nginx runs in no pod.
    let server = recs.0.iter().find(|r| r["type"] == "data" && r["comm"] == "nginx").expect("nginx records");
    assert!(server["identity"]["pod"].is_null(), "{server}");
    for r in api.requests() {
        assert!(r.contains("fieldSelector=spec.nodeName%3Dtest-node"), "{r}");
    }
    assert_eq!(stats["kube_pods"], 1, "{stats}");
    assert_eq!(stats["kube_api_errors"], 0, "{stats}");
}

#[test]
fn local_conversations_carry_the_peer_identity() {
    require_root();
    let _g = serial();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&["--no-tls"]);
    let curl =
        Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://{addr}/index.html")]).spawn().unwrap();
    let pid = curl.id();
    assert!(curl.wait_with_output().unwrap().status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let exe_of = |r: &Value, key: &str| r[key]["exe"].as_str().map(String::from).unwrap_or_default();
    let client: Vec<&Value> = recs.of_pid(pid).into_iter().filter(|r| r["remote"] == addr.to_string()).collect();
    assert!(!client.is_empty(), "no records of curl");
    let client_end = client[0]["local"].as_str().unwrap().to_string();
    // The response curl reads comes after nginx's accept: it names nginx.
    let reads: Vec<_> = client.iter().filter(|r| r["type"] == "data" && r["direction"] == "ingress").collect();
    assert!(!reads.is_empty(), "curl read nothing");
    for r in &reads {
        assert!(exe_of(r, "peer_identity").ends_with("/nginx"), "{r}");
    }
    // Every nginx record of this connection names curl.
    let server: Vec<&Value> =
        recs.0.iter().filter(|r| r["comm"] == "nginx" && r["remote"] == client_end.as_str()).collect();
    assert!(server.iter().any(|r| r["type"] == "data"), "no nginx records of the connection");
    for r in server.iter().filter(|r| r["type"] != "close") {
        assert!(exe_of(r, "peer_identity").ends_with("/curl"), "{r}");
        assert!(exe_of(r, "identity").ends_with("/nginx"), "{r}");
    }
}
