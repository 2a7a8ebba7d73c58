//! TLS plaintext capture end to end, as root, with real clients and servers
//! started after the agent (so discovery of new processes is exercised).
#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use support::*;
use wiretrail_tests::{
    agent::Agent,
    curl_trace, free_port,
    nginx::{INDEX, Nginx},
    require_root, serial, tls, wait_until,
};

/// The one connection of `pid` to `remote` whose records carry TLS plaintext.
fn tls_conn(recs: &Records, pid: u32, remote: &str) -> u64 {
    let ids: std::collections::BTreeSet<u64> = recs
        .sides()
        .iter()
        .filter(|s| s.pid == pid && s.remote.map(|r| r.to_string()).as_deref() == Some(remote))
        .map(|s| s.conn_id)
        .filter(|id| recs.parts_of(*id).iter().any(|v| v.tls))
        .collect();
    assert_eq!(ids.len(), 1, "expected TLS plaintext on one connection of pid {pid} to {remote}; got {ids:?}");
    *ids.first().unwrap()
}

/// A child's output, read by a thread as it comes, to wait for.
struct Output(std::sync::Arc<std::sync::Mutex<String>>);

impl Output {
    fn watch(mut from: impl std::io::Read + Send + 'static) -> Output {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                t.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Output(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits (at most 15 s) until the output contains `needle`.
    fn wait_for(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(15), || self.text().contains(needle))
    }
}

/// "library version" of the TLS records of `conn` (its own end's library).
fn library_of(recs: &Records, conn: u64) -> String {
    let lib = recs
        .0
        .iter()
        .filter_map(Record::who)
        .find_map(|w| match (&w.tls, &w.witness_tls) {
            (Some(l), _) if w.side.conn_id == conn => Some(l.clone()),
            (_, Some(l)) if w.witness.is_some_and(|x| x.conn_id == conn) => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TLS record names conn {conn}'s library"));
    format!("{} {}", lib.library, lib.version)
}

/// The TLS plaintext of `conn` is linked to its socket, not grouped with it
/// by address: the connection id the socket's own addresses name (exactly one
/// with bytes) is `conn`, and its records carry the socket's bytes too, the
/// ciphertext, which opens with a TLS handshake record each way.
fn assert_linked_to_socket(recs: &Records, conn: u64) {
    let side = recs.side(conn);
    let (local, remote) = (side.local.expect("local address"), side.remote.expect("remote address"));
    assert_eq!(
        recs.conn_between(&local.to_string(), &remote.to_string()),
        conn,
        "the plaintext's connection is not the socket's"
    );
    for dir in [Direction::Egress, Direction::Ingress] {
        let cipher = assert_whole(recs, conn, dir, false);
        assert_eq!(&cipher[..2], &[0x16, 0x03], "{dir:?} socket bytes of conn {conn} are not a TLS handshake");
        assert_ne!(cipher, assert_whole(recs, conn, dir, true), "socket bytes equal the plaintext");
    }
}

/// Each direction of `conn`'s socket adds up to the kernel's count: the
/// ciphertext kept (the handshake at least) plus, unless `kept`, the
/// ciphertext counted and not kept once the plaintext was captured.
fn assert_ciphertext_accounted(recs: &Records, conn: u64, kept: bool) {
    let c = recs.connection(conn);
    for (dir, t) in [("egress", c.egress), ("ingress", c.ingress)] {
        let total = t.kernel_total.unwrap_or_else(|| panic!("conn {conn} closed without its {dir} count: {c:?}"));
        assert_eq!(t.gap, 0, "{dir} of conn {conn}: {t:?}");
        match (kept, t.not_kept) {
            (true, None) => assert_eq!(t.captured, total, "{dir} of conn {conn}: every ciphertext byte kept: {t:?}"),
            (false, Some(n)) => {
                assert!(n.bytes > 0 && n.calls > 0 && n.first_ns <= n.last_ns, "{dir} of conn {conn}: {n:?}");
                assert_eq!(t.captured + n.bytes, total, "{dir} of conn {conn}: kept + not kept = the kernel's: {t:?}");
            }
            _ => panic!("{dir} of conn {conn}: ciphertext kept {kept} but totals say {t:?}"),
        }
    }
}

/// curl → nginx over HTTPS under an agent run with `extra`: the records,
/// curl's connection, nginx's, what curl sent and received, and the agent's stats.
fn curl_to_nginx(name: &str, extra: &[&str]) -> (Records, u64, u64, Vec<u8>, Vec<u8>, serde_json::Value) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nginx = Nginx::start_tls(&[addr]);
    let agent = Agent::start(extra);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    // Two requests on one connection: the second's ciphertext flows after
    // the plaintext did, both ways.
    let url = format!("https://{addr}/index.html");
    let child = Command::new("curl")
        .args(["-sSk", "--http1.1", "--max-time", "20", "--trace"])
        .arg(&trace)
        .args(["-o", "/dev/null", &url, "-o", "/dev/null", &url])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let (sent, received) = curl_trace::parse(&std::fs::read_to_string(&trace).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump(name);
    let cid = tls_conn(&recs, pid, &addr.to_string());
    let local = recs.side(cid).local.unwrap().to_string();
    let sid = recs.conn_between(&addr.to_string(), &local);
    assert_ne!(recs.side(sid).pid, nginx.pid(), "records come from the worker, not the master");
    (recs, cid, sid, sent, received, stats)
}

#[test]
fn curl_to_nginx_https_plaintext_is_byte_exact_on_the_socket_connection() {
    require_root();
    let _g = serial();
    let (recs, cid, sid, sent, received, stats) = curl_to_nginx("curl_to_nginx_https", &[]);
    assert_linked_to_socket(&recs, cid);
    assert_eq!(assert_whole(&recs, cid, Direction::Egress, true), sent, "TLS plaintext differs from what curl sent");
    assert_eq!(
        assert_whole(&recs, cid, Direction::Ingress, true),
        received,
        "TLS plaintext differs from what curl received"
    );
    assert!(sent.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n") && received.ends_with(INDEX));
    assert!(library_of(&recs, cid).starts_with("openssl OpenSSL 3."), "{}", library_of(&recs, cid));
    // The plaintext is parsed as HTTP, one exchange per request, on the same connection id.
    let http: Vec<&Exchange> =
        recs.exchanges_of(cid).into_iter().filter(|e| e.who.tls.is_some() && e.protocol.name() == "http1").collect();
    assert_eq!(http.len(), 2, "{http:#?}");
    let mut requests = Vec::new();
    for e in &http {
        assert_eq!(
            (fields(e, 0)["method"].as_str(), fields(e, 0)["target"].as_str()),
            (Some("GET"), Some("/index.html"))
        );
        assert_eq!(fields(e, 1)["status"], 200);
        assert!(e.parts.iter().all(|p| p.tls));
        requests.extend(role_bytes(e, cid, PartRole::Request));
    }
    assert_eq!(requests, sent, "the requests' raw bytes are the plaintext curl sent");

    // nginx's end: the same plaintext, reversed, from the worker.
    assert_eq!(assert_whole(&recs, sid, Direction::Ingress, true), sent);
    assert_eq!(assert_whole(&recs, sid, Direction::Egress, true), received);
    assert!(library_of(&recs, sid).starts_with("openssl OpenSSL 3."));
    assert_eq!(stats["kernel_lost_events"], 0);

    // Once the plaintext flows, the ciphertext is counted, not kept: the
    // handshake is in the records, the rest in the connection's totals.
    assert_ciphertext_accounted(&recs, cid, false);
    assert_ciphertext_accounted(&recs, sid, false);
    let gaps: Vec<_> = recs.gaps().into_iter().filter(|g| [cid, sid].contains(&g.who.side.conn_id)).collect();
    assert!(gaps.is_empty(), "not kept is not missing: {gaps:?}");
    assert!(stats["kernel_tls_ciphertext_not_kept_bytes"].as_u64().unwrap_or(0) > 0, "{stats}");
}

#[test]
fn keep_tls_ciphertext_keeps_every_byte_of_the_socket() {
    require_root();
    let _g = serial();
    let (recs, cid, sid, sent, received, stats) = curl_to_nginx("curl_to_nginx_https_keep", &["--keep-tls-ciphertext"]);
    assert_linked_to_socket(&recs, cid);
    assert_eq!(assert_whole(&recs, cid, Direction::Egress, true), sent);
    assert_eq!(assert_whole(&recs, cid, Direction::Ingress, true), received);
    assert_ciphertext_accounted(&recs, cid, true);
    assert_ciphertext_accounted(&recs, sid, true);
    // Application data records follow the handshake on the socket, both ways.
    for dir in [Direction::Egress, Direction::Ingress] {
        let cipher = assert_whole(&recs, cid, dir, false);
        assert!(cipher.len() > sent.len().min(received.len()), "{dir:?}: only {} ciphertext bytes", cipher.len());
    }
    assert_eq!(stats["kernel_tls_ciphertext_not_kept_bytes"], 0, "{stats}");
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
    let cli_out = Output::watch(cli.stdout.take().unwrap());
    let server_out = Output::watch(server.stdout.take().unwrap());
    // gnutls-cli reads stdin once its handshake is done and it says so.
    assert!(cli_out.wait_for("- Simple Client Mode"), "gnutls-cli did not connect: {:?}", cli_out.text());
    cli_in.write_all(request).unwrap();
    assert!(server_out.wait_for("PING from gnutls-cli"), "s_server got: {:?}", server_out.text());
    server.stdin.as_mut().unwrap().write_all(reply).unwrap();
    server.stdin.as_mut().unwrap().flush().unwrap();
    assert!(cli_out.wait_for("PONG from openssl s_server"), "gnutls-cli got: {:?}", cli_out.text());
    drop(cli_in);
    assert!(cli.wait().unwrap().success(), "gnutls-cli: {:?}", cli_out.text());
    let _ = server.kill();
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("gnutls_cli_to_openssl_s_server");
    let cid = tls_conn(&recs, pid, &format!("127.0.0.1:{port}"));
    assert_eq!(assert_whole(&recs, cid, Direction::Egress, true), request);
    assert_eq!(assert_whole(&recs, cid, Direction::Ingress, true), reply);
    assert!(library_of(&recs, cid).starts_with("gnutls"), "{}", library_of(&recs, cid));
    assert_linked_to_socket(&recs, cid);
    // openssl s_server (libssl) saw the same plaintext on its end.
    let local = recs.side(cid).local.unwrap().to_string();
    let sid = recs.conn_between(&format!("127.0.0.1:{port}"), &local);
    assert_eq!(recs.side(sid).comm.as_str(), "openssl");
    assert_eq!(assert_whole(&recs, sid, Direction::Ingress, true), request);
    assert_eq!(assert_whole(&recs, sid, Direction::Egress, true), reply);
    assert!(library_of(&recs, sid).starts_with("openssl OpenSSL 3."), "{}", library_of(&recs, sid));
    assert_linked_to_socket(&recs, sid);
}

#[test]
fn go_client_to_nginx_and_stripped_go_is_reported() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (addr, _nginx, client) = tls::nginx_and_go_client(dir.path());
    let stripped = tls::build_go_client(dir.path(), true);
    let agent = Agent::start(&[]);
    let run = |bin: &std::path::Path| tls::run_go_client(bin, &addr.to_string());
    let pid = run(&client);
    let stripped_pid = run(&stripped);
    std::thread::sleep(Duration::from_millis(500));
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("go_client_to_nginx_and_stripped_go_is_reported");

    let cid = tls_conn(&recs, pid, &addr.to_string());
    assert_linked_to_socket(&recs, cid);
    let out = assert_whole(&recs, cid, Direction::Egress, true);
    let inn = assert_whole(&recs, cid, Direction::Ingress, true);
    assert!(out.starts_with(b"GET /index.html HTTP/1.1\r\nHost: "), "{:?}", String::from_utf8_lossy(&out));
    assert!(inn.starts_with(b"HTTP/1.1 200 OK\r\n") && inn.ends_with(INDEX), "{:?}", String::from_utf8_lossy(&inn));
    assert!(library_of(&recs, cid).starts_with("go-crypto-tls go1."), "{}", library_of(&recs, cid));

    let report = recs
        .0
        .iter()
        .find_map(|r| match r {
            Record::Notice(n)
                if n.notice == "tls_unsupported"
                    && n.details["path"].as_str().is_some_and(|p| p.ends_with("go-https-client-stripped")) =>
            {
                Some(n)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no report naming the stripped Go binary"));
    assert!(report.details["reason"].as_str().unwrap().contains("stripped"), "{report:?}");

    // No silent blind spot: the stripped client's connection says its TLS
    // plaintext was not captured, with the ciphertext bytes; the hooked
    // client's does not.
    let unseen = |conn: u64| {
        let c = recs.connection(conn);
        if c.who.side.conn_id == conn { c.tls_unseen.clone() } else { c.witness_tls_unseen.clone() }
    };
    assert_eq!(unseen(cid), None);
    let sid = recs.client_conn(stripped_pid, &addr.to_string());
    let u = unseen(sid)
        .unwrap_or_else(|| panic!("no TLS blind spot stated for the stripped client: {:#?}", recs.connection(sid)));
    let sent = recs.side(sid);
    assert!(u.egress_bytes > 0 && u.ingress_bytes > 0, "{u:?} ({sent:?})");
    assert!(u.reason.contains("no plaintext"), "{u:?}");
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
    let (text, _) = agent.stop();
    let recs = Records::parse(&text);
    // Node drives OpenSSL through memory BIOs: the ciphertext reaches the socket
    // outside SSL_write/SSL_read, so the plaintext is not tied to a
    // connection: its records say so (`orphan`, connection id 0) and the
    // plaintext is still captured whole.
    let tls_recs: Vec<&Record> = recs
        .0
        .iter()
        .filter(|r| r.who().is_some_and(|w| w.side.pid == pid && w.tls.is_some()) && !r.parts().is_empty())
        .collect();
    assert!(!tls_recs.is_empty(), "no TLS plaintext of node");
    let text = |dir: Direction| -> Vec<u8> {
        tls_recs
            .iter()
            .flat_map(|r| r.parts())
            .filter(|p| p.direction == dir && p.tls)
            .flat_map(|p| p.raw.0.to_vec())
            .collect()
    };
    assert!(
        text(Direction::Egress).starts_with(b"GET /index.html HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&text(Direction::Egress))
    );
    assert!(text(Direction::Ingress).ends_with(INDEX));
    // Every plaintext record says so: an orphan segment on connection 0 (the
    // socket's ciphertext is recorded on its own connection).
    for r in &tls_recs {
        let Record::Segment(s) = r else { panic!("node's plaintext outside an orphan segment: {r:?}") };
        assert_eq!(
            (s.reason, s.who.side.conn_id),
            (wiretrail_agent::proto::fields::UnparsedReason::Orphan, 0),
            "{s:?}"
        );
    }
    let lib = tls_recs[0].who().unwrap().tls.as_ref().unwrap();
    assert!(lib.version.starts_with("OpenSSL 3."), "{lib:?}");
    // The socket's own connection states that its TLS plaintext is not on it.
    let cid = recs.client_conn(pid, &addr.to_string());
    let c = recs.connection(cid);
    let u = if c.who.side.conn_id == cid { &c.tls_unseen } else { &c.witness_tls_unseen };
    assert!(u.as_ref().is_some_and(|u| u.egress_bytes > 0 && u.ingress_bytes > 0), "{c:#?}");
}

/// One rustls client ↔ server exchange under a fresh agent: the records, the
/// client's pid, the server's port and pid, and what each end wrote down
/// (`client-sent`, `client-received`, `server-sent`, `server-received`).
struct RustlsRun {
    recs: Records,
    stats: serde_json::Value,
    client: u32,
    server: u32,
    port: u16,
    dir: tempfile::TempDir,
}

impl RustlsRun {
    /// `log`: the client writes a line to this plain TCP port between handing
    /// its request to rustls and writing the TLS records (`misread`: and reads
    /// a line from it between taking the answer's records and reading its plaintext).
    fn run(log: Option<u16>, misread: bool) -> RustlsRun {
        let peer = tls::build_rustls_peer();
        let dir = tempfile::tempdir().unwrap();
        // webpki wants a CA and a leaf (not openssl's self-signed CA as the server's own).
        certs::generate(dir.path(), &[]).unwrap();
        let file = |name: &str| dir.path().join(name);
        let agent = Agent::start(&[]);
        let mut server = Command::new(&peer)
            .arg("server")
            .args([file("collector.pem"), file("collector.key"), file("server-sent"), file("server-received")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let server_out = Output::watch(server.stdout.take().unwrap());
        assert!(server_out.wait_for("\n"), "the rustls server did not start: {:?}", server_out.text());
        let port: u16 = server_out.text().trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect("port N");
        let mut client = Command::new(&peer);
        client.args(["client", &port.to_string()]).arg(file("ca.pem")).arg("clordid=ORD-7731&qty=100");
        client.args([file("client-sent"), file("client-received")]);
        if let Some(log) = log {
            client.arg(log.to_string());
            if misread {
                client.arg("misread");
            }
        }
        let client = client.stdout(Stdio::piped()).spawn().unwrap();
        let pid = client.id();
        assert!(client.wait_with_output().unwrap().status.success(), "rustls client failed");
        assert!(server_out.wait_for("served"), "server: {:?}", server_out.text());
        let server_pid = server.id();
        assert!(server.wait().unwrap().success());
        std::thread::sleep(Duration::from_millis(300));
        let (text, stats) = agent.stop();
        let recs = Records::parse(&text);
        recs.dump(match (log, misread) {
            (Some(_), true) => "rustls_misread",
            (Some(_), false) => "rustls_with_log",
            (None, _) => "rustls_client_to_rustls_server",
        });
        RustlsRun { recs, stats, client: pid, server: server_pid, port, dir }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// The client's TLS connection: its plaintext is what the client sent and
    /// received, on the socket's own connection.
    fn client_conn(&self) -> u64 {
        let (sent, received) = (self.read("client-sent"), self.read("client-received"));
        assert!(sent.starts_with(b"POST /orders HTTP/1.1\r\n") && sent.ends_with(b"clordid=ORD-7731&qty=100"));
        assert!(received.starts_with(b"HTTP/1.1 201 Created\r\n"));
        let cid = tls_conn(&self.recs, self.client, &format!("127.0.0.1:{}", self.port));
        assert_linked_to_socket(&self.recs, cid);
        assert_eq!(assert_whole(&self.recs, cid, Direction::Egress, true), sent, "client's plaintext sent");
        assert_eq!(assert_whole(&self.recs, cid, Direction::Ingress, true), received, "client's plaintext received");
        assert!(library_of(&self.recs, cid).starts_with("rustls 0.23."), "{}", library_of(&self.recs, cid));
        cid
    }
}

/// A Rust client and server, each with rustls linked in (release builds from
/// crates.io): both ends' plaintext is captured byte-exact on the socket's own
/// connection (the client writes with `write_vectored`, the server with
/// `write`; both read with `read`), and parsed as one HTTP exchange.
#[test]
fn rustls_client_to_rustls_server_plaintext_is_byte_exact_on_both_sides() {
    require_root();
    let _g = serial();
    let run = RustlsRun::run(None, false);
    let (recs, addr) = (&run.recs, format!("127.0.0.1:{}", run.port));
    let cid = run.client_conn();

    // The server's end: what it received and sent, on its own socket's connection.
    let local = recs.side(cid).local.unwrap().to_string();
    let sid = recs.conn_between(&addr, &local);
    assert_eq!(recs.side(sid).pid, run.server);
    assert_linked_to_socket(recs, sid);
    assert_eq!(assert_whole(recs, sid, Direction::Ingress, true), run.read("server-received"));
    assert_eq!(assert_whole(recs, sid, Direction::Egress, true), run.read("server-sent"));
    assert_eq!(run.read("server-received"), run.read("client-sent"));
    assert_eq!(run.read("server-sent"), run.read("client-received"));
    assert!(library_of(recs, sid).starts_with("rustls 0.23."), "{}", library_of(recs, sid));

    // Parsed as HTTP on the client's connection: one exchange, POST /orders → 201.
    let http: Vec<&Exchange> =
        recs.exchanges_of(cid).into_iter().filter(|e| e.who.tls.is_some() && e.protocol.name() == "http1").collect();
    assert_eq!(http.len(), 1, "{http:#?}");
    let e = http[0];
    assert_eq!((fields(e, 0)["method"].as_str(), fields(e, 0)["target"].as_str()), (Some("POST"), Some("/orders")));
    assert_eq!(fields(e, 1)["status"], 201);
    assert_eq!(run.stats["kernel_lost_events"], 0);
}

/// A plain TCP server on loopback for the rustls client's log lines: its
/// port, and what `serve` returns for the one connection it accepts.
fn log_server(
    serve: impl FnOnce(std::net::TcpStream) -> Vec<u8> + Send + 'static,
) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (port, std::thread::spawn(move || serve(l.accept().unwrap().0)))
}

/// rustls writes no bytes itself: a request handed to it is held until the
/// thread writes TLS records. A plain TCP write in between (a log line) does
/// not take the plaintext; the TLS socket does.
#[test]
fn rustls_plaintext_waits_for_its_tls_records_not_the_next_tcp_write() {
    require_root();
    let _g = serial();
    let (log_port, logged) = log_server(|mut s| {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut got).unwrap();
        got
    });
    let run = RustlsRun::run(Some(log_port), false);
    assert_eq!(logged.join().unwrap(), b"log: order handed to rustls\n");
    run.client_conn();
    // The log connection carries the log line as plain bytes, and no TLS plaintext.
    let lid = run.recs.client_conn(run.client, &format!("127.0.0.1:{log_port}"));
    assert_eq!(assert_whole(&run.recs, lid, Direction::Egress, false), b"log: order handed to rustls\n");
    assert!(run.recs.parts_of(lid).iter().all(|p| !p.tls), "TLS plaintext on the log connection");
}

/// rustls plaintext is tied to a socket by thread (the documented limit): a
/// plaintext read right after a TCP read of another socket is tied to that
/// one. That socket did not begin with TLS, so its own bytes keep being
/// copied: a wrong tie never costs a plain socket its records.
#[test]
fn a_plain_socket_a_rustls_read_was_tied_to_keeps_its_bytes() {
    require_root();
    let _g = serial();
    let (log_port, logged) = log_server(|mut s| {
        let line = |s: &mut std::net::TcpStream| {
            let mut got = Vec::new();
            let mut b = [0u8; 1];
            while !got.ends_with(b"\n") && std::io::Read::read(s, &mut b).unwrap() == 1 {
                got.push(b[0]);
            }
            got
        };
        let first = line(&mut s);
        s.write_all(b"ack 1\n").unwrap();
        let second = line(&mut s);
        s.write_all(b"ack 2\n").unwrap();
        [first, second].concat()
    });
    let run = RustlsRun::run(Some(log_port), true);
    assert_eq!(logged.join().unwrap(), b"log: order handed to rustls\nlog: answer read\n");
    assert!(run.read("client-received").starts_with(b"HTTP/1.1 201 Created\r\n"));
    let lid = run.recs.client_conn(run.client, &format!("127.0.0.1:{log_port}"));
    assert!(
        run.recs.parts_of(lid).iter().any(|p| p.tls && p.dir == Direction::Ingress),
        "the staging failed: the answer's plaintext was not read right after the log socket's read"
    );
    assert_eq!(assert_whole(&run.recs, lid, Direction::Ingress, false), b"ack 1\nack 2\n", "the log socket's bytes");
    assert_eq!(run.recs.connection(lid).ingress.not_kept, None, "{:?}", run.recs.connection(lid));
    assert_eq!(run.stats["kernel_lost_events"], 0);
}
