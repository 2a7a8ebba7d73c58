//! The reference decision: the kernel hooks' lookups (see `segment.rs`) done
//! over the policy itself rather than over compiled maps.
use std::net::IpAddr;

use super::{Mode, Peer, Policy};
use crate::segment::{PORT_ANY, PROTO_ANY};

/// Which side of the flow the local workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowDirection {
    /// The local workload initiates (connect/sendmsg).
    Egress,
    /// The local workload receives.
    Ingress,
}

/// A flow as a hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    pub direction: FlowDirection,
    /// Zone of the local workload (the source for egress, the destination for ingress).
    pub local_zone: Option<u32>,
    /// Zone of the peer (by its address, or otherwise known).
    pub peer_zone: Option<u32>,
    pub peer_addr: IpAddr,
    /// The destination port: remote port for egress, local port for ingress.
    pub port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The local workload is in no zone: the hooks do nothing.
    NotSegmented,
    Allow,
    /// No rule allows it and the local zone enforces.
    Deny,
    /// No rule allows it; the local zone only audits.
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The allowing rule, or 0 ([`crate::segment::RULE_DEFAULT_DENY`]).
    pub rule_id: u32,
    /// The local zone's mode when no rule allowed the flow.
    pub mode: Option<Mode>,
}

/// The four (port, proto) combinations in the kernel's order.
pub(crate) fn combos(port: u16, proto: u8) -> [(u16, u8); 4] {
    [(port, proto), (PORT_ANY, proto), (port, PROTO_ANY), (PORT_ANY, PROTO_ANY)]
}

impl Policy {
    /// The decision the kernel takes for a flow. Rules are tried as keys in
    /// the kernel's order; among rules producing the same key the first in
    /// file order wins.
    pub fn decide(&self, q: &FlowQuery) -> Decision {
        let Some(local) = q.local_zone.and_then(|z| self.zone(z)) else {
            return Decision { verdict: Verdict::NotSegmented, rule_id: 0, mode: None };
        };
        let (src, dst) = match q.direction {
            FlowDirection::Egress => (Some(local.id), q.peer_zone),
            FlowDirection::Ingress => (q.peer_zone, Some(local.id)),
        };
        let port_ok = |ports: &[(u16, u16)], want: u16| {
            if want == PORT_ANY { ports.is_empty() } else { ports.iter().any(|(a, b)| (*a..=*b).contains(&want)) }
        };
        let allow = |rule_id| Decision { verdict: Verdict::Allow, rule_id, mode: None };
        // Zone-to-zone rules: an exact key match for each combination.
        if let (Some(src), Some(dst)) = (src, dst) {
            for (port, proto) in combos(q.port, q.proto) {
                let hit = self.rules.iter().find(|r| {
                    r.from == Peer::Zone(src)
                        && r.to == Peer::Zone(dst)
                        && r.protocol.number() == proto
                        && port_ok(&r.ports, port)
                });
                if let Some(r) = hit {
                    return allow(r.id);
                }
            }
        }
        // Zone/CIDR rules of the local zone: the longest prefix for each combination.
        for (port, proto) in combos(q.port, q.proto) {
            let best = self
                .rules
                .iter()
                .filter(|r| r.protocol.number() == proto && port_ok(&r.ports, port))
                .filter_map(|r| {
                    let cidrs = match (q.direction, &r.from, &r.to) {
                        (FlowDirection::Egress, Peer::Zone(z), Peer::Cidrs(c)) if *z == local.id => c,
                        (FlowDirection::Ingress, Peer::Cidrs(c), Peer::Zone(z)) if *z == local.id => c,
                        _ => return None,
                    };
                    let len = cidrs.iter().filter(|c| c.contains(q.peer_addr)).map(|c| c.mapped_prefix()).max()?;
                    Some((len, r.id))
                })
                // Longest prefix; for the same prefix the first rule.
                .max_by_key(|(len, id)| (*len, core::cmp::Reverse(*id)));
            if let Some((_, id)) = best {
                return allow(id);
            }
        }
        let verdict = match local.mode {
            Mode::Enforce => Verdict::Deny,
            Mode::Audit => Verdict::Audit,
        };
        Decision { verdict, rule_id: crate::segment::RULE_DEFAULT_DENY, mode: Some(local.mode) }
    }
}
