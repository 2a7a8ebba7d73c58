//! End to end, as root: psycopg 3 against Debian's PostgreSQL over the
//! extended query protocol: parameters bound in text and in binary format
//! (decoded by type OID in the records), a named prepared statement whose
//! later executions (Bind/Execute only) are resolved to its SQL, and the
//! per-command results summary; raw bytes tile the captured streams and hold
//! the exact binary encodings of the values.
use std::process::{Command, Stdio};

use serde_json::Value;
mod support;

use support::brokers::{fields, *};
use support::*;
use wiretrail_tests::{
    agent::Agent,
    broker_scripts::PSYCOPG,
    peers::{Postgres, venv_python},
    require_root, serial,
};

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// (type, format, value, null) of each bound parameter of a Bind.
fn params(bind: &Value) -> Vec<(Value, Value, Value, Value)> {
    bind["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["type"].clone(), p["format"].clone(), p["value"].clone(), p["null"].clone()))
        .collect()
}

#[test]
fn psycopg_text_and_binary_parameters_and_named_prepared_statement() {
    require_root();
    let _g = serial();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "client.py", PSYCOPG);
    let agent = Agent::start(&[]);
    let child = Command::new(venv_python())
        .arg(&script)
        .arg(pg.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psycopg client");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "ORD-B1 250\nORD-T1 100\n");
    std::thread::sleep(SETTLE);
    let recs = Records::parse(&agent.stop().0);
    recs.dump("psycopg_text_and_binary_parameters_and_named_prepared_statement");
    let remote = format!("127.0.0.1:{}", pg.port);
    let c = client_side(&recs, pid, &remote, "postgres");
    server_side(&recs, &c, &remote, "postgres");
    let binds = |r: &Msg| fields(r)["binds"].as_array().cloned().unwrap_or_default();

    // `%s` lets psycopg choose: the string goes as text (type left to the
    // server), the integer in binary as int2; both shown as values.
    let text_sql = "INSERT INTO orders (clordid, qty) VALUES ($1, $2)";
    let ins = the(&c.sent, "text INSERT", |b| b["queries"] == serde_json::json!([text_sql]));
    let b = &binds(ins)[0];
    assert_eq!(b["query"], text_sql, "{ins}");
    let p = params(b);
    assert_eq!(
        p,
        [
            (Value::Null, "text".into(), "ORD-T1".into(), false.into()),
            ("int2".into(), "binary".into(), "100".into(), false.into())
        ],
        "{b}"
    );
    let raw = bytes(ins);
    assert!(find(&raw, b"\0\0\0\x06ORD-T1\0\0\0\x02\0\x64"), "the two values as sent, length-prefixed");
    let done = answer_to(&c.received, ins);
    let r = &fields(done)["results"][0];
    assert_eq!(
        (r["command"].as_str(), r["rows"].as_u64(), r["tag"].as_str()),
        (Some("INSERT"), Some(1), Some("INSERT 0 1")),
        "{done}"
    );

    // Binary parameters: decoded by type OID; their exact encodings are in the raw bytes.
    let bin_sql = "INSERT INTO orders (clordid, qty, px, at, id, ok) VALUES ($1, $2, $3, $4, $5, $6)";
    let ins = the(&c.sent, "binary INSERT", |b| b["queries"] == serde_json::json!([bin_sql]));
    let b = &binds(ins)[0];
    let got: Vec<(Value, Value)> = params(b).into_iter().map(|p| (p.1, p.2)).collect();
    let want =
        ["ORD-B1", "250", "187.25", "2026-11-21 13:05:09.1234+00", "12345678-9abc-def0-0001-020304050607", "true"];
    assert_eq!(got, want.iter().map(|v| (Value::from("binary"), Value::from(*v))).collect::<Vec<_>>(), "{b}");
    let types: Vec<&str> = b["params"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(&types[2..], ["numeric", "timestamptz", "uuid", "bool"], "{b}");
    assert!(["int2", "int4", "int8"].contains(&types[1]) && ["text", "varchar"].contains(&types[0]), "{types:?}");
    let raw = bytes(ins);
    let micros: i64 = 9821 * 86_400_000_000 + (13 * 3600 + 5 * 60 + 9) * 1_000_000 + 123_400;
    assert!(find(&raw, &micros.to_be_bytes()), "timestamptz encoding in the raw bytes");
    assert!(find(&raw, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7]), "uuid encoding");
    assert!(find(&raw, b"ORD-B1"));
    answer_to(&c.received, ins);

    // The named prepared statement: parsed once, executed twice; both executions name its SQL.
    let sel_sql = "SELECT qty FROM orders WHERE clordid = $1";
    let parse = the(&c.sent, "Parse of the prepared statement", |b| b["queries"] == serde_json::json!([sel_sql]));
    let name = fields(parse)["statements"][0].as_str().unwrap().to_string();
    assert!(name.starts_with("_pg3_"), "psycopg names its statements _pg3_N: {parse}");
    answer_to(&c.received, parse);
    let execs = matching(&c.sent, |b| {
        b["executes"].as_array().is_some_and(|e| e.iter().any(|x| x["statement"] == name.as_str()))
    });
    assert_eq!(execs.len(), 2, "{execs:#?}");
    for (exec, (clordid, qty)) in execs.iter().zip([("ORD-B1", "250"), ("ORD-T1", "100")]) {
        let f = fields(exec);
        assert_eq!(f["queries"], serde_json::json!([]), "the SQL is not sent again: {exec}");
        assert_eq!(
            (f["executes"][0]["query"].as_str(), f["binds"][0]["query"].as_str()),
            (Some(sel_sql), Some(sel_sql))
        );
        assert_eq!(f["binds"][0]["statement"], name.as_str());
        assert_eq!(f["binds"][0]["params"][0]["value"], clordid);
        let res = answer_to(&c.received, exec);
        let r = &fields(res)["results"][0];
        assert_eq!(
            (r["command"].as_str(), r["rows"].as_u64(), r["data_rows"].as_u64()),
            (Some("SELECT"), Some(1), Some(1)),
            "{res}"
        );
        assert!(find(&bytes(res), qty.as_bytes()) || find(&bytes(res), &qty.parse::<i64>().unwrap().to_be_bytes()));
    }
}
