//! End to end, as root: the agent as a process, real clients and servers from
//! Debian, traffic on loopback or in network namespaces this test creates.
//! Every stream is rebuilt from the records and compared byte for byte with
//! what the client itself says it sent and received.
mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use support::*;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    netns::{ADDR_A, ADDR_B, NetnsPair},
    nginx::{INDEX, Nginx},
    now_unix_ns, require_root, serial,
};

/// Runs curl with `args`, tracing the exact bytes; returns (pid, sent, received).
fn curl(netns: Option<&str>, args: &[&str]) -> (u32, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let child = cmd
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "--trace"])
        .arg(&trace)
        .args(args)
        .spawn()
        .expect("spawn curl");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {args:?} failed: {:?}", out.status);
    let (sent, recv) = curl_trace::parse(&std::fs::read_to_string(&trace).unwrap());
    (pid, sent, recv)
}

/// Both ends of one curl ↔ nginx request: the client's and the server's
/// streams as curl traced them, one exchange record holding both.
fn assert_both_ends(recs: &Records, pid: u32, server: &str, sent: &[u8], received: &[u8]) -> (u64, u64) {
    let cid = recs.client_conn(pid, server);
    let local = recs.side(cid).local.expect("client address").to_string();
    assert_eq!(assert_whole(recs, cid, Direction::Egress, false), sent, "client egress differs from what curl sent");
    assert_eq!(
        assert_whole(recs, cid, Direction::Ingress, false),
        received,
        "client ingress differs from what curl received"
    );
    let sid = recs.conn_between(server, &local);
    assert_eq!(assert_whole(recs, sid, Direction::Ingress, false), sent, "nginx's ingress differs from what curl sent");
    assert_eq!(
        assert_whole(recs, sid, Direction::Egress, false),
        received,
        "nginx's egress differs from what curl received"
    );
    (cid, sid)
}

#[test]
fn curl_to_nginx_is_one_record_holding_both_ends_byte_exact() {
    require_root();
    let _g = serial();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&[]);
    let before = now_unix_ns();
    let (pid, sent, received) =
        curl(None, &["-H", "X-Wiretrail-Test: byte-exact", &format!("http://{addr}/index.html")]);
    let after = now_unix_ns();
    std::thread::sleep(Duration::from_millis(300));
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("curl_to_nginx");

    assert!(sent.starts_with(b"GET /index.html HTTP/1.1\r\n"), "curl trace: {:?}", String::from_utf8_lossy(&sent));
    assert!(received.ends_with(INDEX));
    let (cid, sid) = assert_both_ends(&recs, pid, &addr.to_string(), &sent, &received);

    // One record for the request and its response, with both ends.
    let ex = recs.exchanges_of(cid);
    assert_eq!(ex.len(), 1, "{ex:#?}");
    let e = ex[0];
    assert_whole_exchange(e, true);
    assert_eq!((e.who.side.conn_id, e.who.side.comm.as_str().as_ref(), e.who.side.pid), (cid, "curl", pid));
    let w = e.who.witness.expect("nginx's end");
    assert_eq!((w.conn_id, w.comm.as_str().as_ref(), w.role), (sid, "nginx", Role::Server));
    assert_ne!(w.pid, pid);
    assert_eq!(e.exchange_id, Some(0));
    assert_eq!(fields(e, 0)["method"], "GET");
    assert_eq!(fields(e, 1)["status"], 200);
    // The request's bytes are in exactly one record of the whole output.
    let holding: Vec<&Record> = recs
        .0
        .iter()
        .filter(|r| r.parts().iter().any(|p| p.raw.0.windows(22).any(|x| x == b"X-Wiretrail-Test: byte")))
        .collect();
    assert_eq!(holding.len(), 1, "{holding:#?}");

    // Provenance: calls and kernel times, each end's own; the server read the
    // request after curl wrote it, curl read the response after nginx wrote it.
    let (rq, rp) = (&e.parts[0], &e.parts[1]);
    assert_eq!(
        (rq.role, rq.direction, rp.role, rp.direction),
        (PartRole::Request, Direction::Egress, PartRole::Response, Direction::Ingress)
    );
    let (wq, wp) = (rq.witness.as_ref().unwrap(), rp.witness.as_ref().unwrap());
    assert!(
        rq.seen.calls.iter().all(|c| ["sendto", "write", "writev", "sendmsg"].contains(&c.call.name())),
        "{:?}",
        rq.seen.calls
    );
    assert!(
        wq.calls.iter().all(|c| ["recvfrom", "read", "readv", "recvmsg"].contains(&c.call.name())),
        "{:?}",
        wq.calls
    );
    assert!(rq.seen.first_ns <= wq.first_ns, "nginx read before curl wrote");
    assert!(wp.first_ns <= rp.seen.first_ns, "curl read before nginx wrote");
    assert_eq!(e.latency_ns, Some(rp.seen.first_ns - rq.seen.last_ns));
    // curl wrote between `before` and `after` (real-time clock reads); the
    // record's time is that write's, converted with the error it states
    // (the offset's measurement error plus the slew allowance since then).
    let (utc, err) = (e.stamp.utc_ns, e.stamp.clock_error_ns as i128);
    assert!(err < 2_000_000, "clock error bound {err} ns: more than a slew over one re-measure period");
    assert!(
        utc >= before - err && utc <= after + err,
        "record time {utc} outside the run [{before}, {after}] widened by its error bound {err} ns"
    );
    assert_eq!(e.stamp.kernel_ns, Some(rq.seen.first_ns));

    // One connection record for both ends, closed, with the kernel's totals.
    let c = recs.connection(cid);
    assert_eq!(c.who.witness.map(|w| w.conn_id), Some(sid));
    assert!(c.open_seen);
    assert_eq!((c.egress.kernel_total, c.ingress.kernel_total), (Some(sent.len() as u64), Some(received.len() as u64)));
    assert_eq!((c.egress.gap, c.ingress.gap), (0, 0));
    assert_eq!(c.witness_ingress.and_then(|t| t.kernel_total), Some(sent.len() as u64));
    assert_eq!(c.exchanges, 1);
    assert_eq!(stats["kernel_lost_events"], 0);
    assert_eq!(stats["decode_errors"], 0);
    assert!(stats["twins"].as_u64().unwrap() >= 1);
    drop(nginx);
}

#[test]
fn one_mib_upload_arrives_complete_and_contiguous() {
    require_root();
    let _g = serial();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let agent = Agent::start(&[]);
    let (pid, sent, received) = curl(
        None,
        &["-H", "Expect:", "--data-binary", &format!("@{}", file.display()), &format!("http://{addr}/upload")],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);

    assert!(sent.ends_with(&body) && sent.len() > 1 << 20);
    // Larger than the parse limit (1 MiB): every byte is still in the records.
    let (cid, _) = assert_both_ends(&recs, pid, &addr.to_string(), &sent, &received);
    let request_calls: usize = recs
        .exchanges_of(cid)
        .iter()
        .flat_map(|e| e.parts.iter())
        .filter(|p| p.role == PartRole::Request)
        .map(|p| p.seen.calls.len())
        .sum();
    assert!(request_calls >= 2, "a 1 MiB upload takes several writes: {request_calls}");
    assert_eq!(stats["kernel_lost_events"], 0);
}

#[test]
fn udp_exchange_is_captured_with_per_datagram_peers() {
    require_root();
    let _g = serial();
    let agent = Agent::start(&[]);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (saddr, caddr) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    client.send_to(b"ping wiretrail udp", saddr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(from, caddr);
    server.send_to(&buf[..n].to_ascii_uppercase(), from).unwrap();
    let (m, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..m], b"PING WIRETRAIL UDP");
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);

    // Unknown protocol over UDP: each datagram is a segment naming its own peer.
    let me = std::process::id();
    let datagrams: Vec<&Segment> = recs
        .segments()
        .into_iter()
        .filter(|s| s.who.side.pid == me && s.who.side.transport == Transport::Udp)
        .collect();
    let find = |local: SocketAddr, peer: SocketAddr, dir: Direction| {
        datagrams
            .iter()
            .find(|s| s.who.side.local == Some(local) && s.part.peer == Some(peer) && s.part.direction == dir)
            .map(|s| s.part.raw.0.to_vec())
            .unwrap_or_else(|| panic!("no {dir:?} datagram {local} <-> {peer} in {datagrams:#?}"))
    };
    assert_eq!(find(caddr, saddr, Direction::Egress), b"ping wiretrail udp");
    assert_eq!(find(saddr, caddr, Direction::Ingress), b"ping wiretrail udp");
    assert_eq!(find(saddr, caddr, Direction::Egress), b"PING WIRETRAIL UDP");
    assert_eq!(find(caddr, saddr, Direction::Ingress), b"PING WIRETRAIL UDP");
    assert_eq!(datagrams.len(), 4, "one record per datagram: {datagrams:#?}");
}

#[test]
fn ipv6_connection_is_captured() {
    require_root();
    let _g = serial();
    let port = free_port();
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&[]);
    let (pid, sent, received) = curl(None, &["-g", &format!("http://[::1]:{port}/index.html")]);
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    let (cid, _) = assert_both_ends(&recs, pid, &addr.to_string(), &sent, &received);
    assert!(recs.side(cid).local.unwrap().to_string().starts_with("[::1]:"));
}

#[test]
fn traffic_between_network_namespaces_pairs_both_ends_and_keeps_their_addresses() {
    require_root();
    let _g = serial();
    let ns = NetnsPair::new("cap");
    let port = free_port();
    let addr: SocketAddr = format!("{ADDR_B}:{port}").parse().unwrap();
    let _nginx = Nginx::start(&[addr], Some(&ns.b));
    let agent = Agent::start(&[]);
    let (pid, sent, received) = curl(Some(&ns.a), &[&format!("http://{addr}/index.html")]);
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    let (cid, sid) = assert_both_ends(&recs, pid, &addr.to_string(), &sent, &received);
    let (c, s) = (recs.side(cid), recs.side(sid));
    assert!(c.local.unwrap().to_string().starts_with(&format!("{ADDR_A}:")));
    assert_eq!(u64::from(c.netns), NetnsPair::inode(&ns.a));
    assert_eq!(u64::from(s.netns), NetnsPair::inode(&ns.b));
    let e = recs.exchanges_of(cid)[0];
    assert_whole_exchange(e, true);
}

/// Clients that exit without closing their sockets (the kernel frees them; no
/// close(2) reaches the agent), one after another against nginx: the kernel
/// hands a freed socket's memory to the next socket, so a tracking entry keyed
/// by that address alone lends a dead connection's id, positions and addresses
/// to a new one. Every client and every nginx end must still be its own
/// connection holding exactly its own bytes.
#[test]
fn sockets_freed_by_exit_do_not_lend_their_connection_to_the_next() {
    require_root();
    let _g = serial();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _nginx = Nginx::start(&[addr], None);
    let agent = Agent::start(&[]);
    // Each forked child sends one request, reads the whole reply and leaves
    // with os._exit (no close); the parent prints "pid local_port" per child.
    let script = r#"
import os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /index.html?client=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
        while s.recv(65536):
            pass
        os.write(w, b"%d" % s.getsockname()[1])
        os._exit(0)
    os.close(w)
    local = os.read(r, 16).decode()
    os.waitpid(pid, 0)
    print(pid, local, flush=True)
"#;
    const CLIENTS: usize = 24;
    let out = Command::new("python3").args(["-c", script, &port.to_string(), &CLIENTS.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("sockets_freed_by_exit_do_not_lend_their_connection_to_the_next");

    let clients: Vec<(u32, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (pid, local) = l.split_once(' ').unwrap();
            (pid.parse().unwrap(), format!("127.0.0.1:{local}"))
        })
        .collect();
    assert_eq!(clients.len(), CLIENTS);
    let mut ids = std::collections::BTreeSet::new();
    for (i, (pid, local)) in clients.iter().enumerate() {
        let request = format!("GET /index.html?client={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let cid = recs.client_conn(*pid, &addr.to_string());
        assert_eq!(recs.side(cid).local.map(|a| a.to_string()).as_deref(), Some(local.as_str()), "client {i}");
        assert_eq!(assert_whole(&recs, cid, Direction::Egress, false), request.as_bytes(), "client {i}'s egress");
        let reply = assert_whole(&recs, cid, Direction::Ingress, false);
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n") && reply.ends_with(INDEX), "client {i}'s ingress");
        let sid = recs.conn_between(&addr.to_string(), local);
        assert_eq!(recs.side(sid).comm.as_str(), "nginx", "client {i}'s server end");
        assert_eq!(assert_whole(&recs, sid, Direction::Ingress, false), request.as_bytes(), "nginx's ingress of {i}");
        assert_eq!(assert_whole(&recs, sid, Direction::Egress, false), reply, "nginx's egress of {i}");
        assert!(ids.insert(cid) && ids.insert(sid), "client {i} shares a connection id: {cid} / {sid}");
    }
    assert_eq!(stats["kernel_lost_events"], 0);
}
