use super::*;
use proptest::prelude::*;

fn soh(s: &str) -> Bytes {
    Bytes::from(s.replace('|', "\x01"))
}

fn parse_one(s: &str) -> (usize, FixMessage, Option<String>) {
    let mut p = FixParser::new(&ProtoConfig::default());
    match p.parse(Direction::Egress, &soh(s)) {
        Parse::Message(Parsed { len, body: Body::Fix(m), error, .. }) => (len, *m, error),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Checksums and body lengths below were computed independently (byte sum
/// modulo 256; body = bytes after the 9= field up to the SOH before 10=).
const LOGON: &str = "8=FIX.4.4|9=69|35=A|49=CLIENT1|56=BROKER1|34=1|52=20261121-12:00:00.000|98=0|108=30|10=205|";
const NEW_ORDER: &str = "8=FIX.4.4|9=134|35=D|49=CLIENT1|56=BROKER1|34=2|52=20261121-12:00:01.000|11=ORD-0001|21=1|55=AAPL|54=1|60=20261121-12:00:01.000|38=100|40=2|44=187.25|10=100|";
const EXEC_REPORT: &str = "8=FIX.4.4|9=132|35=8|49=BROKER1|56=CLIENT1|34=2|52=20261121-12:00:01.050|37=B-77|11=ORD-0001|17=E-1|150=0|39=0|55=AAPL|54=1|38=100|151=100|14=0|6=0|10=173|";
const HEARTBEAT_42: &str = "8=FIX.4.2|9=57|35=0|49=CLIENT1|56=BROKER1|34=3|52=20261121-12:00:31.000|10=164|";
/// The widely published FIX 4.2 execution report example.
const PHLX_42: &str = "8=FIX.4.2|9=178|35=8|49=PHLX|56=PERS|52=20071123-05:30:00.000|11=ATOMNOCCC9990900|20=3|150=E|39=E|55=MSFT|167=CS|54=1|38=15|40=2|44=15|58=PHLX EQUITY TESTING|59=0|47=C|32=0|31=0|151=15|14=0|6=0|10=128|";

#[test]
fn valid_session_and_application_messages() {
    let (len, m, err) = parse_one(LOGON);
    assert_eq!((len, err), (LOGON.len(), None));
    assert!(m.valid);
    assert_eq!(m.begin_string, "FIX.4.4");
    assert_eq!(m.msg_type.unwrap(), "A");
    assert_eq!((m.msg_type_name, m.category), (Some("Logon"), FixCategory::Session));
    assert_eq!(
        (m.sender_comp_id.unwrap(), m.target_comp_id.unwrap()),
        (Text::from_static("CLIENT1"), Text::from_static("BROKER1"))
    );
    assert_eq!((m.msg_seq_num, m.body_length, m.checksum), (Some(1), Some(69), Some(205)));
    assert_eq!(m.fields.len(), 10);
    assert_eq!(m.fields[8], FixField { tag: 108, value: Text::from_static("30") });

    let (_, m, err) = parse_one(NEW_ORDER);
    assert_eq!(err, None);
    assert_eq!(
        (m.msg_type_name, m.category, m.msg_seq_num),
        (Some("NewOrderSingle"), FixCategory::Application, Some(2))
    );
    let (_, m, err) = parse_one(EXEC_REPORT);
    assert_eq!((m.msg_type_name, err), (Some("ExecutionReport"), None));
    let (_, m, err) = parse_one(HEARTBEAT_42);
    assert_eq!((m.begin_string, m.msg_type_name, err), (Text::from_static("FIX.4.2"), Some("Heartbeat"), None));
}

#[test]
fn published_example_without_seq_num_is_framed_and_flagged() {
    let (len, m, err) = parse_one(PHLX_42);
    assert_eq!(len, PHLX_42.len());
    // Framing and checksum are right; the example omits MsgSeqNum (34).
    assert!(m.valid);
    assert_eq!(err.as_deref(), Some("required header field 34 missing"));
    assert_eq!(m.sending_time.unwrap(), "20071123-05:30:00.000");
}

#[test]
fn bad_checksum_and_body_length_are_recorded() {
    let bad_sum = LOGON.replace("10=205", "10=204");
    let (len, m, err) = parse_one(&bad_sum);
    assert_eq!(len, LOGON.len());
    assert!(!m.valid);
    assert_eq!(err.as_deref(), Some("CheckSum 204 but the bytes sum to 205"));

    // Declared 60, real 69: framed by the trailer, both errors reported.
    let bad_len = LOGON.replace("9=69", "9=60");
    let (len, m, err) = parse_one(&bad_len);
    assert_eq!(len, bad_len.len());
    assert!(!m.valid);
    let err = err.unwrap();
    assert!(err.contains("BodyLength 60 but the body is 69 bytes"), "{err}");
    assert!(err.contains("CheckSum 205"), "{err}");
    // Declared too long, next message behind it: still cut at the real trailer.
    let two = format!("{}{}", LOGON.replace("9=69", "9=99"), HEARTBEAT_42);
    let (len, _, err) = parse_one(&two);
    assert_eq!(len, LOGON.len());
    assert!(err.unwrap().contains("BodyLength 99 but the body is 69 bytes"));
}

#[test]
fn msgtype_not_third_and_bad_fields() {
    let body = "49=A|35=0|56=B|34=1|52=x|";
    let msg = format!("8=FIX.4.4|9={}|{body}", body.len());
    let sum = msg.replace('|', "\x01").bytes().fold(0u8, |s, b| s.wrapping_add(b));
    let (_, m, err) = parse_one(&format!("{msg}10={sum:03}|"));
    assert!(m.valid);
    assert_eq!(err.as_deref(), Some("MsgType (35) is not the third field"));
    let body = "35=0|x=1|49=A|56=B|34=1|52=x|";
    let msg = format!("8=FIX.4.4|9={}|{body}", body.len());
    let sum = msg.replace('|', "\x01").bytes().fold(0u8, |s, b| s.wrapping_add(b));
    let (_, _, err) = parse_one(&format!("{msg}10={sum:03}|"));
    assert_eq!(err.as_deref(), Some("field at offset 20 is not tag=value"));
}

#[test]
fn partial_messages_wait_with_total_and_garbage_is_invalid() {
    let mut p = FixParser::new(&ProtoConfig::default());
    let all = soh(NEW_ORDER);
    match p.parse(Direction::Egress, &all.slice(..40)) {
        Parse::Need { min_len, total } => assert_eq!((min_len, total), (NEW_ORDER.len(), Some(NEW_ORDER.len() as u64))),
        other => panic!("{other:?}"),
    }
    let part = p.interrupted(Direction::Egress, &all.slice(..40));
    assert_eq!(part.total, Some(NEW_ORDER.len() as u64));
    let Body::Fix(m) = part.body else { panic!() };
    // "8=FIX.4.4|9=134|35=D|49=CLIENT1|56=BROK": fields before the cut.
    assert_eq!((m.msg_type_name, m.sender_comp_id.unwrap()), (Some("NewOrderSingle"), Text::from_static("CLIENT1")));
    assert_eq!(m.fields.len(), 4);
    assert_eq!(m.errors, vec!["message incomplete".to_string()]);
    match p.parse(Direction::Egress, &soh(&format!("junk|{LOGON}"))) {
        Parse::Invalid { len, error } => {
            assert_eq!((len, error.as_str()), (5, "message does not start with BeginString (8=)"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.resync(Direction::Egress, b"xx8=FIX.4.4"), Some(2));
    assert_eq!(p.resync(Direction::Egress, b"xxx8=F"), Some(3));
    assert_eq!(p.resync(Direction::Egress, b"xxx"), None);
}

#[test]
fn field_cap_is_reported() {
    let cfg = ProtoConfig { max_fix_fields: 4, ..ProtoConfig::default() };
    let mut p = FixParser::new(&cfg);
    match p.parse(Direction::Egress, &soh(LOGON)) {
        Parse::Message(Parsed { body: Body::Fix(m), error, .. }) => {
            assert_eq!(m.fields.len(), 4);
            assert!(error.unwrap().contains("more than 4 fields"));
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), prefix in any::<bool>()) {
        let mut p = FixParser::new(&ProtoConfig::default());
        let mut v = if prefix { b"8=FIX.4.4\x019=".to_vec() } else { Vec::new() };
        v.extend(data);
        let buf = Bytes::from(v);
        match p.parse(Direction::Egress, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len()),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len()),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(Direction::Egress, &buf);
        if let Some(o) = p.resync(Direction::Egress, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Every split of a stream of messages yields the same messages.
    #[test]
    fn any_split_yields_the_same_message(split in 1usize..150) {
        let all = soh(NEW_ORDER);
        let split = split.min(all.len() - 1);
        let mut p = FixParser::new(&ProtoConfig::default());
        let need = matches!(p.parse(Direction::Egress, &all.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        let got = p.parse(Direction::Egress, &all);
        prop_assert_eq!(got, FixParser::new(&ProtoConfig::default()).parse(Direction::Egress, &all));
    }
}

/// A FIX 4.4 message from CLIENT to EXCH (or back) with correct BodyLength and CheckSum.
fn fix(sender: &str, target: &str, seq: u64, msg_type: &str, extra: &[(u32, &str)]) -> Bytes {
    let mut body = format!("35={msg_type}\x0149={sender}\x0156={target}\x0134={seq}\x0152=20261121-12:00:00.000\x01");
    for (t, v) in extra {
        body.push_str(&format!("{t}={v}\x01"));
    }
    let mut m = format!("8=FIX.4.4\x019={}\x01{body}", body.len()).into_bytes();
    let sum = m.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    m.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    Bytes::from(m)
}

fn session_of(p: &mut FixParser, dir: Direction, m: Bytes) -> FixSession {
    match p.parse(dir, &m) {
        Parse::Message(Parsed { body: Body::Fix(f), len, .. }) => {
            assert_eq!(len, m.len());
            f.session
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn session_gap_resend_request_gap_fill_and_poss_dup_resend() {
    let mut p = FixParser::new(&ProtoConfig::default());
    let (out, inn) = (Direction::Egress, Direction::Ingress);
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 1, "A", &[(98, "0"), (108, "30"), (50, "DESK1")]));
    assert!(s.baseline && s.gap.is_none() && s.expected_seq_num.is_none());
    let s = session_of(&mut p, inn, fix("EXCH", "CLIENT", 1, "A", &[(98, "0"), (108, "30")]));
    assert!(s.baseline);
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 2, "D", &[(11, "ORD-1")]));
    assert_eq!((s.expected_seq_num, s.gap, s.baseline), (Some(2), None, false));
    // Seq 3 never sent: 4 arrives.
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 4, "D", &[(11, "ORD-2")]));
    assert_eq!(s.gap, Some(SeqGap { expected: 3, received: 4, missing: 1 }));
    // The acceptor asks for 3 onwards.
    let s = session_of(&mut p, inn, fix("EXCH", "CLIENT", 2, "2", &[(7, "3"), (16, "0")]));
    assert_eq!(s.resend_request, Some(SeqRange { begin: 3, end: 0 }));
    assert_eq!(s.gap, None);
    // Gap fill over 3, then 4 again as a possible duplicate.
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 3, "4", &[(43, "Y"), (123, "Y"), (36, "4")]));
    assert_eq!(s.sequence_reset, Some(SeqReset { new_seq_no: 4, gap_fill: true }));
    assert!(s.resent && s.answers_resend_request && !s.seq_too_low);
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 4, "D", &[(43, "Y"), (122, "x"), (11, "ORD-2")]));
    assert!(s.resent && s.answers_resend_request && s.gap.is_none());
    // The session goes on at 5.
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 5, "5", &[]));
    assert_eq!((s.expected_seq_num, s.gap, s.resent, s.answers_resend_request), (Some(5), None, false, false));
    // A low number without PossDupFlag is a session error.
    let s = session_of(&mut p, out, fix("CLIENT", "EXCH", 2, "0", &[]));
    assert!(s.seq_too_low && !s.resent);
    let attrs = p.sender_attributes(out);
    assert_eq!(
        *attrs,
        [
            ("fix.sender_comp_id", "CLIENT"),
            ("fix.sender_sub_id", "DESK1"),
            ("fix.target_comp_id", "EXCH"),
            ("fix.begin_string", "FIX.4.4")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(p.sender_attributes(inn)[0], ("fix.sender_comp_id".to_string(), "EXCH".to_string()));
}

#[test]
fn session_reset_modes_garbled_messages_and_capture_gaps() {
    let mut p = FixParser::new(&ProtoConfig::default());
    let d = Direction::Egress;
    session_of(&mut p, d, fix("C", "E", 7, "0", &[]));
    // SequenceReset-Reset: its own number is not checked, 20 is next.
    let s = session_of(&mut p, d, fix("C", "E", 1, "4", &[(36, "20")]));
    assert_eq!(s.sequence_reset, Some(SeqReset { new_seq_no: 20, gap_fill: false }));
    assert!(!s.seq_too_low && s.gap.is_none());
    let s = session_of(&mut p, d, fix("C", "E", 20, "0", &[]));
    assert_eq!((s.expected_seq_num, s.gap), (Some(20), None));
    // A garbled message does not count: 21 is still expected.
    let mut bad = fix("C", "E", 21, "D", &[(11, "X")]).to_vec();
    let n = bad.len();
    bad[n - 2] = if bad[n - 2] == b'0' { b'1' } else { b'0' };
    let s = session_of(&mut p, d, Bytes::from(bad));
    assert!(s.ignored);
    let s = session_of(&mut p, d, fix("C", "E", 21, "D", &[(11, "X")]));
    assert_eq!((s.expected_seq_num, s.gap, s.ignored), (Some(21), None, false));
    // Logon with ResetSeqNumFlag starts again at 1, the other side too.
    let s = session_of(&mut p, d, fix("C", "E", 1, "A", &[(141, "Y")]));
    assert!(s.reset_seq_num && !s.seq_too_low);
    let s = session_of(&mut p, Direction::Ingress, fix("E", "C", 1, "A", &[(141, "Y")]));
    assert!(s.reset_seq_num);
    assert_eq!(session_of(&mut p, d, fix("C", "E", 2, "0", &[])).gap, None);
    // After lost bytes the next message is a new baseline.
    p.gap(d);
    let s = session_of(&mut p, d, fix("C", "E", 9, "0", &[]));
    assert!(s.baseline && s.gap.is_none());
}
