use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use crate::policy::*;

const GOOD: &str = r#"version: 1
zones:
  - name: frontend
    mode: enforce
    members:
      - cgroup: "/kubepods.slice/**"
      - namespace: shop
        labels: {app: web}
        service_account: web
      - exe: /usr/bin/curl
      - uid: 1000
    addresses: [10.0.0.0/24, "fd00::/64"]
  - name: backend
    members:
      - namespace: db
rules:
  - name: web-to-db
    from: frontend
    to: backend
    ports: [5432, "8000-8010"]
    protocol: tcp
  - from: {zone: backend}
    to: {cidr: ["192.168.0.0/16", 172.16.0.0/12]}
  - from: {cidr: 0.0.0.0/0}
    to: frontend
    ports: [443]
"#;

#[test]
fn parses_the_documented_example() {
    let p = Policy::parse(GOOD).unwrap();
    assert_eq!(p.zones.len(), 2);
    let f = &p.zones[0];
    assert_eq!((f.id, f.name.as_str(), f.mode, f.line), (1, "frontend", Mode::Enforce, 3));
    assert_eq!(f.members.len(), 4);
    assert_eq!(f.members[0].cgroup.as_ref().unwrap().as_str(), "/kubepods.slice/**");
    assert_eq!(f.members[1].namespace.as_deref(), Some("shop"));
    assert_eq!(f.members[1].labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(f.members[1].service_account.as_deref(), Some("web"));
    assert_eq!(f.members[1].line, 7);
    assert_eq!(f.members[2].exe.as_deref(), Some("/usr/bin/curl"));
    assert_eq!(f.members[3].uid, Some(1000));
    assert_eq!(f.addresses, vec![Cidr::parse("10.0.0.0/24").unwrap(), Cidr::parse("fd00::/64").unwrap()]);
    assert_eq!(p.zones[1].mode, Mode::Audit);
    assert_eq!(p.rules.len(), 3);
    let r = &p.rules[0];
    assert_eq!((r.id, r.name.as_str(), r.line), (1, "web-to-db", 17));
    assert_eq!((&r.from, &r.to), (&Peer::Zone(1), &Peer::Zone(2)));
    assert_eq!(r.ports, vec![(5432, 5432), (8000, 8010)]);
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(p.rules[1].name, "rule-2");
    assert_eq!(p.rules[1].protocol, Protocol::Any);
    assert!(p.rules[1].ports.is_empty());
    assert_eq!(
        p.rules[1].to,
        Peer::Cidrs(vec![Cidr::parse("192.168.0.0/16").unwrap(), Cidr::parse("172.16.0.0/12").unwrap()])
    );
    assert_eq!(p.rules[2].from, Peer::Cidrs(vec![Cidr::parse("0.0.0.0/0").unwrap()]));
    assert_eq!(p.zone_by_name("backend").map(|z| z.id), Some(2));
    assert_eq!(p.zone(2).map(|z| z.name.as_str()), Some("backend"));
    assert!(p.zone(0).is_none() && p.zone(3).is_none() && p.rule(0).is_none());
    assert_eq!(p.rule(3).map(|r| r.line), Some(24));
    // sha256 of the bytes.
    assert_eq!(p.sha256.len(), 64);
    assert!(p.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(Policy::parse(&format!("{GOOD}\n")).unwrap().sha256, p.sha256);
    assert_eq!(
        Policy::parse("version: 1\n").unwrap().sha256,
        "09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847"
    );
}

/// Parse `text`, expect an error at (line, column) whose message contains `needle`.
#[track_caller]
fn err_at(text: &str, line: u32, column: u32, needle: &str) -> PolicyError {
    let e = Policy::parse(text).expect_err("should not parse");
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("line {line}, column {column}: ")), "{shown}");
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
    e
}

fn zone(name: &str, extra: &str) -> String {
    format!("  - name: {name}\n    members:\n      - uid: {}\n{extra}", 1000 + name.len())
}

#[test]
fn yaml_and_schema_errors_have_positions() {
    err_at("version: 1\nzones: [\n", 3, 1, "");
    let e = err_at(
        "version: 1\nzones:\n  - name: a\n    colour: red\n    members: [{uid: 1}]\n",
        4,
        5,
        "unknown field `colour`",
    );
    assert!(matches!(e, PolicyError::Yaml { .. }));
    err_at(
        "version: 1\nzones:\n  - name: a\n    mode: strict\n    members: [{uid: 1}]\n",
        4,
        11,
        "unknown variant `strict`",
    );
    err_at("version: 1\nzones:\n  - name: a\n    members: [{uid: -4}]\n", 4, 21, "");
    err_at("version: 1\nzones:\n  - name: a\n    members:\n      - {pid: 4}\n", 5, 10, "unknown field `pid`");
    err_at("version: 1\nrules:\n  - from: a\n    to: b\n    protocol: sctp\n", 5, 15, "unknown variant `sctp`");
    err_at("zones: []\n", 1, 1, "missing field `version`");
}

#[test]
fn semantic_errors_name_their_node() {
    let e = err_at("# policy\nversion: 2\n", 2, 10, "unsupported policy version 2");
    assert!(matches!(e, PolicyError::Version { .. }));
    let e = err_at("version: 1\nzones:\n  - name: 'a b'\n    members: [{uid: 1}]\n", 3, 11, "invalid zone name");
    assert!(matches!(e, PolicyError::ZoneName { .. }));
    let text = format!("version: 1\nzones:\n{}{}", zone("a", ""), zone("a", ""));
    let e = err_at(&text, 6, 11, "duplicate zone name \"a\" (first defined on line 3)");
    assert!(matches!(e, PolicyError::DuplicateZone { first_line: 3, .. }));
    let e = err_at(
        "version: 1\nzones:\n  - name: a\n    mode: audit\n    members: []\n",
        5,
        14,
        "zone \"a\" has no members",
    );
    assert!(matches!(e, PolicyError::NoMembers { .. }));
    let e = err_at("version: 1\nzones:\n  - name: a\n    mode: audit\n", 3, 5, "has no members");
    assert!(matches!(e, PolicyError::NoMembers { .. }));
    // exe / uid must be alone; a member must select something.
    let e = err_at(
        "version: 1\nzones:\n  - name: a\n    members:\n      - uid: 1\n      - exe: /bin/sh\n        namespace: x\n",
        6,
        9,
        "exe must be alone",
    );
    assert!(matches!(e, PolicyError::Member { .. }));
    err_at("version: 1\nzones:\n  - name: a\n    members:\n      - {uid: 1, cgroup: /x}\n", 5, 9, "uid must be alone");
    err_at(
        "version: 1\nzones:\n  - name: a\n    members:\n      - {exe: /bin/sh, uid: 3}\n",
        5,
        9,
        "exe must be alone",
    );
    err_at("version: 1\nzones:\n  - name: a\n    members:\n      - {labels: {}}\n", 5, 9, "empty member entry");
    err_at("version: 1\nzones:\n  - name: a\n    members:\n      - exe: bin/sh\n", 5, 14, "must be an absolute path");
    let e = err_at(
        "version: 1\nzones:\n  - name: a\n    members:\n      - cgroup: 'kubepods/*'\n",
        5,
        17,
        "must start with '/'",
    );
    assert!(matches!(e, PolicyError::Glob { .. }));
    // exe or uid claimed by two zones.
    let text = r#"version: 1
zones:
  - name: a
    members:
      - exe: /bin/sh
  - name: b
    members:
      - uid: 7
      - exe: /bin/sh
"#;
    let e = err_at(text, 9, 9, "exe /bin/sh is already a member of zone \"a\" (line 5)");
    assert!(matches!(e, PolicyError::ClaimedTwice { .. }));
    let text =
        "version: 1\nzones:\n  - name: a\n    members: [{uid: 7}]\n  - name: b\n    members:\n      - {uid: 7}\n";
    err_at(text, 7, 9, "uid 7 is already a member of zone \"a\"");
    // The same exe twice in one zone is not a conflict.
    let text = "version: 1\nzones:\n  - name: a\n    members: [{exe: /bin/sh}, {exe: /bin/sh}]\n";
    assert_eq!(Policy::parse(text).unwrap().exe_members(), vec![("/bin/sh".to_string(), 1)]);
}

#[test]
fn address_and_cidr_errors() {
    let text =
        format!("version: 1\nzones:\n{}", zone("a", "    addresses:\n      - 10.0.0.0/8\n      - 10.1.2.3/16\n"));
    let e = err_at(&text, 8, 9, "CIDR \"10.1.2.3/16\" has host bits set: did you mean 10.1.0.0/16?");
    assert!(matches!(e, PolicyError::HostBits { .. }));
    let text = format!("version: 1\nzones:\n{}", zone("a", "    addresses: [\"fd00::1/64\"]\n"));
    err_at(&text, 6, 17, "did you mean fd00::/64?");
    let text = format!("version: 1\nzones:\n{}", zone("a", "    addresses: [10.0.0.0/40]\n"));
    let e = err_at(&text, 6, 17, "prefix length");
    assert!(matches!(e, PolicyError::Cidr { .. }));
    let text = format!(
        "version: 1\nzones:\n{}{}",
        zone("a", "    addresses: [10.0.0.0/8]\n"),
        zone("bb", "    addresses: [10.0.0.0/8]\n")
    );
    let e = err_at(&text, 10, 17, "address range 10.0.0.0/8 is already owned by zone \"a\"");
    assert!(matches!(e, PolicyError::DuplicateAddress { .. }));
    // The same range written as IPv4 and as IPv4-mapped IPv6 is the same key.
    let text = format!(
        "version: 1\nzones:\n{}{}",
        zone("a", "    addresses: [0.0.0.0/0]\n"),
        zone("bb", "    addresses: [\"::ffff:0:0/96\"]\n")
    );
    err_at(&text, 10, 17, "already owned");
    let base = format!("version: 1\nzones:\n{}rules:\n", zone("a", ""));
    let e = err_at(
        &format!("{base}  - from: a\n    to: {{cidr: [10.0.0.0/8, 10.0.0.1/8]}}\n"),
        8,
        29,
        "did you mean 10.0.0.0/8?",
    );
    assert!(matches!(e, PolicyError::HostBits { .. }));
    err_at(&format!("{base}  - from: {{cidr: 300.0.0.0/8}}\n    to: a\n"), 7, 18, "invalid CIDR \"300.0.0.0/8\"");
    err_at(&format!("{base}  - from: {{cidr: [7]}}\n    to: a\n"), 7, 19, "expected a string");
}

#[test]
fn rule_errors() {
    let base = format!("version: 1\nzones:\n{}rules:\n", zone("a", ""));
    let e = err_at(&format!("{base}  - from: a\n    to: nowhere\n"), 8, 9, "unknown zone \"nowhere\"");
    assert!(matches!(e, PolicyError::UnknownZone { .. }));
    err_at(&format!("{base}  - from: {{zone: ghost}}\n    to: a\n"), 7, 18, "unknown zone \"ghost\"");
    let e =
        err_at(&format!("{base}  - from: {{cidr: 10.0.0.0/8}}\n    to: {{cidr: 10.0.0.0/8}}\n"), 7, 5, "cidr to cidr");
    assert!(matches!(e, PolicyError::CidrToCidr { .. }));
    let e = err_at(&format!("{base}  - from: {{zone: a, cidr: 10.0.0.0/8}}\n    to: a\n"), 7, 11, "a rule side is");
    assert!(matches!(e, PolicyError::Peer { .. }));
    err_at(&format!("{base}  - from: [a]\n    to: a\n"), 7, 11, "a rule side is");
    err_at(&format!("{base}  - from: {{cidr: []}}\n    to: a\n"), 7, 11, "a rule side is");
    let e = err_at(&format!("{base}  - from: a\n    to: a\n    ports: [80, 0]\n"), 9, 17, "port 0 is out of range");
    assert!(matches!(e, PolicyError::Port { .. }));
    err_at(
        &format!("{base}  - from: a\n    to: a\n    ports:\n      - 80\n      - 65536\n"),
        11,
        9,
        "port 65536 is out of range",
    );
    err_at(&format!("{base}  - from: a\n    to: a\n    ports: [\"90-80\"]\n"), 9, 13, "start > end");
    err_at(&format!("{base}  - from: a\n    to: a\n    ports: [\"http\"]\n"), 9, 13, "\"http\" is not a port number");
    err_at(&format!("{base}  - from: a\n    to: a\n    ports: [\"1-70000\"]\n"), 9, 13, "port 70000 is out of range");
    err_at(&format!("{base}  - from: a\n    to: a\n    ports: [[1]]\n"), 9, 13, "a port is a number or a range");
    // Key budget: ports × ranges.
    assert!(Policy::parse(&format!("{base}  - from: a\n    to: a\n    ports: [\"1-4096\"]\n")).is_ok());
    let e = err_at(
        &format!("{base}  - from: a\n    to: a\n    ports: [\"1-4096\", 5000]\n"),
        9,
        12,
        "expands to 4097 map keys",
    );
    assert!(matches!(e, PolicyError::TooManyKeys { keys: 4097, .. }));
    err_at(
        &format!("{base}  - from: a\n    to: {{cidr: [10.0.0.0/8, 11.0.0.0/8]}}\n    ports: [\"1-2049\"]\n"),
        9,
        12,
        "4098",
    );
    let e = err_at(
        &format!("{base}  - name: x\n    from: a\n    to: a\n  - name: x\n    from: a\n    to: a\n"),
        10,
        11,
        "duplicate rule name \"x\" (first used on line 7)",
    );
    assert!(matches!(e, PolicyError::DuplicateRule { .. }));
    // A default name counts too.
    err_at(
        &format!("{base}  - from: a\n    to: a\n  - name: rule-1\n    from: a\n    to: a\n"),
        9,
        11,
        "duplicate rule name",
    );
    let e = err_at(&format!("{base}  - name: 'no spaces'\n    from: a\n    to: a\n"), 7, 11, "invalid rule name");
    assert!(matches!(e, PolicyError::RuleName { .. }));
}

#[test]
fn error_lines_are_usable_as_positions() {
    let e = Policy::parse("version: 1\nzones:\n  - name: a\n    members: []\n").unwrap_err();
    assert_eq!((e.line(), e.column()), (4, 14));
    assert_eq!(e.pos(), Pos { line: 4, column: 14 });
}

#[test]
fn membership_precedence() {
    let text = r#"version: 1
zones:
  - name: by-cgroup
    members:
      - cgroup: "/kubepods.slice/**"
  - name: by-k8s
    members:
      - namespace: shop
        labels: {app: web, tier: front}
      - service_account: batch
  - name: by-exe
    members:
      - exe: /usr/bin/curl
  - name: by-uid
    members:
      - uid: 1000
"#;
    let p = Policy::parse(text).unwrap();
    let labels: std::collections::BTreeMap<String, String> =
        [("app", "web"), ("tier", "front"), ("x", "y")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let pod = WorkloadAttrs {
        cgroup_path: Some("/kubepods.slice/pod1/c.scope"),
        k8s_namespace: Some("shop"),
        k8s_labels: Some(&labels),
        ..Default::default()
    };
    // Both cgroup-level zones match: the first in file order.
    assert_eq!(p.cgroup_zone(&pod), Some(1));
    let outside = WorkloadAttrs { cgroup_path: Some("/system.slice/x.service"), ..pod };
    assert_eq!(p.cgroup_zone(&outside), Some(2));
    // Every listed label must match.
    let few: std::collections::BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    assert_eq!(p.cgroup_zone(&WorkloadAttrs { k8s_labels: Some(&few), ..outside }), None);
    assert_eq!(p.cgroup_zone(&WorkloadAttrs { k8s_namespace: Some("other"), ..outside }), None);
    assert_eq!(p.cgroup_zone(&WorkloadAttrs { k8s_service_account: Some("batch"), ..Default::default() }), Some(2));
    // exe and uid members never match at cgroup level.
    let curl = WorkloadAttrs { exe: Some("/usr/bin/curl"), uid: Some(1000), ..pod };
    assert_eq!(p.cgroup_zone(&curl), Some(1));
    // zone_of: exe, then uid, then cgroup.
    assert_eq!(p.zone_of(&curl), Some(3));
    assert_eq!(p.zone_of(&WorkloadAttrs { exe: Some("/usr/bin/wget"), ..curl }), Some(4));
    assert_eq!(p.zone_of(&WorkloadAttrs { exe: Some("/usr/bin/wget"), uid: Some(0), ..curl }), Some(1));
    assert_eq!(p.zone_of(&WorkloadAttrs::default()), None);
    // Ingress (a receiving socket): uid first, then cgroup (zone_of without exe); never exe.
    assert_eq!(p.ingress_zone(&curl), Some(4));
    assert_eq!(p.ingress_zone(&WorkloadAttrs { uid: Some(0), ..curl }), Some(1));
    assert_eq!(p.ingress_zone(&WorkloadAttrs { cgroup_path: None, k8s_namespace: None, ..curl }), Some(4));
    assert_eq!(p.ingress_zone(&WorkloadAttrs { exe: Some("/usr/bin/curl"), ..Default::default() }), None);
    assert_eq!(p.exe_members(), vec![("/usr/bin/curl".to_string(), 3)]);
    assert_eq!(p.uid_members(), vec![(1000, 4)]);
}

#[test]
fn address_zone_is_longest_prefix() {
    let text = r#"version: 1
zones:
  - name: wide
    members: [{uid: 1}]
    addresses: [10.0.0.0/8, "::/0"]
  - name: narrow
    members: [{uid: 2}]
    addresses: [10.1.0.0/16, "fd00::/16"]
"#;
    let p = Policy::parse(text).unwrap();
    let z = |s: &str| p.address_zone(s.parse().unwrap());
    assert_eq!(z("10.1.2.3"), Some(2));
    assert_eq!(z("::ffff:10.1.2.3"), Some(2));
    assert_eq!(z("10.2.0.1"), Some(1));
    assert_eq!(z("192.168.0.1"), Some(1)); // ::/0 covers IPv4-mapped addresses, as in the kernel
    assert_eq!(z("fd00::1"), Some(2));
    assert_eq!(z("2001:db8::1"), Some(1));
    let v: Vec<_> = p.zones.iter().map(|z| z.addresses.len()).collect();
    assert_eq!(v, vec![2, 2]);
}

#[test]
fn the_documented_example_parses() {
    let doc = include_str!("../../../../docs/policy.md");
    let start = doc.find("```yaml\n").expect("an example in docs/policy.md") + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let p = Policy::parse(&doc[start..end]).unwrap();
    assert_eq!(p.zones.len(), 2);
    assert_eq!(p.rules.len(), 3);
    assert_eq!(p.rules[1].name, "rule-2");
}
