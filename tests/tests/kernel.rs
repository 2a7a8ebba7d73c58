//! Kernel-level properties of capture, as root: what is and is not captured.
mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use support::*;
use wiretrail_tests::{agent::Agent, require_root, serial, workspace_bin};

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
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    let cid = recs.conn_between(&caddr, &saddr);
    for (conn, dir) in [(cid, Direction::Egress), (recs.conn_between(&saddr, &caddr), Direction::Ingress)] {
        let s = stream(&recs, conn, dir, false);
        assert!(s.tiled);
        assert_eq!(s.bytes, &payload[..1000], "exactly the capped prefix is captured");
        assert_eq!(s.gaps, vec![(1000, 4000)], "the rest is an explicit gap");
    }
    let reasons: Vec<GapReason> = recs
        .0
        .iter()
        .flat_map(|r| r.parts().iter().flat_map(|p| p.seen.gaps.iter().map(|g| g.reason)).collect::<Vec<_>>())
        .chain(recs.gaps().iter().map(|g| g.reason))
        .collect();
    assert!(reasons.contains(&GapReason::Truncated), "{reasons:?}");
    assert!(stats["gap_truncated_bytes"].as_u64().unwrap() >= 4000);
}

#[test]
fn files_pipes_and_the_agent_itself_are_not_captured() {
    require_root();
    let _g = serial();
    let agent = Agent::start(&["--metrics-addr", "127.0.0.1:0", "--log-format", "json"]);
    let marker = b"wiretrail-not-a-socket-marker-7f3a";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), marker).unwrap();
    let _ = std::fs::read(dir.path().join("f")).unwrap();
    let mut child =
        Command::new("cat").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(marker).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, marker);
    // The agent talks: this process fetches its metrics over TCP.
    let metrics = metrics_addr(&agent);
    let mut c = TcpStream::connect(metrics).unwrap();
    let local = c.local_addr().unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    let agent_pid = agent.pid();
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    assert!(
        !recs.0.iter().flat_map(|r| r.parts()).any(|p| find(&p.raw.0, marker).is_some()),
        "file/pipe bytes were captured"
    );
    // Positive control: this process's end of the conversation with the agent
    // was captured, so the agent's end was there to be seen.
    let ours = recs.conn_between(&local.to_string(), &metrics.to_string());
    assert_eq!(recs.side(ours).pid, std::process::id());
    assert!(!recs.sides().iter().any(|s| s.pid == agent_pid), "the agent captured its own traffic");
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

/// Runs the Python script `src` (saved as `name`) under an agent started with
/// `--no-tls`; returns the agent's records and the port numbers the script
/// printed. The agent's stop drains what the kernel saw before it.
fn python_under_agent(name: &str, src: &str) -> (Records, Vec<u16>) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(name);
    std::fs::write(&script, src).unwrap();
    let agent = Agent::start(&["--no-tls"]);
    let out = Command::new("python3").arg(&script).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let ports = String::from_utf8_lossy(&out.stdout).split_whitespace().map(|p| p.parse().unwrap()).collect();
    let (text, _) = agent.stop();
    (Records::parse(&text), ports)
}

/// A server that accepts, forks a child to serve the connection and closes its
/// own copy (PostgreSQL, Apache prefork, inetd): the parent's close must not end
/// the connection, so the accept and the child's bytes share one connection id.
#[test]
fn forked_server_keeps_one_connection_id() {
    require_root();
    let _g = serial();
    let (recs, ports) = python_under_agent(
        "forksrv.py",
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
    );
    let [port] = ports[..] else { panic!("{ports:?}") };
    let local = format!("127.0.0.1:{port}");
    let servers: std::collections::BTreeSet<u64> = recs
        .sides()
        .iter()
        .filter(|s| s.local.map(|a| a.to_string()).as_deref() == Some(local.as_str()))
        .map(|s| s.conn_id)
        .collect();
    assert_eq!(servers.len(), 1, "the accept and the child's bytes are one connection: {servers:?}");
    let sid = *servers.first().unwrap();
    let c = recs.connection(sid);
    // The server's end: accepted (by the parent), then read and written by the child.
    let (open_seen, totals) = if c.who.side.conn_id == sid {
        (c.open_seen, (c.egress.kernel_total, c.ingress.kernel_total))
    } else {
        (true, (c.witness_egress.and_then(|t| t.kernel_total), c.witness_ingress.and_then(|t| t.kernel_total)))
    };
    assert!(open_seen);
    assert_eq!(totals, (Some(10), Some(10)), "only the last reference's close ends the connection: {c:#?}");
    assert_eq!(assert_whole(&recs, sid, Direction::Ingress, false), b"hello-fork");
    assert_eq!(assert_whole(&recs, sid, Direction::Egress, false), b"HELLO-FORK");
}

/// The kernel caches the socket behind each (process, fd): a number reused
/// for another socket must never name the old one. Both ways an fd number
/// changes sockets under one process: close(2) then a new socket taking the
/// lowest free number, and dup2(2) replacing an open socket fd (which closes
/// it without a close(2) the agent sees).
#[test]
fn a_reused_fd_number_names_its_new_socket() {
    require_root();
    let _g = serial();
    let (recs, ports) = python_under_agent(
        "fdreuse.py",
        r#"import socket, os
one = socket.socket(); one.bind(("127.0.0.1", 0)); one.listen(8)
two = socket.socket(); two.bind(("127.0.0.1", 0)); two.listen(8)
def dial(srv):
    c = socket.create_connection(srv.getsockname()); s, _ = srv.accept(); return c, s
def send(fd, peer, data):
    assert os.write(fd, data) == len(data)
    got = b""
    while len(got) < len(data): got += peer.recv(100)
    assert got == data
a, a_srv = dial(one)
fd = a.detach()
send(fd, a_srv, b"A-before-close")
a_local = socket.socket(fileno=os.dup(fd)).getsockname()
os.close(fd)
c, c_srv = dial(one)
assert c.fileno() == fd, (c.fileno(), fd)
send(fd, c_srv, b"C-same-number-after-close")
b, b_srv = dial(two)
os.dup2(b.fileno(), fd)
send(fd, b_srv, b"B-through-dup2")
print(a_local[1], b.getsockname()[1], one.getsockname()[1], two.getsockname()[1])
"#,
    );
    let [a_port, b_port, one, two] = ports[..] else { panic!("{ports:?}") };
    let at = |p: u16| format!("127.0.0.1:{p}");
    let a = recs.conn_between(&at(a_port), &at(one));
    let b = recs.conn_between(&at(b_port), &at(two));
    assert_eq!(assert_whole(&recs, a, Direction::Egress, false), b"A-before-close");
    assert_eq!(assert_whole(&recs, b, Direction::Egress, false), b"B-through-dup2");
    // The socket that took the closed fd's number: the other client of `one`.
    let c_port = recs
        .sides()
        .iter()
        .filter(|s| s.remote.map(|r| r.to_string()) == Some(at(one)))
        .filter_map(|s| s.local.map(|l| l.port()))
        .find(|p| *p != a_port)
        .expect("a second client connection to the first server");
    let c = recs.conn_between(&at(c_port), &at(one));
    assert_eq!(assert_whole(&recs, c, Direction::Egress, false), b"C-same-number-after-close");
}

/// Short iovec arrays are gathered into one event in the kernel: the bytes
/// of every iovec, in order, exactly the count transferred (a read fills its
/// buffers only partly), and long arrays or large buffers still go chunk by
/// chunk.
#[test]
fn scattered_buffers_arrive_in_order_whatever_their_split() {
    require_root();
    let _g = serial();
    let (recs, ports) = python_under_agent(
        "iovecs.py",
        r#"import socket, os
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
def drain(n, read):
    got = b""
    while len(got) < n: got += read()
    return got
def readv():
    a, b = bytearray(3), bytearray(50)
    k = os.readv(s.fileno(), [a, b]); return bytes((a + b)[:k])
def recvmsg():
    a, b, d = bytearray(2), bytearray(5), bytearray(7000)
    k = s.recvmsg_into([a, b, d])[0]; return bytes((a + b + d)[:k])
parts = [[b"alpha-", b"beta-", b"gamma"], [b"delta-", b"epsilon"], [b"x" * 20000, b"y" * 5],
         [b"1", b"22", b"333", b"4444", b"55555", b"666666"]]
for i, p in enumerate(parts):
    want = b"".join(p)
    sent = os.writev(c.fileno(), p) if i % 2 == 0 else c.sendmsg(p)
    assert sent == len(want), sent
    assert drain(len(want), readv if i % 2 == 0 else recvmsg) == want
print(c.getsockname()[1], srv.getsockname()[1])
"#,
    );
    let [client, server] = ports[..] else { panic!("{ports:?}") };
    let want: Vec<u8> =
        [&b"alpha-beta-gammadelta-epsilon"[..], &[b'x'; 20000], b"yyyyy", b"122333444455555666666"].concat();
    let c = recs.conn_between(&format!("127.0.0.1:{client}"), &format!("127.0.0.1:{server}"));
    let s = recs.conn_between(&format!("127.0.0.1:{server}"), &format!("127.0.0.1:{client}"));
    assert!(assert_whole(&recs, c, Direction::Egress, false) == want, "the writer's stream differs");
    assert!(assert_whole(&recs, s, Direction::Ingress, false) == want, "the reader's stream differs");
}

/// The address the agent serves metrics on (it logs the bound address; the
/// agent was started with JSON logs).
fn metrics_addr(agent: &Agent) -> std::net::SocketAddr {
    let log = agent.log();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "serving metrics at /metrics")
        .find_map(|l| l["fields"]["addr"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or_else(|| panic!("no metrics address in the agent's log:\n{log}"))
}

/// `bpftool prog show name NAME` as JSON (an empty list when there is none).
fn progs_named(name: &str) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool").args(["-j", "prog", "show", "name", name]).output().expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(v)) => v,
        Ok(v) if v.is_object() => vec![v],
        _ => vec![],
    }
}

/// The benchmark's floor: `wiretrail-agent floor` attaches a program that
/// returns at once to the agent's tracepoints; it runs on socket I/O while
/// attached and is gone after SIGTERM.
#[test]
fn floor_mode_attaches_no_op_programs_to_the_agent_hooks_and_detaches_them() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
    let child = Command::new(workspace_bin("wiretrail-agent"))
        .args(["floor", "--hooks", "syscalls", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wiretrail_tests::wait_until(Duration::from_secs(30), || ready.exists()), "floor did not attach");
    tcp_send(&[7u8; 10_000]);
    let progs = progs_named("floor_tracepoint");
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats.trim()).unwrap();
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert!(progs[0]["run_cnt"].as_u64().unwrap_or(0) > 0, "the floor program never ran: {progs:?}");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    let n: usize = said.split_whitespace().nth(1).and_then(|w| w.parse().ok()).unwrap_or(0);
    assert_eq!(n, wiretrail_agent::capture::loader::TRACEPOINTS.len() + 1, "{said}");
    assert!(progs_named("floor_tracepoint").is_empty(), "still loaded after SIGTERM");
}

/// The TLS floor probes a library where the agent would (OpenSSL 3: entry
/// and return of SSL_read/SSL_write and their _ex forms) and refuses to run
/// without one.
#[test]
fn floor_mode_probes_a_tls_library_where_the_agent_would() {
    require_root();
    let _g = serial();
    let agent = workspace_bin("wiretrail-agent");
    let out = Command::new(&agent).args(["floor", "--hooks", "tls"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs at least one --library"), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let lib = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    let child = Command::new(&agent)
        .args(["floor", "--hooks", "tls", "--library", lib, "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wiretrail_tests::wait_until(Duration::from_secs(30), || ready.exists()), "floor did not attach");
    assert_eq!(progs_named("floor_uprobe").len(), 1);
    assert_eq!(progs_named("floor_uretprobe").len(), 1);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wiretrail-agent: 8 no-op Tls hooks"), "{out:?}");
    assert!(progs_named("floor_uprobe").is_empty());
}

/// The benchmark's kernel-side floor: `floor --hooks capture` attaches the
/// agent's own capture programs, reads what they write to the rings while
/// the traffic flows and drops it, and says at the end how many events it
/// read, and how many the programs wrote and lost. The traffic writes six
/// times the ring's size in events, paced, so only a reader that drains
/// while it flows loses nothing.
#[test]
fn capture_floor_reads_the_capture_programs_events_and_drops_them() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let ring = 1usize << 20;
    let child = Command::new(workspace_bin("wiretrail-agent"))
        .args(["--ring-bytes", &ring.to_string(), "floor", "--hooks", "capture", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wiretrail_tests::wait_until(Duration::from_secs(30), || ready.exists()), "capture floor did not attach");
    assert_eq!(progs_named("sys_exit_write").len(), 1, "the capture programs are not loaded");
    // 3 MiB each way (written, then read by the server): 6 MiB of events
    // through a 1 MiB ring, 32 KiB every 4 ms.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k,
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 32 << 10];
    let total = 3usize << 20;
    for _ in 0..total / chunk.len() {
        c.write_all(&chunk).unwrap();
        std::thread::sleep(Duration::from_millis(4));
    }
    drop(c);
    assert_eq!(server.join().unwrap(), total);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    let line = said.lines().find(|l| l.contains("events read and dropped")).unwrap_or_else(|| panic!("{said}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
    let [read, written, lost] = nums[..] else { panic!("{line}") };
    // Each 32 KiB write is two 16 KiB events; the reads at least as many.
    let own = 2 * (total / (16 << 10)) as u64;
    assert!(read >= own, "{line}");
    assert_eq!(lost, 0, "events lost: the ring was not drained while the traffic flowed: {line}");
    assert!(written >= read, "{line}");
    assert!(progs_named("sys_exit_write").is_empty(), "still loaded after SIGTERM");
}
