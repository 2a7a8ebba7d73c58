//! Redaction end to end, as root: real peers carry canary secrets past the
//! agent — curl with `Authorization: Bearer <canary>` and a Luhn-valid card
//! number in a POST body to nginx, a psql login whose password crosses in a
//! PasswordMessage (`password` authentication), redis-cli `AUTH <canary>`
//! against a redis with `requirepass`, and a FIX Logon with 554=<canary>
//! (simplefix) — while the agent ships to a collector. None of the secrets
//! may appear in clear (nor base64-encoded, as JSON carries bytes) in the
//! agent's output, its spool, the collector's data directory (segments and
//! index), an export bundle, a query result or any log; every other byte of
//! each conversation is captured exactly, the masked bytes are exactly the
//! ranges each record states, and the messages are still parsed.
#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use support::*;
use wiretrail_tests::{
    agent::Agent,
    collector::Collector,
    curl_trace, free_port,
    nginx::Nginx,
    peers::{Postgres, Proc, Redis, run_ok, venv_python},
    protocol_scripts::{FIX_ACCEPTOR, FIX_COMMON},
    require_root, serial, wait_until, workspace_bin,
};

const BEARER: &str = "wtcanaryBEARER7f3a9c1e5d2b4a6f";
const PG_PASSWORD: &str = "wtcanaryPGPASS0c8e2d6a4f1b3957";
const REDIS_PASSWORD: &str = "wtcanaryREDIS5a1f9e3c7b2d4068";
const FIX_PASSWORD: &str = "wtcanaryFIX9d4b2f6e8a1c3570";
/// A Luhn-valid Visa-range number (checked below), sent plain and grouped.
const CARD: &str = "4539148803436467";
const CARD_GROUPED: &str = "4539 1488 0343 6467";

const FIX_LOGON_INITIATOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
s = Session(sock, "CLIENT", "EXCH")
s.send("A", [(98, 0), (108, 30), (553, "trader"), (554, sys.argv[3])])
got = [s.recv().get(35).decode()]
s.send("5", [(58, "done")])
got.append(s.recv().get(35).decode())
sock.close()
open(out + ".sent", "wb").write(s.sent)
print(" ".join(got), flush=True)
"#;

fn luhn(d: &str) -> bool {
    let sum: u32 = d
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let v = u32::from(c - b'0') * if i % 2 == 1 { 2 } else { 1 };
            if v > 9 { v - 9 } else { v }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The forms a secret can take in stored text: itself, and the base64 of it
/// at each of the three alignments a byte stream can put it at.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut out = vec![secret.as_bytes().to_vec()];
    for shift in 0..3usize {
        let mut b = vec![0u8; shift];
        b.extend_from_slice(secret.as_bytes());
        let enc = base64::engine::general_purpose::STANDARD.encode(&b);
        let start = (shift * 8).div_ceil(6);
        let end = (b.len() * 8) / 6;
        out.push(enc.as_bytes()[start..end].to_vec());
    }
    out
}

/// Every secret form found in `bytes` and not in `excused`, named.
fn leaks(secrets: &[&str], bytes: &[u8], excused: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets {
        for (i, f) in forms(s).iter().enumerate() {
            if !excused.contains(f) && find(bytes, f).is_some() {
                found.push(format!("{s} ({})", if i == 0 { "clear".to_string() } else { format!("base64/{}", i - 1) }));
            }
        }
    }
    found
}

/// Whether `r` is traffic of another wiretrail instance on this host (other
/// test runs' agents and collectors capture the whole host too, and ship what
/// they saw of this test's conversations, unredacted, some over plaintext
/// loopback connections that this test's agent then records).
fn foreign_wiretrail(r: &Record) -> bool {
    let ours = workspace_bin("wiretrail-agent").parent().unwrap().to_string_lossy().into_owned();
    let Some(who) = r.who() else { return false };
    [&who.identity, &who.peer_identity].into_iter().flatten().any(|id| {
        id.exe.as_deref().is_some_and(|e| {
            Path::new(e).file_name().is_some_and(|n| n.to_string_lossy().starts_with("wiretrail"))
                && !e.starts_with(&ours)
        })
    })
}

/// Asserts no secret form is in any file under `dir`; returns how many files
/// and bytes were read (so an empty tree is visible).
fn assert_no_leak_in_tree(what: &str, dir: &Path, secrets: &[&str], excused: &[Vec<u8>]) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{what}: read {}: {e}", d.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p) {
                files += 1;
                bytes += data.len() as u64;
                let l = leaks(secrets, &data, excused);
                assert!(l.is_empty(), "{what}: {} holds {l:?}", p.display());
            }
        }
    }
    (files, bytes)
}

/// Redacted ranges (position, length, rule) of `dir` of `conn`, from every record.
fn masked_ranges(recs: &Records, conn: u64, dir: Direction) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    for r in &recs.0 {
        let (parts, reds) = match r {
            Record::Exchange(e) => (&e.parts, &e.redactions),
            Record::Segment(s) => (&vec![s.part.clone()], &s.redactions),
            _ => continue,
        };
        let who = r.who().unwrap();
        for x in reds.iter().filter(|x| !x.witness) {
            let d = parts[x.part].direction;
            if (who.side.conn_id == conn && d == dir)
                || (who.witness.is_some_and(|w| w.conn_id == conn) && d.opposite() == dir)
            {
                assert_eq!(x.rules_version, 1, "{x:?}");
                out.push((x.pos, x.len, x.rule.clone()));
            }
        }
    }
    out.sort();
    out
}

/// The recorded stream of `dir` of `conn` equals `original` except inside
/// the ranges the records state masked, each of which differs from it and
/// together cover every `secret`; returns the ranges' rules.
fn assert_exact_but_masked(
    recs: &Records,
    conn: u64,
    dir: Direction,
    original: &[u8],
    secrets: &[&str],
) -> Vec<String> {
    let got = assert_whole(recs, conn, dir, false);
    assert_eq!(got.len(), original.len(), "{dir:?} of {conn}: length changed by masking");
    let ranges = masked_ranges(recs, conn, dir);
    let inside = |i: u64| ranges.iter().any(|(p, l, _)| *p <= i && i < p + l);
    for (i, (a, b)) in got.iter().zip(original).enumerate() {
        assert!(a == b || inside(i as u64), "{dir:?} of {conn}: byte {i} differs outside any stated range");
    }
    for (p, l, rule) in &ranges {
        let (p, l) = (*p as usize, *l as usize);
        assert_ne!(&got[p..p + l], &original[p..p + l], "range {p}+{l} ({rule}) masks nothing");
    }
    for s in secrets {
        let at = find(original, s.as_bytes()).unwrap_or_else(|| panic!("{s} not in the original bytes"));
        assert!((at..at + s.len()).all(|i| inside(i as u64)), "{s} at {at} not inside a stated range {ranges:?}");
        assert!(find(&got, s.as_bytes()).is_none());
    }
    ranges.into_iter().map(|r| r.2).collect()
}

#[test]
fn secrets_from_real_peers_are_masked_everywhere_and_the_rest_is_exact() {
    require_root();
    let _g = serial();
    assert!(luhn(CARD) && !luhn("4539148803436468"));
    let secrets = [BEARER, PG_PASSWORD, REDIS_PASSWORD, FIX_PASSWORD, CARD];
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs::generate(&certs, &["agent", "security"]).expect("certificates");
    let cport = free_port();
    // Uncompressed segments: the leak scan below reads the data directory's
    // raw bytes, and a secret inside a compressed frame would escape it (the
    // masking is the agent's; compression does not change the leaves).
    let mut collector = Collector::start_with(&dir.path().join("data"), &certs, cport, &["--no-compression"]);
    let spool = dir.path().join("spool");

    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[http], None);
    let pg = Postgres::start_auth(Some(PG_PASSWORD));
    let redis = Redis::start_with(&["--requirepass", REDIS_PASSWORD]);
    let agent = Agent::start(&[
        "--collector",
        &format!("https://127.0.0.1:{cport}"),
        "--agent-id",
        "agent",
        "--tls-dir",
        certs.to_str().unwrap(),
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    let key_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(agent.key_path()).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "tokenization key file mode");

    // 1. curl → nginx: bearer token header, card number twice in the body.
    let trace = dir.path().join("curl.trace");
    let body = format!("{{\"card\":\"{CARD}\",\"again\":\"{CARD_GROUPED}\",\"note\":\"ordinary text 12345\"}}");
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "--trace"])
        .arg(&trace)
        .args(["-H", &format!("Authorization: Bearer {BEARER}"), "-H", "Content-Type: application/json"])
        .args(["--data-binary", &body])
        .arg(format!("http://{http}/index.html"))
        .spawn()
        .expect("spawn curl");
    let curl_pid = curl.id();
    assert!(curl.wait_with_output().unwrap().status.success());
    let (curl_sent, curl_received) = curl_trace::parse(&std::fs::read_to_string(&trace).unwrap());

    // 2. psql with a password (cleartext PasswordMessage), then a query.
    let psql = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable gssencmode=disable",
            pg.port
        ))
        .args(["-X", "-A", "-t", "-c", "select 40 + 2"])
        .env("PGPASSWORD", PG_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    let psql_pid = psql.id();
    let out = psql.wait_with_output().unwrap();
    assert!(out.status.success(), "psql: {}\n{}", String::from_utf8_lossy(&out.stderr), pg.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // 3. redis-cli AUTH.
    let rc = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "AUTH", REDIS_PASSWORD])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli");
    let redis_pid = rc.id();
    let out = rc.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "redis-cli AUTH");

    // 4. A FIX Logon with Password (554).
    let python = venv_python();
    let acceptor_py = write_script(dir.path(), "acceptor.py", &format!("{FIX_COMMON}{FIX_ACCEPTOR}"));
    let initiator_py = write_script(dir.path(), "initiator.py", &format!("{FIX_COMMON}{FIX_LOGON_INITIATOR}"));
    let fport = free_port();
    let mut cmd = Command::new(&python);
    cmd.arg(&acceptor_py).arg(fport.to_string()).arg(dir.path().join("acceptor.out"));
    let mut acceptor = Proc::spawn(cmd, &dir.path().join("acceptor.log"));
    assert!(wait_until(Duration::from_secs(30), || acceptor.log().contains("ready")), "{}", acceptor.log());
    let fix = Command::new(&python)
        .arg(&initiator_py)
        .arg(fport.to_string())
        .arg(dir.path().join("initiator"))
        .arg(FIX_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn FIX initiator");
    let fix_pid = fix.id();
    let out = fix.wait_with_output().unwrap();
    assert!(out.status.success(), "initiator: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "A 5");
    acceptor.wait_success(Duration::from_secs(20));
    let fix_sent = std::fs::read(dir.path().join("initiator.sent")).unwrap();

    // Rotate the tokenization key without stopping the agent: a new key
    // file, then SIGHUP; the rotation is a notice record.
    std::fs::remove_file(agent.key_path()).unwrap();
    std::fs::write(agent.key_path(), [0x5a; 32]).unwrap();
    std::fs::set_permissions(agent.key_path(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let rotated = wait_until(Duration::from_secs(20), || agent.records_now().contains("redaction_key_rotated"));
    assert!(rotated, "no key rotation notice:\n{}", agent.log());

    // Every conversation closed: let the agent write them, then stop it.
    let agent_log_before = agent.log();
    let (text, _stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("redaction");

    // The rule set in force is on the record.
    let notice = recs.0.iter().find_map(|r| match r {
        Record::Notice(n) if n.notice == "redaction_rules" => Some(n),
        _ => None,
    });
    let notice = notice.expect("a redaction_rules notice");
    assert_eq!(notice.details["rules_version"], 1);
    assert_eq!(notice.details["disabled"], serde_json::json!([]));
    let start_key = notice.details["key_id"].as_str().expect("the start notice names the key").to_string();
    let rotation = recs
        .0
        .iter()
        .find_map(|r| match r {
            Record::Notice(n) if n.notice == "redaction_key_rotated" => Some(n),
            _ => None,
        })
        .expect("a redaction_key_rotated notice");
    assert_eq!(rotation.details["previous_key_id"], start_key.as_str());
    assert_ne!(rotation.details["key_id"], start_key.as_str());

    // HTTP: byte-exact apart from the stated ranges; parsed; card tokens equal.
    let cid = recs.client_conn(curl_pid, &http.to_string());
    let rules = assert_exact_but_masked(&recs, cid, Direction::Egress, &curl_sent, &[BEARER, CARD]);
    assert!(rules.contains(&"http_headers".into()) && rules.contains(&"card_number".into()), "{rules:?}");
    let got = assert_whole(&recs, cid, Direction::Egress, false);
    let tokens: Vec<Vec<u8>> = masked_ranges(&recs, cid, Direction::Egress)
        .iter()
        .filter(|r| r.2 == "card_number")
        .map(|(p, l, _)| got[*p as usize..(p + l) as usize].iter().filter(|c| c.is_ascii_digit()).copied().collect())
        .collect();
    assert_eq!(tokens.len(), 2, "both card numbers tokenized");
    let key_ids: Vec<Option<String>> = recs
        .exchanges_of(cid)
        .iter()
        .flat_map(|e| e.redactions.iter().filter(|x| x.rule == "card_number").map(|x| x.key_id.clone()))
        .collect();
    assert_eq!(key_ids, [Some(start_key.clone()), Some(start_key.clone())], "card tokens name the key");
    assert_eq!(tokens[0], tokens[1], "equal numbers give equal tokens");
    assert!(find(&got, CARD_GROUPED.as_bytes()).is_none());
    assert_eq!(assert_whole(&recs, cid, Direction::Ingress, false), curl_received, "the response is untouched");
    let ex = recs.exchanges_of(cid);
    let req = fields_of(ex[0], PartRole::Request);
    assert_eq!(req[0]["method"], "POST");
    assert_eq!(header(&req[0], "authorization"), Some(format!("Bearer {}", "*".repeat(BEARER.len())).as_str()));
    assert_eq!(header(&req[0], "content-type"), Some("application/json"));

    // PostgreSQL: the PasswordMessage is framed as sent, its contents masked;
    // the query after it is parsed.
    let pid_conn = recs.client_conn(psql_pid, &format!("127.0.0.1:{}", pg.port));
    let pg_out = assert_whole(&recs, pid_conn, Direction::Egress, false);
    let ranges = masked_ranges(&recs, pid_conn, Direction::Egress);
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let (p, l, rule) = &ranges[0];
    assert_eq!((rule.as_str(), *l as usize), ("postgres_password", PG_PASSWORD.len()));
    let p = *p as usize;
    let mut restored = pg_out.clone();
    restored[p..p + PG_PASSWORD.len()].copy_from_slice(PG_PASSWORD.as_bytes());
    let mut msg = b"p".to_vec();
    msg.extend_from_slice(&((4 + PG_PASSWORD.len() + 1) as u32).to_be_bytes());
    msg.extend_from_slice(PG_PASSWORD.as_bytes());
    msg.push(0);
    assert_eq!(find(&restored, &msg), Some(p - 5), "the PasswordMessage, restored, is what psql sent");
    assert!(pg_out[p..p + *l as usize].iter().all(|&c| c == b'*'));
    let queries: Vec<String> = recs
        .exchanges_of(pid_conn)
        .iter()
        .flat_map(|e| fields_of(e, PartRole::Request))
        .flat_map(|f| f["queries"].as_array().cloned().unwrap_or_default())
        .filter_map(|q| q.as_str().map(String::from))
        .collect();
    assert!(queries.contains(&"select 40 + 2".into()), "{queries:?}");

    // Redis: AUTH's argument masked in place, the command still parsed.
    let rconn = recs.client_conn(redis_pid, &format!("127.0.0.1:{}", redis.port));
    let stars = "*".repeat(REDIS_PASSWORD.len());
    let sent = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{REDIS_PASSWORD}\r\n", REDIS_PASSWORD.len());
    let rules = assert_exact_but_masked(&recs, rconn, Direction::Egress, sent.as_bytes(), &[REDIS_PASSWORD]);
    assert_eq!(rules, ["redis_auth"]);
    let cmd = &fields_of(recs.exchanges_of(rconn)[0], PartRole::Request)[0];
    assert_eq!(cmd["command"], "AUTH");
    assert_eq!(cmd["args"], serde_json::json!([stars]));

    // FIX: the Logon exact but for 554's value; still parsed as a Logon.
    let fconn = recs.client_conn(fix_pid, &format!("127.0.0.1:{fport}"));
    let rules = assert_exact_but_masked(&recs, fconn, Direction::Egress, &fix_sent, &[FIX_PASSWORD]);
    assert_eq!(rules, ["fix_password"]);
    let logon = recs
        .exchanges_of(fconn)
        .into_iter()
        .flat_map(|e| e.messages.iter().map(|m| m.fields.json()))
        .find(|f| f["msg_type"] == "A")
        .expect("the Logon parsed");
    assert!(!logon.to_string().contains(FIX_PASSWORD), "{logon}");

    // Nowhere in clear: the agent's output and log, and everything shipped.
    // Bytes of other wiretrail instances' own traffic are set aside (see
    // `foreign_wiretrail`); the forms found there are excused in the files
    // below, which hold those records too, and named on stderr.
    let mut foreign = Vec::new();
    for (line, r) in text.lines().filter(|l| !l.trim().is_empty()).zip(&recs.0) {
        if foreign_wiretrail(r) {
            foreign.extend(r.parts().iter().flat_map(|p| p.raw.0.to_vec()));
            continue;
        }
        let l = leaks(&secrets, line.as_bytes(), &[]);
        assert!(l.is_empty(), "agent output holds {l:?} in {line}");
    }
    let excused: Vec<Vec<u8>> = secrets.iter().flat_map(|s| forms(s)).filter(|f| find(&foreign, f).is_some()).collect();
    if !excused.is_empty() {
        eprintln!("{} secret forms excused: sent by other wiretrail instances on this host", excused.len());
    }
    let l = leaks(&secrets, agent_log_before.as_bytes(), &[]);
    assert!(l.is_empty(), "agent log: {l:?}");
    let records = recs.0.len();
    let mut stored = Vec::new();
    let all_there = wait_until(Duration::from_secs(30), || {
        stored = collector.query(&["--agent", "agent", "--limit", "1000000"]);
        // Heartbeats go to the collector only (not in the agent's output).
        stored.iter().filter(|r| r["kind"] != "RECORD_KIND_HEARTBEAT").count() >= records
    });
    assert!(all_there, "the collector has {} of {records} records:\n{}", stored.len(), collector.log());
    // The tokenization key rotation reached the log (key ids, never the key).
    let new_key_id = rotation.details["key_id"].as_str().unwrap().to_string();
    let rotated_at_collector = stored
        .iter()
        .map(|v| v.to_string())
        .any(|r| r.contains("redaction_key_rotated") && r.contains(&new_key_id) && r.contains(&start_key));
    assert!(
        rotated_at_collector,
        "no redaction_key_rotated notice naming {start_key} -> {new_key_id} at the collector"
    );
    let stored_text: String = stored.iter().map(|v| v.to_string()).collect();
    let l = leaks(&secrets, stored_text.as_bytes(), &excused);
    assert!(l.is_empty(), "query results: {l:?}");
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new(workspace_bin("wiretrail"))
            .args(["export", "--server", &format!("127.0.0.1:{cport}"), "--tls-dir"])
            .arg(&certs)
            .args(["--agent", "agent", "--out"])
            .arg(&bundle),
    );
    collector.stop();
    let (files, bytes) =
        assert_no_leak_in_tree("collector data directory", &dir.path().join("data"), &secrets, &excused);
    assert!(files > 0 && bytes > 0, "empty collector data directory");
    let (files, _) = assert_no_leak_in_tree("export bundle", &bundle, &secrets, &excused);
    assert!(files > 0, "empty bundle");
    assert_no_leak_in_tree("agent spool", &spool, &secrets, &excused);
    let collector_log = collector.log();
    let l = leaks(&secrets, collector_log.as_bytes(), &[]);
    assert!(l.is_empty(), "collector log: {l:?}");
    // The stored leaves carry the stated ranges (proto Record field 50): a
    // `Redaction` message's rule (field 4) and rules version (field 5) as
    // protobuf encodes them.
    let data_has_ranges = {
        let mut found = false;
        let mut stack = vec![dir.path().join("data")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if find(&std::fs::read(e.path()).unwrap_or_default(), b"\x22\x11postgres_password\x28\x01")
                    .is_some()
                {
                    found = true;
                }
            }
        }
        found
    };
    assert!(data_has_ranges, "no stored record names the rule that masked the PasswordMessage");
}
