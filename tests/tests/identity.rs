//! Workload identity on records, as root: a process in a cgroup named like a
//! containerd container carries the container id, its cgroup path and its exe.
use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use wiretrail_tests::{agent::Agent, free_port, nginx::Nginx, require_root, serial};

const ID: &str = "5e1f0c2d3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup v2 mount")
}

/// A cgroup of our own, removed on drop (after its processes have exited).
struct TestCgroup(PathBuf, PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.1);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn records_carry_the_container_id_of_a_containerd_cgroup() {
    require_root();
    let _g = serial();
    let slice = cgroup2_root().join(format!("wiretrail-test-{}.slice", std::process::id()));
    let scope = slice.join(format!("cri-containerd-{ID}.scope"));
    std::fs::create_dir_all(&scope).expect("create test cgroup");
    let _cg = TestCgroup(slice.clone(), scope.clone());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&["--no-tls"]);
    // The shell moves itself into the cgroup, then becomes curl.
    let procs = scope.join("cgroup.procs");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {} && exec curl -s -o /dev/null http://{addr}/index.html", procs.display()))
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let mine: Vec<_> = recs.of_pid(pid).into_iter().filter(|r| r["type"] == "data").collect();
    assert!(!mine.is_empty(), "no records of curl");
    let rel = format!("/{}", scope.strip_prefix(cgroup2_root()).unwrap().display());
    for r in &mine {
        let id = &r["identity"];
        assert_eq!(id["container"]["id"], ID, "{r}");
        assert_eq!(id["container"]["runtime"], "containerd");
        assert_eq!(id["cgroup_path"], rel.as_str());
        assert!(id["exe"].as_str().is_some_and(|e| e.ends_with("/curl")), "{id}");
    }
    // nginx, outside any container cgroup, carries no container.
    let server = recs.0.iter().find(|r| r["type"] == "data" && r["comm"] == "nginx").expect("nginx records");
    assert!(server["identity"]["container"].is_null(), "{server}");
    assert!(server["identity"]["exe"].as_str().is_some_and(|e| e.ends_with("/nginx")));
}
