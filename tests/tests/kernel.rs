//! Kernel-level properties of capture, as root: what is and is not captured.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use wiretrail_tests::{agent::Agent, records::stream, require_root, serial, workspace_bin};

/// A loopback TCP exchange inside this test process: `payload` from client to server.
fn tcp_send(payload: &[u8]) -> (String, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let saddr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    });
    let mut c = TcpStream::connect(saddr).unwrap();
    let caddr = c.local_addr().unwrap();
    c.write_all(payload).unwrap();
    drop(c);
    assert_eq!(t.join().unwrap(), payload);
    (caddr.to_string(), saddr.to_string())
}

#[test]
fn per_connection_cap_truncates_explicitly() {
    require_root();
    let _g = serial();
    let agent = Agent::start(&["--conn-cap-bytes", "1000"]);
    let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let (caddr, saddr) = tcp_send(&payload);
    std::thread::sleep(Duration::from_millis(300));
    let (recs, stats) = agent.stop();
    let client: Vec<_> = recs.0.iter().filter(|r| r["local"] == caddr && r["remote"] == saddr).collect();
    let cid = client[0]["conn_id"].as_u64().unwrap();
    let s = stream(&client, cid, "egress");
    assert_eq!(s.bytes, &payload[..1000], "exactly the capped prefix is captured");
    assert_eq!(s.gaps, vec![(1000, 4000)], "the rest is an explicit gap");
    let gap = client.iter().find(|r| r["type"] == "gap").unwrap();
    assert_eq!(gap["gap_reason"], "truncated");
    assert!(stats["gap_truncated_bytes"].as_u64().unwrap() >= 4000);
}

#[test]
fn files_pipes_and_the_agent_itself_are_not_captured() {
    require_root();
    let _g = serial();
    let agent = Agent::start(&["--metrics-addr", "127.0.0.1:0"]);
    let marker = b"wiretrail-not-a-socket-marker-7f3a";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), marker).unwrap();
    let _ = std::fs::read(dir.path().join("f")).unwrap();
    let mut child =
        Command::new("cat").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(marker).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, marker);
    let agent_pid = agent.pid();
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let needle = base64_of(marker);
    assert!(
        !recs.0.iter().any(|r| r["payload_b64"].as_str().is_some_and(|p| p.contains(&needle))),
        "file/pipe bytes were captured"
    );
    assert!(recs.of_pid(agent_pid).is_empty(), "the agent captured its own traffic");
    let chunk_level = ["data", "connect", "accept", "close", "gap"];
    assert!(
        recs.0
            .iter()
            .filter(|r| chunk_level.iter().any(|k| r["type"] == *k))
            .all(|r| r["transport"] == "tcp" || r["transport"] == "udp")
    );
}

#[test]
fn self_check_names_missing_capabilities() {
    require_root();
    let agent = workspace_bin("wiretrail-agent");
    let ok = Command::new(&agent).arg("check").output().unwrap();
    assert!(ok.status.success(), "self-check failed as root: {}", String::from_utf8_lossy(&ok.stderr));
    // Drop CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN from the bounding set and run again.
    let out = Command::new("capsh")
        .arg("--drop=cap_bpf,cap_perfmon,cap_sys_admin")
        .arg("--")
        .arg("-c")
        .arg(format!("{} check", agent.display()))
        .output()
        .expect("capsh (apt-get install libcap2-bin)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_BPF") && err.contains("CAP_PERFMON"), "message does not name the capabilities: {err}");
    // Each missing capability on a line of its own, with why and the fix.
    for (cap, why) in
        [("BPF", "needed to load the eBPF programs"), ("PERFMON", "needed to attach tracepoints and uprobes")]
    {
        let line = err
            .lines()
            .find(|l| l.trim().starts_with(&format!("- missing CAP_{cap}:")))
            .unwrap_or_else(|| panic!("no line for CAP_{cap}: {err}"));
        assert!(line.contains(why), "{line}");
        assert!(line.contains(&format!("capabilities.add: [{cap}]")), "{line}");
        assert!(line.contains(&format!("AmbientCapabilities=CAP_{cap}")), "{line}");
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    // Only a whole-aligned prefix is stable inside longer payloads; the marker is sent alone.
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A server that accepts, forks a child to serve the connection and closes its
/// own copy (PostgreSQL, Apache prefork, inetd): the parent's close must not end
/// the connection, so the accept and the child's bytes share one connection id.
#[test]
fn forked_server_keeps_one_connection_id() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("forksrv.py");
    std::fs::write(
        &script,
        r#"import socket, os
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
port = s.getsockname()[1]
client = os.fork()
if client == 0:
    c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"hello-fork"); c.recv(100); os._exit(0)
conn, _ = s.accept()
child = os.fork()
if child == 0:
    data = conn.recv(100); conn.sendall(data.upper()); conn.close(); os._exit(0)
conn.close()
os.waitpid(child, 0); os.waitpid(client, 0)
print(port)
"#,
    )
    .unwrap();
    let agent = Agent::start(&["--no-tls"]);
    let out = Command::new("python3").arg(&script).output().unwrap();
    assert!(out.status.success());
    let port: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let server: Vec<_> = recs.0.iter().filter(|r| r["local"] == format!("127.0.0.1:{port}")).collect();
    let accept = server.iter().find(|r| r["type"] == "accept").expect("accept record");
    let cid = accept["conn_id"].clone();
    let data: Vec<_> = server.iter().filter(|r| r["type"] == "data").collect();
    assert_eq!(data.len(), 2, "{server:#?}");
    assert!(data.iter().all(|r| r["conn_id"] == cid && r["pid"] != accept["pid"]), "{server:#?}");
    let closes: Vec<_> = server.iter().filter(|r| r["type"] == "close").collect();
    assert_eq!(closes.len(), 1, "only the last reference's close ends the connection: {closes:#?}");
    assert_eq!(closes[0]["conn_id"], cid);
    assert_eq!((closes[0]["tx_total"].as_u64(), closes[0]["rx_total"].as_u64()), (Some(10), Some(10)));
}
