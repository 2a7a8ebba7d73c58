//! End to end, as root: the agent as a process, real clients and servers from
//! Debian, traffic on loopback or in network namespaces this test creates.
use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    netns::{ADDR_A, ADDR_B, NetnsPair},
    nginx::{INDEX, Nginx},
    now_unix_ns,
    records::{Records, stream},
    require_root, serial,
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

/// The single connection of `pid` that talks to `remote`, as (conn_id, records).
fn conn_of<'a>(recs: &'a Records, pid: u32, remote: &str) -> (u64, Vec<&'a Value>) {
    let mine: Vec<&Value> = recs.of_pid(pid).into_iter().filter(|r| r["remote"] == remote).collect();
    let ids: std::collections::BTreeSet<u64> = mine.iter().map(|r| r["conn_id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "expected one connection from pid {pid} to {remote}, got {ids:?}");
    (*ids.iter().next().unwrap(), mine)
}

/// The server side of the connection whose client port is `client_port`.
fn server_side<'a>(recs: &'a Records, server: &str, client: &str) -> (u64, Vec<&'a Value>) {
    let mine: Vec<&Value> = recs.0.iter().filter(|r| r["local"] == server && r["remote"] == client).collect();
    let ids: std::collections::BTreeSet<u64> = mine.iter().map(|r| r["conn_id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "expected one server-side connection {server} <- {client}, got {ids:?}");
    (*ids.iter().next().unwrap(), mine)
}

fn no_gaps(recs: &[&Value]) {
    let gaps: Vec<_> = recs.iter().filter(|r| r["type"] == "gap").collect();
    assert!(gaps.is_empty(), "unexpected gaps: {gaps:?}");
}

#[test]
fn curl_to_nginx_is_captured_byte_exact_on_both_sides() {
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
    let (recs, stats) = agent.stop();

    assert!(sent.starts_with(b"GET /index.html HTTP/1.1\r\n"), "curl trace: {:?}", String::from_utf8_lossy(&sent));
    assert!(received.ends_with(INDEX));

    let (cid, client) = conn_of(&recs, pid, &addr.to_string());
    let local = client[0]["local"].as_str().unwrap().to_string();
    assert!(client.iter().all(|r| r["comm"] == "curl" && r["pid"] == pid && r["transport"] == "tcp"));
    assert!(client.iter().any(|r| r["type"] == "connect"), "connect record missing");
    assert!(client.iter().any(|r| r["type"] == "close"), "close record missing");
    let egress = stream(&client, cid, "egress");
    let ingress = stream(&client, cid, "ingress");
    assert!(egress.contiguous && ingress.contiguous);
    assert_eq!(egress.bytes, sent, "client egress differs from what curl sent");
    assert_eq!(ingress.bytes, received, "client ingress differs from what curl received");
    no_gaps(&client);

    // The same bytes seen from nginx's side of the same 4-tuple.
    let (sid, server) = server_side(&recs, &addr.to_string(), &local);
    assert!(server.iter().all(|r| r["comm"] == "nginx"));
    assert!(server.iter().all(|r| r["pid"] != pid && r["pid"] != nginx.pid() || r["comm"] == "nginx"));
    assert!(server.iter().any(|r| r["type"] == "accept"));
    assert_eq!(stream(&server, sid, "ingress").bytes, sent);
    assert_eq!(stream(&server, sid, "egress").bytes, received);
    no_gaps(&server);

    // Kernel timestamps: increasing per connection and within 1 s of the wall clock.
    let mut last = 0u64;
    for r in &client {
        let k = r["ts_kernel_ns"].as_u64().unwrap();
        assert!(k >= last, "timestamps go backwards");
        last = k;
        let utc = parse_rfc3339(r["ts"].as_str().unwrap());
        assert!(utc >= before - 1_000_000_000 && utc <= after + 1_000_000_000, "ts {} outside the run", r["ts"]);
        assert_eq!(r["clock"], "CLOCK_BOOTTIME");
    }
    assert_eq!(stats["kernel_lost_events"], 0);
    assert_eq!(stats["decode_errors"], 0);
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
    let (pid, sent, _) = curl(
        None,
        &["-H", "Expect:", "--data-binary", &format!("@{}", file.display()), &format!("http://{addr}/upload")],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (recs, stats) = agent.stop();

    let (cid, client) = conn_of(&recs, pid, &addr.to_string());
    let egress = stream(&client, cid, "egress");
    assert!(egress.contiguous, "positions not contiguous");
    no_gaps(&client);
    assert_eq!(egress.bytes, sent);
    assert!(egress.bytes.ends_with(&body), "the 1 MiB body is not the end of the captured request");
    assert!(egress.bytes.len() > 1 << 20);
    let chunks = client.iter().filter(|r| r["type"] == "data" && r["direction"] == "egress").count();
    assert!(chunks >= 64, "1 MiB should span many chunk events, got {chunks}");
    // nginx read the whole request too.
    let local = client[0]["local"].as_str().unwrap().to_string();
    let (sid, server) = server_side(&recs, &addr.to_string(), &local);
    let sin = stream(&server, sid, "ingress");
    assert!(sin.contiguous);
    assert_eq!(sin.bytes, sent);
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
    let (recs, _) = agent.stop();

    let me = std::process::id();
    let data: Vec<&Value> =
        recs.of_pid(me).into_iter().filter(|r| r["type"] == "data" && r["transport"] == "udp").collect();
    let find = |local: SocketAddr, remote: SocketAddr, dir: &str| {
        data.iter()
            .find(|r| r["local"] == local.to_string() && r["remote"] == remote.to_string() && r["direction"] == dir)
            .map(|r| wiretrail_tests::records::payload(r))
            .unwrap_or_else(|| panic!("no {dir} datagram {local} -> {remote} in {data:?}"))
    };
    assert_eq!(find(caddr, saddr, "egress"), b"ping wiretrail udp");
    assert_eq!(find(saddr, caddr, "ingress"), b"ping wiretrail udp");
    assert_eq!(find(saddr, caddr, "egress"), b"PING WIRETRAIL UDP");
    assert_eq!(find(caddr, saddr, "ingress"), b"PING WIRETRAIL UDP");
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
    let (recs, _) = agent.stop();
    let (cid, client) = conn_of(&recs, pid, &addr.to_string());
    assert!(client.iter().all(|r| r["local"].as_str().unwrap().starts_with("[::1]:")));
    assert_eq!(stream(&client, cid, "egress").bytes, sent);
    assert_eq!(stream(&client, cid, "ingress").bytes, received);
}

#[test]
fn traffic_inside_a_network_namespace_carries_its_addresses() {
    require_root();
    let _g = serial();
    let ns = NetnsPair::new("cap");
    let port = free_port();
    let addr: SocketAddr = format!("{ADDR_B}:{port}").parse().unwrap();
    let _nginx = Nginx::start(&[addr], Some(&ns.b));
    let agent = Agent::start(&[]);
    let (pid, sent, received) = curl(Some(&ns.a), &[&format!("http://{addr}/index.html")]);
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    let (cid, client) = conn_of(&recs, pid, &addr.to_string());
    assert!(client.iter().all(|r| { r["local"].as_str().unwrap().starts_with(&format!("{ADDR_A}:")) }));
    assert_eq!(client[0]["netns"].as_u64().unwrap(), NetnsPair::inode(&ns.a));
    assert_eq!(stream(&client, cid, "egress").bytes, sent);
    assert_eq!(stream(&client, cid, "ingress").bytes, received);
    let local = client[0]["local"].as_str().unwrap().to_string();
    let (_, server) = server_side(&recs, &addr.to_string(), &local);
    assert_eq!(server[0]["netns"].as_u64().unwrap(), NetnsPair::inode(&ns.b));
}

fn parse_rfc3339(s: &str) -> i128 {
    // YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (hh, mm, ss, ns) = (n(11, 13), n(14, 16), n(17, 19), n(20, 29));
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hh * 3600 + mm * 60 + ss) as i128) * 1_000_000_000 + ns as i128
}
