//! Completeness alerts end to end, as root: a collector (mTLS, silence
//! threshold 2 s) and an agent shipping heartbeats every 200 ms. A gap record
//! (the agent's per-connection cap), a clock error above 50 ms (the agent's
//! test hook `--test-clock-error-ms 80` overstates the error its heartbeats
//! report; the collector's rule is what is under test), a SIGKILL (silence)
//! and a restart (return, stating the hole) each raise an alert, delivered to
//! a webhook receiver (HMAC checked) and a syslog listener (RFC 5424 frames
//! parsed) run by this test.
#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use wiretrail_tests::{agent::Agent, collector::Collector, free_port, now_unix_ns, require_root, serial, wait_until};

const SECRET: &[u8] = b"webhook-test-secret";

/// Webhook bodies received (each checked against its HMAC header first).
type Received = Arc<Mutex<Vec<Value>>>;

/// An HTTP request's headers (names lower-cased) and body.
type Request = (Vec<(String, String)>, Vec<u8>);

fn read_http(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length")?.1.parse().ok()?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((headers, buf[head_end..head_end + len].to_vec()))
}

/// A webhook receiver: accepts a body only with a valid signature (401 otherwise).
fn webhook_receiver() -> (u16, Received, Arc<Mutex<u64>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let refused = Arc::new(Mutex::new(0u64));
    let (g, r) = (got.clone(), refused.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let Some((headers, body)) = read_http(&mut s) else { continue };
            let sig = headers.iter().find(|(k, _)| k == "x-wiretrail-signature").map(|(_, v)| v.clone());
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
            m.update(&body);
            let want = format!("sha256={}", hex(&m.finalize().into_bytes()));
            let status = if sig.as_deref() == Some(want.as_str()) {
                g.lock().unwrap().push(serde_json::from_slice(&body).expect("webhook body is JSON"));
                "200 OK"
            } else {
                *r.lock().unwrap() += 1;
                "401 Unauthorized"
            };
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
        }
    });
    (port, got, refused)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One parsed RFC 5424 message.
#[derive(Debug, Clone)]
struct SyslogMsg {
    pri: u32,
    msgid: String,
    sd: String,
    json: Value,
}

/// Parses `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] BOM MSG`.
fn parse_5424(m: &str) -> SyslogMsg {
    let rest = m.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once('>').expect("PRI end");
    let rest = rest.strip_prefix("1 ").expect("version 1");
    let mut f = rest.splitn(6, ' ');
    let ts = f.next().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000000Z".len(), "timestamp {ts}");
    let (_host, app, _pid, msgid) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
    assert_eq!(app, "wiretrail");
    let rest = f.next().unwrap();
    let (sd, msg) = rest.split_once("] \u{feff}").expect("structured data then a BOM");
    assert!(sd.starts_with("[wiretrail@32473 "), "{sd}");
    SyslogMsg {
        pri: pri.parse().unwrap(),
        msgid: msgid.into(),
        sd: sd.into(),
        json: serde_json::from_str(msg).expect("MSG is JSON"),
    }
}

/// A syslog listener: octet-counted frames (RFC 6587) from every connection.
fn syslog_listener() -> (u16, Arc<Mutex<Vec<SyslogMsg>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<SyslogMsg>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(sp) = buf.iter().position(|&c| c == b' ') {
                        let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().expect("octet count");
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        let m = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                        g.lock().unwrap().push(parse_5424(&m));
                        buf.drain(..sp + 1 + len);
                    }
                }
            });
        }
    });
    (port, got)
}

/// Sends an HTTP request of exactly `cap` bytes and then `more` bytes over a
/// fresh loopback TCP connection (the agent captures it). With the agent's
/// per-connection cap at `cap`, the request is recorded whole and the rest
/// is a gap no record holds: a gap record (bytes over the cap inside an
/// unparsed segment would be gap marks in that segment, not a gap record).
fn tcp_send_over_cap(cap: usize, more: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v.len()
    });
    let mut req = b"GET /over-cap HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    req.resize(cap - 4, b'p');
    req.extend_from_slice(b"\r\n\r\n");
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&req).unwrap();
    c.write_all(&vec![b'x'; more]).unwrap();
    drop(c);
    assert_eq!(t.join().unwrap(), cap + more);
    addr.port()
}

fn alerts(c: &Collector, kind: &str) -> Vec<Value> {
    c.cli_json("alerts", &["--kind", kind])
}

fn agent(c: &Collector, spool: &std::path::Path, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--collector".to_string(),
        format!("https://127.0.0.1:{}", c.port),
        "--agent-id".into(),
        "alerts-agent".into(),
        "--tls-dir".into(),
        c.certs.to_str().unwrap().into(),
        "--spool-dir".into(),
        spool.to_str().unwrap().into(),
        "--heartbeat-ms".into(),
        "200".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn gap_clock_silence_and_return_alerts_reach_webhook_and_syslog() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::generate(&certs_dir, &["agent", "security"]).expect("certificates");
    let (hook_port, hooks, refused) = webhook_receiver();
    let (syslog_port, syslog) = syslog_listener();
    let secret = dir.path().join("webhook.key");
    std::fs::write(&secret, SECRET).unwrap();
    let port = free_port();
    let hook = format!("http://127.0.0.1:{hook_port}/alerts");
    let sl = format!("127.0.0.1:{syslog_port}");
    let c = Collector::start_with(
        &dir.path().join("data"),
        &certs_dir,
        port,
        &[
            "--silence-after",
            "2",
            "--alert-webhook",
            &hook,
            "--alert-webhook-secret-file",
            secret.to_str().unwrap(),
            "--alert-syslog",
            &sl,
            "--alert-retry-ms",
            "50",
        ],
    );
    let spool = dir.path().join("spool");
    let mut a = agent(&c, &spool, &["--conn-cap-bytes", "1000", "--test-clock-error-ms", "80"]);

    // A gap record: the per-connection cap truncates what follows a 1000-byte request.
    let port = tcp_send_over_cap(1000, 4000);
    let ours = |x: &Value| {
        let d = &x["detail"];
        d["reason"] == "cap" && (d["local"]["port"] == port || d["remote"]["port"] == port)
    };
    assert!(
        wait_until(Duration::from_secs(15), || alerts(&c, "gap").iter().any(ours)),
        "no gap alert: {:?}\n{}",
        alerts(&c, ""),
        c.log()
    );
    // A clock error above 50 ms.
    let clock = || {
        alerts(&c, "clock")
            .into_iter()
            .filter(|x| x["detail"]["reasons"].as_array().unwrap().iter().any(|r| r == "error_above_50ms"))
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(10), || !clock().is_empty()), "no clock alert: {:?}", alerts(&c, ""));
    let cl = &clock()[0]["detail"];
    assert!(cl["error_bound_ns"].as_u64().unwrap() >= 80_000_000, "{cl}");
    assert_eq!(cl["agent_id"], "alerts-agent");

    // SIGKILL: silence within the threshold (2 s) plus the monitor's tick.
    assert!(alerts(&c, "agent_silent").is_empty(), "silent while alive: {:?}", alerts(&c, "agent_silent"));
    // The report below counts the heartbeats of both boots: let the first boot
    // ship a few before the kill (how long it ran otherwise depended on how
    // soon the two alerts came).
    assert!(
        wait_until(Duration::from_secs(10), || {
            let rep = c.cli_json("completeness", &["--agent", "alerts-agent"]);
            rep.first().and_then(|r| r["heartbeats_seen"].as_u64()).unwrap_or(0) >= 5
        }),
        "fewer than 5 heartbeats recorded before the kill\n{}",
        c.log()
    );
    // The kill time is taken before the kill: the process takes seconds to
    // exit while the kernel detaches its programs and probes.
    let killed_ns = now_unix_ns() as i64;
    a.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || !alerts(&c, "agent_silent").is_empty()),
        "no silence alert after SIGKILL\n{}",
        c.log()
    );
    let silent_alert = &alerts(&c, "agent_silent")[0];
    let silent = &silent_alert["detail"];
    let raised_after = silent_alert["time_ns"].as_i64().unwrap() - killed_ns;
    eprintln!("silence alert raised {} ms after SIGKILL (threshold 2 s)", raised_after / 1_000_000);
    // At most the threshold plus one monitor tick (threshold/4) and slack after the last heartbeat.
    let for_ns = silent["silent_for_ns"].as_i64().unwrap();
    assert!((2_000_000_000..3_000_000_000).contains(&for_ns), "{silent}");
    assert!(raised_after < 3_000_000_000, "raised {raised_after} ns after the kill: {silent}");
    assert!(silent["last_heartbeat"]["time_ns"].as_i64().unwrap() <= killed_ns, "{silent}");
    let last_boot = silent["last_heartbeat"]["boot_id"].as_str().unwrap().to_string();

    // Restart (no clock hook): the return states the hole and the new boot.
    let a2 = agent(&c, &spool, &[]);
    assert!(
        wait_until(Duration::from_secs(15), || !alerts(&c, "agent_returned").is_empty()),
        "no return alert\n{}",
        c.log()
    );
    let back = &alerts(&c, "agent_returned")[0]["detail"];
    assert_eq!(back["restarted"], true, "{back}");
    assert_eq!(back["previous_boot_id"], last_boot.as_str());
    assert_ne!(back["boot_id"], back["previous_boot_id"]);
    let (from, to) = (back["hole_from_ns"].as_i64().unwrap(), back["hole_to_ns"].as_i64().unwrap());
    assert!(from <= killed_ns && killed_ns < to, "hole {from}..{to} must contain the kill at {killed_ns}");
    assert!(back["hole_ns"].as_i64().unwrap() >= 2_000_000_000, "{back}");
    assert!(back["last_heartbeat"]["kernel_events"].is_u64() && back["first_heartbeat"]["number"].is_u64());

    // The completeness report states the hole, the restart and the gap.
    let rep = c.cli_json("completeness", &["--agent", "alerts-agent"]);
    let [rep] = rep.as_slice() else { panic!("one report expected: {rep:?}") };
    assert_eq!(rep["boots"].as_array().unwrap().len(), 2, "{rep}");
    let seen = rep["heartbeats_seen"].as_u64().unwrap();
    assert!(seen >= 5 && seen < rep["heartbeats_expected"].as_u64().unwrap(), "{rep}");
    assert!(rep["gaps"]["cap"]["records"].as_u64().unwrap() >= 1, "{rep}");
    assert!(rep["stated"]["data_bytes"].as_u64().unwrap() > 0, "{rep}");
    let hole = rep["silences"].as_array().unwrap().iter().find(|s| s["restarted"] == true).expect("the restart hole");
    assert!(hole["from_ns"].as_i64().unwrap() <= killed_ns && killed_ns < hole["to_ns"].as_i64().unwrap(), "{rep}");
    let entries: Vec<&str> =
        rep["liveness_entries"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(entries, ["agent_silent", "agent_returned"], "{rep}");

    // Every alert was delivered to both doors.
    let kinds = ["gap", "clock", "agent_silent", "agent_returned"];
    let delivered = |v: &[String]| kinds.iter().all(|k| v.iter().any(|x| x == k));
    let hook_kinds =
        || hooks.lock().unwrap().iter().map(|v| v["kind"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let syslog_kinds = || syslog.lock().unwrap().iter().map(|m| m.msgid.clone()).collect::<Vec<_>>();
    assert!(wait_until(Duration::from_secs(10), || delivered(&hook_kinds())), "webhook got {:?}", hook_kinds());
    assert!(wait_until(Duration::from_secs(10), || delivered(&syslog_kinds())), "syslog got {:?}", syslog_kinds());
    assert_eq!(*refused.lock().unwrap(), 0, "bodies with a wrong signature");
    let hooked = hooks.lock().unwrap().clone();
    let returned = hooked.iter().find(|v| v["kind"] == "agent_returned").unwrap();
    assert_eq!(returned["detail"]["restarted"], true);
    for m in syslog.lock().unwrap().iter() {
        assert_eq!(m.pri / 8, 13, "facility log audit: {m:?}");
        assert!(m.sd.contains(&format!("kind=\"{}\"", m.msgid)), "{m:?}");
        assert_eq!(m.json["kind"].as_str(), Some(m.msgid.as_str()));
    }
    let silent_msg = syslog.lock().unwrap().iter().find(|m| m.msgid == "agent_silent").cloned().unwrap();
    assert_eq!(silent_msg.pri, 13 * 8 + 3, "agent_silent is high severity");
    // The restarted agent, without the hook, raises no error_above_50ms alert of its own.
    assert_eq!(clock().len(), 1, "{:?}", clock());
    drop(a2);
}
