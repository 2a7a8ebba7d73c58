use super::*;
use proptest::prelude::*;

/// Query for example.com A, id 0x1234, RD (RFC 1035 §4.1 layout).
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

/// Response: the question, one A answer via a compression pointer to offset
/// 12, one CNAME, one MX, one TXT, and an EDNS OPT record.
fn response() -> Vec<u8> {
    let mut r = b"\x12\x34\x81\x80\x00\x01\x00\x04\x00\x00\x00\x01".to_vec();
    r.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    // A 93.184.216.34, TTL 3600.
    r.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22");
    // www.example.com CNAME example.com (label + pointer).
    r.extend_from_slice(b"\x03www\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02\xc0\x0c");
    // MX 10 mail.example.com.
    r.extend_from_slice(b"\xc0\x0c\x00\x0f\x00\x01\x00\x00\x00\x3c\x00\x09\x00\x0a\x04mail\xc0\x0c");
    // TXT "v=spf1 -all".
    r.extend_from_slice(b"\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x3c\x00\x0c\x0bv=spf1 -all");
    // OPT: root name, type 41, payload 1232.
    r.extend_from_slice(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00");
    r
}

fn udp() -> DnsParser {
    DnsParser::new(Transport::Udp, &ProtoConfig::default())
}

fn parsed(p: Parse) -> (usize, DnsMessage, Option<(u64, ExchangeRole)>, Option<String>) {
    match p {
        Parse::Message(Parsed { len, body: Body::Dns(m), exchange, error }) => (len, *m, exchange, error),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn query_and_compressed_response() {
    let (len, q, ex, err) = parsed(udp().parse(Direction::Egress, &Bytes::from_static(QUERY)));
    assert_eq!((len, err), (QUERY.len(), None));
    assert_eq!((q.id, q.response, q.opcode), (0x1234, false, 0));
    assert_eq!(q.questions[0].name, "example.com.");
    assert_eq!(q.questions[0].qtype_name, Some("A"));
    assert_eq!(ex, Some((0x1234, ExchangeRole::Request)));

    let r = response();
    let (_, m, ex, err) = parsed(udp().parse(Direction::Ingress, &Bytes::from(r)));
    assert_eq!(err, None);
    assert_eq!(ex, Some((0x1234, ExchangeRole::Response)));
    assert!(m.response);
    assert_eq!((m.rcode, m.rcode_name), (0, Some("NOERROR")));
    assert_eq!(m.answers.len(), 4);
    assert_eq!(m.answers[0].data, DnsData::A { addr: Ipv4Addr::new(93, 184, 216, 34) });
    assert_eq!(m.answers[0].ttl, 3600);
    assert_eq!(m.answers[1].name, "www.example.com.");
    assert_eq!(m.answers[1].data, DnsData::Name { name: "example.com.".into() });
    assert_eq!(m.answers[2].data, DnsData::Mx { preference: 10, exchange: "mail.example.com.".into() });
    assert_eq!(m.answers[3].data, DnsData::Txt { strings: vec!["v=spf1 -all".into()] });
    assert_eq!(m.additional[0].rtype_name, Some("OPT"));
    assert_eq!((m.additional[0].name.as_str(), m.additional[0].class), (".", 1232));
}

#[test]
fn nxdomain_and_aaaa() {
    let mut r = b"\xab\xcd\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00\x04nope\x04test\x00\x00\x1c\x00\x01".to_vec();
    let (_, m, _, _) = parsed(udp().parse(Direction::Ingress, &Bytes::from(r.clone())));
    assert_eq!((m.rcode, m.rcode_name), (3, Some("NXDOMAIN")));
    r[7] = 1;
    r[3] = 0x80;
    r.extend_from_slice(b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x00\x05\x00\x10\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01");
    let (_, m, _, err) = parsed(udp().parse(Direction::Ingress, &Bytes::from(r)));
    assert_eq!(err, None);
    assert_eq!(m.answers[0].data, DnsData::Aaaa { addr: "2001:db8::1".parse().unwrap() });
}

#[test]
fn malformed_messages_keep_what_was_decoded() {
    // Pointer to itself: loop.
    let mut r = QUERY.to_vec();
    r[7] = 1;
    r.extend_from_slice(b"\xc0\x1d");
    let (_, m, _, err) = parsed(udp().parse(Direction::Ingress, &Bytes::from(r)));
    assert_eq!(err.as_deref(), Some("invalid compression pointer at offset 29"));
    assert_eq!(m.questions.len(), 1);
    // Truncated answer.
    let r = &response()[..40];
    let (_, _, _, err) = parsed(udp().parse(Direction::Ingress, &Bytes::copy_from_slice(r)));
    assert!(err.unwrap().starts_with("message truncated in"));
    // Too short for a header: invalid.
    assert!(matches!(udp().parse(Direction::Egress, &Bytes::from_static(b"\x00\x01")), Parse::Invalid { .. }));
    // Reserved label type.
    let mut r = QUERY.to_vec();
    r[12] = 0x47;
    let (_, _, _, err) = parsed(udp().parse(Direction::Egress, &Bytes::from(r)));
    assert_eq!(err.as_deref(), Some("invalid label at offset 12"));
}

#[test]
fn tcp_framing() {
    let mut p = DnsParser::new(Transport::Tcp, &ProtoConfig::default());
    let mut framed = vec![0, QUERY.len() as u8];
    framed.extend_from_slice(QUERY);
    framed.extend_from_slice(&[0, 5]);
    let b = Bytes::from(framed);
    match p.parse(Direction::Egress, &b.slice(..10)) {
        Parse::Need { min_len, total } => assert_eq!((min_len, total), (31, Some(31))),
        other => panic!("{other:?}"),
    }
    let (len, m, _, err) = parsed(p.parse(Direction::Egress, &b));
    assert_eq!((len, m.id, err), (31, 0x1234, None));
    assert!(matches!(p.parse(Direction::Egress, &b.slice(31..)), Parse::Need { min_len: 7, .. }));
    assert_eq!(p.resync(Direction::Egress, &b), Some(0));
}

#[test]
fn record_cap_counts_unlisted() {
    let cfg = ProtoConfig { max_dns_records: 2, ..ProtoConfig::default() };
    let mut p = DnsParser::new(Transport::Udp, &cfg);
    let (_, m, _, err) = parsed(p.parse(Direction::Ingress, &Bytes::from(response())));
    assert_eq!(err, None);
    assert_eq!((m.questions.len(), m.answers.len(), m.records_not_listed), (1, 1, 4));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), tcp in any::<bool>()) {
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        let mut p = DnsParser::new(t, &ProtoConfig::default());
        let buf = Bytes::from(data);
        match p.parse(Direction::Egress, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len()),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(Direction::Egress, &buf);
        if let Some(o) = p.resync(Direction::Egress, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Mutating any byte of a valid response never panics.
    #[test]
    fn mutated_responses_never_panic(at in 0usize..200, byte in any::<u8>()) {
        let mut r = response();
        let i = at % r.len();
        r[i] = byte;
        let _ = decode(&r, 256);
    }
}

#[test]
fn udp_shape_recognises_queries_and_responses_only() {
    assert_eq!(udp_message_shape(QUERY), Some(false));
    assert_eq!(udp_message_shape(&response()), Some(true));
    // A query with an EDNS OPT record (what dig sends).
    let mut edns = QUERY.to_vec();
    edns[11] = 1;
    edns.extend_from_slice(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00");
    assert_eq!(udp_message_shape(&edns), Some(false));
    // Trailing bytes, a truncated question, two questions, a non-QUERY opcode,
    // a query carrying answers, and arbitrary text are not DNS-shaped.
    let mut trailing = QUERY.to_vec();
    trailing.push(0);
    assert_eq!(udp_message_shape(&trailing), None);
    assert_eq!(udp_message_shape(&QUERY[..QUERY.len() - 1]), None);
    let mut two = QUERY.to_vec();
    two[5] = 2;
    assert_eq!(udp_message_shape(&two), None);
    let mut notify = QUERY.to_vec();
    notify[2] |= 4 << 3;
    assert_eq!(udp_message_shape(&notify), None);
    let mut answers = QUERY.to_vec();
    answers[7] = 1;
    assert_eq!(udp_message_shape(&answers), None);
    assert_eq!(udp_message_shape(b"hello, this is not a DNS message at all"), None);
    assert_eq!(udp_message_shape(b""), None);
}

proptest! {
    #[test]
    fn udp_shape_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = udp_message_shape(&data);
    }
}
