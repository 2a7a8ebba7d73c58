//! Replays opened connections against a policy: one flow per connection
//! side (connect = egress of the connecting workload, accept = ingress of the
//! accepting one), deduplicated, decided as the kernel would.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use wiretrail_common::policy::{Decision, FlowDirection, FlowQuery, Policy, Verdict};

use super::source::{Opened, Role, Workload};

/// A flow as the policy sees it; identical flows are counted once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub direction: FlowDirection,
    pub workload: Workload,
    pub peer: IpAddr,
    /// The destination port (remote for egress, local for ingress).
    pub port: u16,
    pub proto: u8,
    /// Zone of the peer: by declared address, else by a recorded workload
    /// that has the peer's address and port as its own end of a connection.
    pub peer_zone: Option<u32>,
}

/// A distinct flow and what the policy does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub flow: Flow,
    /// Connections (records) that were this flow.
    pub count: u64,
    pub local_zone: Option<u32>,
    pub decision: Decision,
}

/// The replay's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Connection sides checked, and how each was decided.
    pub checked: u64,
    pub allowed: u64,
    pub denied: u64,
    pub audited: u64,
    pub not_segmented: u64,
    /// Every distinct flow: denied first, then audited, then the rest; the
    /// most frequent first within each.
    pub flows: Vec<Outcome>,
}

impl Report {
    /// Flows the policy would deny or only audit.
    pub fn findings(&self) -> impl Iterator<Item = &Outcome> {
        self.flows.iter().filter(|o| matches!(o.decision.verdict, Verdict::Deny | Verdict::Audit))
    }
}

/// Where a connection end is: loopback addresses only mean something on their own host.
type EndKey = (String, IpAddr, u16);

fn end_key(host: &str, ip: IpAddr, port: u16) -> EndKey {
    let ip = ip.to_canonical();
    (if ip.is_loopback() { host.to_string() } else { String::new() }, ip, port)
}

/// The zone of the local workload as the deciding hook finds it: the
/// connecting process's (exe, uid, cgroup), or the receiving socket's (cgroup, uid).
fn local_zone(policy: &Policy, direction: FlowDirection, w: &Workload) -> Option<u32> {
    match direction {
        FlowDirection::Egress => policy.zone_of(&w.attrs()),
        FlowDirection::Ingress => policy.ingress_zone(&w.attrs()),
    }
}

fn direction(r: Role) -> FlowDirection {
    match r {
        Role::Connect => FlowDirection::Egress,
        Role::Accept => FlowDirection::Ingress,
    }
}

/// Decides every opened connection side.
pub fn replay(policy: &Policy, opened: &[Opened]) -> Report {
    // The zone of each recorded local endpoint (first zoned workload seen there).
    let mut ends: HashMap<EndKey, u32> = HashMap::new();
    for o in opened {
        if let Some(l) = o.local
            && !l.ip().is_unspecified()
            && l.port() != 0
            && let Some(z) = local_zone(policy, direction(o.role), &o.workload)
        {
            ends.entry(end_key(&o.host, l.ip(), l.port())).or_insert(z);
        }
    }
    let mut counts: BTreeMap<Flow, u64> = BTreeMap::new();
    for o in opened {
        let (direction, port) = match (o.role, o.local) {
            (Role::Connect, _) => (FlowDirection::Egress, o.remote.port()),
            (Role::Accept, Some(l)) => (FlowDirection::Ingress, l.port()),
            // An accept without its local port cannot be checked.
            (Role::Accept, None) => continue,
        };
        let peer = o.remote.ip().to_canonical();
        let peer_zone =
            policy.address_zone(peer).or_else(|| ends.get(&end_key(&o.host, peer, o.remote.port())).copied());
        let flow = Flow { direction, workload: o.workload.clone(), peer, port, proto: o.proto, peer_zone };
        *counts.entry(flow).or_default() += 1;
    }
    let mut report = Report::default();
    for (flow, count) in counts {
        let local_zone = local_zone(policy, flow.direction, &flow.workload);
        let q = FlowQuery {
            direction: flow.direction,
            local_zone,
            peer_zone: flow.peer_zone,
            peer_addr: flow.peer,
            port: flow.port,
            proto: flow.proto,
        };
        let decision = policy.decide(&q);
        report.checked += count;
        *match decision.verdict {
            Verdict::Allow => &mut report.allowed,
            Verdict::Deny => &mut report.denied,
            Verdict::Audit => &mut report.audited,
            Verdict::NotSegmented => &mut report.not_segmented,
        } += count;
        report.flows.push(Outcome { flow, count, local_zone, decision });
    }
    let rank = |v: Verdict| match v {
        Verdict::Deny => 0,
        Verdict::Audit => 1,
        Verdict::Allow => 2,
        Verdict::NotSegmented => 3,
    };
    report.flows.sort_by(|a, b| {
        (rank(a.decision.verdict), std::cmp::Reverse(a.count))
            .cmp(&(rank(b.decision.verdict), std::cmp::Reverse(b.count)))
    });
    report
}
