//! Reading protocol records back in the protocol tests: connections, message
//! records in stream order, tiling checks against the captured bytes, pairing.
use std::{collections::BTreeSet, time::Duration};

use base64::Engine as _;
use serde_json::Value;

use crate::records::{Records, stream};

/// With `WIRETRAIL_DUMP_DIR` set, writes a test's records there as JSON lines
/// (to read when an assertion fails).
pub fn dump(recs: &Records, name: &str) {
    if let Ok(d) = std::env::var("WIRETRAIL_DUMP_DIR") {
        let text: String = recs.0.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(std::path::Path::new(&d).join(format!("{name}.jsonl")), text).expect("dump records");
    }
}

pub fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s.as_str().expect("base64 string")).expect("base64")
}

pub fn raw(r: &Value) -> Vec<u8> {
    b64(&r["raw"])
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The one TCP connection of process `pid` whose remote is `remote` (from
/// its chunk records).
pub fn client_conn(recs: &Records, pid: u32, remote: &str) -> u64 {
    conn_of(recs, pid, remote, "tcp")
}

pub fn conn_of(recs: &Records, pid: u32, remote: &str, transport: &str) -> u64 {
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
pub fn server_conn(recs: &Records, local: &str, remote: &str) -> u64 {
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
pub fn local_of(recs: &Records, conn: u64) -> String {
    recs.0
        .iter()
        .find(|r| r["conn_id"] == conn && r["type"] == "data")
        .and_then(|r| r["local"].as_str())
        .expect("a data record of the connection")
        .to_string()
}

/// Protocol records (not the connection summary) of one direction of a
/// socket connection, in stream order.
pub fn msgs<'a>(recs: &'a Records, conn: u64, dir: &str) -> Vec<&'a Value> {
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
pub fn summary(recs: &Records, conn: u64) -> &Value {
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
pub fn assert_tiles(recs: &Records, conn: u64, dir: &str, protocol: &str) -> Vec<u8> {
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
pub fn assert_pair(req: &Value, resp: &Value) {
    assert_eq!(req["exchange"]["role"], "request", "{req}");
    assert_eq!(resp["exchange"]["role"], "response", "{resp}");
    assert!(req["exchange"]["id"].is_u64());
    assert_eq!(req["exchange"]["id"], resp["exchange"]["id"], "not paired:\n{req}\n{resp}");
    assert!(resp["exchange"]["latency_ns"].is_u64(), "response without latency: {resp}");
}

pub fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["body"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h["value"].as_str())
}

pub fn write_script(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub const SETTLE: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------- HTTP/1.1

/// FIX CheckSum of a whole message's bytes (everything before `10=`).
pub fn fix_checksum(msg: &[u8]) -> u64 {
    let body = &msg[..msg.len() - 7];
    assert!(msg[msg.len() - 7..].starts_with(b"10="));
    body.iter().map(|b| u64::from(*b)).sum::<u64>() % 256
}

pub fn fix_field(r: &Value, tag: u64) -> Option<&str> {
    r["body"]["fields"].as_array()?.iter().find(|f| f["tag"] == tag).and_then(|f| f["value"].as_str())
}
