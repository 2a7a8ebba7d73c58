//! End to end, as root: a FIX 4.4 session between an initiator and an acceptor
//! built on simplefix (PyPI), captured by the agent; every message's fields,
//! BodyLength and CheckSum checked from its raw bytes, and a deliberately
//! corrupted message recorded with an error, never dropped.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    free_port,
    peers::{Proc, venv_python},
    protocol_records::*,
    protocol_scripts::*,
    require_root, serial,
};

#[test]
fn fix_initiator_and_acceptor_with_simplefix() {
    require_root();
    let _g = serial();
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let acceptor_py = write_script(dir.path(), "acceptor.py", &format!("{FIX_COMMON}{FIX_ACCEPTOR}"));
    let initiator_py = write_script(dir.path(), "initiator.py", &format!("{FIX_COMMON}{FIX_INITIATOR}"));
    let port = free_port();
    let agent = Agent::start(&[]);
    let mut cmd = Command::new(&python);
    cmd.arg(&acceptor_py).arg(port.to_string()).arg(dir.path().join("acceptor.out"));
    let mut acceptor = Proc::spawn(cmd, &dir.path().join("acceptor.log"));
    let listening = wiretrail_tests::wait_until(Duration::from_secs(30), || acceptor.log().contains("ready"));
    assert!(listening, "acceptor did not start:\n{}", acceptor.log());

    let out_base = dir.path().join("initiator");
    let child = Command::new(&python)
        .arg(&initiator_py)
        .arg(port.to_string())
        .arg(&out_base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn FIX initiator");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "initiator: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A 8 5\n");
    acceptor.wait_success(Duration::from_secs(20));
    let seen = std::fs::read_to_string(dir.path().join("acceptor.out")).unwrap();
    assert_eq!(seen, "A D 0 garbled 5", "what the acceptor saw");
    let sent = std::fs::read(out_base.with_extension("sent")).unwrap();
    let received = std::fs::read(out_base.with_extension("received")).unwrap();
    std::thread::sleep(SETTLE);
    let (recs, _stats) = agent.stop();
    dump(&recs, "fix_initiator_and_acceptor_with_simplefix");

    let remote = format!("127.0.0.1:{port}");
    let cid = client_conn(&recs, pid, &remote);
    assert_eq!(assert_tiles(&recs, cid, "egress", "fix"), sent, "egress != what the initiator sent");
    assert_eq!(assert_tiles(&recs, cid, "ingress", "fix"), received, "ingress != what the initiator received");
    let sid = server_conn(&recs, &remote, &local_of(&recs, cid));
    assert_eq!(assert_tiles(&recs, sid, "ingress", "fix"), sent);
    assert_eq!(assert_tiles(&recs, sid, "egress", "fix"), received);

    let check = |recs: &[&Value], types: &[&str], sender: &str, target: &str, bad: Option<usize>| {
        let got: Vec<&str> = recs.iter().map(|r| r["body"]["msg_type"].as_str().unwrap_or("?")).collect();
        assert_eq!(got, types, "{recs:#?}");
        for (i, r) in recs.iter().enumerate() {
            let b = &r["body"];
            let bytes = raw(r);
            assert_eq!(b["type"], "fix");
            assert_eq!(b["begin_string"], "FIX.4.4");
            assert_eq!((b["sender_comp_id"].as_str(), b["target_comp_id"].as_str()), (Some(sender), Some(target)));
            assert_eq!(b["msg_seq_num"].as_u64(), Some(i as u64 + 1), "{r}");
            assert!(b["sending_time"].is_string());
            // BodyLength: bytes after the 9= field up to the CheckSum field.
            let after_9 = find(&bytes, b"\x0135=").unwrap() + 1;
            assert_eq!(b["body_length"].as_u64(), Some((bytes.len() - 7 - after_9) as u64), "{r}");
            assert_eq!(fix_field(r, 9), Some(b["body_length"].as_u64().unwrap().to_string().as_str()));
            let declared: u64 = b["checksum"].as_u64().unwrap();
            if bad == Some(i) {
                assert_eq!(b["valid"], false, "{r}");
                assert_eq!(declared, (fix_checksum(&bytes) + 1) % 256);
                let err = r["error"].as_str().expect("malformed message recorded with an error");
                assert!(err.contains("CheckSum"), "{err}");
                assert!(b["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("CheckSum")));
                assert_eq!(fix_field(r, 11), Some("ORD-BAD"));
            } else {
                assert_eq!(b["valid"], true, "{r}");
                assert_eq!(r["error"], Value::Null, "{r}");
                assert_eq!(declared, fix_checksum(&bytes), "{r}");
            }
            let cat = if ["A", "0", "5"].contains(&types[i]) { "session" } else { "application" };
            assert_eq!(b["category"], cat, "{r}");
        }
    };
    let out_msgs = msgs(&recs, cid, "egress");
    let in_msgs = msgs(&recs, cid, "ingress");
    check(&out_msgs, &["A", "D", "0", "D", "5"], "CLIENT", "EXCH", Some(3));
    check(&in_msgs, &["A", "8", "5"], "EXCH", "CLIENT", None);
    assert_eq!(out_msgs[0]["body"]["msg_type_name"], "Logon");
    assert_eq!(out_msgs[1]["body"]["msg_type_name"], "NewOrderSingle");
    assert_eq!(out_msgs[2]["body"]["msg_type_name"], "Heartbeat");
    assert_eq!(out_msgs[4]["body"]["msg_type_name"], "Logout");
    assert_eq!(in_msgs[1]["body"]["msg_type_name"], "ExecutionReport");
    assert_eq!(
        (fix_field(out_msgs[1], 11), fix_field(out_msgs[1], 55), fix_field(out_msgs[1], 38)),
        (Some("ORD-1"), Some("WTRL"), Some("100"))
    );
    assert_eq!(
        (fix_field(in_msgs[1], 11), fix_field(in_msgs[1], 150), fix_field(in_msgs[1], 39)),
        (Some("ORD-1"), Some("0"), Some("0"))
    );
}
