//! End to end, as root: a FIX 4.4 session between an initiator and an acceptor
//! built on simplefix (PyPI), captured by the agent; every message's fields,
//! BodyLength and CheckSum checked from its raw bytes, and a deliberately
//! corrupted message recorded with an error, never dropped.
mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;
use wiretrail_tests::{
    agent::Agent,
    free_port,
    peers::{Proc, venv_python},
    protocol_scripts::*,
    require_root, serial,
};

/// One simplefix session under the agent: what the initiator sent and
/// received (as it traced them) and every record.
struct FixRun {
    port: u16,
    pid: u32,
    sent: Vec<u8>,
    received: Vec<u8>,
    recs: Records,
}

/// Runs `acceptor` and `initiator` (scripts after `FIX_COMMON`) under the
/// agent; asserts what each printed (`initiator_says`) and saw (`acceptor_saw`).
fn run_session(acceptor: &str, initiator: &str, initiator_says: &str, acceptor_saw: &str) -> FixRun {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let acceptor_py = write_script(dir.path(), "acceptor.py", &format!("{FIX_COMMON}{acceptor}"));
    let initiator_py = write_script(dir.path(), "initiator.py", &format!("{FIX_COMMON}{initiator}"));
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
    assert_eq!(String::from_utf8_lossy(&out.stdout), initiator_says);
    acceptor.wait_success(Duration::from_secs(20));
    let seen = std::fs::read_to_string(dir.path().join("acceptor.out")).unwrap();
    assert_eq!(seen, acceptor_saw, "what the acceptor saw");
    let sent = std::fs::read(out_base.with_extension("sent")).unwrap();
    let received = std::fs::read(out_base.with_extension("received")).unwrap();
    std::thread::sleep(SETTLE);
    let (text, _stats) = agent.stop();
    FixRun { port, pid, sent, received, recs: Records::parse(&text) }
}

#[test]
fn fix_initiator_and_acceptor_with_simplefix() {
    require_root();
    let _g = serial();
    let FixRun { port, pid, sent, received, recs } =
        run_session(FIX_ACCEPTOR, FIX_INITIATOR, "A 8 5\n", "A D 0 garbled 5");
    recs.dump("fix_initiator_and_acceptor_with_simplefix");

    let remote = format!("127.0.0.1:{port}");
    let cid = recs.client_conn(pid, &remote);
    assert_eq!(assert_whole(&recs, cid, Direction::Egress, false), sent, "egress != what the initiator sent");
    assert_eq!(assert_whole(&recs, cid, Direction::Ingress, false), received, "ingress != what the initiator received");
    let sid = recs.conn_between(&remote, &recs.side(cid).local.unwrap().to_string());
    assert_eq!(assert_whole(&recs, sid, Direction::Ingress, false), sent);
    assert_eq!(assert_whole(&recs, sid, Direction::Egress, false), received);

    let check = |msgs: &[Msg], types: &[&str], sender: &str, target: &str, bad: Option<usize>| {
        let got: Vec<&str> = msgs.iter().map(|m| m.fields["msg_type"].as_str().unwrap_or("?")).collect();
        assert_eq!(got, types, "{msgs:#?}");
        for (i, m) in msgs.iter().enumerate() {
            let b = &m.fields;
            let bytes = &m.raw;
            // One-way messages: one record each, holding both ends.
            assert_eq!((m.role, m.exchange_id, m.both_ends), (PartRole::Message, None, true), "{m:?}");
            assert_eq!(b["type"], "fix");
            assert_eq!(b["begin_string"], "FIX.4.4");
            assert_eq!((b["sender_comp_id"].as_str(), b["target_comp_id"].as_str()), (Some(sender), Some(target)));
            assert_eq!(b["msg_seq_num"].as_u64(), Some(i as u64 + 1), "{m:?}");
            assert!(b["sending_time"].is_string());
            // BodyLength: bytes after the 9= field up to the CheckSum field.
            let after_9 = find(bytes, b"\x0135=").unwrap() + 1;
            assert_eq!(b["body_length"].as_u64(), Some((bytes.len() - 7 - after_9) as u64), "{m:?}");
            assert_eq!(fix_field(m, 9), Some(b["body_length"].as_u64().unwrap().to_string()));
            let declared: u64 = b["checksum"].as_u64().unwrap();
            if bad == Some(i) {
                assert_eq!(b["valid"], false, "{m:?}");
                assert_eq!(declared, (fix_checksum(bytes) + 1) % 256);
                let err = m.error.as_deref().expect("malformed message recorded with an error");
                assert!(err.contains("CheckSum"), "{err}");
                assert!(b["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("CheckSum")));
                assert_eq!(fix_field(m, 11).as_deref(), Some("ORD-BAD"));
            } else {
                assert_eq!(b["valid"], true, "{m:?}");
                assert_eq!(m.error, None, "{m:?}");
                assert_eq!(declared, fix_checksum(bytes), "{m:?}");
            }
            let cat = if ["A", "0", "5"].contains(&types[i]) { "session" } else { "application" };
            assert_eq!(b["category"], cat, "{m:?}");
        }
    };
    let out_msgs = messages(&recs, cid, Direction::Egress, false);
    let in_msgs = messages(&recs, cid, Direction::Ingress, false);
    check(&out_msgs, &["A", "D", "0", "D", "5"], "CLIENT", "EXCH", Some(3));
    check(&in_msgs, &["A", "8", "5"], "EXCH", "CLIENT", None);
    // The acceptor's end sees the same messages, from the same records.
    assert_eq!(messages(&recs, sid, Direction::Ingress, false).len(), 5);
    assert_eq!(out_msgs[0].fields["msg_type_name"], "Logon");
    assert_eq!(out_msgs[1].fields["msg_type_name"], "NewOrderSingle");
    assert_eq!(out_msgs[2].fields["msg_type_name"], "Heartbeat");
    assert_eq!(out_msgs[4].fields["msg_type_name"], "Logout");
    assert_eq!(in_msgs[1].fields["msg_type_name"], "ExecutionReport");
    assert_eq!(
        (fix_field(&out_msgs[1], 11), fix_field(&out_msgs[1], 55), fix_field(&out_msgs[1], 38)),
        (Some("ORD-1".into()), Some("WTRL".into()), Some("100".into()))
    );
    assert_eq!(
        (fix_field(&in_msgs[1], 11), fix_field(&in_msgs[1], 150), fix_field(&in_msgs[1], 39)),
        (Some("ORD-1".into()), Some("0".into()), Some("0".into()))
    );
}

/// The session layer on real wire bytes: the initiator skips MsgSeqNum 3, the
/// acceptor asks for it again (ResendRequest 3..0), the initiator fills the
/// gap with SequenceReset-GapFill and resends the order at 4 with PossDupFlag.
/// The records flag the gap, the ResendRequest, the gap fill and the resend,
/// and link the resent messages to the request they answer.
#[test]
fn fix_sequence_gap_resend_request_and_gap_fill() {
    require_root();
    let _g = serial();
    let FixRun { port, pid, sent, received, recs } =
        run_session(FIX_GAP_ACCEPTOR, FIX_GAP_INITIATOR, "A 8 2 8 5\n", "A D gap:3 fill:4 D(dup) 5");
    recs.dump("fix_sequence_gap_resend_request_and_gap_fill");

    let remote = format!("127.0.0.1:{port}");
    let cid = recs.client_conn(pid, &remote);
    assert_eq!(assert_whole(&recs, cid, Direction::Egress, false), sent, "egress != what the initiator sent");
    assert_eq!(assert_whole(&recs, cid, Direction::Ingress, false), received, "ingress != what the initiator received");
    let local = recs.side(cid).local.expect("initiator address").to_string();
    let sid = recs.conn_between(&remote, &local);
    assert_eq!(assert_whole(&recs, sid, Direction::Ingress, false), sent);
    assert_eq!(assert_whole(&recs, sid, Direction::Egress, false), received);

    // Both sides of the connection see the same session events.
    let all = recs.exchanges();
    for (out_dir, conn) in [(Direction::Egress, cid), (Direction::Ingress, sid)] {
        let outs = messages(&recs, conn, out_dir, false);
        let ins = messages(&recs, conn, out_dir.opposite(), false);
        let kinds = |ms: &[Msg]| -> Vec<(String, u64)> {
            ms.iter()
                .map(|m| {
                    (m.fields["msg_type"].as_str().unwrap().to_string(), m.fields["msg_seq_num"].as_u64().unwrap())
                })
                .collect()
        };
        let s = |t: &str, n: u64| (t.to_string(), n);
        assert_eq!(kinds(&outs), [s("A", 1), s("D", 2), s("D", 4), s("4", 3), s("D", 4), s("5", 5)]);
        assert_eq!(kinds(&ins), [s("A", 1), s("8", 2), s("2", 3), s("8", 4), s("5", 5)]);
        for m in outs.iter().chain(&ins) {
            assert_eq!((m.error.clone(), m.fields["valid"].clone()), (None, Value::Bool(true)), "{m}");
            assert_eq!((m.role, m.exchange_id), (PartRole::Message, None), "FIX messages are one-way: {m}");
        }
        let sess = |m: &Msg| m.fields["session"].clone();
        assert_eq!(sess(&outs[0])["baseline"], true);
        assert_eq!(sess(&outs[1])["gap"], Value::Null);
        // 4 arrives where 3 was expected.
        assert_eq!(
            sess(&outs[2])["gap"],
            serde_json::json!({"expected": 3, "received": 4, "missing": 1}),
            "{}",
            outs[2]
        );
        // The acceptor's ResendRequest for 3 onwards.
        assert_eq!(ins[2].fields["msg_type_name"], "ResendRequest");
        assert_eq!(sess(&ins[2])["resend_request"], serde_json::json!({"begin": 3, "end": 0}));
        // The gap fill over 3: a SequenceReset answering the request.
        let fill = sess(&outs[3]);
        assert_eq!(fill["sequence_reset"], serde_json::json!({"new_seq_no": 4, "gap_fill": true}), "{}", outs[3]);
        assert_eq!((fill["resent"].as_bool(), fill["answers_resend_request"].as_bool()), (Some(true), Some(true)));
        assert_eq!(outs[3].fields["poss_dup"], true);
        // The order resent at 4 with PossDupFlag and OrigSendingTime.
        let again = sess(&outs[4]);
        assert_eq!(
            (again["resent"].as_bool(), again["answers_resend_request"].as_bool(), again["gap"].clone()),
            (Some(true), Some(true), Value::Null)
        );
        assert_eq!(
            (outs[4].fields["poss_dup"].as_bool(), fix_field(&outs[4], 122)),
            (Some(true), Some("20260101-00:00:00.000".to_string()))
        );
        assert_eq!(fix_field(&outs[4], 11), fix_field(&outs[2], 11));
        // The session goes on at 5, no flags; nothing flagged on the acceptor's side.
        let logout = sess(&outs[5]);
        assert_eq!(
            (logout["gap"].clone(), logout["resent"].as_bool(), logout["expected_seq_num"].as_u64()),
            (Value::Null, Some(false), Some(5))
        );
        for m in &ins {
            assert_eq!((sess(m)["gap"].clone(), sess(m)["seq_too_low"].as_bool()), (Value::Null, Some(false)), "{m}");
        }
        assert_eq!(fix_field(&outs[0], 50).as_deref(), Some("DESK1"));
        // The session ids each end sent are attributes of its identity on
        // the records (the sender's: `app` when the record is its own side,
        // `peer_app` when it is the other end's).
        let sender_attrs = |m: &Msg, sender: u64| {
            let w = &all[m.record].who;
            if w.side.conn_id == sender { w.app.clone() } else { w.peer_app.clone() }
        };
        let initiator = sender_attrs(&outs[5], cid);
        let acceptor = sender_attrs(&ins[4], sid);
        let has = |attrs: &[(String, String)], k: &str, v: &str| attrs.iter().any(|(a, b)| a == k && b == v);
        assert!(has(&initiator, "fix.sender_comp_id", "CLIENT"), "{initiator:?}");
        assert!(has(&initiator, "fix.sender_sub_id", "DESK1"), "{initiator:?}");
        assert!(has(&acceptor, "fix.sender_comp_id", "EXCH"), "{acceptor:?}");
    }
}
