//! Records as `wiretrail.v1.Record`s for the collector. Every field the
//! JSON-lines output carries travels too: the raw bytes of every part once in
//! `payload` (described by `parts`), parsed fields as `parsed_json`, the
//! other end of a two-witness record as `witness` + `peer_identity`.
use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::json;
use wiretrail_proto::v1 as pb;

use super::{ConnEnd, ConnRecord, DirTotals, Observation, Part, Record, Side, Stamp, Who};
use crate::identity::Identity;
use crate::types::{Direction, GapReason, Role, Transport};

fn endpoint(a: SocketAddr) -> pb::Endpoint {
    pb::Endpoint { address: a.ip().to_string(), port: a.port() as u32 }
}

fn direction(d: Direction) -> pb::Direction {
    match d {
        Direction::Egress => pb::Direction::Egress,
        Direction::Ingress => pb::Direction::Ingress,
    }
}

fn role(r: Role) -> pb::ConnRole {
    match r {
        Role::Client => pb::ConnRole::Client,
        Role::Server => pb::ConnRole::Server,
        Role::Unknown => pb::ConnRole::Unspecified,
    }
}

fn transport(t: Transport) -> pb::TransportProtocol {
    match t {
        Transport::Tcp => pb::TransportProtocol::Tcp,
        Transport::Udp => pb::TransportProtocol::Udp,
    }
}

/// The wire's gap reason.
pub fn gap_reason(r: GapReason) -> pb::GapReason {
    match r {
        GapReason::Lost => pb::GapReason::RingFull,
        GapReason::Truncated => pb::GapReason::Cap,
        GapReason::Unreadable => pb::GapReason::Unreadable,
        GapReason::ReorderOverflow => pb::GapReason::ReorderOverflow,
        GapReason::MissingAtClose => pb::GapReason::MissingAtClose,
        GapReason::MissingAtFlush => pb::GapReason::MissingAtFlush,
        GapReason::MessageCap => pb::GapReason::MessageCap,
        GapReason::CiphertextNotKept => pb::GapReason::CiphertextNotKept,
    }
}

/// Workload identity as the record's identity map.
pub fn identity_map(id: &Identity) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(p) = &id.cgroup_path {
        m.insert("cgroup_path".into(), p.clone());
    }
    if let Some(c) = &id.container {
        m.insert("container_id".into(), c.id.clone());
        m.insert("container_runtime".into(), c.runtime.to_string());
    }
    if let Some(e) = &id.exe {
        m.insert("exe".into(), e.clone());
    }
    if let Some(h) = &id.exe_sha256 {
        m.insert("exe_sha256".into(), h.to_string());
    }
    if let Some(p) = &id.pod {
        m.insert("k8s_pod".into(), p.name.clone());
        m.insert("k8s_namespace".into(), p.namespace.clone());
        m.insert("k8s_pod_uid".into(), p.uid.clone());
        m.insert("k8s_service_account".into(), p.service_account.clone());
        m.insert("k8s_node".into(), p.node.clone());
        for (k, v) in &p.labels {
            m.insert(format!("k8s_label.{k}"), v.clone());
        }
    }
    m
}

fn base(kind: pb::RecordKind, stamp: &Stamp, host: &str) -> pb::Record {
    let mut r = pb::Record {
        capture_time_ns: stamp.utc_ns as i64,
        clock_error_ns: stamp.clock_error_ns,
        kernel_time_ns: stamp.kernel_ns.unwrap_or(0),
        host: host.to_string(),
        ..Default::default()
    };
    r.set_kind(kind);
    r.set_clock_source(if stamp.kernel_ns.is_some() {
        pb::ClockSource::BoottimeOffset
    } else {
        pb::ClockSource::Realtime
    });
    r
}

fn side(s: &Side) -> pb::Side {
    let mut w = pb::Side {
        conn_id: s.conn_id,
        pid: s.pid,
        tid: s.tid,
        comm: s.comm.to_string(),
        uid: s.uid,
        cgroup_id: s.cgroup_id,
        netns: u64::from(s.netns),
        local: s.local.map(endpoint),
        remote: s.remote.map(endpoint),
        ..Default::default()
    };
    w.set_role(role(s.role));
    w
}

fn with_who(r: &mut pb::Record, who: &Who) {
    let s = &who.side;
    r.conn_id = s.conn_id;
    r.local = s.local.map(endpoint);
    r.remote = s.remote.map(endpoint);
    r.set_transport(transport(s.transport));
    r.pid = s.pid;
    r.tid = s.tid;
    r.comm = s.comm.to_string();
    r.uid = s.uid;
    r.cgroup_id = s.cgroup_id;
    r.netns = u64::from(s.netns);
    r.set_role(role(s.role));
    if let Some(i) = &who.identity {
        r.identity = identity_map(i);
    }
    if let Some(i) = &who.peer_identity {
        r.peer_identity = identity_map(i);
    }
    r.identity.extend(who.app.iter().cloned());
    r.peer_identity.extend(who.peer_app.iter().cloned());
    r.witness = who.witness.as_ref().map(side);
}

fn observation(o: &Observation) -> pb::Observation {
    pb::Observation {
        first_kernel_ns: o.first_ns,
        last_kernel_ns: o.last_ns,
        calls: o
            .calls
            .iter()
            .map(|c| pb::CallMark { offset: c.offset, kernel_ns: c.ns, call: i32::from(c.call.0) })
            .collect(),
        gaps: o
            .gaps
            .iter()
            .map(|g| pb::GapMark { offset: g.offset, len: g.len, reason: gap_reason(g.reason) as i32 })
            .collect(),
        unseen: o.unseen,
    }
}

/// Appends the parts' bytes to `payload` and describes them.
fn parts(r: &mut pb::Record, parts: &[Part]) {
    let total: usize = parts.iter().map(|p| p.raw.0.len()).sum();
    r.payload.reserve(total);
    for p in parts {
        let off = r.payload.len() as u64;
        r.payload.extend_from_slice(&p.raw.0);
        let mut w = pb::Part {
            role: p.role.name().to_string(),
            payload_offset: off,
            payload_len: p.raw.0.len() as u64,
            stream_pos: p.pos,
            stream_len: p.len,
            seen: Some(observation(&p.seen)),
            witness: p.witness.as_ref().map(observation),
            witness_payload: p.witness_raw.as_ref().map(|w| w.0.to_vec()).unwrap_or_default(),
            tls: p.tls,
            peer: p.peer.map(endpoint),
            ..Default::default()
        };
        w.set_direction(direction(p.direction));
        r.parts.push(w);
    }
    if let Some(first) = parts.first() {
        r.set_direction(direction(first.direction));
        r.stream_pos = first.pos;
    }
}

fn faults(r: &mut pb::Record, faults: &[super::Fault]) {
    r.faults = faults
        .iter()
        .map(|f| pb::CaptureFault {
            kind: f.kind.clone(),
            part: f.part as u32,
            offset: f.offset,
            len: f.len,
            detail: f.detail.clone(),
        })
        .collect();
}

fn totals(t: &DirTotals) -> pb::DirTotals {
    pb::DirTotals {
        captured: t.captured,
        gap: t.gap,
        kernel_total: t.kernel_total.unwrap_or(0),
        kernel_total_known: t.kernel_total.is_some(),
        not_kept: t.not_kept.map(|n| pb::NotKept {
            bytes: n.bytes,
            calls: n.calls,
            first_kernel_ns: n.first_ns,
            last_kernel_ns: n.last_ns,
        }),
    }
}

fn tls_unseen(t: &crate::record::TlsUnseen) -> pb::TlsUnseen {
    pb::TlsUnseen { reason: t.reason.clone(), egress_bytes: t.egress_bytes, ingress_bytes: t.ingress_bytes }
}

fn connection(c: &ConnRecord) -> pb::Connection {
    let mut w = pb::Connection {
        open_kernel_ns: c.open_ns,
        close_kernel_ns: c.close_ns.unwrap_or(0),
        open_seen: c.open_seen,
        end: c.end.name().to_string(),
        egress: Some(totals(&c.egress)),
        ingress: Some(totals(&c.ingress)),
        tls_egress: c.tls_egress.as_ref().map(totals),
        tls_ingress: c.tls_ingress.as_ref().map(totals),
        exchanges: c.exchanges,
        segments: c.segments,
        witness_egress: c.witness_egress.as_ref().map(totals),
        witness_ingress: c.witness_ingress.as_ref().map(totals),
        witness_close_kernel_ns: c.witness_close_ns.unwrap_or(0),
        tls_unseen: c.tls_unseen.as_ref().map(tls_unseen),
        witness_tls_unseen: c.witness_tls_unseen.as_ref().map(tls_unseen),
        ..Default::default()
    };
    w.set_role(role(c.who.side.role));
    w
}

fn redactions(r: &mut pb::Record, rs: &[super::Redaction]) {
    r.redactions = rs
        .iter()
        .map(|x| pb::Redaction {
            part: x.part as u32,
            stream_pos: x.pos,
            len: x.len,
            rule: x.rule.clone(),
            rules_version: x.rules_version,
            witness: x.witness,
            key_id: x.key_id.clone().unwrap_or_default(),
        })
        .collect();
}

/// The collector's form of `rec`, stamped with `host`.
pub fn to_wire(rec: &Record, host: &str) -> pb::Record {
    match rec {
        Record::Exchange(e) => {
            let mut r = base(pb::RecordKind::Exchange, &e.stamp, host);
            with_who(&mut r, &e.who);
            r.app_protocol = e.protocol.name().to_string();
            parts(&mut r, &e.parts);
            faults(&mut r, &e.faults);
            redactions(&mut r, &e.redactions);
            r.parsed_json = json!({
                "exchange_id": e.exchange_id,
                "messages": e.messages,
                "latency_ns": e.latency_ns,
                "incomplete": e.incomplete,
                "tls": e.who.tls,
                "witness_tls": e.who.witness_tls,
            })
            .to_string();
            r
        }
        Record::Segment(s) => {
            let mut r = base(pb::RecordKind::Segment, &s.stamp, host);
            with_who(&mut r, &s.who);
            r.app_protocol = s.protocol.name().to_string();
            parts(&mut r, std::slice::from_ref(&s.part));
            faults(&mut r, &s.faults);
            redactions(&mut r, &s.redactions);
            r.parsed_json =
                json!({"reason": s.reason, "error": s.error, "tls": s.who.tls, "witness_tls": s.who.witness_tls})
                    .to_string();
            r
        }
        Record::Connection(c) | Record::ConnectionOpen(c) => {
            let kind = if c.end == ConnEnd::Open { pb::RecordKind::ConnectionOpen } else { pb::RecordKind::Connection };
            let mut r = base(kind, &c.stamp, host);
            with_who(&mut r, &c.who);
            r.app_protocol = c.protocol.name().to_string();
            r.connection = Some(connection(c));
            r.parsed_json = json!({"tls_protocol": c.tls_protocol, "tls": c.who.tls}).to_string();
            r
        }
        Record::Gap(g) => {
            let mut r = base(pb::RecordKind::Gap, &g.stamp, host);
            with_who(&mut r, &g.who);
            r.app_protocol = g.protocol.name().to_string();
            r.set_direction(direction(g.direction));
            r.stream_pos = g.pos;
            let mut pg = pb::Gap {
                pos: g.pos,
                len: g.len,
                detail: format!(
                    "{} {} bytes missing from the {} stream{}",
                    g.len,
                    g.reason.name(),
                    if g.direction == Direction::Egress { "egress" } else { "ingress" },
                    if g.tls { " (TLS plaintext)" } else { "" }
                ),
                ..Default::default()
            };
            pg.set_reason(gap_reason(g.reason));
            r.gap = Some(pg);
            if let Some(w) = &g.witness_seen {
                // The other end's view of the same positions, as a part without bytes.
                let mut part = pb::Part {
                    stream_pos: g.pos,
                    stream_len: g.len,
                    seen: Some(pb::Observation {
                        gaps: vec![pb::GapMark { offset: 0, len: g.len, reason: gap_reason(g.reason) as i32 }],
                        ..Default::default()
                    }),
                    witness: Some(observation(w)),
                    tls: g.tls,
                    ..Default::default()
                };
                part.set_direction(direction(g.direction));
                r.parts.push(part);
            }
            r.parsed_json = json!({"reason": g.reason, "tls": g.tls}).to_string();
            r
        }
        Record::Lost(l) => {
            let mut r = base(pb::RecordKind::Gap, &l.stamp, host);
            let mut g = pb::Gap { len: l.count, detail: l.detail.clone(), ..Default::default() };
            g.set_reason(pb::GapReason::RingFull);
            r.gap = Some(g);
            r.parsed_json = json!({"what": l.what, "count": l.count}).to_string();
            r
        }
        Record::PolicyDecision(d) => {
            let mut r = base(pb::RecordKind::PolicyDecision, &d.stamp, host);
            r.local = d.local.map(endpoint);
            r.remote = Some(endpoint(d.remote));
            r.pid = d.pid;
            r.tid = d.tid;
            r.comm = d.comm.to_string();
            r.uid = d.uid;
            r.cgroup_id = d.cgroup_id;
            r.identity = d.identity.as_deref().map(identity_map).unwrap_or_default();
            r.peer_identity = d.peer_identity.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            r.set_direction(direction(d.direction));
            r.set_transport(transport(d.transport));
            r.decision = Some(pb::PolicyDecision {
                verdict: d.verdict.clone(),
                rule: d.rule.clone(),
                rule_line: d.rule_line,
                policy_sha256: d.policy_sha256.clone(),
                local_zone: d.local_zone.clone(),
                peer_zone: d.peer_zone.clone(),
                hook: d.hook.clone(),
                mode: d.mode.clone(),
                direction: if d.direction == Direction::Ingress { "ingress" } else { "egress" }.into(),
            });
            r.parsed_json = serde_json::to_string(&**d).unwrap_or_default();
            r
        }
        Record::Notice(n) => {
            let mut r = base(pb::RecordKind::AgentNotice, &n.stamp, host);
            if let Some(pid) = n.details.get("pid").and_then(|p| p.as_u64()) {
                r.pid = pid as u32;
            }
            r.parsed_json = serde_json::to_string(&**n).unwrap_or_default();
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::identity::{Container, Identity, PodInfo};

    #[test]
    fn identity_map_keys() {
        let pod = PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "u-1".into(),
            service_account: "web".into(),
            node: "n1".into(),
            labels: [("app".to_string(), "web".to_string()), ("app.kubernetes.io/part-of".into(), "shop".into())]
                .into(),
            ips: vec![],
        };
        let id = Identity {
            cgroup_path: Some("/kubepods.slice/x".into()),
            container: Some(Container { runtime: "containerd".into(), id: "ab".repeat(32) }),
            exe: Some("/usr/sbin/nginx".into()),
            exe_sha256: Some("cd".repeat(32).into()),
            pod: Some(Arc::new(pod)),
        };
        let m = super::identity_map(&id);
        assert_eq!(m["exe_sha256"], "cd".repeat(32));
        assert_eq!(m["k8s_pod"], "web-0");
        assert_eq!(m["k8s_namespace"], "shop");
        assert_eq!(m["k8s_pod_uid"], "u-1");
        assert_eq!(m["k8s_service_account"], "web");
        assert_eq!(m["k8s_node"], "n1");
        assert_eq!(m["k8s_label.app"], "web");
        assert_eq!(m["k8s_label.app.kubernetes.io/part-of"], "shop");
        assert_eq!(m["container_id"], "ab".repeat(32));
        assert_eq!(m.len(), 12);
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json["pod"]["labels"]["app"], "web");
        assert_eq!(json["pod"]["service_account"], "web");
        assert_eq!(json["exe_sha256"], "cd".repeat(32));
    }
}
