use std::net::IpAddr;

use crate::policy::*;
use crate::segment;

const POLICY: &str = r#"version: 1
zones:
  - name: web
    mode: enforce
    members: [{namespace: web}]
    addresses: [10.1.0.0/16]
  - name: db
    members: [{namespace: db}]
    addresses: [10.2.0.0/16]
  - name: ops
    mode: enforce
    members: [{uid: 0}]
rules:
  - name: web-db-pg
    from: web
    to: db
    ports: [5432]
    protocol: tcp
  - name: web-db-any
    from: web
    to: db
  - name: web-dns
    from: web
    to: {cidr: [10.0.0.0/8]}
    ports: [53]
    protocol: udp
  - name: web-dns-resolver
    from: web
    to: {cidr: 10.0.0.53/32}
    ports: [53]
  - name: lb-to-web
    from: {cidr: ["192.168.0.0/16", "fd00::/8"]}
    to: web
    ports: ["8080-8081"]
    protocol: tcp
  - name: ops-anywhere-ssh
    from: ops
    to: {cidr: "::/0"}
    ports: [22]
"#;

fn q(direction: FlowDirection, local: Option<u32>, peer: Option<u32>, addr: &str, port: u16, proto: u8) -> FlowQuery {
    FlowQuery { direction, local_zone: local, peer_zone: peer, peer_addr: addr.parse::<IpAddr>().unwrap(), port, proto }
}

fn d(p: &Policy, f: FlowQuery) -> (Verdict, u32, Option<Mode>) {
    let d = p.decide(&f);
    (d.verdict, d.rule_id, d.mode)
}

#[test]
fn decisions() {
    use FlowDirection::*;
    use Verdict::*;
    let p = Policy::parse(POLICY).unwrap();
    // Not segmented: no local zone, whatever the peer.
    assert_eq!(d(&p, q(Egress, None, Some(2), "10.2.0.1", 5432, 6)), (NotSegmented, 0, None));
    // Exact key before the any-port key (file order would pick either).
    assert_eq!(d(&p, q(Egress, Some(1), Some(2), "10.2.0.1", 5432, 6)), (Allow, 1, None));
    assert_eq!(d(&p, q(Egress, Some(1), Some(2), "10.2.0.1", 5432, 17)), (Allow, 2, None));
    assert_eq!(d(&p, q(Egress, Some(1), Some(2), "10.2.0.1", 80, 6)), (Allow, 2, None));
    // The reverse direction is not allowed; egress from db is decided by db's mode (audit).
    assert_eq!(d(&p, q(Egress, Some(2), Some(1), "10.1.0.1", 80, 6)), (Audit, 0, Some(Mode::Audit)));
    // Ingress at db from web: the same zone-to-zone keys.
    assert_eq!(d(&p, q(Ingress, Some(2), Some(1), "10.1.0.1", 5432, 6)), (Allow, 1, None));
    // Ingress at web from db: nothing allows it, web enforces.
    assert_eq!(d(&p, q(Ingress, Some(1), Some(2), "10.2.0.1", 5432, 6)), (Deny, 0, Some(Mode::Enforce)));
    // Default deny inside a zone too.
    assert_eq!(d(&p, q(Egress, Some(1), Some(1), "10.1.0.9", 443, 6)), (Deny, 0, Some(Mode::Enforce)));
    // CIDR rules: longest prefix within a (port, proto) combination...
    assert_eq!(d(&p, q(Egress, Some(1), None, "10.0.0.53", 53, 6)), (Allow, 4, None));
    assert_eq!(d(&p, q(Egress, Some(1), None, "10.9.9.9", 53, 17)), (Allow, 3, None));
    // ...but the combinations are tried in order: (53, udp) hits the /8 before (53, any) the /32.
    assert_eq!(d(&p, q(Egress, Some(1), None, "10.0.0.53", 53, 17)), (Allow, 3, None));
    assert_eq!(d(&p, q(Egress, Some(1), None, "10.9.9.9", 53, 6)), (Deny, 0, Some(Mode::Enforce)));
    // Zone-to-zone rules come first: 10.2.0.1 is db's, and in 10.0.0.0/8.
    assert_eq!(d(&p, q(Egress, Some(1), Some(2), "10.2.0.1", 53, 17)), (Allow, 2, None));
    // With a peer zone that no zone rule covers, the CIDR rules still apply.
    assert_eq!(d(&p, q(Egress, Some(1), Some(3), "10.0.0.53", 53, 17)), (Allow, 3, None));
    // Inbound CIDR rules are keyed by the destination zone.
    assert_eq!(d(&p, q(Ingress, Some(1), None, "192.168.3.4", 8081, 6)), (Allow, 5, None));
    assert_eq!(d(&p, q(Ingress, Some(1), None, "fd12::1", 8080, 6)), (Allow, 5, None));
    assert_eq!(d(&p, q(Ingress, Some(1), None, "192.168.3.4", 8082, 6)), (Deny, 0, Some(Mode::Enforce)));
    // DIR_OUT rules do not apply inbound.
    assert_eq!(d(&p, q(Ingress, Some(1), None, "10.0.0.53", 53, 17)), (Deny, 0, Some(Mode::Enforce)));
    // ::/0 covers IPv4 (mapped), as in the kernel.
    assert_eq!(d(&p, q(Egress, Some(3), None, "203.0.113.9", 22, 6)), (Allow, 6, None));
    assert_eq!(d(&p, q(Egress, Some(3), None, "2001:db8::1", 22, 17)), (Allow, 6, None));
    assert_eq!(d(&p, q(Egress, Some(3), None, "2001:db8::1", 23, 6)), (Deny, 0, Some(Mode::Enforce)));
}

#[test]
fn first_rule_in_file_order_owns_a_key() {
    let text = r#"version: 1
zones:
  - name: a
    members: [{uid: 1}]
rules:
  - {name: one, from: a, to: {cidr: 10.0.0.0/8}, ports: [80]}
  - {name: two, from: a, to: {cidr: [10.0.0.0/8, 10.1.0.0/16]}, ports: ["79-81"]}
  - {name: three, from: a, to: a, ports: [1]}
  - {name: four, from: a, to: a, ports: ["1-2"]}
"#;
    let p = Policy::parse(text).unwrap();
    let f = |addr: &str, port| p.decide(&q(FlowDirection::Egress, Some(1), None, addr, port, 6)).rule_id;
    assert_eq!(f("10.9.0.1", 80), 1);
    assert_eq!(f("10.9.0.1", 81), 2);
    assert_eq!(f("10.1.0.1", 80), 2); // longer prefix
    let g = |port| p.decide(&q(FlowDirection::Egress, Some(1), Some(1), "10.0.0.1", port, 6)).rule_id;
    assert_eq!((g(1), g(2)), (3, 4));
    let c = p.compile();
    assert_eq!(c.cidr_rules.len(), 1 + 5, "one key for rule one, five new for rule two");
    assert_eq!(c.cidr_rules.iter().filter(|(_, _, v)| v.rule_id == 1).count(), 1);
    assert_eq!(
        c.rules.iter().map(|(k, v)| (k.port, v.rule_id)).collect::<std::vec::Vec<_>>(),
        std::vec![(1, 3), (2, 4)]
    );
}

#[test]
fn compiled_layout() {
    let p = Policy::parse(POLICY).unwrap();
    let c = p.compile();
    assert_eq!(c.zones.len(), 3);
    assert_eq!(c.zones[0], (segment::ZoneKey { slot: 0, zone: 1 }, segment::ZoneInfo { mode: segment::MODE_ENFORCE }));
    assert_eq!(c.zones[1].1.mode, segment::MODE_AUDIT);
    assert_eq!(c.uids, std::vec![(segment::UidZoneKey { slot: 0, uid: 0 }, segment::ZoneValue { zone: 3 })]);
    let (len, k, v) = c.addresses[0];
    assert_eq!((len, v.zone), (32 + 96 + 16, 1));
    assert_eq!(k.slot, [0; 4]);
    assert_eq!(k.addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 0, 0]);
    // Rule 1: web→db 5432/tcp; rule 2: web→db any/any.
    assert!(c.rules.contains(&(
        segment::RuleKey { slot: 0, src_zone: 1, dst_zone: 2, port: 5432, proto: 6, _pad: 0 },
        segment::RuleValue { rule_id: 1 }
    )));
    assert!(c.rules.contains(&(
        segment::RuleKey { slot: 0, src_zone: 1, dst_zone: 2, port: 0, proto: 0, _pad: 0 },
        segment::RuleValue { rule_id: 2 }
    )));
    // Rule 5: two ranges × two ports, DIR_IN keyed by web, big-endian fields.
    let r5: std::vec::Vec<_> = c.cidr_rules.iter().filter(|(_, _, v)| v.rule_id == 5).collect();
    assert_eq!(r5.len(), 4);
    let (len, k, _) = r5[0];
    assert_eq!(*len, segment::CIDR_KEY_FIXED_BITS + 96 + 16);
    assert_eq!((k.zone, k.dir, k.proto, k.port), (1u32.to_be_bytes(), segment::DIR_IN, 6, 8080u16.to_be_bytes()));
    assert_eq!(&k.addr[10..], &[0xff, 0xff, 192, 168, 0, 0]);
    let v6 = r5.iter().find(|(_, k, _)| k.addr[0] == 0xfd).unwrap();
    assert_eq!(v6.0, segment::CIDR_KEY_FIXED_BITS + 8);
    // Rule 6: DIR_OUT keyed by ops, ::/0 → only the fixed bits.
    let r6 = c.cidr_rules.iter().find(|(_, _, v)| v.rule_id == 6).unwrap();
    assert_eq!(
        (r6.0, r6.1.dir, r6.1.proto, r6.1.zone),
        (segment::CIDR_KEY_FIXED_BITS, segment::DIR_OUT, 0, 3u32.to_be_bytes())
    );
}
