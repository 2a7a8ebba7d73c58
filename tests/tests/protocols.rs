//! End to end, as root: real third-party clients and servers on loopback, the
//! agent as a process, and its records checked field by field and byte for
//! byte: one record per exchange holding both ends (client and server are on
//! this host), each message's bytes exactly what the peer sent or received
//! (from the client's own trace where it gives one), and each end's streams
//! tiled by the records with nothing lost or duplicated.
//!
//! Peers: curl ↔ nginx (HTTP/1.1 keep-alive), a grpcio client and server
//! (HTTP/2, h2c), psql ↔ PostgreSQL, redis-cli ↔ redis-server, dig ↔ dnsmasq,
//! and a FIX initiator and acceptor built on simplefix (PyPI). `cargo xtask
//! setup` installs all of them.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::{Command, Stdio},
};

mod support;

use serde_json::Value;
use support::*;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    nginx::{INDEX, Nginx},
    peers::{Dnsmasq, Postgres, Proc, Redis, venv_python, wait_tcp},
    protocol_scripts::*,
    require_root, serial,
};

/// Both ends' streams of a TCP conversation are whole in the records; the
/// client's egress is the server's ingress and the other way round. Returns
/// (client conn, server conn, client egress, client ingress).
fn both_ends_whole(recs: &Records, pid: u32, remote: &str) -> (u64, u64, Vec<u8>, Vec<u8>) {
    let cid = recs.client_conn(pid, remote);
    let sent = assert_whole(recs, cid, Direction::Egress, false);
    let received = assert_whole(recs, cid, Direction::Ingress, false);
    let sid = recs.conn_between(remote, &recs.side(cid).local.unwrap().to_string());
    assert_eq!(assert_whole(recs, sid, Direction::Ingress, false), sent);
    assert_eq!(assert_whole(recs, sid, Direction::Egress, false), received);
    (cid, sid, sent, received)
}

/// Every exchange of `conn` holds both ends, is whole and carries no fault.
fn all_whole_with_both_ends(recs: &Records, conn: u64) -> Vec<&Exchange> {
    let ex = recs.exchanges_of(conn);
    assert!(!ex.is_empty(), "no exchanges on {conn}");
    for e in &ex {
        assert!(e.who.witness.is_some(), "not paired: {e:#?}");
        assert!(e.faults.is_empty(), "{:?}", e.faults);
    }
    ex
}

#[test]
fn http1_keep_alive_curl_to_nginx() {
    require_root();
    let _g = serial();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nginx = Nginx::start(&[addr], None);
    let second: &[u8] = b"second resource, fetched on the same connection\n";
    std::fs::write(nginx.dir.path().join("www/second.txt"), second).unwrap();
    let agent = Agent::start(&[]);

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-o", "/dev/null", "--trace"])
        .arg(&trace)
        .args(["-H", "X-Wiretrail-Test: keep-alive"])
        .arg(format!("http://{addr}/index.html"))
        .arg(format!("http://{addr}/second.txt"))
        .spawn()
        .expect("spawn curl");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed: {:?}", out.status);
    let trace_text = std::fs::read_to_string(&trace).unwrap();
    assert!(trace_text.contains("Re-using existing connection"), "curl did not reuse the connection:\n{trace_text}");
    let (sent, received) = curl_trace::parse(&trace_text);
    std::thread::sleep(SETTLE);
    let (text, _stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("http1_keep_alive_curl_to_nginx");

    let (cid, sid, egress, ingress) = both_ends_whole(&recs, pid, &addr.to_string());
    assert_eq!(egress, sent, "egress != what curl sent");
    assert_eq!(ingress, received, "ingress != what curl received");
    // Two exchanges, each one record with both ends.
    let ex = all_whole_with_both_ends(&recs, cid);
    assert_eq!(ex.len(), 2, "{ex:#?}");
    let split = find(&sent, b"GET /second.txt ").expect("second request in curl's trace");
    let end0 = find(&received, INDEX).expect("first body in curl's trace") + INDEX.len();
    for (i, (e, path, body)) in
        ex.iter().zip([("/index.html", INDEX), ("/second.txt", second)]).map(|(e, (p, b))| (e, p, b)).enumerate()
    {
        assert_whole_exchange(e, true);
        assert_eq!(e.exchange_id, Some(i as u64));
        // Each part's raw bytes are exactly one request / response as curl saw it.
        let (req, resp) = (role_bytes(e, cid, PartRole::Request), role_bytes(e, cid, PartRole::Response));
        assert_eq!(req, if i == 0 { &sent[..split] } else { &sent[split..] });
        assert_eq!(resp, if i == 0 { &received[..end0] } else { &received[end0..] });
        // The same bytes from nginx's end.
        assert_eq!(role_bytes(e, sid, PartRole::Request), req);
        assert_eq!(role_bytes(e, sid, PartRole::Response), resp);
        let (q, r) = (fields(e, 0), fields(e, 1));
        assert_eq!((q["type"].as_str(), q["kind"].as_str()), (Some("http1"), Some("request")));
        assert_eq!(
            (q["method"].as_str(), q["target"].as_str(), q["version"].as_u64()),
            (Some("GET"), Some(path), Some(1))
        );
        assert_eq!(header(&q, "host"), Some(addr.to_string().as_str()));
        assert_eq!(header(&q, "x-wiretrail-test"), Some("keep-alive"));
        assert!(header(&q, "user-agent").is_some_and(|u| u.starts_with("curl/")), "{q}");
        assert_eq!(q["body_len"], 0);
        assert_eq!(
            (r["kind"].as_str(), r["status"].as_u64(), r["reason"].as_str()),
            (Some("response"), Some(200), Some("OK"))
        );
        assert_eq!(r["request_method"], "GET");
        assert_eq!(header(&r, "content-length"), Some(body.len().to_string().as_str()));
        assert!(header(&r, "server").is_some_and(|s| s.starts_with("nginx")), "{r}");
        assert_eq!(r["body_len"].as_u64(), Some(body.len() as u64));
        assert_eq!(r["head_len"].as_u64(), Some((resp.len() - body.len()) as u64));
        assert!(resp.ends_with(body));
        assert!(e.latency_ns.is_some());
    }
    assert!(received.ends_with(second));
    let c = recs.connection(cid);
    assert_eq!((c.exchanges, c.who.witness.map(|w| w.conn_id)), (2, Some(sid)));
    drop(nginx);
}

// ---------------------------------------------------------------- gRPC / HTTP/2

#[test]
fn grpc_over_http2_python_client_and_server() {
    require_root();
    let _g = serial();
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let server_py = write_script(dir.path(), "server.py", GRPC_SERVER);
    let client_py = write_script(dir.path(), "client.py", GRPC_CLIENT);
    let port = free_port();
    let mut cmd = Command::new(&python);
    cmd.arg(&server_py).arg(port.to_string());
    let server = Proc::spawn(cmd, &dir.path().join("server.log"));
    wait_tcp(port, "gRPC server", || server.log());
    let agent = Agent::start(&[]);

    let child = Command::new(&python)
        .arg(&client_py)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gRPC client");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gRPC client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong:ping-1\npong:ping-2\n");
    std::thread::sleep(SETTLE);
    let (text, _stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("grpc_over_http2_python_client_and_server");
    drop(server);

    let remote = format!("127.0.0.1:{port}");
    let (cid, _sid, egress, _) = both_ends_whole(&recs, pid, &remote);
    assert!(egress.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    let ex = all_whole_with_both_ends(&recs, cid);
    assert!(ex.iter().all(|e| e.protocol.name() == "http2"));
    for m in ex.iter().flat_map(|e| e.messages.iter()) {
        assert_eq!(m.error, None, "{m:?}");
        assert_eq!(m.fields.json()["type"], "http2");
    }
    // Connection-level frames (preface, SETTINGS, ...) are gathered apart from the streams.
    let control: Vec<&&Exchange> = ex.iter().filter(|e| e.exchange_id.is_none()).collect();
    let frames: Vec<Value> = control.iter().flat_map(|e| e.messages.iter().map(|m| m.fields.json())).collect();
    assert!(frames.iter().any(|f| f["preface"] == true), "{frames:#?}");
    assert!(frames.iter().filter(|f| f["type_name"] == "SETTINGS").count() >= 2);

    // One record per RPC: the stream's request frames and response frames.
    let calls: Vec<&&Exchange> = ex.iter().filter(|e| e.exchange_id.is_some()).collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let streams: Vec<u64> = calls.iter().map(|e| e.exchange_id.unwrap()).collect();
    assert!(streams[0] % 2 == 1 && streams[1] > streams[0], "client stream ids {streams:?}");
    for (i, e) in calls.iter().enumerate() {
        assert_eq!(e.incomplete, None, "{e:#?}");
        let req = fields_of(e, PartRole::Request);
        let resp = fields_of(e, PartRole::Response);
        let of = |fs: &[Value], t: &str| -> Vec<Value> { fs.iter().filter(|f| f["type_name"] == t).cloned().collect() };
        // Request: HEADERS with :method POST and :path, one DATA frame with one message "ping-N".
        let h = of(&req, "HEADERS");
        assert_eq!(h.len(), 1, "{req:#?}");
        assert_eq!((h[0]["method"].as_str(), h[0]["path"].as_str()), (Some("POST"), Some("/wiretrail.test.Echo/Say")));
        assert_eq!(h[0]["authority"], remote);
        assert_eq!(
            (h[0]["grpc"]["service"].as_str(), h[0]["grpc"]["method"].as_str()),
            (Some("wiretrail.test.Echo"), Some("Say"))
        );
        assert_eq!(header(&h[0], "content-type"), Some("application/grpc"));
        assert_eq!(header(&h[0], "te"), Some("trailers"));
        let d = of(&req, "DATA");
        assert_eq!(d.len(), 1, "{req:#?}");
        assert_eq!(d[0]["grpc"]["messages"], serde_json::json!([{"compressed": false, "len": 6, "complete": true}]));
        let rq = role_bytes(e, cid, PartRole::Request);
        assert!(rq.ends_with(format!("\0\0\0\0\x06ping-{}", i + 1).as_bytes()), "{:?}", String::from_utf8_lossy(&rq));
        // Response: HEADERS :status 200, DATA "pong:ping-N", trailers with grpc-status 0.
        let rh = of(&resp, "HEADERS");
        assert_eq!(rh.len(), 2, "response headers and trailers: {resp:#?}");
        assert_eq!((rh[0]["status"].as_u64(), rh[0]["trailers"].as_bool()), (Some(200), Some(false)));
        assert_eq!(header(&rh[0], "content-type"), Some("application/grpc"));
        assert_eq!((rh[1]["trailers"].as_bool(), rh[1]["end_stream"].as_bool()), (Some(true), Some(true)));
        assert_eq!(rh[1]["grpc"]["status"], 0);
        assert_eq!(header(&rh[1], "grpc-status"), Some("0"));
        let rd = of(&resp, "DATA");
        assert_eq!(rd.len(), 1);
        assert_eq!(rd[0]["grpc"]["messages"], serde_json::json!([{"compressed": false, "len": 11, "complete": true}]));
        let rp = role_bytes(e, cid, PartRole::Response);
        assert!(find(&rp, format!("\0\0\0\0\x0bpong:ping-{}", i + 1).as_bytes()).is_some());
        assert!(req.iter().chain(&resp).all(|f| f["stream_id"].as_u64() == Some(streams[i])));
        assert!(e.latency_ns.is_some());
    }
}

// ---------------------------------------------------------------- PostgreSQL

#[test]
fn postgres_psql_to_server() {
    require_root();
    let _g = serial();
    let pg = Postgres::start();
    let agent = Agent::start(&[]);
    let query = "SELECT g AS n, 'row-' || g AS label FROM generate_series(1, 3) AS g";
    let bad = "SELECT * FROM wiretrail_missing_table";
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable gssencmode=disable application_name=wiretrail-e2e",
        pg.port
    );
    let child = Command::new("psql")
        .arg(&conninfo)
        .args(["-X", "-v", "ON_ERROR_STOP=0", "-c", query, "-c", bad])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("row-3") && stdout.contains("(3 rows)"), "psql output:\n{stdout}\n{stderr}");
    assert!(stderr.contains("relation \"wiretrail_missing_table\" does not exist"), "psql stderr:\n{stderr}");
    std::thread::sleep(SETTLE);
    let (text, _stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("postgres_psql_to_server");

    let remote = format!("127.0.0.1:{}", pg.port);
    let (cid, _sid, _, _) = both_ends_whole(&recs, pid, &remote);
    let ex = all_whole_with_both_ends(&recs, cid);
    for e in &ex {
        assert_eq!(e.protocol.name(), "postgres");
        assert!(e.messages.iter().all(|m| m.error.is_none()), "{e:#?}");
        for f in fields_of(e, PartRole::Request) {
            assert_eq!(f["side"], "frontend");
        }
        for f in fields_of(e, PartRole::Response) {
            assert_eq!(f["side"], "backend");
        }
    }
    // Startup: protocol 3.0, user, database, application name; trust authentication.
    let start = ex[0];
    let st = &fields_of(start, PartRole::Request)[0]["startup"];
    assert_eq!(st["protocol"], 196_608, "{start:#?}");
    assert_eq!((st["user"].as_str(), st["database"].as_str()), (Some("postgres"), Some("postgres")));
    assert_eq!(st["application_name"], "wiretrail-e2e");
    let auth = fields_of(start, PartRole::Response);
    let auth = auth.iter().find(|f| f["auth"].as_array().is_some_and(|a| !a.is_empty())).expect("auth fields");
    assert_eq!(auth["auth"], serde_json::json!([0]), "{auth}");
    assert!(auth["parameters"].as_array().unwrap().iter().any(|p| p[0] == "server_version"), "{auth}");
    assert!(auth["backend_pid"].is_u64());
    assert_eq!(auth["ready_status"], "I");

    let with_query = |sql: &str| -> &Exchange {
        let m: Vec<&&Exchange> = ex
            .iter()
            .filter(|e| fields_of(e, PartRole::Request).iter().any(|f| f["queries"] == serde_json::json!([sql])))
            .collect();
        assert_eq!(m.len(), 1, "{ex:#?}");
        m[0]
    };
    // The query and its result: one record.
    let q = with_query(query);
    assert_whole_exchange(q, true);
    let b = &fields_of(q, PartRole::Response)[0];
    assert_eq!(b["columns"], serde_json::json!(["n", "label"]), "{b}");
    assert_eq!((b["rows"].as_u64(), b["command_tags"].clone()), (Some(3), serde_json::json!(["SELECT 3"])));
    assert_eq!(b["errors"], serde_json::json!([]));
    assert_eq!(b["ready_status"], "I");
    let r = role_bytes(q, cid, PartRole::Response);
    assert!(find(&r, b"row-1").is_some() && find(&r, b"row-3").is_some());
    assert_eq!(
        role_bytes(q, cid, PartRole::Request),
        [b"Q".as_slice(), &((query.len() + 5) as u32).to_be_bytes(), query.as_bytes(), b"\0"].concat()
    );
    // The failing query: ErrorResponse with SQLSTATE 42P01.
    let e = with_query(bad);
    let eb = &fields_of(e, PartRole::Response)[0];
    let errs = eb["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 1, "{eb}");
    assert_eq!((errs[0]["severity"].as_str(), errs[0]["code"].as_str()), (Some("ERROR"), Some("42P01")));
    assert!(errs[0]["message"].as_str().unwrap().contains("wiretrail_missing_table"));
    assert_eq!(eb["rows"], 0);
    assert_ne!(q.exchange_id, e.exchange_id);
    // psql ends with Terminate (no answer: recorded as the request it is).
    let last = ex.last().unwrap();
    assert_eq!(role_bytes(last, cid, PartRole::Request), b"X\0\0\0\x04", "{last:#?}");
    assert_eq!(last.incomplete, Some(Incomplete::NoResponse));
}

// ---------------------------------------------------------------- Redis

#[test]
fn redis_cli_to_redis_server() {
    require_root();
    let _g = serial();
    let redis = Redis::start();
    let agent = Agent::start(&[]);
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli");
    let pid = child.id();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"SET k v\nGET k\nINCR n\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\nv\n1\n");
    std::thread::sleep(SETTLE);
    let (text, _stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("redis_cli_to_redis_server");
    let remote = format!("127.0.0.1:{}", redis.port);
    drop(redis);

    let (cid, _, _, _) = both_ends_whole(&recs, pid, &remote);
    let mut ex = all_whole_with_both_ends(&recs, cid);
    // redis-cli 7 first asks for command docs (for its hints), then sends ours.
    if fields(ex[0], 0)["command"] == "COMMAND" {
        let docs = ex.remove(0);
        assert_eq!(fields(docs, 0)["args"], serde_json::json!(["DOCS"]));
        assert_eq!(role_bytes(docs, cid, PartRole::Request), b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n");
        let r = fields(docs, 1);
        assert!(["array", "map"].contains(&r["value_type"].as_str().unwrap()), "{r}");
        assert!(r["elements"].as_u64().unwrap() > 100, "{r}");
        assert_whole_exchange(docs, true);
    }
    let names: Vec<Value> = ex.iter().map(|e| fields(e, 0)["command"].clone()).collect();
    assert_eq!(names, ["SET", "GET", "INCR"], "{ex:#?}");
    let expect: [(&[u8], &[&str], &[u8]); 3] = [
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", &["k", "v"], b"+OK\r\n"),
        (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", &["k"], b"$1\r\nv\r\n"),
        (b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n", &["n"], b":1\r\n"),
    ];
    for (e, (craw, args, rraw)) in ex.iter().zip(expect) {
        assert_whole_exchange(e, true);
        let (c, r) = (fields(e, 0), fields(e, 1));
        assert_eq!(
            (c["type"].as_str(), c["kind"].as_str(), c["inline"].as_bool()),
            (Some("redis"), Some("command"), Some(false))
        );
        assert_eq!(c["args"], serde_json::json!(args));
        assert_eq!(role_bytes(e, cid, PartRole::Request), craw);
        assert_eq!(r["kind"], "reply");
        assert_eq!(role_bytes(e, cid, PartRole::Response), rraw);
    }
    assert_eq!(
        (fields(ex[0], 1)["value_type"].as_str(), fields(ex[0], 1)["text"].as_str()),
        (Some("simple"), Some("OK"))
    );
    assert_eq!((fields(ex[1], 1)["value_type"].as_str(), fields(ex[1], 1)["text"].as_str()), (Some("bulk"), Some("v")));
    assert_eq!(
        (fields(ex[2], 1)["value_type"].as_str(), fields(ex[2], 1)["integer"].as_i64()),
        (Some("integer"), Some(1))
    );
}

// ---------------------------------------------------------------- DNS

#[test]
fn dns_dig_to_dnsmasq() {
    require_root();
    let _g = serial();
    let name = "svc.wiretrail.test";
    let ip = "192.0.2.77";
    let dns = Dnsmasq::start(name, ip);
    let agent = Agent::start(&[]);
    let child = Command::new("dig")
        .args(["@127.0.0.1", "-p", &dns.port.to_string(), "+qr", "+tries=1", "+time=5", name, "A"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dig");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    // dig prints the query and the response headers, both with the id.
    let ids: Vec<u64> =
        text.lines().filter_map(|l| l.split_once(", id: ").map(|(_, id)| id.trim().parse().unwrap())).collect();
    assert_eq!(ids.len(), 2, "dig output:\n{text}");
    assert_eq!(ids[0], ids[1]);
    assert!(text.contains(&format!("{name}.\t")) && text.contains(ip), "dig output:\n{text}");
    std::thread::sleep(SETTLE);
    let (out_text, _stats) = agent.stop();
    let recs = Records::parse(&out_text);
    recs.dump("dns_dig_to_dnsmasq");
    let dns_pid = dns.proc.pid();
    let server = format!("127.0.0.1:{}", dns.port);
    drop(dns);

    // UDP: each end records its own datagrams (a datagram socket has no pair).
    let check = |e: &Exchange, conn: u64| {
        assert_eq!(e.protocol.name(), "dns", "{e:#?}");
        assert_whole_exchange(e, false);
        assert_eq!(e.exchange_id, Some(ids[0]));
        assert_eq!(e.parts.len(), 2, "one datagram each way: {e:#?}");
        for (i, want_response) in [(0, false), (1, true)] {
            let b = fields(e, i);
            assert_eq!(b["type"], "dns");
            assert_eq!(b["id"].as_u64(), Some(ids[0]));
            assert_eq!(b["response"], want_response);
            assert_eq!(b["opcode"], 0);
            let q = &b["questions"];
            assert_eq!(q.as_array().unwrap().len(), 1, "{b}");
            assert_eq!(
                (q[0]["name"].as_str(), q[0]["qtype"].as_u64(), q[0]["qtype_name"].as_str()),
                (Some("svc.wiretrail.test."), Some(1), Some("A"))
            );
            assert_eq!(q[0]["qclass"], 1);
        }
        let r = fields(e, 1);
        assert_eq!((r["rcode"].as_u64(), r["rcode_name"].as_str()), (Some(0), Some("NOERROR")));
        let answers = r["answers"].as_array().unwrap();
        assert_eq!(answers.len(), 1, "{r}");
        assert_eq!(
            (answers[0]["name"].as_str(), answers[0]["rtype_name"].as_str()),
            (Some("svc.wiretrail.test."), Some("A"))
        );
        assert_eq!(answers[0]["data"], serde_json::json!({"kind": "a", "addr": ip}));
        assert!(e.latency_ns.is_some());
        (role_bytes(e, conn, PartRole::Request), role_bytes(e, conn, PartRole::Response))
    };
    let cid = recs.conn_of(pid, &server, Transport::Udp);
    let cx = recs.exchanges_of(cid);
    assert_eq!(cx.len(), 1, "{cx:#?}");
    let (query, response) = check(cx[0], cid);
    // dnsmasq's end: the same query in, the same response out.
    let sids: BTreeSet<u64> =
        recs.sides().iter().filter(|s| s.pid == dns_pid && s.transport == Transport::Udp).map(|s| s.conn_id).collect();
    assert_eq!(sids.len(), 1, "dnsmasq UDP sockets {sids:?}");
    let sid = *sids.first().unwrap();
    let sx = recs.exchanges_of(sid);
    assert_eq!(sx.len(), 1, "{sx:#?}");
    assert_eq!(check(sx[0], sid), (query, response));
}
