//! Reads the kernel's decision events and turns each into a policy decision
//! record: the local workload's identity, the peer's (zone, and cgroup when it
//! is a member on this host), the flow, the rule and the policy's hash.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiretrail_common::segment::*;

use super::enforcer::Generations;
use crate::{
    capture::reader::ReaderError,
    clock::{Clock, ClockSync},
    identity::{Identity, IdentityResolver, Sources},
    metrics::Metrics,
    record::{self, Record, Stamp},
    types::{Comm, Direction, Transport},
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

/// Whether decision records are kept anywhere (local output or collector);
/// when not, decisions are only counted.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub records: bool,
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
    pub peer_identity: std::collections::BTreeMap<String, String>,
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
        let mut peer_identity = std::collections::BTreeMap::new();
        let peer_zone = zone_name(ev.peer_zone);
        if !peer_zone.is_empty() {
            peer_identity.insert("zone".to_string(), peer_zone.clone());
        }
        if let Some(p) = gens.owner(remote.ip()) {
            peer_identity.insert("cgroup_path".to_string(), p);
        }
        let identity = ids.resolve(ev.pid, Comm::from_kernel(&ev.comm), ev.cgroup_id);
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

    /// The decision as a record.
    pub fn record(self, clock: &ClockSync) -> Record {
        let mode = self.mode().to_string();
        let ev = &self.ev;
        Record::PolicyDecision(Box::new(record::Decision {
            stamp: Stamp::kernel(ev.ts_ns, clock),
            verdict: verdict_name(ev.verdict).into(),
            hook: hook_name(ev.hook).into(),
            direction: if self.ingress { Direction::Ingress } else { Direction::Egress },
            transport: if ev.proto == wiretrail_common::PROTO_UDP { Transport::Udp } else { Transport::Tcp },
            local: self.local,
            remote: self.remote,
            pid: ev.pid,
            tid: ev.tid,
            uid: ev.uid,
            comm: Comm::from_kernel(&ev.comm),
            cgroup_id: ev.cgroup_id,
            rule: self.rule,
            rule_id: ev.rule_id,
            rule_line: self.rule_line,
            mode,
            policy_sha256: self.policy_sha256,
            policy_generation: ev.generation,
            local_zone: self.local_zone,
            peer_zone: self.peer_zone,
            identity: Some(self.identity),
            peer_identity: self.peer_identity,
        }))
    }
}

/// Runs until `shutdown`, then drains what is left in the ring.
pub async fn run(
    ring: RingBuf<MapData>,
    gens: Arc<Generations>,
    sources: Sources,
    want: Wanted,
    tx: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ReaderError> {
    let mut fd = crate::capture::reader::readable(ring)?;
    let mut ids = IdentityResolver::new(sources);
    let mut clock = Clock::system();
    let mut every = tokio::time::interval(std::time::Duration::from_nanos(crate::clock::REMEASURE_NS));
    // Allowed decisions do not wake us (the kernel batches them): drain often.
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        let mut notes = Vec::new();
        let done = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = every.tick() => { clock.refresh(); false }
            _ = poll.tick() => {
                drain(fd.get_mut(), &gens, &mut ids, clock.sync(), &metrics, want, &mut notes);
                false
            }
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| ReaderError::Poll { source })?;
                drain(guard.get_inner_mut(), &gens, &mut ids, clock.sync(), &metrics, want, &mut notes);
                guard.clear_ready();
                false
            }
        };
        if done {
            drain(fd.get_mut(), &gens, &mut ids, clock.sync(), &metrics, want, &mut notes);
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
    out: &mut Vec<Record>,
) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(ev) => {
                metrics.policy_decisions.inc();
                // Neither output nor collector: counted only (`--output none`
                // without shipping keeps nothing anyway).
                if want.records {
                    out.push(Decision::resolve(ev, gens, ids).record(clock));
                }
            }
            None => metrics.decode_errors.inc(),
        }
    }
}
