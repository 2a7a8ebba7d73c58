//! The console in a real browser: one mTLS collector serving the console,
//! records with a random marker ingested over gRPC, and Debian's headless
//! Chromium (selenium from the project's pyvenv, /usr/bin/chromedriver)
//! presenting client certificates from an NSS database in a temp HOME,
//! chosen without a dialog by a managed AutoSelectCertificateForUrls policy.
//!
//! Checks: the console refuses a client without a certificate; search finds
//! the record by its marker and follow mode shows a record ingested later;
//! the record page shows its inclusion proof verified against the signed
//! checkpoint; the conversation shows both directions; a review mark made in
//! the browser is in the log (read back with the CLI); the export downloads
//! and passes `wiretrail verify-bundle`; the reviewer is refused the access
//! log (403 naming the auditor role) while the auditor sees the reviewer's
//! reads in it (with the case id given in the search form); the collector
//! stops while a live page is open. Screenshots of the main pages go to
//! docs/console/.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{ingest_tls, json_lines, ok};
use common::*;
use serde_json::{Value, json};
use wiretrail_collector::tls::TlsFiles;
use wiretrail_proto::v1::{Batch, Direction, Endpoint, Record, RecordKind};

const CLIENTS: [&str; 3] = ["agent", "rita:reviewer", "audrey:auditor"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`, which must succeed.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The managed Chromium policy selecting the client certificate for the
/// console's URL without a dialog; removed on drop.
struct CertPolicy(PathBuf);

impl CertPolicy {
    fn write(console: &str) -> CertPolicy {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).expect("creating /etc/chromium/policies/managed (run as root)");
        let path = dir.join(format!("wiretrail-console-test-{}-{:016x}.json", std::process::id(), rand_u64()));
        let rule = json!({"pattern": console, "filter": {}}).to_string();
        std::fs::write(&path, json!({"AutoSelectCertificateForUrls": [rule]}).to_string()).unwrap();
        CertPolicy(path)
    }
}

impl Drop for CertPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// One headless Chromium with one client certificate, driven by driver.py.
struct Browser {
    who: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    downloads: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl Browser {
    /// A browser presenting certificate `who` of `certs` and trusting its CA.
    fn start(who: &str, certs: &Path) -> Browser {
        let python = root().join("target/pyvenv/bin/python");
        assert!(python.is_file(), "{} missing: run `cargo xtask setup`", python.display());
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver", "/usr/bin/certutil", "/usr/bin/pk12util"] {
            assert!(Path::new(tool).is_file(), "{tool} missing: run `cargo xtask setup`");
        }
        let home = tempfile::tempdir().unwrap();
        let db = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&db).unwrap();
        let db_arg = format!("sql:{}", db.display());
        run(Command::new("certutil").args(["-N", "-d", &db_arg, "--empty-password"]));
        run(Command::new("certutil")
            .args(["-A", "-d", &db_arg, "-n", "wiretrail-ca", "-t", "C,,", "-i"])
            .arg(certs.join("ca.pem")));
        let p12 = home.path().join(format!("{who}.p12"));
        run(Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:", "-name", who, "-in"])
            .arg(certs.join(format!("{who}.pem")))
            .arg("-inkey")
            .arg(certs.join(format!("{who}.key")))
            .arg("-out")
            .arg(&p12));
        run(Command::new("pk12util").args(["-d", &db_arg, "-W", "", "-i"]).arg(&p12));
        let profile = home.path().join("profile");
        let downloads = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(root().join("collector/tests/console/driver.py"))
            .arg(&profile)
            .arg(downloads.path())
            .env("HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Browser { who: who.to_string(), child, stdin, stdout, downloads, _home: home };
        assert_eq!(b.reply(), json!("ready"), "{who}: browser did not start");
        b
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: driver said {line:?}: {e}", self.who));
        if let Some(e) = v.get("error") {
            panic!("{}: browser: {e}", self.who);
        }
        v["ok"].clone()
    }

    fn cmd(&mut self, c: Value) -> Value {
        writeln!(self.stdin, "{c}").unwrap();
        self.reply()
    }

    /// Opens `url`: (title, visible text).
    fn open(&mut self, url: &str) -> (String, String) {
        let p = self.cmd(json!({"op": "open", "url": url}));
        (p["title"].as_str().unwrap().to_string(), p["text"].as_str().unwrap().to_string())
    }

    fn click(&mut self, css: &str) -> (String, String) {
        let p = self.cmd(json!({"op": "click", "css": css}));
        (p["title"].as_str().unwrap().to_string(), p["text"].as_str().unwrap().to_string())
    }

    fn text(&mut self, css: &str) -> String {
        self.cmd(json!({"op": "text", "css": css})).as_str().unwrap().to_string()
    }

    fn count(&mut self, css: &str) -> u64 {
        self.cmd(json!({"op": "count", "css": css})).as_u64().unwrap()
    }

    fn fill(&mut self, css: &str, value: &str) {
        self.cmd(json!({"op": "type", "css": css, "value": value}));
    }

    fn wait_text(&mut self, css: &str, needle: &str) -> String {
        self.cmd(json!({"op": "wait_text", "css": css, "needle": needle, "secs": 30})).as_str().unwrap().to_string()
    }

    fn screenshot(&mut self, name: &str) {
        let dir = root().join("docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        self.cmd(json!({"op": "screenshot", "path": dir.join(format!("{name}.png"))}));
    }

    /// The one file downloaded (waits at most 60 s for it to complete).
    fn downloaded(&self) -> PathBuf {
        let t = Instant::now();
        loop {
            let files: Vec<PathBuf> =
                std::fs::read_dir(self.downloads.path()).unwrap().map(|e| e.unwrap().path()).collect();
            if let [f] = files.as_slice()
                && f.extension().is_some_and(|e| e == "tar")
            {
                return f.clone();
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{}: no download completed: {files:?}", self.who);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The web service's identity map.
fn web() -> HashMap<String, String> {
    HashMap::from([
        ("cgroup_path".to_string(), "/system.slice/web.service".to_string()),
        ("exe".into(), "/usr/bin/python3.12".into()),
    ])
}

/// The database's identity map.
fn db() -> HashMap<String, String> {
    HashMap::from([
        ("cgroup_path".to_string(), "/system.slice/postgresql.service".to_string()),
        ("exe".into(), "/usr/lib/postgresql/16/bin/postgres".into()),
    ])
}

/// The web service's connection to the database, as opened and as the
/// agent's policy decided it (denied: zone web to zone db).
fn flows(seq: u64) -> Batch {
    let now = wiretrail_log::store::now_ns();
    let base = Record {
        capture_time_ns: now,
        conn_id: 7,
        transport: wiretrail_proto::v1::TransportProtocol::Tcp as i32,
        role: wiretrail_proto::v1::ConnRole::Client as i32,
        local: Some(Endpoint { address: "10.1.0.5".into(), port: 40001 }),
        remote: Some(Endpoint { address: "10.1.0.7".into(), port: 5432 }),
        identity: web(),
        peer_identity: db(),
        host: "node-a".into(),
        ..Default::default()
    };
    let open = Record {
        kind: RecordKind::ConnectionOpen as i32,
        connection: Some(wiretrail_proto::v1::Connection {
            role: wiretrail_proto::v1::ConnRole::Client as i32,
            open_seen: true,
            ..Default::default()
        }),
        ..base.clone()
    };
    let decision = Record {
        kind: RecordKind::PolicyDecision as i32,
        direction: Direction::Egress as i32,
        decision: Some(wiretrail_proto::v1::PolicyDecision {
            verdict: "deny".into(),
            rule: "default-deny".into(),
            local_zone: "web".into(),
            peer_zone: "db".into(),
            hook: "connect4".into(),
            mode: "enforce".into(),
            direction: "egress".into(),
            ..Default::default()
        }),
        ..base
    };
    Batch {
        agent_id: "node-1".into(),
        boot_id: "boot-a".into(),
        seq,
        records: vec![open, decision],
        ..Default::default()
    }
}

/// A request and its response on connection 42, the request carrying `marker`.
fn exchange(marker: &str, seq: u64) -> Batch {
    let now = wiretrail_log::store::now_ns();
    let rec = |dir: Direction, payload: String, dt: i64| Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: now + dt,
        clock_error_ns: 1_500,
        conn_id: 42 + seq,
        direction: dir as i32,
        local: Some(Endpoint { address: "10.1.0.5".into(), port: 40000 }),
        remote: Some(Endpoint { address: "10.1.0.7".into(), port: 8080 }),
        app_protocol: "http1".into(),
        identity: web(),
        peer_identity: db(),
        payload: payload.into_bytes(),
        host: "node-a".into(),
        comm: "python3".into(),
        pid: 200,
        ..Default::default()
    };
    Batch {
        agent_id: "node-1".into(),
        boot_id: "boot-a".into(),
        seq,
        records: vec![
            rec(Direction::Egress, format!("GET /orders?ref={marker} HTTP/1.1\r\nHost: orders\r\n\r\n"), 0),
            rec(Direction::Ingress, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".into(), 2_000_000),
        ],
        ..Default::default()
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn console_in_a_real_browser() {
    assert!(unsafe { libc::geteuid() } == 0, "this test writes a Chromium policy under /etc: run it as root");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let certs_dir = tempfile::tempdir().unwrap();
    let dir = certs_dir.path();
    certs::generate(dir, &CLIENTS).unwrap();
    let data = tempfile::tempdir().unwrap();
    let console_addr = free_port();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(dir, "collector"));
    cfg.console_addr = Some(console_addr);
    let srv = rt.block_on(Server::start(cfg));
    let addr = srv.addr;
    let marker = format!("mk{:016x}", rand_u64());
    rt.block_on(ingest_tls(addr, dir, exchange(&marker, 0)));
    rt.block_on(ingest_tls(addr, dir, flows(1)));
    let base = format!("https://127.0.0.1:{}", console_addr.port());

    // --- No client certificate: the TLS handshake is refused.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg(format!("{base}/search"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("certificate required"), "without a client certificate: {err}");

    let _policy = CertPolicy::write(&base);
    let mut rita = Browser::start("rita", dir);

    // --- Search by the marker, through the form.
    rita.open(&format!("{base}/search"));
    rita.fill("#f-since", "last 1h");
    rita.fill("#f-text", &marker);
    rita.fill("#f-case", "CASE-17");
    let (title, text) = rita.click("form[role=search] button[type=submit]");
    assert!(title.starts_with("Search"), "{title}: {text}");
    assert_eq!(rita.count("#results tbody tr"), 1, "one record carries the marker: {text}");
    assert!(rita.text("#results tbody").contains(&marker), "{text}");
    rita.screenshot("search");

    // --- The record: fields, payload, proof verified against the signed checkpoint.
    let (title, text) = rita.click("#results tbody a[href^='/record/']");
    assert!(title.starts_with("Record "), "{title}: {text}");
    let proof = rita.text("#proof");
    assert!(proof.contains("Inclusion proof verified"), "{proof}");
    assert!(rita.text("#checkpoint").contains("— "), "the signed note with its signature line");
    assert!(rita.text("#payload-text").contains(&marker));
    let hex: String = marker.bytes().take(4).map(|b| format!("{b:02x} ")).collect();
    assert!(rita.text("#payload-hex").contains(hex.trim_end()), "hex of the marker");
    assert!(
        text.contains("exe=/usr/bin/python3.12") && text.contains("exe=/usr/lib/postgresql"),
        "both identities: {text}"
    );
    let leaf: u64 = title.trim_start_matches("Record ").split_whitespace().next().unwrap().parse().unwrap();
    rita.screenshot("record");

    // --- A review mark on the record, from its page; read back with the CLI.
    let comment = format!("checked {marker}");
    rita.cmd(json!({"op": "select", "css": "#f-action", "value": "escalated"}));
    rita.fill("#f-comment", &comment);
    let (_, text) = rita.click("#mark");
    assert!(rita.text("#marked").contains("Marked: review entry"), "{text}");
    let listed = rita.text("#marks tbody");
    assert!(listed.contains(&comment) && listed.contains("escalated"), "the list shows the mark: {listed}");
    rita.screenshot("review");
    let marks =
        json_lines(&rt.block_on(ok(addr, dir, "audrey", &["review", "list", "--json", "--leaf", &leaf.to_string()])));
    assert!(marks.iter().any(|m| m["comment"] == comment.as_str() && m["action"] == "escalated"), "{marks:?}");

    // --- The conversation: both directions of connection 42.
    rita.open(&format!("{base}/record/{leaf}"));
    let (title, _) = rita.click("dd a[href^='/conversation']");
    assert!(title.starts_with("Conversation"), "{title}");
    assert_eq!(rita.count("#exchanges tbody tr"), 2);
    let rows = rita.text("#exchanges tbody");
    assert!(rows.contains("→ egress") && rows.contains("← ingress"), "{rows}");
    assert_eq!(rita.count("#timeline rect"), 2);
    rita.screenshot("conversation");

    // --- Export of the search: download, then `wiretrail verify-bundle`.
    rita.open(&format!("{base}/search?since=last+1h&text={marker}"));
    rita.click("#export");
    let bundle = rita.downloaded();
    let out = Command::new(env!("CARGO_BIN_EXE_wiretrail")).arg("verify-bundle").arg(&bundle).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "verify-bundle {}: {said}", bundle.display());
    assert!(said.contains("OK: 1 records verified"), "{said}");

    // --- Follow mode: a record ingested after the page loaded appears live.
    rita.open(&format!("{base}/search?text={marker}&follow=1"));
    rita.wait_text("#live", "live");
    rt.block_on(ingest_tls(addr, dir, exchange(&format!("{marker}-later"), 2)));
    rita.wait_text("#results tbody", &format!("{marker}-later"));

    // --- Paging: 60 matches are 50 on the first page and 10 on the next.
    let mut many = exchange(&format!("page-{marker}"), 3);
    let one = many.records[0].clone();
    many.records = (0..60).map(|i| Record { stream_pos: i, ..one.clone() }).collect();
    rt.block_on(ingest_tls(addr, dir, many));
    rita.open(&format!("{base}/search?text=page-{marker}"));
    assert_eq!(rita.count("#results tbody tr"), 50, "the first page");
    rita.click("#next");
    assert_eq!(rita.count("#results tbody tr"), 10, "the second page");
    assert_eq!(rita.count("#next"), 0, "no third page");

    // --- Other pages (screenshots).
    // The map: both workloads, the edge between them, their zones from the policy decision.
    rita.open(&format!("{base}/identities"));
    let map = rita.text("#map");
    assert!(map.contains("python3.12 on node-a") && map.contains("[zone web]") && map.contains("[zone db]"), "{map}");
    assert!(rita.count("#map line") >= 1, "an edge web -> db");
    rita.screenshot("identities");
    // Alerts, live: a decision ingested while the page is open shows up.
    let (_, text) = rita.open(&format!("{base}/alerts"));
    assert!(rita.text("#alerts tbody").contains("policy_denied"), "{text}");
    let before = rita.count("#alerts tbody tr");
    rt.block_on(ingest_tls(addr, dir, flows(4)));
    rita.wait_text("#live", "rows");
    assert_eq!(rita.count("#alerts tbody tr"), before + 1, "the new alert, live");
    rita.screenshot("alerts");
    rita.open(&format!("{base}/policy"));
    assert!(rita.text("#decisions tbody").contains("policy_denied"));
    let policy = std::fs::read_to_string(root().join("collector/src/policy_check/testdata/policy.yaml")).unwrap();
    rita.fill("#f-policy", &policy);
    let (title, text) = rita.click("#what-if");
    assert!(title.starts_with("Policy") && text.contains("What if: 1 connection opens replayed"), "{title}: {text}");
    rita.screenshot("policy");

    // --- The access log: refused to the reviewer, shown to the auditor.
    let (title, text) = rita.open(&format!("{base}/access"));
    assert_eq!(title, "Forbidden · wiretrail", "{text}");
    assert!(text.contains("needs role auditor"), "{text}");
    drop(rita);
    let mut audrey = Browser::start("audrey", dir);
    let (title, text) = audrey.open(&format!("{base}/access?identity=*rita*"));
    assert!(title.starts_with("Access log"), "{title}: {text}");
    let log = audrey.text("#access tbody");
    assert!(log.contains("search") && log.contains("view") && log.contains("export"), "the reviewer's reads: {log}");
    assert!(log.contains("CASE-17"), "the search made under its case id: {log}");
    audrey.screenshot("access");

    // --- The collector stops (drains) while a live page is still open.
    audrey.open(&format!("{base}/alerts"));
    audrey.wait_text("#live", "live");
    let stopped = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), srv.stop()).await });
    assert!(stopped.is_ok(), "the collector did not stop within 60 s with a console page open");
    drop(audrey);
}
