//! Reading the agent's JSON lines back and rebuilding byte streams from them.
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

/// All records of one run.
pub struct Records(pub Vec<Value>);

impl Records {
    pub fn load(path: &Path) -> Records {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Records(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
                .collect(),
        )
    }

    /// Records of process `pid`.
    pub fn of_pid(&self, pid: u32) -> Vec<&Value> {
        self.0.iter().filter(|r| r["pid"] == pid).collect()
    }

    /// Records whose local or remote port is `port`.
    pub fn on_port(&self, port: u16) -> Vec<&Value> {
        let suffix = format!(":{port}");
        self.0
            .iter()
            .filter(|r| {
                r["local"].as_str().is_some_and(|s| s.ends_with(&suffix))
                    || r["remote"].as_str().is_some_and(|s| s.ends_with(&suffix))
            })
            .collect()
    }
}

pub fn payload(r: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(r["payload_b64"].as_str().expect("payload_b64")).expect("base64")
}

/// One direction of one connection rebuilt from data records by position.
#[derive(Debug)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// True when positions start at 0 and every byte up to the end is present once.
    pub contiguous: bool,
    pub gaps: Vec<(u64, u64)>,
}

/// Rebuilds `direction` of `conn_id` as seen on the socket.
pub fn stream(recs: &[&Value], conn_id: u64, direction: &str) -> Stream {
    build(recs, conn_id, direction, false)
}

/// Rebuilds the TLS plaintext of `direction` of `conn_id`.
pub fn tls_stream(recs: &[&Value], conn_id: u64, direction: &str) -> Stream {
    build(recs, conn_id, direction, true)
}

fn build(recs: &[&Value], conn_id: u64, direction: &str, tls: bool) -> Stream {
    let mine = |r: &&&Value| r["conn_id"] == conn_id && r["direction"] == direction && r["tls"].is_object() == tls;
    let mut chunks: Vec<(u64, Vec<u8>)> = recs
        .iter()
        .filter(|r| r["type"] == "data" && mine(r))
        .map(|r| (r["pos"].as_u64().unwrap(), payload(r)))
        .collect();
    chunks.sort_by_key(|c| c.0);
    let gaps = recs
        .iter()
        .filter(|r| r["type"] == "gap" && mine(r))
        .map(|r| (r["pos"].as_u64().unwrap(), r["len"].as_u64().unwrap()))
        .collect();
    let mut bytes = Vec::new();
    let mut contiguous = true;
    for (pos, data) in chunks {
        if pos != bytes.len() as u64 {
            contiguous = false;
        }
        bytes.extend_from_slice(&data);
    }
    Stream { bytes, contiguous, gaps }
}
