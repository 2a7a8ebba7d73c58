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
    time::Duration,
};

use base64::Engine as _;
use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    nginx::{INDEX, Nginx},
    peers::{Dnsmasq, Postgres, Proc, Redis, venv_python, wait_tcp},
    records::{Records, payload, stream},
    require_root, serial,
};

/// With `WIRETRAIL_DUMP_DIR` set, writes a test's records there as JSON lines
/// (to read when an assertion fails).
fn dump(recs: &Records, name: &str) {
    if let Ok(d) = std::env::var("WIRETRAIL_DUMP_DIR") {
        let text: String = recs.0.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(std::path::Path::new(&d).join(format!("{name}.jsonl")), text).expect("dump records");
    }
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s.as_str().expect("base64 string")).expect("base64")
}

fn raw(r: &Value) -> Vec<u8> {
    b64(&r["raw"])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The one TCP connection of process `pid` whose remote is `remote` (from
/// its chunk records).
fn client_conn(recs: &Records, pid: u32, remote: &str) -> u64 {
    conn_of(recs, pid, remote, "tcp")
}

fn conn_of(recs: &Records, pid: u32, remote: &str, transport: &str) -> u64 {
    let ids: BTreeSet<u64> = recs
        .of_pid(pid)
        .into_iter()
        .filter(|r| r["remote"] == remote && r["tls"].is_null() && r["transport"] == transport)
        .map(|r| r["conn_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "expected one connection from pid {pid} to {remote}, got {ids:?}");
    *ids.first().unwrap()
}

/// The server-side connection `local` <- `remote` that carries data (a
/// server that forks after accept, like PostgreSQL, has the accept on the
/// parent's connection id and the bytes on the child's).
fn server_conn(recs: &Records, local: &str, remote: &str) -> u64 {
    let ids: BTreeSet<u64> = recs
        .0
        .iter()
        .filter(|r| r["local"] == local && r["remote"] == remote && r["type"] == "data")
        .map(|r| r["conn_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "expected one server connection {local} <- {remote}, got {ids:?}");
    *ids.first().unwrap()
}

/// The local address of connection `conn` (from its chunk records).
fn local_of(recs: &Records, conn: u64) -> String {
    recs.0
        .iter()
        .find(|r| r["conn_id"] == conn && r["type"] == "data")
        .and_then(|r| r["local"].as_str())
        .expect("a data record of the connection")
        .to_string()
}

/// Protocol records (not the connection summary) of one direction of a
/// socket connection, in stream order.
fn msgs<'a>(recs: &'a Records, conn: u64, dir: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = recs
        .0
        .iter()
        .filter(|r| {
            r["type"] == "record"
                && r["conn_id"] == conn
                && r["tls"] == false
                && r["direction"] == dir
                && r["body"]["type"] != "connection"
        })
        .collect();
    v.sort_by_key(|r| r["stream_pos"].as_u64().unwrap());
    v
}

/// The connection summary record of `conn`.
fn summary(recs: &Records, conn: u64) -> &Value {
    let s: Vec<&Value> = recs
        .0
        .iter()
        .filter(|r| r["type"] == "record" && r["conn_id"] == conn && r["tls"] == false)
        .filter(|r| r["body"]["type"] == "connection")
        .collect();
    assert_eq!(s.len(), 1, "expected one connection record for {conn}: {s:?}");
    s[0]
}

/// Asserts that the records of `dir` of `conn` are all `protocol`, carry no
/// gaps, start at 0, follow each other with no hole or overlap, and that their
/// raw bytes concatenated are exactly the captured stream (chunk records).
/// Returns that stream.
fn assert_tiles(recs: &Records, conn: u64, dir: &str, protocol: &str) -> Vec<u8> {
    let all: Vec<&Value> = recs.0.iter().collect();
    let captured = stream(&all, conn, dir);
    assert!(captured.contiguous && captured.gaps.is_empty(), "{dir} of {conn} not captured whole: {captured:?}");
    assert!(!captured.bytes.is_empty(), "nothing captured on {dir} of {conn}");
    let ms = msgs(recs, conn, dir);
    let mut at = 0u64;
    let mut joined = Vec::new();
    for m in &ms {
        assert_eq!(m["protocol"], protocol, "record: {m}");
        assert_eq!(m["gaps"], serde_json::json!([]), "record with gaps: {m}");
        assert_eq!(m["stream_pos"].as_u64(), Some(at), "records of {dir} of {conn} not contiguous at {m}");
        let r = raw(m);
        assert_eq!(m["stream_len"].as_u64(), Some(r.len() as u64), "stream_len != raw length: {m}");
        at += r.len() as u64;
        joined.extend_from_slice(&r);
    }
    assert_eq!(
        joined,
        captured.bytes,
        "records' raw bytes of {dir} of {conn} differ from the captured stream:\nrecords: {}\nstream:  {}",
        String::from_utf8_lossy(&joined).escape_debug(),
        String::from_utf8_lossy(&captured.bytes).escape_debug()
    );
    captured.bytes
}

/// Request/response pairing: same exchange id, roles, latency on the response.
fn assert_pair(req: &Value, resp: &Value) {
    assert_eq!(req["exchange"]["role"], "request", "{req}");
    assert_eq!(resp["exchange"]["role"], "response", "{resp}");
    assert!(req["exchange"]["id"].is_u64());
    assert_eq!(req["exchange"]["id"], resp["exchange"]["id"], "not paired:\n{req}\n{resp}");
    assert!(resp["exchange"]["latency_ns"].is_u64(), "response without latency: {resp}");
}

fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["body"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h["value"].as_str())
}

fn write_script(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const SETTLE: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------- HTTP/1.1

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

const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc

def say(request, context):
    return b"pong:" + request

handler = grpc.method_handlers_generic_handler(
    "wiretrail.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:%d" % int(sys.argv[1]))
server.start()
print("ready", flush=True)
server.wait_for_termination(timeout=120)
"#;

const GRPC_CLIENT: &str = r#"
import sys
import grpc

with grpc.insecure_channel("127.0.0.1:%d" % int(sys.argv[1]), options=[("grpc.enable_http_proxy", 0)]) as ch:
    say = ch.unary_unary("/wiretrail.test.Echo/Say")
    for i in (1, 2):
        print(say(b"ping-%d" % i, timeout=10).decode(), flush=True)
"#;

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

const FIX_COMMON: &str = r#"
import socket, sys, time
import simplefix

class Session:
    def __init__(self, sock, sender, target):
        self.sock, self.sender, self.target = sock, sender, target
        self.seq = 0
        self.parser = simplefix.FixParser()
        self.sent = bytearray()
        self.received = bytearray()

    def build(self, msg_type, fields):
        self.seq += 1
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        m.append_pair(34, self.seq, header=True)
        m.append_utc_timestamp(52, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m.encode()

    def send_raw(self, data):
        self.sock.sendall(data)
        self.sent += data

    def send(self, msg_type, fields=()):
        self.send_raw(self.build(msg_type, fields))

    def recv(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = self.parser.get_message()
            if m is not None:
                return m
            data = self.sock.recv(65536)
            if not data:
                return None
            self.received += data
            self.parser.append_buffer(data)
        raise TimeoutError("no FIX message")

def checksum_ok(m):
    data = m.encode(raw=True)
    body, _, tail = data.rpartition(b"10=")
    return tail[:3] == b"%03d" % (sum(body) % 256)
"#;

const FIX_ACCEPTOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(60)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
s = Session(conn, "EXCH", "CLIENT")
seen = []
for _ in range(100):
    m = s.recv()
    if m is None:
        break
    t = m.get(35).decode()
    if not checksum_ok(m):
        seen.append("garbled")  # a garbled message is ignored (FIX session rules)
        continue
    seen.append(t)
    if t == "A":
        s.send("A", [(98, 0), (108, 30)])
    elif t == "D":
        s.send("8", [(37, "EX-1"), (11, m.get(11).decode()), (17, "EXEC-1"), (150, "0"), (39, "0"),
                     (55, m.get(55).decode()), (54, m.get(54).decode()), (38, m.get(38).decode()),
                     (151, m.get(38).decode()), (14, 0), (6, 0)])
    elif t == "5":
        s.send("5", [(58, "logout acknowledged")])
        break
conn.close()
open(out, "w").write(" ".join(seen))
"#;

const FIX_INITIATOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
s = Session(sock, "CLIENT", "EXCH")
got = []
s.send("A", [(98, 0), (108, 30)])
got.append(s.recv().get(35).decode())
order = [(11, "ORD-1"), (55, "WTRL"), (54, 1), (38, 100), (40, 2), (44, "12.34")]
s.send("D", order + [(60, "20260101-00:00:00.000")])
got.append(s.recv().get(35).decode())
s.send("0")
# A NewOrderSingle whose CheckSum is wrong, sent as raw bytes.
data = s.build("D", [(11, "ORD-BAD"), (55, "WTRL"), (54, 2), (38, 5), (40, 1)])
good = int(data[-4:-1])
s.send_raw(data[:-4] + b"%03d\x01" % ((good + 1) % 256))
s.send("5", [(58, "done")])
got.append(s.recv().get(35).decode())
sock.close()
open(out + ".sent", "wb").write(s.sent)
open(out + ".received", "wb").write(s.received)
print(" ".join(got), flush=True)
"#;

/// FIX CheckSum of a whole message's bytes (everything before `10=`).
fn fix_checksum(msg: &[u8]) -> u64 {
    let body = &msg[..msg.len() - 7];
    assert!(msg[msg.len() - 7..].starts_with(b"10="));
    body.iter().map(|b| u64::from(*b)).sum::<u64>() % 256
}

fn fix_field(r: &Value, tag: u64) -> Option<&str> {
    r["body"]["fields"].as_array()?.iter().find(|f| f["tag"] == tag).and_then(|f| f["value"].as_str())
}

#[test]
fn fix_initiator_and_acceptor_with_simplefix() {
    require_root();
    let _g = serial();
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let acceptor_py = write_script(dir.path(), "acceptor.py", &format!("{FIX_COMMON}{FIX_ACCEPTOR}"));
    let initiator_py = write_script(dir.path(), "initiator.py", &format!("{FIX_COMMON}{FIX_INITIATOR}"));
    let port = free_port();
    let agent = Agent::start(&[]);
    let mut cmd = Command::new(&python);
    cmd.arg(&acceptor_py).arg(port.to_string()).arg(dir.path().join("acceptor.out"));
    let mut acceptor = Proc::spawn(cmd, &dir.path().join("acceptor.log"));
    let listening = wiretrail_tests::wait_until(Duration::from_secs(30), || acceptor.log().contains("ready"));
    assert!(listening, "acceptor did not start:\n{}", acceptor.log());

    let out_base = dir.path().join("initiator");
    let child = Command::new(&python)
        .arg(&initiator_py)
        .arg(port.to_string())
        .arg(&out_base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn FIX initiator");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "initiator: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A 8 5\n");
    acceptor.wait_success(Duration::from_secs(20));
    let seen = std::fs::read_to_string(dir.path().join("acceptor.out")).unwrap();
    assert_eq!(seen, "A D 0 garbled 5", "what the acceptor saw");
    let sent = std::fs::read(out_base.with_extension("sent")).unwrap();
    let received = std::fs::read(out_base.with_extension("received")).unwrap();
    std::thread::sleep(SETTLE);
    let (recs, _stats) = agent.stop();
    dump(&recs, "fix_initiator_and_acceptor_with_simplefix");

    let remote = format!("127.0.0.1:{port}");
    let cid = client_conn(&recs, pid, &remote);
    assert_eq!(assert_tiles(&recs, cid, "egress", "fix"), sent, "egress != what the initiator sent");
    assert_eq!(assert_tiles(&recs, cid, "ingress", "fix"), received, "ingress != what the initiator received");
    let sid = server_conn(&recs, &remote, &local_of(&recs, cid));
    assert_eq!(assert_tiles(&recs, sid, "ingress", "fix"), sent);
    assert_eq!(assert_tiles(&recs, sid, "egress", "fix"), received);

    let check = |recs: &[&Value], types: &[&str], sender: &str, target: &str, bad: Option<usize>| {
        let got: Vec<&str> = recs.iter().map(|r| r["body"]["msg_type"].as_str().unwrap_or("?")).collect();
        assert_eq!(got, types, "{recs:#?}");
        for (i, r) in recs.iter().enumerate() {
            let b = &r["body"];
            let bytes = raw(r);
            assert_eq!(b["type"], "fix");
            assert_eq!(b["begin_string"], "FIX.4.4");
            assert_eq!((b["sender_comp_id"].as_str(), b["target_comp_id"].as_str()), (Some(sender), Some(target)));
            assert_eq!(b["msg_seq_num"].as_u64(), Some(i as u64 + 1), "{r}");
            assert!(b["sending_time"].is_string());
            // BodyLength: bytes after the 9= field up to the CheckSum field.
            let after_9 = find(&bytes, b"\x0135=").unwrap() + 1;
            assert_eq!(b["body_length"].as_u64(), Some((bytes.len() - 7 - after_9) as u64), "{r}");
            assert_eq!(fix_field(r, 9), Some(b["body_length"].as_u64().unwrap().to_string().as_str()));
            let declared: u64 = b["checksum"].as_u64().unwrap();
            if bad == Some(i) {
                assert_eq!(b["valid"], false, "{r}");
                assert_eq!(declared, (fix_checksum(&bytes) + 1) % 256);
                let err = r["error"].as_str().expect("malformed message recorded with an error");
                assert!(err.contains("CheckSum"), "{err}");
                assert!(b["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("CheckSum")));
                assert_eq!(fix_field(r, 11), Some("ORD-BAD"));
            } else {
                assert_eq!(b["valid"], true, "{r}");
                assert_eq!(r["error"], Value::Null, "{r}");
                assert_eq!(declared, fix_checksum(&bytes), "{r}");
            }
            let cat = if ["A", "0", "5"].contains(&types[i]) { "session" } else { "application" };
            assert_eq!(b["category"], cat, "{r}");
        }
    };
    let out_msgs = msgs(&recs, cid, "egress");
    let in_msgs = msgs(&recs, cid, "ingress");
    check(&out_msgs, &["A", "D", "0", "D", "5"], "CLIENT", "EXCH", Some(3));
    check(&in_msgs, &["A", "8", "5"], "EXCH", "CLIENT", None);
    assert_eq!(out_msgs[0]["body"]["msg_type_name"], "Logon");
    assert_eq!(out_msgs[1]["body"]["msg_type_name"], "NewOrderSingle");
    assert_eq!(out_msgs[2]["body"]["msg_type_name"], "Heartbeat");
    assert_eq!(out_msgs[4]["body"]["msg_type_name"], "Logout");
    assert_eq!(in_msgs[1]["body"]["msg_type_name"], "ExecutionReport");
    assert_eq!(
        (fix_field(out_msgs[1], 11), fix_field(out_msgs[1], 55), fix_field(out_msgs[1], 38)),
        (Some("ORD-1"), Some("WTRL"), Some("100"))
    );
    assert_eq!(
        (fix_field(in_msgs[1], 11), fix_field(in_msgs[1], 150), fix_field(in_msgs[1], 39)),
        (Some("ORD-1"), Some("0"), Some("0"))
    );
}
