//! Reads the kernel's decision events and turns each into a policy decision
//! record: the local workload's identity, the peer's (zone, and cgroup when it
//! is a member on this host), the flow, the rule and the policy's hash.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiretrail_common::segment::*;
use wiretrail_proto::v1 as pb;

use super::enforcer::Generations;
use crate::{
    capture::reader::ReaderError,
    clock::{ClockSync, KERNEL_CLOCK, rfc3339},
    identity::{Identity, IdentityResolver, Sources},
    metrics::Metrics,
    output::{AgentNote, wire},
};

/// Decodes one ring item; `None` if it is too short (counted by the caller).
pub fn decode(item: &[u8]) -> Option<PolicyEvent> {
    if item.len() < POLICY_EVENT_SIZE {
        return None;
    }
    // SAFETY: length checked; PolicyEvent is plain old data, read unaligned.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<PolicyEvent>()) })
}

pub fn verdict_name(v: u8) -> &'static str {
    match v {
        VERDICT_ALLOW => "allow",
        VERDICT_DENY => "deny",
        VERDICT_AUDIT => "audit",
        _ => "unknown",
    }
}

pub fn hook_name(h: u8) -> &'static str {
    match h {
        HOOK_CONNECT4 => "connect4",
        HOOK_CONNECT6 => "connect6",
        HOOK_SENDMSG4 => "sendmsg4",
        HOOK_SENDMSG6 => "sendmsg6",
        HOOK_INGRESS4 => "ingress4",
        HOOK_INGRESS6 => "ingress6",
        _ => "unknown",
    }
}

fn addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == wiretrail_common::FAMILY_INET {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        let v6 = Ipv6Addr::from(*a);
        v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
    }
}

fn comm(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// Which forms of a record are used: the JSON line (local output not `none`)
/// and the collector record (shipping on).
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub json: bool,
    pub wire: bool,
}

/// Everything a decision record says, resolved.
pub struct Decision {
    pub ev: PolicyEvent,
    pub ingress: bool,
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
    pub rule: String,
    pub rule_line: u32,
    pub policy_sha256: String,
    pub local_zone: String,
    pub peer_zone: String,
    pub identity: Arc<Identity>,
    pub peer_identity: std::collections::HashMap<String, String>,
}

impl Decision {
    pub fn resolve(ev: PolicyEvent, gens: &Generations, ids: &mut IdentityResolver) -> Decision {
        let ingress = ev.hook == HOOK_INGRESS4 || ev.hook == HOOK_INGRESS6;
        let remote = SocketAddr::new(addr(ev.family, &ev.remote_addr), ev.remote_port);
        let local = ingress.then(|| SocketAddr::new(addr(ev.family, &ev.local_addr), ev.local_port));
        let policy = gens.policy(ev.generation);
        let zone_name = |id: u32| policy.as_ref().and_then(|p| p.zone(id)).map(|z| z.name.clone()).unwrap_or_default();
        let (rule, rule_line) = match (ev.rule_id, &policy) {
            (RULE_DEFAULT_DENY, _) => ("default-deny".to_string(), 0),
            (id, Some(p)) => p.rule(id).map(|r| (r.name.clone(), r.line)).unwrap_or((format!("rule-{id}"), 0)),
            (id, None) => (format!("rule-{id} of generation {}", ev.generation), 0),
        };
        let mut peer_identity = std::collections::HashMap::new();
        let peer_zone = zone_name(ev.peer_zone);
        if !peer_zone.is_empty() {
            peer_identity.insert("zone".to_string(), peer_zone.clone());
        }
        if let Some(p) = gens.owner(remote.ip()) {
            peer_identity.insert("cgroup_path".to_string(), p);
        }
        let identity = ids.resolve(ev.pid, &comm(&ev.comm), ev.cgroup_id);
        Decision {
            ingress,
            local,
            remote,
            rule,
            rule_line,
            policy_sha256: policy.as_ref().map(|p| p.sha256.clone()).unwrap_or_default(),
            local_zone: zone_name(ev.local_zone),
            peer_zone,
            identity,
            peer_identity,
            ev,
        }
    }

    fn mode(&self) -> &'static str {
        match self.ev.mode {
            MODE_AUDIT => "audit",
            MODE_ENFORCE => "enforce",
            _ => "",
        }
    }

    fn transport(&self) -> &'static str {
        if self.ev.proto == wiretrail_common::PROTO_UDP { "udp" } else { "tcp" }
    }

    /// The record in the forms `want`ed (the other is left empty). The
    /// collector record carries the JSON form as its `parsed_json`.
    pub fn note_for(&self, clock: &ClockSync, want: Wanted) -> AgentNote {
        let json = self.json(clock);
        if !want.wire {
            return AgentNote { json, wire: pb::Record::default() };
        }
        let wire = self.wire(clock, json.to_string());
        AgentNote { json: if want.json { json } else { serde_json::Value::Null }, wire }
    }

    fn direction(&self) -> &'static str {
        if self.ingress { "ingress" } else { "egress" }
    }

    /// The JSON line.
    fn json(&self, clock: &ClockSync) -> serde_json::Value {
        let ev = &self.ev;
        json!({
            "type": "policy_decision",
            "ts": rfc3339(clock.to_utc_ns(ev.ts_ns)),
            "ts_kernel_ns": ev.ts_ns,
            "clock": KERNEL_CLOCK,
            "clock_error_ns": clock.error_ns,
            "verdict": verdict_name(ev.verdict),
            "hook": hook_name(ev.hook),
            "direction": self.direction(),
            "transport": self.transport(),
            "local": self.local.map(|a| a.to_string()),
            "remote": self.remote.to_string(),
            "pid": ev.pid,
            "tid": ev.tid,
            "uid": ev.uid,
            "comm": comm(&ev.comm),
            "cgroup_id": ev.cgroup_id,
            "rule": self.rule,
            "rule_id": ev.rule_id,
            "rule_line": self.rule_line,
            "mode": self.mode(),
            "policy_sha256": self.policy_sha256,
            "policy_generation": ev.generation,
            "local_zone": self.local_zone,
            "peer_zone": self.peer_zone,
            "identity": &*self.identity,
            "peer_identity": self.peer_identity,
        })
    }

    /// The collector record.
    fn wire(&self, clock: &ClockSync, parsed_json: String) -> pb::Record {
        let ev = &self.ev;
        let mut r = pb::Record {
            capture_time_ns: clock.to_utc_ns(ev.ts_ns) as i64,
            clock_error_ns: clock.error_ns,
            kernel_time_ns: ev.ts_ns,
            local: self.local.map(|a| pb::Endpoint { address: a.ip().to_string(), port: a.port() as u32 }),
            remote: Some(pb::Endpoint { address: self.remote.ip().to_string(), port: self.remote.port() as u32 }),
            pid: ev.pid,
            tid: ev.tid,
            comm: comm(&ev.comm),
            uid: ev.uid,
            cgroup_id: ev.cgroup_id,
            identity: wire::identity_map(&self.identity),
            peer_identity: self.peer_identity.clone(),
            decision: Some(pb::PolicyDecision {
                verdict: verdict_name(ev.verdict).into(),
                rule: self.rule.clone(),
                rule_line: self.rule_line,
                policy_sha256: self.policy_sha256.clone(),
                local_zone: self.local_zone.clone(),
                peer_zone: self.peer_zone.clone(),
                hook: hook_name(ev.hook).into(),
                mode: self.mode().into(),
                direction: self.direction().into(),
            }),
            parsed_json,
            ..Default::default()
        };
        r.set_kind(pb::RecordKind::PolicyDecision);
        r.set_clock_source(pb::ClockSource::BoottimeOffset);
        r.set_direction(if self.ingress { pb::Direction::Ingress } else { pb::Direction::Egress });
        r.set_transport(if ev.proto == wiretrail_common::PROTO_UDP {
            pb::TransportProtocol::Udp
        } else {
            pb::TransportProtocol::Tcp
        });
        r
    }
}

/// Runs until `shutdown`, then drains what is left in the ring.
pub async fn run(
    ring: RingBuf<MapData>,
    gens: Arc<Generations>,
    sources: Sources,
    want: Wanted,
    tx: mpsc::Sender<AgentNote>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ReaderError> {
    let mut fd = crate::capture::reader::readable(ring)?;
    let mut ids = IdentityResolver::new(sources);
    let mut clock = ClockSync::measure();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    // Allowed decisions do not wake us (the kernel batches them): drain often.
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        let mut notes = Vec::new();
        let done = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = every.tick() => { clock = ClockSync::measure(); false }
            _ = poll.tick() => {
                drain(fd.get_mut(), &gens, &mut ids, &clock, &metrics, want, &mut notes);
                false
            }
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| ReaderError::Poll { source })?;
                drain(guard.get_inner_mut(), &gens, &mut ids, &clock, &metrics, want, &mut notes);
                guard.clear_ready();
                false
            }
        };
        if done {
            drain(fd.get_mut(), &gens, &mut ids, &clock, &metrics, want, &mut notes);
        }
        for n in notes {
            if tx.send(n).await.is_err() {
                metrics.ship_closed.inc();
                tracing::error!("pipeline stopped before the decisions reader; decision record not written");
            }
        }
        if done {
            return Ok(());
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    gens: &Generations,
    ids: &mut IdentityResolver,
    clock: &ClockSync,
    metrics: &Metrics,
    want: Wanted,
    out: &mut Vec<AgentNote>,
) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(ev) => {
                metrics.policy_decisions.inc();
                // Neither output nor collector: counted only (`--output none`
                // without shipping keeps nothing anyway).
                if want.json || want.wire {
                    out.push(Decision::resolve(ev, gens, ids).note_for(clock, want));
                }
            }
            None => metrics.decode_errors.inc(),
        }
    }
}
