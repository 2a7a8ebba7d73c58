//! TLS plaintext capture end to end, as root, with real clients and servers
//! started after the agent (so discovery of new processes is exercised).
use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    nginx::{INDEX, Nginx},
    records::{Records, stream, tls_stream},
    require_root, serial, tls, wait_until,
};

/// (conn_id, records) of the one connection of `pid` to `remote` that carries TLS.
fn tls_conn<'a>(recs: &'a Records, pid: u32, remote: &str) -> (u64, Vec<&'a Value>) {
    let mine: Vec<&Value> = recs.of_pid(pid).into_iter().filter(|r| r["remote"] == remote).collect();
    let ids: std::collections::BTreeSet<u64> =
        mine.iter().filter(|r| r["tls"].is_object()).map(|r| r["conn_id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids.len(),
        1,
        "expected TLS records on one connection of pid {pid} to {remote}; got {ids:?} in {mine:#?}"
    );
    let id = *ids.iter().next().unwrap();
    (id, mine.into_iter().filter(|r| r["conn_id"] == id).collect())
}

fn library_of(recs: &[&Value]) -> String {
    let r = recs.iter().find(|r| r["tls"].is_object()).unwrap();
    format!("{} {}", r["tls"]["library"].as_str().unwrap(), r["tls"]["version"].as_str().unwrap())
}

#[test]
fn curl_to_nginx_https_plaintext_is_byte_exact_on_the_socket_connection() {
    require_root();
    let _g = serial();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nginx = Nginx::start_tls(&[addr]);
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let child = Command::new("curl")
        .args(["-sSk", "--http1.1", "--max-time", "20", "-o", "/dev/null", "--trace"])
        .arg(&trace)
        .arg(format!("https://{addr}/index.html"))
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let (sent, received) = curl_trace::parse(&std::fs::read_to_string(&trace).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (recs, stats) = agent.stop();

    let (cid, client) = tls_conn(&recs, pid, &addr.to_string());
    // The socket-level records of the same connection carry the ciphertext.
    assert!(client.iter().any(|r| r["type"] == "connect" && r["tls"].is_null()));
    assert!(!stream(&client, cid, "egress").bytes.is_empty());
    let out = tls_stream(&client, cid, "egress");
    let inn = tls_stream(&client, cid, "ingress");
    assert!(out.contiguous && inn.contiguous);
    assert_eq!(out.bytes, sent, "TLS plaintext differs from what curl sent");
    assert_eq!(inn.bytes, received, "TLS plaintext differs from what curl received");
    assert!(out.bytes.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    assert!(inn.bytes.starts_with(b"HTTP/1.1 200 OK\r\n") && inn.bytes.ends_with(INDEX));
    assert!(library_of(&client).starts_with("openssl OpenSSL 3."), "{}", library_of(&client));
    // The plaintext is parsed as HTTP on the same connection id.
    let http: Vec<&Value> = recs
        .0
        .iter()
        .filter(|r| r["type"] == "record" && r["conn_id"] == cid && r["tls"] == true && r["protocol"] == "http1")
        .collect();
    let request = http.iter().find(|r| r["direction"] == "egress").expect("parsed TLS request record");
    let response = http.iter().find(|r| r["direction"] == "ingress").expect("parsed TLS response record");
    assert_eq!(request["body"]["method"], "GET", "{request}");
    assert_eq!(request["body"]["target"], "/index.html", "{request}");
    assert_eq!(response["body"]["status"], 200, "{response}");
    let b64 = |r: &Value| {
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, r["raw"].as_str().unwrap()).unwrap()
    };
    assert_eq!(b64(request), sent, "the request record's raw bytes are the plaintext curl sent");

    // nginx's side: the same plaintext, reversed.
    let local = client[0]["local"].as_str().unwrap().to_string();
    let server: Vec<&Value> =
        recs.0.iter().filter(|r| r["local"] == addr.to_string() && r["remote"] == local).collect();
    let sid = server[0]["conn_id"].as_u64().unwrap();
    assert!(server.iter().all(|r| r["pid"] != nginx.pid()), "records come from the worker, not the master");
    assert_eq!(tls_stream(&server, sid, "ingress").bytes, sent);
    assert_eq!(tls_stream(&server, sid, "egress").bytes, received);
    assert_eq!(stats["kernel_lost_events"], 0);
}

#[test]
fn gnutls_cli_to_openssl_s_server() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls::self_signed(dir.path());
    let port = free_port();
    // Default (echo-to-stdout) mode: s_server uses SSL_read/SSL_write itself.
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let agent = Agent::start(&[]);
    let request = b"PING from gnutls-cli\n";
    let reply = b"PONG from openssl s_server\n";
    let mut cli = Command::new("gnutls-cli")
        .args(["--insecure", "--no-ca-verification", "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gnutls-cli (apt-get install gnutls-bin)");
    let pid = cli.id();
    let mut cli_in = cli.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cli_in.write_all(request).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.stdin.as_mut().unwrap().write_all(reply).unwrap();
    server.stdin.as_mut().unwrap().flush().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(cli_in);
    let out = cli.wait_with_output().unwrap();
    let _ = server.kill();
    let server_out = server.wait_with_output().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PONG from openssl s_server"),
        "gnutls-cli got: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&server_out.stdout).contains("PING from gnutls-cli"));

    let (cid, client) = tls_conn(&recs, pid, &format!("127.0.0.1:{port}"));
    assert_eq!(tls_stream(&client, cid, "egress").bytes, request);
    assert_eq!(tls_stream(&client, cid, "ingress").bytes, reply);
    assert!(library_of(&client).starts_with("gnutls"), "{}", library_of(&client));
    // openssl s_server (libssl) saw the same plaintext on its side.
    let local = client[0]["local"].as_str().unwrap().to_string();
    let server_recs: Vec<&Value> = recs.0.iter().filter(|r| r["remote"] == local && r["comm"] == "openssl").collect();
    let sid =
        server_recs.iter().find(|r| r["tls"].is_object()).expect("s_server TLS records")["conn_id"].as_u64().unwrap();
    assert_eq!(tls_stream(&server_recs, sid, "ingress").bytes, request);
    assert_eq!(tls_stream(&server_recs, sid, "egress").bytes, reply);
    assert!(library_of(&server_recs).starts_with("openssl OpenSSL 3."));
}

#[test]
fn go_client_to_nginx_and_stripped_go_is_reported() {
    require_root();
    let _g = serial();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start_tls(&[addr]);
    let dir = tempfile::tempdir().unwrap();
    let client = tls::build_go_client(dir.path(), false);
    let stripped = tls::build_go_client(dir.path(), true);
    let agent = Agent::start(&[]);
    let run = |bin: &std::path::Path| {
        let c = Command::new(bin).arg(addr.to_string()).stdout(Stdio::piped()).spawn().unwrap();
        let pid = c.id();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, INDEX);
        pid
    };
    let pid = run(&client);
    let _ = run(&stripped);
    std::thread::sleep(Duration::from_millis(500));
    let (recs, _) = agent.stop();

    let (cid, conn) = tls_conn(&recs, pid, &addr.to_string());
    let out = tls_stream(&conn, cid, "egress").bytes;
    let inn = tls_stream(&conn, cid, "ingress").bytes;
    assert!(out.starts_with(b"GET /index.html HTTP/1.1\r\nHost: "), "{:?}", String::from_utf8_lossy(&out));
    assert!(inn.starts_with(b"HTTP/1.1 200 OK\r\n") && inn.ends_with(INDEX), "{:?}", String::from_utf8_lossy(&inn));
    assert!(library_of(&conn).starts_with("go-crypto-tls go1."), "{}", library_of(&conn));

    let report = recs
        .0
        .iter()
        .find(|r| {
            r["type"] == "tls_unsupported"
                && r["path"].as_str().is_some_and(|p| p.ends_with("go-https-client-stripped"))
        })
        .unwrap_or_else(|| panic!("no report naming the stripped Go binary"));
    assert!(report["reason"].as_str().unwrap().contains("stripped"), "{report}");
}

#[test]
fn node_client_to_nginx() {
    require_root();
    let _g = serial();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start_tls(&[addr]);
    let agent = Agent::start(&[]);
    let script = format!(
        "setTimeout(()=>require('https').get({{host:'127.0.0.1',port:{},path:'/index.html',rejectUnauthorized:false}},r=>{{r.on('data',d=>process.stdout.write(d))}}).on('error',e=>{{console.error(e);process.exit(1)}}),500)",
        addr.port()
    );
    let c = Command::new("node").args(["-e", &script]).stdout(Stdio::piped()).spawn().expect("node");
    let pid = c.id();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, INDEX);
    std::thread::sleep(Duration::from_millis(300));
    let (recs, _) = agent.stop();
    // Node drives OpenSSL through memory BIOs: the ciphertext reaches the socket
    // outside SSL_write/SSL_read, so these records are explicitly untracked
    // (no connection id); the plaintext is still captured whole.
    let tls_recs: Vec<&Value> = recs.of_pid(pid).into_iter().filter(|r| r["tls"].is_object()).collect();
    let text = |dir: &str| -> Vec<u8> {
        tls_recs
            .iter()
            .filter(|r| r["direction"] == dir && r["type"] == "data")
            .flat_map(|r| wiretrail_tests::records::payload(r))
            .collect()
    };
    assert!(
        text("egress").starts_with(b"GET /index.html HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&text("egress"))
    );
    assert!(text("ingress").ends_with(INDEX));
    assert!(tls_recs.iter().all(|r| r["conn_id"].as_u64().unwrap() > 0 || r["untracked"] == true));
    assert!(library_of(&tls_recs).starts_with("openssl OpenSSL 3."), "{}", library_of(&tls_recs));
}
