//! End to end, as root: real third-party clients and servers on loopback, the
//! agent as a process, and its protocol records checked field by field and
//! byte for byte: every record's `raw` is the exact bytes the peer sent or
//! received (from the client's own trace where it gives one), and the records
//! of one direction tile that direction's captured stream with nothing lost or
//! duplicated.
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

use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    nginx::{INDEX, Nginx},
    peers::{Dnsmasq, Postgres, Proc, Redis, venv_python, wait_tcp},
    protocol_records::*,
    protocol_scripts::*,
    records::payload,
    require_root, serial,
};

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
    let (recs, _stats) = agent.stop();
    dump(&recs, "http1_keep_alive_curl_to_nginx");

    let cid = client_conn(&recs, pid, &addr.to_string());
    assert_eq!(assert_tiles(&recs, cid, "egress", "http1"), sent, "egress != what curl sent");
    assert_eq!(assert_tiles(&recs, cid, "ingress", "http1"), received, "ingress != what curl received");
    let reqs = msgs(&recs, cid, "egress");
    let resps = msgs(&recs, cid, "ingress");
    assert_eq!((reqs.len(), resps.len()), (2, 2), "requests {reqs:#?}\nresponses {resps:#?}");

    // Each record's raw bytes are exactly one request / response as curl saw it.
    let split = find(&sent, b"GET /second.txt ").expect("second request in curl's trace");
    assert_eq!(raw(reqs[0]), &sent[..split]);
    assert_eq!(raw(reqs[1]), &sent[split..]);
    let end0 = find(&received, INDEX).expect("first body in curl's trace") + INDEX.len();
    assert_eq!(raw(resps[0]), &received[..end0]);
    assert_eq!(raw(resps[1]), &received[end0..]);
    assert!(received.ends_with(second));

    for (req, path) in reqs.iter().zip(["/index.html", "/second.txt"]) {
        let b = &req["body"];
        assert_eq!(req["error"], Value::Null, "{req}");
        assert_eq!((b["type"].as_str(), b["kind"].as_str()), (Some("http1"), Some("request")));
        assert_eq!(
            (b["method"].as_str(), b["target"].as_str(), b["version"].as_u64()),
            (Some("GET"), Some(path), Some(1))
        );
        assert_eq!(header(req, "host"), Some(addr.to_string().as_str()));
        assert_eq!(header(req, "x-wiretrail-test"), Some("keep-alive"));
        assert!(header(req, "user-agent").is_some_and(|u| u.starts_with("curl/")), "{req}");
        assert_eq!(b["body_len"], 0);
    }
    for (resp, body) in resps.iter().zip([INDEX, second]) {
        let b = &resp["body"];
        assert_eq!(resp["error"], Value::Null, "{resp}");
        assert_eq!(
            (b["kind"].as_str(), b["status"].as_u64(), b["reason"].as_str()),
            (Some("response"), Some(200), Some("OK"))
        );
        assert_eq!(b["request_method"], "GET");
        assert_eq!(header(resp, "content-length"), Some(body.len().to_string().as_str()));
        assert!(header(resp, "server").is_some_and(|s| s.starts_with("nginx")), "{resp}");
        assert_eq!(b["body_len"].as_u64(), Some(body.len() as u64));
        assert_eq!(b["head_len"].as_u64(), Some((raw(resp).len() - body.len()) as u64));
        assert!(raw(resp).ends_with(body));
    }
    assert_pair(reqs[0], resps[0]);
    assert_pair(reqs[1], resps[1]);
    assert_ne!(reqs[0]["exchange"]["id"], reqs[1]["exchange"]["id"]);
    assert_eq!(summary(&recs, cid)["body"]["messages"], 4);

    // nginx's side of the same connection: the same two requests and responses.
    let sid = server_conn(&recs, &addr.to_string(), &local_of(&recs, cid));
    assert_eq!(assert_tiles(&recs, sid, "ingress", "http1"), sent);
    assert_eq!(assert_tiles(&recs, sid, "egress", "http1"), received);
    let sreqs = msgs(&recs, sid, "ingress");
    assert_eq!(sreqs.iter().map(|r| raw(r)).collect::<Vec<_>>(), reqs.iter().map(|r| raw(r)).collect::<Vec<_>>());
    let sresps = msgs(&recs, sid, "egress");
    assert_eq!(sresps.len(), 2);
    assert_pair(sreqs[0], sresps[0]);
    assert_pair(sreqs[1], sresps[1]);
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
    let (recs, _stats) = agent.stop();
    dump(&recs, "grpc_over_http2_python_client_and_server");
    drop(server);

    let remote = format!("127.0.0.1:{port}");
    let cid = client_conn(&recs, pid, &remote);
    assert_tiles(&recs, cid, "egress", "http2");
    assert_tiles(&recs, cid, "ingress", "http2");
    let sid = server_conn(&recs, &remote, &local_of(&recs, cid));
    assert_tiles(&recs, sid, "ingress", "http2");
    assert_tiles(&recs, sid, "egress", "http2");

    let out_frames = msgs(&recs, cid, "egress");
    let in_frames = msgs(&recs, cid, "ingress");
    for f in out_frames.iter().chain(&in_frames) {
        assert_eq!(f["error"], Value::Null, "{f}");
        assert_eq!(f["body"]["type"], "http2");
    }
    // The client preface is the first record, alone.
    assert_eq!(out_frames[0]["body"]["preface"], true, "{}", out_frames[0]);
    assert_eq!(raw(out_frames[0]), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let of_type = |fs: &[&Value], t: &str| -> Vec<Value> {
        fs.iter().filter(|f| f["body"]["type_name"] == t).map(|f| (*f).clone()).collect()
    };
    assert!(!of_type(&out_frames, "SETTINGS").is_empty() && !of_type(&in_frames, "SETTINGS").is_empty());

    // Requests: HEADERS with :method POST and :path /wiretrail.test.Echo/Say on two streams.
    let req_heads = of_type(&out_frames, "HEADERS");
    assert_eq!(req_heads.len(), 2, "{req_heads:#?}");
    let streams: Vec<u64> = req_heads.iter().map(|h| h["body"]["stream_id"].as_u64().unwrap()).collect();
    assert!(streams[0] % 2 == 1 && streams[1] > streams[0], "client stream ids {streams:?}");
    for h in &req_heads {
        let b = &h["body"];
        assert_eq!((b["method"].as_str(), b["path"].as_str()), (Some("POST"), Some("/wiretrail.test.Echo/Say")));
        assert_eq!(b["authority"], remote);
        assert_eq!(
            (b["grpc"]["service"].as_str(), b["grpc"]["method"].as_str()),
            (Some("wiretrail.test.Echo"), Some("Say"))
        );
        assert_eq!(header(h, "content-type"), Some("application/grpc"));
        assert_eq!(header(h, "te"), Some("trailers"));
        assert_eq!(h["exchange"]["role"], "request");
        assert_eq!(h["exchange"]["id"], b["stream_id"]);
    }
    // Request messages: one length-prefixed gRPC message per stream, "ping-N".
    let req_data = of_type(&out_frames, "DATA");
    for (i, s) in streams.iter().enumerate() {
        let d: Vec<&Value> = req_data.iter().filter(|d| d["body"]["stream_id"] == *s).collect();
        assert_eq!(d.len(), 1, "{d:#?}");
        let msgs = &d[0]["body"]["grpc"]["messages"];
        assert_eq!(msgs, &serde_json::json!([{"compressed": false, "len": 6, "complete": true}]), "{}", d[0]);
        let r = raw(d[0]);
        assert!(r.ends_with(format!("\0\0\0\0\x06ping-{}", i + 1).as_bytes()), "{:?}", String::from_utf8_lossy(&r));
    }
    // Responses: HEADERS :status 200, DATA "pong:ping-N", trailers with grpc-status 0.
    let resp_heads = of_type(&in_frames, "HEADERS");
    for (i, s) in streams.iter().enumerate() {
        let on: Vec<&Value> = resp_heads.iter().filter(|h| h["body"]["stream_id"] == *s).collect();
        assert_eq!(on.len(), 2, "response headers and trailers on stream {s}: {on:#?}");
        let (head, trailers) = (on[0], on[1]);
        assert_eq!(head["body"]["status"], 200, "{head}");
        assert_eq!(head["body"]["trailers"], false);
        assert_eq!(header(head, "content-type"), Some("application/grpc"));
        assert_eq!(trailers["body"]["trailers"], true, "{trailers}");
        assert_eq!(trailers["body"]["end_stream"], true);
        assert_eq!(trailers["body"]["grpc"]["status"], 0, "{trailers}");
        assert_eq!(header(trailers, "grpc-status"), Some("0"));
        let data: Vec<&Value> = in_frames
            .iter()
            .copied()
            .filter(|f| f["body"]["type_name"] == "DATA" && f["body"]["stream_id"] == *s)
            .collect();
        assert_eq!(data.len(), 1, "{data:#?}");
        assert_eq!(
            data[0]["body"]["grpc"]["messages"],
            serde_json::json!([{"compressed": false, "len": 11, "complete": true}])
        );
        assert!(raw(data[0]).ends_with(format!("\0\0\0\0\x0bpong:ping-{}", i + 1).as_bytes()));
        // Pairing (by stream id): the response HEADERS answers the request
        // HEADERS; DATA and trailers are on the same stream.
        assert_eq!(head["exchange"]["role"], "response", "{head}");
        assert_eq!(head["exchange"]["id"].as_u64(), Some(*s));
        assert!(head["exchange"]["latency_ns"].is_u64(), "{head}");
        for r in [trailers, data[0]] {
            assert_eq!(r["body"]["stream_id"].as_u64(), Some(*s));
        }
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
    let (recs, _stats) = agent.stop();
    dump(&recs, "postgres_psql_to_server");

    let remote = format!("127.0.0.1:{}", pg.port);
    let cid = client_conn(&recs, pid, &remote);
    assert_tiles(&recs, cid, "egress", "postgres");
    assert_tiles(&recs, cid, "ingress", "postgres");
    let sid = server_conn(&recs, &remote, &local_of(&recs, cid));
    assert_tiles(&recs, sid, "ingress", "postgres");
    assert_tiles(&recs, sid, "egress", "postgres");

    let fe = msgs(&recs, cid, "egress");
    let be = msgs(&recs, cid, "ingress");
    for r in fe.iter().chain(&be) {
        assert_eq!(r["error"], Value::Null, "{r}");
        assert_eq!(r["body"]["type"], "postgres");
    }
    assert!(fe.iter().all(|r| r["body"]["side"] == "frontend"));
    assert!(be.iter().all(|r| r["body"]["side"] == "backend"));
    // Startup: protocol 3.0, user, database, application name.
    let st = &fe[0]["body"]["startup"];
    assert_eq!(st["protocol"], 196_608, "{}", fe[0]);
    assert_eq!((st["user"].as_str(), st["database"].as_str()), (Some("postgres"), Some("postgres")));
    assert_eq!(st["application_name"], "wiretrail-e2e");
    // Trust authentication: AuthenticationOk, parameters, key data, ready.
    let auth = be.iter().find(|r| r["body"]["auth"].as_array().is_some_and(|a| !a.is_empty())).expect("auth record");
    assert_eq!(auth["body"]["auth"], serde_json::json!([0]), "{auth}");
    let params = &auth["body"]["parameters"];
    assert!(params.as_array().unwrap().iter().any(|p| p[0] == "server_version"), "{auth}");
    assert!(auth["body"]["backend_pid"].is_u64());
    assert_eq!(auth["body"]["ready_status"], "I");

    // The query and its result.
    let q: Vec<&&Value> = fe.iter().filter(|r| r["body"]["queries"] == serde_json::json!([query])).collect();
    assert_eq!(q.len(), 1, "{fe:#?}");
    let resp = be.iter().find(|r| r["exchange"]["id"] == q[0]["exchange"]["id"]).expect("response to the query");
    assert_pair(q[0], resp);
    let b = &resp["body"];
    assert_eq!(b["columns"], serde_json::json!(["n", "label"]), "{resp}");
    assert_eq!((b["rows"].as_u64(), b["command_tags"].clone()), (Some(3), serde_json::json!(["SELECT 3"])));
    assert_eq!(b["errors"], serde_json::json!([]));
    assert_eq!(b["ready_status"], "I");
    let r = raw(resp);
    assert!(find(&r, b"row-1").is_some() && find(&r, b"row-3").is_some());
    assert_eq!(
        raw(q[0]),
        [b"Q".as_slice(), &((query.len() + 5) as u32).to_be_bytes(), query.as_bytes(), b"\0"].concat()
    );

    // The failing query: ErrorResponse with SQLSTATE 42P01.
    let e: Vec<&&Value> = fe.iter().filter(|r| r["body"]["queries"] == serde_json::json!([bad])).collect();
    assert_eq!(e.len(), 1);
    let eresp = be.iter().find(|r| r["exchange"]["id"] == e[0]["exchange"]["id"]).expect("response to the bad query");
    assert_pair(e[0], eresp);
    let errs = eresp["body"]["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 1, "{eresp}");
    assert_eq!((errs[0]["severity"].as_str(), errs[0]["code"].as_str()), (Some("ERROR"), Some("42P01")));
    assert!(errs[0]["message"].as_str().unwrap().contains("wiretrail_missing_table"));
    assert_eq!(eresp["body"]["rows"], 0);
    assert_eq!(eresp["body"]["ready_status"], "I");
    assert_ne!(q[0]["exchange"]["id"], e[0]["exchange"]["id"]);
    // psql ends with Terminate.
    let last = fe.last().unwrap();
    assert_eq!(raw(last), b"X\0\0\0\x04", "{last}");
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
    let (recs, _stats) = agent.stop();
    dump(&recs, "redis_cli_to_redis_server");
    let remote = format!("127.0.0.1:{}", redis.port);
    drop(redis);

    let cid = client_conn(&recs, pid, &remote);
    let sent = assert_tiles(&recs, cid, "egress", "redis");
    let received = assert_tiles(&recs, cid, "ingress", "redis");
    let sid = server_conn(&recs, &remote, &local_of(&recs, cid));
    assert_eq!(assert_tiles(&recs, sid, "ingress", "redis"), sent);
    assert_eq!(assert_tiles(&recs, sid, "egress", "redis"), received);

    let mut cmds = msgs(&recs, cid, "egress");
    let mut replies = msgs(&recs, cid, "ingress");
    assert_eq!(cmds.len(), replies.len(), "commands {cmds:#?}\nreplies {replies:#?}");
    // redis-cli 7 first asks for command docs (for its hints), then sends ours.
    if cmds[0]["body"]["command"] == "COMMAND" {
        assert_eq!(cmds[0]["body"]["args"], serde_json::json!(["DOCS"]), "{}", cmds[0]);
        assert_eq!(raw(cmds[0]), b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n");
        let docs = replies[0];
        assert!(["array", "map"].contains(&docs["body"]["value_type"].as_str().unwrap()), "{docs}");
        assert!(docs["body"]["elements"].as_u64().unwrap() > 100, "{}", docs["body"]);
        assert_eq!(docs["error"], Value::Null);
        assert_pair(cmds[0], docs);
        cmds.remove(0);
        replies.remove(0);
    }
    let names: Vec<&str> = cmds.iter().map(|c| c["body"]["command"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["SET", "GET", "INCR"], "{cmds:#?}");
    let expect: [(&[u8], &[&str], &[u8]); 3] = [
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", &["k", "v"], b"+OK\r\n"),
        (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", &["k"], b"$1\r\nv\r\n"),
        (b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n", &["n"], b":1\r\n"),
    ];
    for ((c, r), (craw, args, rraw)) in cmds.iter().zip(&replies).zip(expect) {
        assert_eq!(c["error"], Value::Null, "{c}");
        assert_eq!(r["error"], Value::Null, "{r}");
        assert_eq!((c["body"]["type"].as_str(), c["body"]["kind"].as_str()), (Some("redis"), Some("command")));
        assert_eq!(c["body"]["inline"], false);
        assert_eq!(c["body"]["args"], serde_json::json!(args));
        assert_eq!(raw(c), craw, "{c}");
        assert_eq!(r["body"]["kind"], "reply");
        assert_eq!(raw(r), rraw, "{r}");
        assert_pair(c, r);
    }
    assert_eq!(
        (replies[0]["body"]["value_type"].as_str(), replies[0]["body"]["text"].as_str()),
        (Some("simple"), Some("OK"))
    );
    assert_eq!(
        (replies[1]["body"]["value_type"].as_str(), replies[1]["body"]["text"].as_str()),
        (Some("bulk"), Some("v"))
    );
    assert_eq!(
        (replies[2]["body"]["value_type"].as_str(), replies[2]["body"]["integer"].as_i64()),
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
    let (recs, _stats) = agent.stop();
    dump(&recs, "dns_dig_to_dnsmasq");
    let dns_pid = dns.proc.pid();
    let server = format!("127.0.0.1:{}", dns.port);
    drop(dns);

    let cid = conn_of(&recs, pid, &server, "udp");
    for (dir, want_response) in [("egress", false), ("ingress", true)] {
        let chunks: Vec<Vec<u8>> = recs
            .0
            .iter()
            .filter(|r| r["type"] == "data" && r["conn_id"] == cid && r["direction"] == dir)
            .map(payload)
            .collect();
        let ms = msgs(&recs, cid, dir);
        assert_eq!(chunks.len(), 1, "one datagram {dir}");
        assert_eq!(ms.len(), 1, "one record {dir}: {ms:#?}");
        let m = ms[0];
        assert_eq!(m["protocol"], "dns", "{m}");
        assert_eq!(m["error"], Value::Null, "{m}");
        assert_eq!(raw(m), chunks[0], "raw != the datagram");
        let b = &m["body"];
        assert_eq!(b["type"], "dns");
        assert_eq!(b["id"].as_u64(), Some(ids[0]));
        assert_eq!(b["response"], want_response);
        assert_eq!(b["opcode"], 0);
        let q = &b["questions"];
        assert_eq!(q.as_array().unwrap().len(), 1, "{m}");
        assert_eq!(
            (q[0]["name"].as_str(), q[0]["qtype"].as_u64(), q[0]["qtype_name"].as_str()),
            (Some("svc.wiretrail.test."), Some(1), Some("A"))
        );
        assert_eq!(q[0]["qclass"], 1);
        assert_eq!(m["exchange"]["id"].as_u64(), Some(ids[0]));
    }
    let query = msgs(&recs, cid, "egress")[0];
    let resp = msgs(&recs, cid, "ingress")[0];
    assert_pair(query, resp);
    assert_eq!(query["body"]["answers"], serde_json::json!([]));
    let b = &resp["body"];
    assert_eq!((b["rcode"].as_u64(), b["rcode_name"].as_str()), (Some(0), Some("NOERROR")));
    let answers = b["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 1, "{resp}");
    assert_eq!(
        (answers[0]["name"].as_str(), answers[0]["rtype_name"].as_str()),
        (Some("svc.wiretrail.test."), Some("A"))
    );
    assert_eq!(answers[0]["data"], serde_json::json!({"kind": "a", "addr": ip}));

    // dnsmasq's side: the same query in, the same response out.
    let server_recs: Vec<&Value> =
        recs.0.iter().filter(|r| r["type"] == "data" && r["pid"] == dns_pid && r["transport"] == "udp").collect();
    let sids: BTreeSet<u64> = server_recs.iter().map(|r| r["conn_id"].as_u64().unwrap()).collect();
    assert_eq!(sids.len(), 1, "dnsmasq UDP sockets {sids:?}");
    let sid = *sids.first().unwrap();
    let sq = msgs(&recs, sid, "ingress");
    let sr = msgs(&recs, sid, "egress");
    assert_eq!((sq.len(), sr.len()), (1, 1), "{sq:#?} {sr:#?}");
    assert_eq!(raw(sq[0]), raw(query));
    assert_eq!(raw(sr[0]), raw(resp));
    assert_eq!(sq[0]["protocol"], "dns");
    assert_pair(sq[0], sr[0]);
}

// ---------------------------------------------------------------- FIX
