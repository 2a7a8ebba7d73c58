//! Segmentation enforced in the kernel, as root: two workloads in cgroups and
//! network namespaces of their own, a policy between them, and the decisions
//! as records (locally and in the collector).
mod support;

use std::{path::Path, time::Duration};

use serde_json::Value;
use support::{segmentation::*, *};
use wiretrail_tests::{
    agent::Agent,
    collector::Collector,
    netns::ADDR_B,
    require_root, serial, wait_until,
    workload::{Cgroup, Session, connect_once, udp_send_once},
};

#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

#[test]
fn enforce_denies_with_eperm_and_both_decisions_reach_the_collector() {
    require_root();
    let _g = serial();
    let s = Setup::new("se");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs::generate(&certs, &["agent", "security"]).expect("certificates");
    let port = wiretrail_tests::free_port();
    let collector = Collector::start(&dir.path().join("data"), &certs, port);
    let policy_path = dir.path().join("policy.yaml");
    // The agent's own binary is in a zone no rule lets out: the agent must
    // still ship its records (it never decides its own connections).
    let agent_bin = wiretrail_tests::workspace_bin("wiretrail-agent");
    let agent_zone = format!(
        "  - name: agent\n    mode: enforce\n    members:\n      - exe: {}\nrules:\n",
        std::fs::canonicalize(&agent_bin).unwrap().display()
    );
    let text = s.policy("enforce", &[ALLOWED]).replacen("rules:\n", &agent_zone, 1);
    write(&policy_path, &text);
    let agent = Agent::start(&[
        "--no-tls",
        "--policy",
        policy_path.to_str().unwrap(),
        "--collector",
        &format!("https://127.0.0.1:{port}"),
        "--tls-dir",
        certs.to_str().unwrap(),
        "--spool-dir",
        dir.path().join("spool").to_str().unwrap(),
        "--agent-id",
        "seg-test",
    ]);
    assert_eq!(s.connect(ALLOWED), Ok(()), "allowed connection failed:\n{}", agent.log());
    assert_eq!(s.connect(OTHER), Err(EPERM), "disallowed connection was not refused with EPERM");
    // UDP: sendto() a port no rule allows is refused by the sendmsg hook.
    assert_eq!(udp_send_once(&s.client, Some(&s.net.a), ADDR_B, UDP_ALLOWED), Ok(()), "allowed UDP sendto refused");
    assert_eq!(udp_send_once(&s.client, Some(&s.net.a), ADDR_B, OTHER), Err(EPERM), "UDP sendto not refused");

    let hash = sha256_hex(&text);
    let allow = wait_decision(&agent, "connect", ALLOWED, "allow");
    assert_eq!(allow.rule, "client-to-server");
    assert_eq!(allow.rule_line, 16, "{allow:?}");
    let deny = wait_decision(&agent, "connect", OTHER, "deny");
    for (d, rule) in [(&allow, "client-to-server"), (&deny, "default-deny")] {
        assert_eq!(d.rule, rule, "{d:?}");
        assert_eq!(d.policy_sha256, hash, "{d:?}");
        assert_eq!((d.local_zone.as_str(), d.peer_zone.as_str()), ("client", "server"));
        assert_eq!(cgroup(&d.identity), s.client.path, "{d:?}");
        assert_eq!(d.peer_identity.get("zone").map(String::as_str), Some("server"));
        assert_eq!(d.peer_identity.get("cgroup_path"), Some(&s.server.path), "{d:?}");
        assert!(d.identity.as_ref().and_then(|i| i.exe.as_ref()).is_some_and(|e| e.contains("python3")), "{d:?}");
        assert_eq!(d.remote.ip().to_string(), ADDR_B);
    }
    assert_eq!(deny.mode, "enforce");
    let udp = wait_decision(&agent, "sendmsg", OTHER, "deny");
    assert_eq!(udp.transport, Transport::Udp, "{udp:?}");
    assert_eq!(udp.hook, "sendmsg4");
    // The server's side: the allowed SYN was decided at its ingress hook.
    let inbound = wait_decision(&agent, "ingress", ALLOWED, "allow");
    assert_eq!(cgroup(&inbound.identity), s.server.path, "{inbound:?}");
    assert_eq!(inbound.peer_zone, "client");

    // The captured conversation holds both ends, across the two namespaces.
    let recs = Records::parse(&agent.records_now());
    assert!(
        recs.0.iter().filter(|r| !r.parts().is_empty()).filter_map(Record::who).any(|w| {
            let ids = [cgroup(&w.identity), cgroup(&w.peer_identity)];
            ids.contains(&s.client.path) && ids.contains(&s.server.path)
        }),
        "no record names both the client and the server"
    );

    // Both decisions are queryable in the collector, with both identities and the hash.
    let client_id = format!("cgroup_path={}", s.client.path);
    let stored = |verdict: &str| {
        collector
            .query(&["--identity", &client_id])
            .into_iter()
            .find(|r| r["kind"] == "RECORD_KIND_POLICY_DECISION" && r["decision"]["verdict"] == verdict)
    };
    assert!(
        wait_until(Duration::from_secs(15), || stored("allow").is_some() && stored("deny").is_some()),
        "decisions not in the collector:\nagent:\n{}\ncollector:\n{}",
        agent.log(),
        collector.log()
    );
    for v in ["allow", "deny"] {
        let r = stored(v).unwrap();
        assert_eq!(r["decision"]["policy_sha256"], hash.as_str(), "{r}");
        assert_eq!(r["identity"]["cgroup_path"], s.client.path.as_str());
        assert_eq!(r["peer_workload_identity"]["cgroup_path"], s.server.path.as_str(), "{r}");
        assert_eq!(r["peer_workload_identity"]["zone"], "server");
        assert_eq!(r["remote"]["port"], if v == "allow" { ALLOWED } else { OTHER });
    }
    // The denial raised an alert naming both workloads and the policy version.
    let alert = || {
        collector.cli_json("alerts", &["--kind", "policy_denied"]).into_iter().find(|a| {
            a["detail"]["policy_sha256"] == hash.as_str()
                && a["detail"]["identity"]["cgroup_path"] == s.client.path.as_str()
        })
    };
    assert!(wait_until(Duration::from_secs(15), || alert().is_some()), "no policy_denied alert:\n{}", collector.log());
    let a = alert().unwrap();
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["detail"]["peer_identity"]["cgroup_path"], s.server.path.as_str(), "{a}");
    assert_eq!(a["detail"]["rule"], "default-deny");
    // No registry: the client workload is a shadow identity in the inventory.
    let client_key = format!("host:{}:{}:", hostname(), s.client.path);
    let inv = collector.cli_json("inventory", &["--shadow"]);
    assert!(
        inv.iter()
            .any(|e| e["identity_key"].as_str().is_some_and(|k| k.starts_with(&client_key)) && e["shadow"] == true),
        "client not in the shadow inventory ({client_key}): {inv:#?}"
    );
    // Continuous segmentation testing: replay the recorded connections against
    // a policy that no longer allows ALLOWED. The policy in force passes; the
    // narrowed one lists the client's allowed connection as would-be denied.
    let check = |policy: &str| {
        let path = dir.path().join("check.yaml");
        write(&path, policy);
        let out = std::process::Command::new(wiretrail_tests::workspace_bin("wiretrail"))
            .args(["policy", "check", "--json", "--server", &format!("127.0.0.1:{port}"), "--tls-dir"])
            .arg(&certs)
            .arg("--policy")
            .arg(&path)
            .output()
            .expect("wiretrail policy check");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = check(&text);
    assert_eq!(code, Some(0), "the policy in force must pass its own recorded flows: {out}");
    let (code, out) = check(&s.policy("enforce", &[OTHER]));
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        lines.iter().any(|l| l["verdict"] == "deny"
            && l["direction"] == "egress"
            && l["local_zone"] == "client"
            && l["peer"] == ADDR_B
            && l["port"] == ALLOWED),
        "the recorded client -> server:{ALLOWED} flow is not listed: {out}"
    );
    assert!(decisions(&agent).iter().all(|d| d.local_zone != "agent"), "the agent decided its own connections");
    let (_, stats) = agent.stop();
    assert!(stats["policy_denied"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["policy_lost"], 0);
}

#[test]
fn audit_mode_lets_the_flow_through_and_records_the_violation() {
    require_root();
    let _g = serial();
    let s = Setup::new("sa");
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    let text = s.policy("audit", &[ALLOWED]);
    write(&policy_path, &text);
    let agent = Agent::start(&["--no-tls", "--policy", policy_path.to_str().unwrap()]);
    assert_eq!(s.connect(OTHER), Ok(()), "audit mode must not block:\n{}", agent.log());
    let out = wait_decision(&agent, "connect", OTHER, "audit");
    assert_eq!(out.mode, "audit");
    assert_eq!(out.rule, "default-deny");
    assert_eq!(out.policy_sha256, sha256_hex(&text));
    assert_eq!(cgroup(&out.identity), s.client.path);
    assert_eq!(out.peer_identity.get("cgroup_path"), Some(&s.server.path));
    // The server zone is in audit too: its inbound side is recorded as a violation.
    let inbound = wait_decision(&agent, "ingress", OTHER, "audit");
    assert_eq!(inbound.local_zone, "server");
    assert_eq!(inbound.peer_zone, "client");
    drop(agent);
}

#[test]
fn reload_keeps_open_connections_and_denies_new_ones_at_once() {
    require_root();
    let _g = serial();
    let s = Setup::new("sr");
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    write(&policy_path, &s.policy("enforce", &[ALLOWED, OTHER]));
    let agent = Agent::start(&["--no-tls", "--policy", policy_path.to_str().unwrap()]);
    assert_eq!(s.connect(OTHER), Ok(()), "both ports allowed at first:\n{}", agent.log());
    let mut open = Session::open(&s.client, Some(&s.net.a), ADDR_B, OTHER);
    assert_eq!(open.roundtrip("before"), "ok before");

    // Narrow the policy: OTHER is no longer allowed.
    let narrowed = s.policy("enforce", &[ALLOWED]);
    write(&policy_path, &narrowed);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let hash = sha256_hex(&narrowed);
    wait_notice(&agent, "policy_loaded", |n| n.details["policy_sha256"] == hash.as_str());
    assert_eq!(s.connect(OTHER), Err(EPERM), "newly disallowed destination not denied right after reload");
    assert_eq!(open.roundtrip("after"), "ok after", "the established connection broke on reload");
    assert_eq!(s.connect(ALLOWED), Ok(()));
    let deny = wait_decision(&agent, "connect", OTHER, "deny");
    assert_eq!(deny.policy_sha256, hash);
    assert_eq!(deny.policy_generation, 2);

    // An invalid policy is rejected, naming the line; the narrowed one stays in force.
    let bad = narrowed.replace("to: server", "to: nowhere");
    write(&policy_path, &bad);
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let rejected = wait_notice(&agent, "policy_rejected", |_| true);
    let err = rejected.details["error"].as_str().unwrap();
    assert!(err.contains("line 14"), "the rejection must name the line: {err}");
    assert!(err.contains("nowhere"), "{err}");
    assert_eq!(rejected.details["policy_sha256_in_force"], hash.as_str());
    assert_eq!(s.connect(OTHER), Err(EPERM), "the previous policy must stay in force");
    assert_eq!(s.connect(ALLOWED), Ok(()));
    assert_eq!(open.roundtrip("still"), "ok still");
    drop(agent);
}

#[test]
fn an_invalid_policy_at_start_is_refused_naming_the_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    write(
        &path,
        "version: 1\nzones:\n  - name: a\n    members:\n      - cgroup: /x\nrules:\n  - from: a\n    to: {cidr: 10.0.0.1/8}\n",
    );
    let out = std::process::Command::new(wiretrail_tests::workspace_bin("wiretrail-agent"))
        .args(["--no-tls", "--output", "none", "--policy"])
        .arg(&path)
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains("line 8"), "{err}");
}

#[test]
fn exe_members_are_matched_by_file_in_the_kernel() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // A copy of curl is a different file (device, inode): only it is in the zone.
    let zoned = dir.path().join("curl-zoned");
    std::fs::copy("/usr/bin/curl", &zoned).expect("copy curl");
    let policy_path = dir.path().join("policy.yaml");
    let text = format!(
        "version: 1\nzones:\n  - name: tool\n    mode: enforce\n    members:\n      - exe: {}\nrules: []\n",
        zoned.display()
    );
    write(&policy_path, &text);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            use std::io::Write as _;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let agent = Agent::start(&["--no-tls", "--policy", policy_path.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{port}/");
    let run = |bin: &Path| std::process::Command::new(bin).args(["-sS", "-o", "/dev/null", &url]).output().unwrap();
    let denied = run(&zoned);
    assert!(!denied.status.success(), "the zoned copy of curl must be denied");
    // curl reports EPERM as "Couldn't connect" (exit 7); the decision below says why.
    assert_eq!(denied.status.code(), Some(7), "{denied:?}");
    assert!(run(Path::new("/usr/bin/curl")).status.success(), "the original curl is in no zone");
    let d = wait_decision(&agent, "connect", port, "deny");
    assert_eq!(d.local_zone, "tool");
    assert_eq!(d.identity.as_ref().and_then(|i| i.exe.as_deref()), zoned.to_str(), "{d:?}");
    assert_eq!(d.peer_zone, "");
    drop(agent);
}

#[test]
fn a_cgroup_created_under_a_live_policy_joins_its_zone() {
    require_root();
    let _g = serial();
    let s = Setup::new("sl");
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    // `client*`: any cgroup named client... under the slice is in the client zone.
    write(&policy_path, &s.policy("enforce", &[ALLOWED]).replace("/client\"", "/client*\""));
    let agent = Agent::start(&["--no-tls", "--policy", policy_path.to_str().unwrap()]);
    let late = Cgroup::new(&s.slice, "client-late");
    // The kernel reports the new cgroup; the agent puts it in its zone.
    let joined =
        |a: &Agent| a.log().lines().any(|l| l.contains("cgroup joined its policy zone") && l.contains(&late.path));
    assert!(wait_until(Duration::from_secs(10), || joined(&agent)), "the new cgroup never joined:\n{}", agent.log());
    assert_eq!(connect_once(&late, Some(&s.net.a), ADDR_B, OTHER), Err(EPERM), "a late cgroup escaped the policy");
    assert_eq!(connect_once(&late, Some(&s.net.a), ADDR_B, ALLOWED), Ok(()));
    let d = wait_decision(&agent, "connect", OTHER, "deny");
    assert_eq!(cgroup(&d.identity), late.path, "{d:?}");
    drop(agent);
}
