//! Random policies, compiled, looked up the way the kernel does (a small hash
//! and LPM simulation over the compiled entries), against `decide`.
use std::collections::HashMap;
use std::format;
use std::net::IpAddr;
use std::string::String;
use std::vec::Vec;

use proptest::prelude::*;

use crate::policy::*;
use crate::segment::{self, PORT_ANY, PROTO_ANY};

const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "fd00::/8",
    "fd00:1::/32",
    "::/0",
    "::ffff:10.1.0.0/112",
];
const ADDRS: &[&str] = &[
    "10.1.2.3",
    "10.1.2.4",
    "10.1.9.9",
    "10.9.9.9",
    "192.168.1.1",
    "8.8.8.8",
    "fd00:1::5",
    "fd00:2::5",
    "2001:db8::1",
    "::ffff:10.1.2.3",
];
const PORTS: &[&str] = &["22", "53", "80", "\"79-81\"", "443"];
const FLOW_PORTS: &[u16] = &[1, 22, 53, 79, 80, 81, 443];

#[derive(Debug, Clone)]
struct Spec {
    modes: Vec<bool>,
    /// For each pool CIDR: which zone declares it (index), if any.
    owners: Vec<Option<usize>>,
    /// (kind, a, b, cidr mask, port mask, proto)
    rules: Vec<(u8, usize, usize, u16, u8, u8)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..=4)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec(proptest::option::of(0..n), CIDRS.len()),
                proptest::collection::vec((0u8..3, 0..n, 0..n, 1u16..(1 << CIDRS.len()), any::<u8>(), 0u8..3), 0..10),
            )
        })
        .prop_map(|(modes, owners, rules)| Spec { modes, owners, rules })
}

fn yaml(s: &Spec) -> String {
    let mut y = String::from("version: 1\nzones:\n");
    for (i, enforce) in s.modes.iter().enumerate() {
        y += &format!(
            "  - name: z{i}\n    mode: {}\n    members: [{{uid: {}}}]\n",
            if *enforce { "enforce" } else { "audit" },
            100 + i
        );
        let addrs: Vec<String> =
            CIDRS.iter().zip(&s.owners).filter(|(_, o)| **o == Some(i)).map(|(c, _)| format!("{c:?}")).collect();
        // Two spellings of one key (10.1.0.0/16 and ::ffff:10.1.0.0/112) in two zones are an error.
        if !addrs.is_empty() {
            y += &format!("    addresses: [{}]\n", addrs.join(", "));
        }
    }
    y += "rules:\n";
    for (kind, a, b, cidrs, ports, proto) in &s.rules {
        let cidrs: Vec<String> =
            CIDRS.iter().enumerate().filter(|(j, _)| cidrs & (1 << j) != 0).map(|(_, c)| format!("{c:?}")).collect();
        let cidr = format!("{{cidr: [{}]}}", cidrs.join(", "));
        let (from, to) = match kind {
            0 => (format!("z{a}"), format!("z{b}")),
            1 => (format!("z{a}"), cidr),
            _ => (cidr, format!("{{zone: z{b}}}")),
        };
        let ports: Vec<&str> =
            PORTS.iter().enumerate().filter(|(j, _)| ports & (1 << j) != 0).map(|(_, p)| *p).collect();
        let proto = ["any", "tcp", "udp"][*proto as usize];
        y += &format!("  - from: {from}\n    to: {to}\n    ports: [{}]\n    protocol: {proto}\n", ports.join(", "));
    }
    y
}

/// Longest-prefix match over (prefix length, key bytes, value), as BPF_MAP_TYPE_LPM_TRIE does.
fn lpm<V: Copy>(entries: &[(u32, Vec<u8>, V)], key: &[u8]) -> Option<V> {
    let matches = |len: u32, data: &[u8]| {
        (0..len as usize).all(|bit| (data[bit / 8] >> (7 - bit % 8)) & 1 == (key[bit / 8] >> (7 - bit % 8)) & 1)
    };
    entries.iter().filter(|(len, data, _)| matches(*len, data)).max_by_key(|(len, _, _)| *len).map(|(_, _, v)| *v)
}

fn addr_bytes(k: &segment::AddrZoneKey) -> Vec<u8> {
    [&k.slot[..], &k.addr[..]].concat()
}

fn cidr_bytes(k: &segment::CidrRuleKey) -> Vec<u8> {
    [&k.slot[..], &k.zone[..], &[k.dir, k.proto], &k.port[..], &k.addr[..]].concat()
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The kernel's decision over compiled maps; returns (peer zone, decision).
fn kernel(
    c: &Compiled,
    dir: FlowDirection,
    local: Option<u32>,
    peer: IpAddr,
    port: u16,
    proto: u8,
) -> (Option<u32>, Decision) {
    let addrs: Vec<_> = c.addresses.iter().map(|(l, k, v)| (*l, addr_bytes(k), v.zone)).collect();
    let peer_zone = lpm(&addrs, &[&[0u8; 4][..], &v6(peer)[..]].concat());
    let Some(local) = local else {
        return (peer_zone, Decision { verdict: Verdict::NotSegmented, rule_id: 0, mode: None });
    };
    let rules: HashMap<segment::RuleKey, u32> = c.rules.iter().map(|(k, v)| (*k, v.rule_id)).collect();
    let cidr: Vec<_> = c.cidr_rules.iter().map(|(l, k, v)| (*l, cidr_bytes(k), v.rule_id)).collect();
    let combos = [(port, proto), (PORT_ANY, proto), (port, PROTO_ANY), (PORT_ANY, PROTO_ANY)];
    let allow = |rule_id| Decision { verdict: Verdict::Allow, rule_id, mode: None };
    if let Some(pz) = peer_zone {
        let (src, dst) = if dir == FlowDirection::Egress { (local, pz) } else { (pz, local) };
        for (port, proto) in combos {
            let k = segment::RuleKey { slot: 0, src_zone: src, dst_zone: dst, port, proto, _pad: 0 };
            if let Some(id) = rules.get(&k) {
                return (peer_zone, allow(*id));
            }
        }
    }
    let d = if dir == FlowDirection::Egress { segment::DIR_OUT } else { segment::DIR_IN };
    for (port, proto) in combos {
        let k = segment::CidrRuleKey {
            slot: [0; 4],
            zone: local.to_be_bytes(),
            dir: d,
            proto,
            port: port.to_be_bytes(),
            addr: v6(peer),
        };
        if let Some(id) = lpm(&cidr, &cidr_bytes(&k)) {
            return (peer_zone, allow(id));
        }
    }
    let zones: HashMap<segment::ZoneKey, segment::ZoneInfo> = c.zones.iter().copied().collect();
    let mode = zones[&segment::ZoneKey { slot: 0, zone: local }].mode;
    let (verdict, mode) =
        if mode == segment::MODE_ENFORCE { (Verdict::Deny, Mode::Enforce) } else { (Verdict::Audit, Mode::Audit) };
    (peer_zone, Decision { verdict, rule_id: 0, mode: Some(mode) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compiled_maps_decide_like_decide(
        s in spec(),
        flows in proptest::collection::vec(
            (any::<bool>(), 0u32..6, 0..ADDRS.len(), 0..FLOW_PORTS.len(), any::<bool>()),
            1..40,
        ),
    ) {
        let text = yaml(&s);
        let p = match Policy::parse(&text) {
            Ok(p) => p,
            // The only rejection the generator can produce: one range declared by two zones in two spellings.
            Err(PolicyError::DuplicateAddress { .. }) => return Ok(()),
            Err(e) => panic!("{e}\n{text}"),
        };
        let c = p.compile();
        for (egress, local, addr, port, udp) in flows {
            let dir = if egress { FlowDirection::Egress } else { FlowDirection::Ingress };
            // The local zone by uid (zone i's member is uid 100 + i; uids past the last zone are in none),
            // through the compiled uid map, as the kernel finds it.
            let uid = 99 + local;
            let uids: HashMap<segment::UidZoneKey, u32> = c.uids.iter().map(|(k, v)| (*k, v.zone)).collect();
            let local = uids.get(&segment::UidZoneKey { slot: 0, uid }).copied();
            prop_assert_eq!(local, p.zone_of(&WorkloadAttrs { uid: Some(uid), ..Default::default() }));
            prop_assert_eq!(local, (1..=p.zones.len() as u32).contains(&(uid - 99)).then_some(uid - 99));
            let peer: IpAddr = ADDRS[addr].parse().unwrap();
            let (port, proto) = (FLOW_PORTS[port], if udp { 17 } else { 6 });
            let (peer_zone, want) = kernel(&c, dir, local, peer, port, proto);
            prop_assert_eq!(peer_zone, p.address_zone(peer), "address zone of {}\n{}", peer, text);
            let q = FlowQuery { direction: dir, local_zone: local, peer_zone, peer_addr: peer, port, proto };
            prop_assert_eq!(p.decide(&q), want, "{:?}\n{}", q, text);
        }
    }
}
