//! Agent records as `wiretrail.v1.Record`s for the collector. Every field the
//! JSON output carries travels too: what has no dedicated proto field goes into
//! `parsed_json` (syscall, fd, TLS library, flags), and the raw bytes always go
//! into `payload`.
use serde_json::json;
use wiretrail_proto::v1 as pb;

use crate::{
    capture::{
        event::{CaptureEvent, Direction, GapReason, Meta, Transport},
        tls::TlsLib,
    },
    clock::ClockSync,
    conn::Gap,
    flow::feed::TLS_FLOW_BIT,
    proto::record::Record as FlowRecord,
};

fn dir(d: Direction) -> pb::Direction {
    match d {
        Direction::Egress => pb::Direction::Egress,
        Direction::Ingress => pb::Direction::Ingress,
    }
}

fn endpoint(a: std::net::SocketAddr) -> pb::Endpoint {
    pb::Endpoint { address: a.ip().to_string(), port: a.port() as u32 }
}

fn gap_reason(r: GapReason) -> pb::GapReason {
    match r {
        GapReason::Lost => pb::GapReason::RingFull,
        GapReason::Truncated => pb::GapReason::Cap,
        GapReason::Unreadable => pb::GapReason::Other,
    }
}

/// The fields every record of a captured event shares.
fn base(kind: pb::RecordKind, m: &Meta, clock: &ClockSync, host: &str) -> pb::Record {
    let mut r = pb::Record {
        capture_time_ns: clock.to_utc_ns(m.ts_ns) as i64,
        clock_error_ns: clock.error_ns,
        kernel_time_ns: m.ts_ns,
        conn_id: m.conn_id,
        local: Some(endpoint(m.local)),
        remote: Some(endpoint(m.remote)),
        pid: m.pid,
        tid: m.tid,
        comm: m.comm.clone(),
        uid: m.uid,
        cgroup_id: m.cgroup_id,
        netns: m.netns as u64,
        host: host.to_string(),
        ..Default::default()
    };
    r.set_kind(kind);
    r.set_clock_source(pb::ClockSource::BoottimeOffset);
    r.set_transport(match m.transport {
        Transport::Tcp => pb::TransportProtocol::Tcp,
        Transport::Udp => pb::TransportProtocol::Udp,
    });
    r
}

fn meta_json(m: &Meta, tls: Option<&TlsLib>) -> serde_json::Value {
    json!({
        "syscall": m.syscall,
        "fd": m.fd,
        "tls": tls,
        "peer_from_arg": m.peer_from_arg,
        "midstream": m.midstream,
        "untracked": m.untracked,
        "tx_total": m.tx_total,
        "rx_total": m.rx_total,
    })
}

/// Workload identity as the record's identity map.
pub fn identity_map(id: &crate::identity::Identity) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
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

/// A captured event (chunk, connect/accept/close, explicit truncation).
pub fn event(ev: &CaptureEvent, tls: Option<&TlsLib>, clock: &ClockSync, host: &str) -> Option<pb::Record> {
    let m = ev.meta();
    let mut r = match ev {
        CaptureEvent::Data { direction, pos, payload, .. } => {
            let mut r = base(pb::RecordKind::DataChunk, m, clock, host);
            r.set_direction(dir(*direction));
            r.stream_pos = *pos;
            r.payload = payload.to_vec();
            r
        }
        CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } => {
            base(pb::RecordKind::ConnectionOpen, m, clock, host)
        }
        CaptureEvent::Close { .. } => base(pb::RecordKind::ConnectionClose, m, clock, host),
        CaptureEvent::Truncated { direction, pos, len, reason, .. } => {
            let mut r = base(pb::RecordKind::Gap, m, clock, host);
            r.set_direction(dir(*direction));
            r.stream_pos = *pos;
            let mut g = pb::Gap {
                pos: *pos,
                len: *len,
                detail: format!("{reason:?} bytes not captured"),
                ..Default::default()
            };
            g.set_reason(gap_reason(*reason));
            r.gap = Some(g);
            r
        }
        CaptureEvent::Exec { .. } => return None,
    };
    let mut extra = meta_json(m, tls);
    if let CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } = ev {
        extra["role"] = json!(if matches!(ev, CaptureEvent::Connect { .. }) { "connect" } else { "accept" });
    }
    r.parsed_json = extra.to_string();
    Some(r)
}

/// Bytes the agent found missing (lost in the ring buffer).
pub fn gap(g: &Gap, tls: Option<&TlsLib>, clock: &ClockSync, host: &str) -> pb::Record {
    let mut r = base(pb::RecordKind::Gap, &g.meta, clock, host);
    r.set_direction(dir(g.direction));
    r.stream_pos = g.pos;
    let mut pg = pb::Gap {
        pos: g.pos,
        len: g.len,
        detail: format!("{:?} bytes missing from the stream", g.reason),
        ..Default::default()
    };
    pg.set_reason(gap_reason(g.reason));
    r.gap = Some(pg);
    r.parsed_json = meta_json(&g.meta, tls).to_string();
    r
}

/// A protocol record from flow reassembly: parsed fields as JSON, raw bytes as payload.
pub fn protocol(rec: &FlowRecord, clock: &ClockSync, host: &str) -> pb::Record {
    let mut r = pb::Record {
        capture_time_ns: clock.to_utc_ns(rec.first_ts_ns) as i64,
        clock_error_ns: clock.error_ns,
        kernel_time_ns: rec.first_ts_ns,
        conn_id: rec.conn_id & !TLS_FLOW_BIT,
        app_protocol: serde_json::to_value(rec.protocol)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        payload: rec.raw.0.to_vec(),
        stream_pos: rec.stream_pos,
        host: host.to_string(),
        ..Default::default()
    };
    r.set_kind(pb::RecordKind::ProtocolMessage);
    r.set_clock_source(pb::ClockSource::BoottimeOffset);
    if let Some(d) = rec.direction {
        r.set_direction(match d {
            crate::flow::input::Direction::Egress => pb::Direction::Egress,
            crate::flow::input::Direction::Ingress => pb::Direction::Ingress,
        });
    }
    let mut v = rec.to_json();
    if let serde_json::Value::Object(o) = &mut v {
        o.remove("raw");
        o.insert("tls".into(), (rec.conn_id & TLS_FLOW_BIT != 0).into());
    }
    r.parsed_json = v.to_string();
    r
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
            container: Some(Container { runtime: "containerd", id: "ab".repeat(32) }),
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
