//! Workload identity on records, as root: a process in a cgroup named like a
//! containerd container carries the container id, its cgroup path, its exe and
//! the exe's SHA-256; with `--kube`, the pod a (fake) API server says the
//! container belongs to; and conversations between two local processes carry
//! each other's identity as `peer_identity`.
mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::json;
use support::*;
use wiretrail_agent::identity::Identity;
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
    let curl_sha = sha256sum(&which("curl"));
    let nginx_sha = sha256sum(&which("nginx"));
    // nginx (over 1 MiB) is hashed off the event path after its first records;
    // later requests are made until one's records carry the hash.
    let nginx_hashed = |text: &str| {
        Records::parse(text).0.iter().filter_map(Record::who).any(|w| {
            let hash = |i: &Option<std::sync::Arc<Identity>>| {
                i.as_ref().and_then(|i| i.exe_sha256.as_deref()) == Some(nginx_sha.as_str())
            };
            (w.side.comm.as_str() == "nginx" && hash(&w.identity))
                || (w.witness.is_some_and(|x| x.comm.as_str() == "nginx") && hash(&w.peer_identity))
        })
    };
    let hashed = wait_until(Duration::from_secs(20), || {
        let later = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://{addr}/index.html")]).status();
        assert!(later.unwrap().success());
        nginx_hashed(&agent.records_now())
    });
    assert!(hashed, "no record carries nginx's hash:\n{}", agent.log());
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    let rel = cg.path.clone();
    // Every record of curl's connection, whichever end it was made for, names
    // curl's workload: its own identity, or the other end's (`peer_identity`).
    let ids = |pid: u32| -> Vec<(Identity, Option<Identity>)> {
        recs.0
            .iter()
            .filter_map(Record::who)
            .filter_map(|w| {
                if w.side.pid == pid {
                    Some(((**w.identity.as_ref()?).clone(), w.peer_identity.as_deref().cloned()))
                } else if w.witness.is_some_and(|x| x.pid == pid) {
                    Some(((**w.peer_identity.as_ref()?).clone(), w.identity.as_deref().cloned()))
                } else {
                    None
                }
            })
            .collect()
    };
    let mine = ids(pid);
    assert!(!mine.is_empty(), "no records of curl");
    for (id, peer) in &mine {
        assert_eq!(id.exe_sha256.as_deref(), Some(curl_sha.as_str()), "{id:?}");
        let c = id.container.as_ref().expect("the container");
        assert_eq!((c.id.as_str(), c.runtime.as_ref()), (ID, "containerd"));
        assert_eq!(id.cgroup_path.as_deref(), Some(rel.as_str()));
        assert!(id.exe.as_ref().is_some_and(|e| e.ends_with("/curl")), "{id:?}");
        // nginx, outside any container cgroup, carries no container.
        let peer = peer.as_ref().expect("nginx's identity");
        assert!(peer.container.is_none() && peer.exe.as_ref().is_some_and(|e| e.ends_with("/nginx")), "{peer:?}");
    }
    let uids: Vec<u32> = recs.sides().iter().filter(|s| s.pid == pid).map(|s| s.uid).collect();
    assert!(!uids.is_empty() && uids.iter().all(|u| *u == 0));
    // nginx (over 1 MiB) is hashed off the event path: the later request's records carry its hash.
    let all_nginx: Vec<Option<std::sync::Arc<str>>> = recs
        .0
        .iter()
        .filter_map(Record::who)
        .flat_map(|w| {
            let mut v = Vec::new();
            if w.side.comm.as_str() == "nginx" {
                v.push(w.identity.as_ref().and_then(|i| i.exe_sha256.clone()));
            }
            if w.witness.is_some_and(|x| x.comm.as_str() == "nginx") {
                v.push(w.peer_identity.as_ref().and_then(|i| i.exe_sha256.clone()));
            }
            v
        })
        .collect();
    assert_eq!(all_nginx.last().cloned().flatten().as_deref(), Some(nginx_sha.as_str()));
    assert!(all_nginx.iter().all(|h| h.as_deref().is_none_or(|h| h == nginx_sha)));
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
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    let mine: Vec<&Who> = recs.0.iter().filter_map(Record::who).filter(|w| w.side.pid == pid).collect();
    assert!(!mine.is_empty(), "no records of curl");
    for w in &mine {
        let id = w.identity.as_ref().unwrap();
        let p = id.pod.as_ref().expect("the pod");
        assert_eq!(p.name, "checkout-6f7d9-abcde", "{id:?}");
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.uid, "2b1c7e0a-5d4f-4e3b-8a9c-0d1e2f3a4b5c");
        assert_eq!(p.service_account, "sa-checkout-6f7d9-abcde");
        assert_eq!(p.node, "test-node");
        assert_eq!(
            serde_json::to_value(&p.labels).unwrap(),
            json!({"app.kubernetes.io/name": "checkout", "tier": "backend"})
        );
        assert_eq!(id.container.as_ref().unwrap().id, POD_ID);
        // nginx runs in no pod.
        if let Some(peer) = &w.peer_identity {
            assert!(peer.pod.is_none(), "{peer:?}");
        }
    }
    for r in api.requests() {
        assert!(r.contains("fieldSelector=spec.nodeName%3Dtest-node"), "{r}");
    }
    assert_eq!(stats["kube_pods"], 1, "{stats}");
    assert_eq!(stats["kube_api_errors"], 0, "{stats}");
}

/// With pairing off (`--no-twins`), each end makes its own records, and
/// each names the other end's workload.
#[test]
fn local_conversations_carry_the_peer_identity() {
    require_root();
    let _g = serial();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&["--no-tls", "--no-twins"]);
    let curl =
        Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://{addr}/index.html")]).spawn().unwrap();
    let pid = curl.id();
    assert!(curl.wait_with_output().unwrap().status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    let exe = |i: &Option<std::sync::Arc<Identity>>| i.as_ref().and_then(|i| i.exe.clone()).unwrap_or_default();
    let cid = recs.client_conn(pid, &addr.to_string());
    let client_end = recs.side(cid).local.unwrap().to_string();
    let sid = recs.conn_between(&addr.to_string(), &client_end);
    for (conn, me, them) in [(cid, "/curl", "/nginx"), (sid, "/nginx", "/curl")] {
        let whos: Vec<&Who> = recs.0.iter().filter_map(Record::who).filter(|w| w.side.conn_id == conn).collect();
        assert!(whos.len() >= 2, "an exchange and a connection record for {conn}: {whos:#?}");
        for w in whos {
            assert!(w.witness.is_none(), "pairing is off");
            assert!(exe(&w.identity).ends_with(me), "{w:?}");
            assert!(exe(&w.peer_identity).ends_with(them), "{w:?}");
        }
    }
}
