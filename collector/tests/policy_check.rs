//! `wiretrail policy check` as a user runs it: exit codes and messages.
use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy_check/testdata").join(name)
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wiretrail")).arg("policy").arg("check").args(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn bad_policy_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, "version: 1\nzones:\n  - name: web\n    addresses: [10.0.0.1/24]\n    members: [{uid: 1}]\n")
        .unwrap();
    let flows = testdata("flows.jsonl");
    let (code, stdout, stderr) = check(&["--policy", p.to_str().unwrap(), "--flows", flows.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    let want = format!(
        "{}: line 4, column 17: CIDR \"10.0.0.1/24\" has host bits set: did you mean 10.0.0.0/24?",
        p.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn exit_code_tells_whether_something_is_denied() {
    let flows = testdata("flows.jsonl");
    let policy = testdata("policy.yaml");
    let (code, stdout, stderr) = check(&["--policy", policy.to_str().unwrap(), "--flows", flows.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("2 denied"), "{stdout}");
    // Everything in audit mode: nothing is denied.
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.yaml");
    std::fs::write(&audit, std::fs::read_to_string(&policy).unwrap().replace("mode: enforce", "mode: audit")).unwrap();
    let (code, stdout, _) = check(&["--policy", audit.to_str().unwrap(), "--flows", flows.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stdout}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!((last["summary"]["denied"].as_u64(), last["summary"]["audited"].as_u64()), (Some(0), Some(3)));
    // A missing flows file is an error, not a pass.
    let (code, _, stderr) = check(&["--policy", policy.to_str().unwrap(), "--flows", "/nonexistent/flows.jsonl"]);
    assert_eq!(code, 2, "{stderr}");
}

mod common;

use wiretrail_proto::v1::{Batch, Endpoint, Record, RecordKind, TransportProtocol};

/// A connection-open record as the agent ships it (see agent/src/output/wire.rs).
fn open(role: &str, identity: &[(&str, &str)], uid: u32, local: (&str, u32), remote: (&str, u32)) -> Record {
    let mut r = Record {
        capture_time_ns: 1_700_000_000_000_000_000,
        conn_id: 7,
        local: Some(Endpoint { address: local.0.into(), port: local.1 }),
        remote: Some(Endpoint { address: remote.0.into(), port: remote.1 }),
        pid: 42,
        uid,
        host: "node-a".into(),
        identity: identity.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        parsed_json: serde_json::json!({"syscall": if role == "accept" { "accept4" } else { "connect" }, "fd": 3,
            "tls": null, "peer_from_arg": false, "midstream": false, "untracked": false, "tx_total": 0, "rx_total": 0,
            "role": role})
        .to_string(),
        ..Default::default()
    };
    r.set_kind(RecordKind::ConnectionOpen);
    r.set_transport(TransportProtocol::Tcp);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_connection_opens_from_the_collector() {
    use tokio_stream::StreamExt;
    let data = tempfile::tempdir().unwrap();
    let srv = common::Server::start(common::plain_config(data.path())).await;
    let web = [
        ("cgroup_path", "/kubepods.slice/pod-web.slice/c1.scope"),
        ("k8s_namespace", "shop"),
        ("k8s_label.app", "web"),
    ];
    let db = [("exe", "/usr/lib/postgresql/16/bin/postgres"), ("cgroup_path", "/system.slice/postgresql.service")];
    let mut records = vec![
        open("connect", &web, 0, ("10.244.0.9", 40000), ("10.244.1.3", 5432)),
        open("accept", &db, 114, ("10.244.1.3", 5432), ("10.244.0.9", 40000)),
        open("connect", &web, 0, ("10.244.0.9", 40010), ("10.244.1.3", 6379)),
    ];
    // A data chunk of the same connection is not a flow.
    let mut chunk = open("connect", &web, 0, ("10.244.0.9", 40000), ("10.244.1.3", 5432));
    chunk.set_kind(RecordKind::DataChunk);
    chunk.parsed_json = String::new();
    records.push(chunk);
    let mut ingest = wiretrail_proto::v1::ingest_client::IngestClient::new(common::channel(srv.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut acks = ingest.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(Batch { agent_id: "agent-p".into(), boot_id: "b".into(), seq: 0, records, ..Default::default() })
        .await
        .unwrap();
    acks.next().await.unwrap().unwrap();
    drop(tx);
    drop(acks);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(
        &p,
        r#"version: 1
zones:
  - name: web
    mode: enforce
    members:
      - {namespace: shop, labels: {app: web}}
  - name: db
    members: [{cgroup: /system.slice/postgresql.service}]
rules:
  - {name: web-db, from: web, to: db, ports: [5432], protocol: tcp}
"#,
    )
    .unwrap();
    let addr = srv.addr.to_string();
    let args = [
        "--policy".to_string(),
        p.display().to_string(),
        "--collector".into(),
        format!("http://{addr}"),
        "--json".into(),
    ];
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || check(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap();
    srv.stop().await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["verdict"], "deny");
    assert_eq!((lines[0]["peer"].as_str(), lines[0]["port"].as_u64()), (Some("10.244.1.3"), Some(6379)));
    assert_eq!(lines[0]["local_zone"], "web");
    let s = &lines[1]["summary"];
    assert_eq!((s["checked"].as_u64(), s["allowed"].as_u64(), s["denied"].as_u64()), (Some(3), Some(2), Some(1)));
}
