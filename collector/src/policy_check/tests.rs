//! Replay tests over a fixture shaped like the agent's JSONL output
//! (testdata/flows.jsonl) and over collector records.
use std::collections::HashMap;
use std::path::Path;

use wiretrail_common::policy::{FlowDirection, Mode, Policy, Verdict};
use wiretrail_proto::v1 as pb;

use super::*;

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy_check/testdata").join(name)
}

fn fixture() -> (Policy, Vec<Opened>) {
    (load_policy(&testdata("policy.yaml")).unwrap(), read_jsonl(&testdata("flows.jsonl")).unwrap())
}

#[test]
fn reads_connection_opens_from_jsonl() {
    let (_, opened) = fixture();
    // 13 lines: data, close and a notice are not connection opens.
    assert_eq!(opened.len(), 10);
    let o = &opened[0];
    assert_eq!(o.role, Role::Connect);
    assert_eq!(o.workload.cgroup_path.as_deref(), Some("/system.slice/web.service"));
    assert_eq!(o.workload.exe.as_deref(), Some("/usr/bin/python3.12"));
    assert_eq!(o.workload.uid, Some(33));
    assert_eq!(
        (o.local, o.remote, o.proto),
        (Some("10.1.0.5:40000".parse().unwrap()), "10.1.0.7:5432".parse().unwrap(), 6)
    );
    assert_eq!(opened[1].role, Role::Accept, "accept4 records are accepts");
    let pod = opened.last().unwrap();
    assert_eq!(pod.proto, 17);
    assert_eq!(pod.workload.k8s_namespace.as_deref(), Some("shop"));
    assert_eq!(pod.workload.k8s_service_account.as_deref(), Some("web"));
    assert_eq!(pod.workload.k8s_labels.get("app").map(String::as_str), Some("web"));
}

/// Records of the agent since records per message: a connection is one
/// record at its end (and one while open when long-lived), both ends in one
/// record when both were captured on the host.
#[test]
fn reads_connection_records_with_both_ends_once() {
    let opened = read_jsonl(&testdata("connections.jsonl")).unwrap();
    // conn 1 (client) paired with conn 2 (server): one record, two ends; conn 5
    // has an open record and an end record: once; conn 7 was seen mid-stream: no open.
    assert_eq!(opened.len(), 3, "{opened:#?}");
    let (c, s, l) = (&opened[0], &opened[1], &opened[2]);
    assert_eq!((c.role, c.workload.exe.as_deref(), c.workload.uid), (Role::Connect, Some("/usr/bin/curl"), Some(1000)));
    assert_eq!(c.remote, "127.0.0.1:8080".parse().unwrap());
    assert_eq!((s.role, s.workload.exe.as_deref(), s.workload.uid), (Role::Accept, Some("/usr/sbin/nginx"), Some(33)));
    assert_eq!((s.local, s.remote), (Some("127.0.0.1:8080".parse().unwrap()), "127.0.0.1:40000".parse().unwrap()));
    assert_eq!((l.role, l.remote, l.proto), (Role::Connect, "10.1.0.7:5432".parse().unwrap(), 6));
}

#[test]
fn collector_connection_records_give_both_ends() {
    let mut r = pb::Record {
        uid: 1000,
        conn_id: 1,
        local: Some(pb::Endpoint { address: "127.0.0.1".into(), port: 40000 }),
        remote: Some(pb::Endpoint { address: "127.0.0.1".into(), port: 8080 }),
        identity: [("exe".to_string(), "/usr/bin/curl".to_string())].into(),
        peer_identity: [("exe".to_string(), "/usr/sbin/nginx".to_string())].into(),
        connection: Some(pb::Connection { open_seen: true, end: "closed".into(), ..Default::default() }),
        host: "node-a".into(),
        ..Default::default()
    };
    r.set_kind(pb::RecordKind::Connection);
    r.set_transport(pb::TransportProtocol::Tcp);
    r.set_role(pb::ConnRole::Client);
    let mut w = pb::Side {
        conn_id: 2,
        uid: 33,
        local: Some(pb::Endpoint { address: "127.0.0.1".into(), port: 8080 }),
        remote: Some(pb::Endpoint { address: "127.0.0.1".into(), port: 40000 }),
        ..Default::default()
    };
    w.set_role(pb::ConnRole::Server);
    r.witness = Some(w);
    let ends = from_record(&r);
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[0].0, Some(("node-a".to_string(), 1)));
    assert_eq!((ends[0].1.role, ends[0].1.workload.exe.as_deref()), (Role::Connect, Some("/usr/bin/curl")));
    assert_eq!(ends[1].0, Some(("node-a".to_string(), 2)));
    assert_eq!((ends[1].1.role, ends[1].1.workload.exe.as_deref()), (Role::Accept, Some("/usr/sbin/nginx")));
    assert_eq!(ends[1].1.workload.uid, Some(33));
    // Seen mid-stream: not an open.
    r.connection = Some(pb::Connection { open_seen: false, ..Default::default() });
    assert_eq!(from_record(&r).len(), 1, "the witness end still opened it");
}

#[test]
fn replay_decides_and_deduplicates() {
    let (policy, opened) = fixture();
    let r = replay(&policy, &opened);
    assert_eq!(
        (r.checked, r.allowed, r.denied, r.audited, r.not_segmented, r.flows.len()),
        (10, 6, 2, 1, 1, 8),
        "{r:#?}"
    );
    let zone = |n: &str| policy.zone_by_name(n).map(|z| z.id);
    let find = |dir: FlowDirection, peer: &str, port: u16| {
        r.flows
            .iter()
            .find(|o| {
                o.flow.direction == dir
                    && o.flow.peer == peer.parse::<std::net::IpAddr>().unwrap()
                    && o.flow.port == port
            })
            .unwrap_or_else(|| panic!("no flow {dir:?} {peer} {port}"))
    };
    // web → db: the peer zone comes from postgres's accept records (same connection, other side).
    let o = find(FlowDirection::Egress, "10.1.0.7", 5432);
    assert_eq!((o.count, o.local_zone, o.flow.peer_zone), (2, zone("web"), zone("db")));
    assert_eq!((o.decision.verdict, o.decision.rule_id), (Verdict::Allow, 1));
    // ...and postgres's two accepts (two client ports) are one ingress flow, the peer found by web's connects.
    let o = find(FlowDirection::Ingress, "10.1.0.5", 5432);
    assert_eq!((o.count, o.local_zone, o.flow.peer_zone), (2, zone("db"), zone("web")));
    assert_eq!((o.decision.verdict, o.decision.rule_id), (Verdict::Allow, 1));
    // CIDR rules.
    assert_eq!(find(FlowDirection::Egress, "10.0.0.53", 53).decision.rule_id, 2);
    assert_eq!(find(FlowDirection::Egress, "10.96.0.10", 53).decision.rule_id, 3);
    // Denied: nothing allows ssh to the db host, nor inbound 8080 (the IPv4-mapped peer is shown as IPv4).
    let o = find(FlowDirection::Egress, "10.1.0.7", 22);
    assert_eq!((o.decision.verdict, o.decision.mode, o.flow.peer_zone), (Verdict::Deny, Some(Mode::Enforce), None));
    let o = find(FlowDirection::Ingress, "192.168.1.10", 8080);
    assert_eq!((o.decision.verdict, o.local_zone), (Verdict::Deny, zone("web")));
    // Audit zone by uid; a process in no zone is not segmented.
    let audited: Vec<_> = r.flows.iter().filter(|o| o.decision.verdict == Verdict::Audit).collect();
    assert_eq!(audited.len(), 1);
    assert_eq!((audited[0].flow.workload.uid, audited[0].local_zone), (Some(1001), zone("tools")));
    let ns: Vec<_> = r.flows.iter().filter(|o| o.decision.verdict == Verdict::NotSegmented).collect();
    assert_eq!(ns[0].flow.workload.uid, Some(1000));
    // Findings: denied first, then audited.
    let v: Vec<Verdict> = r.findings().map(|o| o.decision.verdict).collect();
    assert_eq!(v, vec![Verdict::Deny, Verdict::Deny, Verdict::Audit]);
}

#[test]
fn renders_table_and_json() {
    let (policy, opened) = fixture();
    let r = replay(&policy, &opened);
    let mut t = Vec::new();
    table(&mut t, &policy, &r).unwrap();
    let t = String::from_utf8(t).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("VERDICT  COUNT  DIR"), "{t}");
    assert_eq!(lines.len(), 1 + 3 + 2, "{t}");
    assert!(lines[1].starts_with("deny") && lines[1].contains("10.1.0.7") && lines[1].contains("22/tcp"), "{t}");
    assert!(lines[1].contains("web (enforce)"), "{t}");
    assert!(
        lines[3].starts_with("audit")
            && lines[3].contains("/usr/bin/curl in /user.slice/user-1001.slice/session-3.scope (uid 1001)")
            && lines[3].contains("tools (audit)")
    );
    assert!(
        lines[5].starts_with("10 flows checked (8 distinct): 6 allowed, 2 denied, 1 audited, 1 not segmented"),
        "{t}"
    );

    let mut j = Vec::new();
    json(&mut j, &policy, &r).unwrap();
    let vals: Vec<serde_json::Value> =
        String::from_utf8(j).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(vals.len(), 4);
    assert_eq!(vals[1]["verdict"], "deny");
    assert_eq!(vals[1]["direction"], "ingress");
    assert_eq!(vals[1]["peer"], "192.168.1.10");
    assert_eq!(vals[1]["port"], 8080);
    assert_eq!(vals[1]["deciding_zone"], "web");
    assert_eq!(vals[1]["workload"]["cgroup_path"], "/system.slice/web.service");
    assert_eq!(vals[3]["summary"]["denied"], 2);
    assert_eq!(vals[3]["summary"]["policy_sha256"], policy.sha256.as_str());
}

fn record(
    role: &str,
    syscall: &str,
    identity: &[(&str, &str)],
    uid: u32,
    local: (&str, u32),
    remote: (&str, u32),
) -> pb::Record {
    let mut r = pb::Record {
        uid,
        local: Some(pb::Endpoint { address: local.0.into(), port: local.1 }),
        remote: Some(pb::Endpoint { address: remote.0.into(), port: remote.1 }),
        identity: identity.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        parsed_json:
            serde_json::json!({"syscall": syscall, "fd": 5, "tls": null, "peer_from_arg": false, "midstream": false,
            "untracked": false, "tx_total": 0, "rx_total": 0, "role": role})
            .to_string(),
        host: "node-a".into(),
        ..Default::default()
    };
    r.set_kind(pb::RecordKind::ConnectionOpen);
    r.set_transport(pb::TransportProtocol::Tcp);
    r
}

#[test]
fn collector_records() {
    let pod = [
        ("cgroup_path", "/kubepods.slice/x.scope"),
        ("k8s_namespace", "shop"),
        ("k8s_service_account", "web"),
        ("k8s_label.app", "web"),
        ("k8s_label.tier", "front"),
        ("container_id", "abc"),
    ];
    let c = from_record(&record("connect", "connect", &pod, 0, ("10.244.0.9", 40000), ("10.244.1.3", 5432)))
        .pop()
        .unwrap()
        .1;
    assert_eq!(c.role, Role::Connect);
    assert_eq!(c.workload.k8s_namespace.as_deref(), Some("shop"));
    assert_eq!(c.workload.k8s_service_account.as_deref(), Some("web"));
    assert_eq!(c.workload.k8s_labels.len(), 2);
    assert_eq!(c.workload.uid, Some(0));
    assert_eq!(c.host, "node-a");
    let db = [("exe", "/usr/lib/postgresql/16/bin/postgres")];
    // Without "role", the syscall tells the side.
    let mut a = record("", "accept4", &db, 114, ("10.244.1.3", 5432), ("10.244.0.9", 40000));
    a.parsed_json = serde_json::json!({"syscall": "accept4"}).to_string();
    let a = from_record(&a).pop().unwrap().1;
    assert_eq!(a.role, Role::Accept);
    // Not connection opens.
    let mut data = record("connect", "connect", &db, 0, ("1.1.1.1", 1), ("2.2.2.2", 2));
    data.set_kind(pb::RecordKind::DataChunk);
    assert!(from_record(&data).is_empty());
    let mut unix = record("connect", "connect", &db, 0, ("1.1.1.1", 1), ("2.2.2.2", 2));
    unix.set_transport(pb::TransportProtocol::Unix);
    assert!(from_record(&unix).is_empty());
    let text = r#"version: 1
zones:
  - name: shop
    mode: enforce
    members:
      - {namespace: shop, labels: {app: web}}
  - name: db
    mode: enforce
    members: [ZZZ]
rules:
  - {from: shop, to: db, ports: [5432]}
"#;
    // db by cgroup: both sides see the rule.
    let policy = Policy::parse(&text.replace("ZZZ", "{cgroup: /system.slice/postgresql.service}")).unwrap();
    let mut a_cg = a.clone();
    a_cg.workload.cgroup_path = Some("/system.slice/postgresql.service".into());
    let r = replay(&policy, &[c.clone(), a_cg]);
    assert_eq!((r.checked, r.allowed, r.denied), (2, 2, 0), "{r:#?}");
    assert!(r.flows.iter().all(|o| o.decision.rule_id == 1));
    // db by exe: the receiving socket has no exe, so postgres's accept is not
    // segmented, and its address is no zone's: shop's connect is denied.
    let policy = Policy::parse(&text.replace("ZZZ", "{exe: /usr/lib/postgresql/16/bin/postgres}")).unwrap();
    let r = replay(&policy, &[c, a]);
    assert_eq!((r.checked, r.denied, r.not_segmented), (2, 1, 1), "{r:#?}");
}

#[test]
fn policy_errors_name_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("wiretrail-policy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "version: 1\nzones:\n  - name: a\n    members:\n      - uid: 1\nrules:\n  - from: a\n    to: b\n",
    )
    .unwrap();
    let e = load_policy(&f).unwrap_err().to_string();
    assert_eq!(e, format!("{}: line 8, column 9: unknown zone \"b\"", f.display()));
    std::fs::write(dir.join("bad.jsonl"), "{\"type\": \"connect\"}\nnot json\n").unwrap();
    let e = read_jsonl(&dir.join("bad.jsonl")).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2: not a JSON record"), "{e}");
    // Valid, but beyond the agent's map capacities: refused with what would fail.
    let mut big = String::from("version: 1\nzones:\n");
    for i in 0..5000 {
        big.push_str(&format!("  - name: z{i}\n    members: [{{uid: {i}}}]\n"));
    }
    std::fs::write(&f, big).unwrap();
    let e = load_policy(&f).unwrap_err().to_string();
    assert!(e.contains("the agent cannot install this policy"), "{e}");
    assert!(e.contains("ZONES needs 5000 entries") && e.contains("UID_ZONES needs 5000 entries"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
