//! The human-readable rendering of a record: one line per exchange,
//! segment, connection or notice, so a person watching sees the
//! conversation (who asked whom what, what came back, how long it took).
use serde_json::Value;

use super::{ConnRecord, Exchange, Fields, Part, PartRole, Record, Segment, Who};
use crate::clock::rfc3339;
use crate::types::{Direction, Role};

/// Payload bytes shown for unparsed bytes.
const PREVIEW: usize = 64;

fn proc(s: &super::Side) -> String {
    format!("{}[{}]", s.comm, s.pid)
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "?".into(), |a| a.to_string())
}

/// `client -> server` as the record knows them: both processes when both
/// ends were captured here, else the captured side and the other address.
fn route(who: &Who) -> String {
    let s = &who.side;
    let me = format!("{} {}", proc(s), addr(s.local));
    let other = match &who.witness {
        Some(w) => format!("{} {}", proc(w), addr(w.local)),
        None => addr(s.remote),
    };
    if s.role == Role::Server { format!("{other} -> {me}") } else { format!("{me} -> {other}") }
}

fn escaped(b: &[u8], max: usize) -> String {
    let shown: String = b.iter().take(max).flat_map(|&c| std::ascii::escape_default(c)).map(char::from).collect();
    if b.len() > max { format!("\"{shown}\"…") } else { format!("\"{shown}\"") }
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A few words for one message's fields.
fn summary(f: &Fields) -> String {
    let v = f.json();
    let kind = s(&v, "type").unwrap_or("");
    let words: Vec<String> = match kind {
        "http1" => match (s(&v, "method"), v.get("status").and_then(Value::as_u64)) {
            (Some(m), _) => vec![m.to_string(), s(&v, "target").unwrap_or("").to_string()],
            (None, Some(st)) => vec![st.to_string(), s(&v, "reason").unwrap_or("").to_string()],
            _ => vec![],
        },
        "http2" => {
            let mut w = Vec::new();
            if let Some(m) = s(&v, "method") {
                w.push(format!("{m} {}", s(&v, "path").unwrap_or("")));
            }
            if let Some(st) = v.get("status").and_then(Value::as_u64) {
                w.push(st.to_string());
            }
            if let Some(g) = v.get("grpc").and_then(|g| g.get("status")).and_then(Value::as_u64) {
                w.push(format!("grpc-status {g}"));
            }
            w
        }
        "postgres" => {
            let mut w: Vec<String> =
                v["queries"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
            w.extend(v["command_tags"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from));
            if w.is_empty()
                && let Some(n) = v["messages"].as_array().and_then(|m| m.first()).and_then(|m| s(m, "name"))
            {
                w.push(n.to_string());
            }
            w
        }
        "redis" => match s(&v, "command") {
            Some(c) => {
                let mut w = vec![c.to_string()];
                w.extend(
                    v["args"].as_array().into_iter().flatten().take(2).filter_map(Value::as_str).map(String::from),
                );
                w
            }
            None => vec![s(&v, "text").map_or_else(|| s(&v, "value_type").unwrap_or("").to_string(), String::from)],
        },
        "dns" => {
            let mut w: Vec<String> = v["questions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| format!("{} {}", s(q, "name").unwrap_or(""), s(q, "qtype_name").unwrap_or("")))
                .collect();
            if v["response"] == true {
                w.push(s(&v, "rcode_name").unwrap_or("").to_string());
                w.push(format!("{} answers", v["answers"].as_array().map_or(0, Vec::len)));
            }
            w
        }
        "fix" => vec![s(&v, "msg_type_name").or(s(&v, "msg_type")).unwrap_or("?").to_string()],
        "" => vec![],
        other => vec![other.to_string()],
    };
    let mut out = words.join(" ").trim().to_string();
    if out.chars().count() > 80 {
        out = out.chars().take(80).collect::<String>() + "…";
    }
    out
}

fn bytes_of(parts: &[Part], role: PartRole) -> u64 {
    parts.iter().filter(|p| p.role == role).map(|p| p.len).sum()
}

fn exchange(e: &Exchange) -> String {
    let tls = if e.who.tls.is_some() { " tls" } else { "" };
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for m in &e.messages {
        let part = &e.parts[m.part.min(e.parts.len().saturating_sub(1))];
        let words = summary(&m.fields);
        if words.is_empty() {
            continue;
        }
        if part.role == PartRole::Response { resp.push(words) } else { req.push(words) }
    }
    req.dedup();
    resp.dedup();
    let mut line =
        format!("{} {}{tls} {} {}", rfc3339(e.stamp.utc_ns), e.protocol.name(), route(&e.who), req.join("; "));
    if !resp.is_empty() || bytes_of(&e.parts, PartRole::Response) > 0 {
        line.push_str(&format!(" => {}", resp.join("; ")));
    }
    line.push_str(&format!(
        " ({} B / {} B",
        bytes_of(&e.parts, PartRole::Request) + bytes_of(&e.parts, PartRole::Message),
        bytes_of(&e.parts, PartRole::Response)
    ));
    if let Some(l) = e.latency_ns {
        line.push_str(&format!(", {:.3} ms", l as f64 / 1e6));
    }
    line.push(')');
    if let Some(i) = e.incomplete {
        line.push_str(&format!(" incomplete={}", serde_json::to_value(i).unwrap_or_default().as_str().unwrap_or("")));
    }
    if e.who.witness.is_some() {
        line.push_str(" [both ends]");
    }
    for f in &e.faults {
        line.push_str(&format!(" FAULT {}", f.kind));
    }
    let errors: Vec<&str> = e.messages.iter().filter_map(|m| m.error.as_deref()).collect();
    if !errors.is_empty() {
        line.push_str(&format!(" error={:?}", errors.join("; ")));
    }
    line
}

fn segment(sg: &Segment) -> String {
    let p = &sg.part;
    let tls = if p.tls { " tls" } else { "" };
    let arrow = if p.direction == Direction::Egress { "sent" } else { "received" };
    let gaps: u64 = p.seen.gaps.iter().map(|g| g.len).sum();
    let mut line = format!(
        "{} {}{tls} {} {arrow} {} B at {} {}",
        rfc3339(sg.stamp.utc_ns),
        sg.protocol.name(),
        route(&sg.who),
        p.len,
        p.pos,
        escaped(&p.raw.0, PREVIEW)
    );
    if gaps > 0 {
        line.push_str(&format!(" ({gaps} B missing)"));
    }
    if let Some(e) = &sg.error {
        line.push_str(&format!(" error={e:?}"));
    }
    line
}

fn connection(c: &ConnRecord, open: bool) -> String {
    let d = |t: &super::DirTotals| match t.kernel_total {
        Some(k) => format!("{}/{}", t.captured, k),
        None => t.captured.to_string(),
    };
    let mut line = format!(
        "{} {} {} {} {} tx={} rx={} exchanges={}",
        rfc3339(c.stamp.utc_ns),
        if open { "open" } else { "conn" },
        c.protocol.name(),
        route(&c.who),
        c.end.name(),
        d(&c.egress),
        d(&c.ingress),
        c.exchanges
    );
    let gaps = c.egress.gap + c.ingress.gap;
    if gaps > 0 {
        line.push_str(&format!(" missing={gaps}"));
    }
    let not_kept = |t: &super::DirTotals| t.not_kept.map_or(0, |n| n.bytes);
    if not_kept(&c.egress) + not_kept(&c.ingress) > 0 {
        line.push_str(&format!(" tls_ciphertext_not_kept={}/{}", not_kept(&c.egress), not_kept(&c.ingress)));
    }
    if c.who.witness.is_some() {
        line.push_str(" [both ends]");
    }
    line
}

/// One line (with its newline) for `r`.
pub fn line(r: &Record) -> String {
    let mut l = match r {
        Record::Exchange(e) => exchange(e),
        Record::Segment(sg) => segment(sg),
        Record::Connection(c) => connection(c, false),
        Record::ConnectionOpen(c) => connection(c, true),
        Record::Gap(g) => format!(
            "{} GAP {} {} {} pos={} len={} reason={}{}",
            rfc3339(g.stamp.utc_ns),
            g.protocol.name(),
            route(&g.who),
            if g.direction == Direction::Egress { "egress" } else { "ingress" },
            g.pos,
            g.len,
            g.reason.name(),
            if g.tls { " tls" } else { "" }
        ),
        Record::Lost(l) => format!("{} LOST {} {}: {}", rfc3339(l.stamp.utc_ns), l.count, l.what, l.detail),
        Record::PolicyDecision(d) => {
            let who = d.identity.as_ref().and_then(|i| i.cgroup_path.clone().or(i.exe.clone())).unwrap_or("?".into());
            let to = if d.direction == Direction::Ingress {
                format!("{} (from {})", addr(d.local), d.remote)
            } else {
                d.remote.to_string()
            };
            format!(
                "{} policy {} {} {}[{}] {} zone={} -> {} zone={} rule={} policy={}",
                rfc3339(d.stamp.utc_ns),
                d.verdict.to_uppercase(),
                d.hook,
                d.comm,
                d.pid,
                who,
                d.local_zone,
                to,
                d.peer_zone,
                d.rule,
                &d.policy_sha256[..d.policy_sha256.len().min(12)]
            )
        }
        Record::Notice(n) => {
            format!("{} notice {} {}", rfc3339(n.stamp.utc_ns), n.notice, Value::Object(n.details.clone()))
        }
    };
    l.push('\n');
    l
}
