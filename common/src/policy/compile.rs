//! The policy as the kernel's map entries (slot 0; the agent rewrites the
//! slot of every key to the inactive one before writing them).
use std::collections::HashSet;
use std::vec::Vec;

use super::{Peer, Policy};
use crate::segment::{
    AddrZoneKey, CIDR_KEY_FIXED_BITS, CidrRuleKey, DIR_IN, DIR_OUT, PORT_ANY, RuleKey, RuleValue, UidZoneKey, ZoneInfo,
    ZoneKey, ZoneValue,
};

/// Most map keys one rule may expand to (ports × address ranges).
pub const MAX_RULE_KEYS: u64 = 4096;

/// Map entries, every key in slot 0. exe members (which need the files'
/// device and inode) and cgroup members (which need cgroup ids) are resolved
/// by the agent from [`Policy::exe_members`] and [`Policy::cgroup_zone`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub zones: Vec<(ZoneKey, ZoneInfo)>,
    pub rules: Vec<(RuleKey, RuleValue)>,
    /// (LPM prefix length in bits over the whole key, key, value).
    pub cidr_rules: Vec<(u32, CidrRuleKey, RuleValue)>,
    /// Declared zone addresses: (LPM prefix length over the whole key, key, value).
    pub addresses: Vec<(u32, AddrZoneKey, ZoneValue)>,
    pub uids: Vec<(UidZoneKey, ZoneValue)>,
}

/// The ports a rule is keyed by: each port of each range, or [`PORT_ANY`].
fn ports(r: &[(u16, u16)]) -> Vec<u16> {
    if r.is_empty() { std::vec![PORT_ANY] } else { r.iter().flat_map(|(a, b)| *a..=*b).collect() }
}

/// One map key a rule expands to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RuleMapKey {
    /// A zone → zone key of the RULES map.
    Zone(RuleKey),
    /// A zone ↔ address range key of the CIDR_RULES map, with its LPM prefix length.
    Cidr(u32, CidrRuleKey),
}

/// Every map key of rule `r`, in order (duplicates included).
pub(crate) fn rule_keys(r: &super::Rule) -> impl Iterator<Item = RuleMapKey> + '_ {
    let proto = r.protocol.number();
    ports(&r.ports).into_iter().flat_map(move |port| {
        let keys: Vec<RuleMapKey> = match (&r.from, &r.to) {
            (Peer::Zone(src), Peer::Zone(dst)) => {
                std::vec![RuleMapKey::Zone(RuleKey { slot: 0, src_zone: *src, dst_zone: *dst, port, proto, _pad: 0 })]
            }
            (Peer::Zone(zone), Peer::Cidrs(cidrs)) | (Peer::Cidrs(cidrs), Peer::Zone(zone)) => {
                let dir = if matches!(r.from, Peer::Zone(_)) { DIR_OUT } else { DIR_IN };
                cidrs
                    .iter()
                    .map(|cidr| {
                        let k = CidrRuleKey {
                            slot: [0; 4],
                            zone: zone.to_be_bytes(),
                            dir,
                            proto,
                            port: port.to_be_bytes(),
                            addr: cidr.key_addr(),
                        };
                        RuleMapKey::Cidr(CIDR_KEY_FIXED_BITS + cidr.mapped_prefix(), k)
                    })
                    .collect()
            }
            (Peer::Cidrs(_), Peer::Cidrs(_)) => Vec::new(), // rejected by parse
        };
        keys
    })
}

impl Policy {
    /// The map entries of this policy. When two rules produce the same key
    /// the first one in file order keeps it.
    pub fn compile(&self) -> Compiled {
        let mut c = Compiled {
            zones: self
                .zones
                .iter()
                .map(|z| (ZoneKey { slot: 0, zone: z.id }, ZoneInfo { mode: z.mode.kernel() }))
                .collect(),
            ..Default::default()
        };
        let mut rule_seen = HashSet::new();
        let mut cidr_seen = HashSet::new();
        for r in &self.rules {
            let value = RuleValue { rule_id: r.id };
            for k in rule_keys(r) {
                match k {
                    RuleMapKey::Zone(k) => {
                        if rule_seen.insert(k) {
                            c.rules.push((k, value));
                        }
                    }
                    RuleMapKey::Cidr(len, k) => {
                        if cidr_seen.insert((len, k)) {
                            c.cidr_rules.push((len, k, value));
                        }
                    }
                }
            }
        }
        for z in &self.zones {
            for a in &z.addresses {
                c.addresses.push((
                    32 + a.mapped_prefix(),
                    AddrZoneKey { slot: [0; 4], addr: a.key_addr() },
                    ZoneValue { zone: z.id },
                ));
            }
        }
        c.uids = self
            .uid_members()
            .into_iter()
            .map(|(uid, zone)| (UidZoneKey { slot: 0, uid }, ZoneValue { zone }))
            .collect();
        c
    }
}
