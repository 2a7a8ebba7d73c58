//! The human-readable rendering of a record: one line, payload preview escaped.
use base64::Engine as _;

use super::record::JsonRecord;
use crate::capture::event::Direction;

/// Payload bytes shown per line.
const PREVIEW: usize = 96;

/// `ts conn=N comm[pid] proto local -> remote kind ...` with a trailing newline.
pub fn line(r: &JsonRecord) -> String {
    let arrow = match r.direction {
        Some(Direction::Ingress) => "<-",
        _ => "->",
    };
    let transport = format!("{:?}", r.transport).to_lowercase();
    let head =
        format!("{} conn={} {}[{}] {} {} {} {}", r.ts, r.conn_id, r.comm, r.pid, transport, r.local, arrow, r.remote);
    let body = match r.kind {
        "data" => {
            let bytes = r
                .payload_b64
                .as_deref()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .unwrap_or_default();
            let shown: String =
                bytes.iter().take(PREVIEW).flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
            let more = if bytes.len() > PREVIEW { "…" } else { "" };
            format!("{} pos={} len={} \"{shown}\"{more}", dir(r), r.pos.unwrap_or(0), r.len.unwrap_or(0))
        }
        "gap" => format!(
            "GAP {} pos={} len={} reason={:?}",
            dir(r),
            r.pos.unwrap_or(0),
            r.len.unwrap_or(0),
            r.gap_reason.map(|g| format!("{g:?}").to_lowercase()).unwrap_or_default()
        ),
        "close" => format!("close tx={} rx={}", r.tx_total, r.rx_total),
        other => other.to_string(),
    };
    format!("{head} {body}\n")
}

/// One line for a non-event record: protocol records show their protocol and
/// parsed fields (raw bytes left out; they are in the JSON output).
pub fn value_line(v: &serde_json::Value) -> String {
    if v["type"] == "record" {
        let mut body = v["body"].clone();
        if let serde_json::Value::Object(o) = &mut body {
            o.remove("raw");
        }
        let mut summary = body.to_string();
        if summary.len() > 240 {
            let cut = (0..=240).rev().find(|&i| summary.is_char_boundary(i)).unwrap_or(0);
            summary.truncate(cut);
            summary.push('…');
        }
        let tls = if v["tls"] == true { " tls" } else { "" };
        let err = v["error"].as_str().map(|e| format!(" error={e:?}")).unwrap_or_default();
        format!(
            "{} conn={} record {}{} {} {}{}\n",
            v["ts"].as_str().unwrap_or(""),
            v["conn_id"],
            v["protocol"].as_str().unwrap_or("?"),
            tls,
            v["direction"].as_str().unwrap_or("-"),
            summary,
            err
        )
    } else if v["type"] == "policy_decision" {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let who = v["identity"]["cgroup_path"].as_str().or(v["identity"]["exe"].as_str()).unwrap_or("?");
        format!(
            "{} policy {} {} {}[{}] {} zone={} -> {} zone={} rule={} policy={}\n",
            s("ts"),
            s("verdict").to_uppercase(),
            s("hook"),
            s("comm"),
            v["pid"],
            who,
            s("local_zone"),
            if s("direction") == "ingress" { format!("{} (from {})", s("local"), s("remote")) } else { s("remote") },
            s("peer_zone"),
            s("rule"),
            v["policy_sha256"].as_str().map(|h| &h[..h.len().min(12)]).unwrap_or(""),
        )
    } else {
        format!("{v}\n")
    }
}

fn dir(r: &JsonRecord) -> &'static str {
    match r.direction {
        Some(Direction::Egress) => "egress",
        Some(Direction::Ingress) => "ingress",
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{CaptureEvent, Meta};
    use crate::clock::ClockSync;

    #[test]
    fn renders_a_policy_decision() {
        let v = serde_json::json!({"type": "policy_decision", "ts": "T", "verdict": "deny", "hook": "connect4",
            "comm": "curl", "pid": 7, "identity": {"cgroup_path": "/a"}, "local_zone": "a", "remote": "10.0.0.1:80",
            "peer_zone": "b", "rule": "default-deny", "direction": "egress", "policy_sha256": "0123456789abcdef"});
        assert_eq!(
            value_line(&v),
            "T policy DENY connect4 curl[7] /a zone=a -> 10.0.0.1:80 zone=b rule=default-deny policy=0123456789ab\n"
        );
    }

    #[test]
    fn renders_data_with_escaped_preview() {
        let meta = Meta {
            pid: 10,
            tid: 10,
            comm: "curl".into(),
            syscall: "sendto",
            ..Meta::for_test(4, "127.0.0.1:5000", "127.0.0.1:80")
        };
        let ev = CaptureEvent::Data {
            meta,
            direction: Direction::Egress,
            pos: 0,
            payload: bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n"),
        };
        let l = line(&JsonRecord::from_event(&ev, &ClockSync::measure()));
        assert!(
            l.contains(
                "conn=4 curl[10] tcp 127.0.0.1:5000 -> 127.0.0.1:80 egress pos=0 len=16 \"GET / HTTP/1.1\\r\\n\""
            ),
            "{l}"
        );
        assert!(l.ends_with('\n'));
    }
}
