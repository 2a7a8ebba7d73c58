use super::*;
use crate::proto::testing::{self, Link};
use proptest::prelude::*;

const C: Direction = Direction::Egress;
const S: Direction = Direction::Ingress;

fn body(b: Body) -> NatsMessage {
    match b {
        Body::Nats(x) => *x,
        other => panic!("expected a NATS record, got {other:?}"),
    }
}

fn one(p: &mut NatsParser, dir: Direction, bytes: &[u8]) -> (NatsMessage, Link) {
    let (b, ex) = testing::one(p, dir, bytes);
    (body(b), ex)
}

fn parser() -> NatsParser {
    NatsParser::new(C, &ProtoConfig::default())
}

#[test]
fn info_connect_without_secrets_and_ping_pong() {
    let mut p = parser();
    let info = br#"INFO {"server_id":"NDX","server_name":"n1","version":"2.9.10","proto":1,"host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"client_id":5}"#;
    let (m, ex) = one(&mut p, S, &[&info[..], b"\r\n"].concat());
    let i = m.info.unwrap();
    assert_eq!(
        (i.server_id.as_deref(), i.version.as_deref(), i.client_id, i.headers, ex),
        (Some("NDX"), Some("2.9.10"), Some(5), Some(true), None)
    );
    let connect = br#"CONNECT {"verbose":false,"pedantic":false,"user":"trader","pass":"hunter2","auth_token":"tok","name":"pricer","lang":"python3","version":"2.16.0","protocol":1,"headers":true,"no_responders":true}"#;
    let (m, ex) = one(&mut p, C, &[&connect[..], b"\r\n"].concat());
    let c = m.connect.unwrap();
    assert_eq!(
        (c.user.as_deref(), c.password, c.auth_token, c.jwt, ex),
        (Some("trader"), Some(WITHHELD), Some(WITHHELD), None, None)
    );
    assert_eq!((c.name.as_deref(), c.lang.as_deref(), c.headers), (Some("pricer"), Some("python3"), Some(true)));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    assert_eq!(
        *p.sender_attributes(C),
        [("nats.user", "trader"), ("nats.name", "pricer"), ("nats.lang", "python3")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        *p.sender_attributes(S),
        [("nats.server_id", "NDX"), ("nats.server_name", "n1"), ("nats.version", "2.9.10")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let (m, ex) = one(&mut p, C, b"PING\r\n");
    assert_eq!((m.op, ex), ("PING", Some((PING_KEY | 1, ExchangeRole::Request))));
    let (_, ex) = one(&mut p, S, b"PONG\r\n");
    assert_eq!(ex, Some((PING_KEY | 1, ExchangeRole::Response)));
    // The server pings too; lower-case verbs are accepted.
    let (_, ex) = one(&mut p, S, b"ping\r\n");
    assert_eq!(ex, Some((PING_KEY | 1 << 61 | 1, ExchangeRole::Request)));
    let (m, ex) = one(&mut p, C, b"pong\r\n");
    assert_eq!((m.op, ex), ("PONG", Some((PING_KEY | 1 << 61 | 1, ExchangeRole::Response))));
    // An unsolicited PONG pairs with nothing.
    assert_eq!(one(&mut p, C, b"PONG\r\n").1, None);
}

#[test]
fn pub_sub_msg_with_reply_and_headers() {
    let mut p = parser();
    let (m, ex) = one(&mut p, C, b"SUB orders.* workers 7\r\n");
    assert_eq!(
        (m.subject.unwrap(), m.queue_group.unwrap(), m.sid.unwrap(), ex),
        (Text::from_static("orders.*"), Text::from_static("workers"), Text::from_static("7"), None)
    );
    let bytes = b"PUB orders.new _INBOX.abc 11\r\n{\"qty\":100}\r\n";
    let (m, ex) = one(&mut p, C, bytes);
    let pl = m.payload.unwrap();
    assert_eq!(
        (m.subject.unwrap(), m.reply_to.unwrap(), ex),
        (Text::from_static("orders.new"), Text::from_static("_INBOX.abc"), None)
    );
    assert_eq!((pl.len, pl.offset, pl.text.unwrap()), (11, 30, Text::from_static("{\"qty\":100}")));
    let hmsg = b"HMSG orders.new 7 _INBOX.abc 40 45\r\nNATS/1.0\r\nTrace-Id: t-1\r\nDesk: rates\r\n\r\nhello\r\n";
    let (m, _) = one(&mut p, S, hmsg);
    assert_eq!((m.op, m.sid.unwrap(), m.header_len), ("HMSG", Text::from_static("7"), Some(40)));
    assert_eq!(
        m.headers,
        vec![
            (Text::from_static("Trace-Id"), Text::from_static("t-1")),
            (Text::from_static("Desk"), Text::from_static("rates"))
        ]
    );
    assert_eq!(m.payload.unwrap().text.unwrap(), "hello");
    let status = b"HMSG _INBOX.abc 9 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n";
    let (m, _) = one(&mut p, S, status);
    assert_eq!(
        (m.status, m.status_text.unwrap(), m.payload.unwrap().len),
        (Some(503), Text::from_static("No Responders"), 0)
    );
    let (m, _) = one(&mut p, C, b"UNSUB 7 10\r\n");
    assert_eq!((m.sid.unwrap(), m.max_msgs), (Text::from_static("7"), Some(10)));
    let (m, ex) = one(&mut p, S, b"-ERR 'Authorization Violation'\r\n");
    assert_eq!((m.error.unwrap(), ex), (Text::from_static("Authorization Violation"), None));
}

#[test]
fn verbose_acknowledgements_pair_in_order() {
    let mut p = parser();
    let (_, ex) = one(&mut p, C, b"CONNECT {\"verbose\":true}\r\n");
    assert_eq!(ex, Some((VERBOSE_KEY | 1, ExchangeRole::Request)));
    let (_, ex) = one(&mut p, S, b"+OK\r\n");
    assert_eq!(ex, Some((VERBOSE_KEY | 1, ExchangeRole::Response)));
    let (_, a) = one(&mut p, C, b"PUB a 1\r\nx\r\n");
    let (_, b) = one(&mut p, C, b"SUB a 1\r\n");
    assert_eq!((a.unwrap().0, b.unwrap().0), (VERBOSE_KEY | 2, VERBOSE_KEY | 3));
    assert_eq!(one(&mut p, S, b"+OK\r\n").1.unwrap().0, VERBOSE_KEY | 2);
    assert_eq!(one(&mut p, S, b"-ERR 'Invalid Subject'\r\n").1.unwrap().0, VERBOSE_KEY | 3);
    assert_eq!(one(&mut p, S, b"+OK\r\n").1, None);
}

#[test]
fn partial_invalid_and_resync() {
    let mut p = parser();
    let bytes = Bytes::from_static(b"PUB big 100\r\n0123456789");
    match p.parse(C, &bytes) {
        Parse::Need { min_len, total } => assert_eq!((min_len, total), (115, Some(115))),
        other => panic!("{other:?}"),
    }
    let part = p.interrupted(C, &bytes);
    assert_eq!(part.total, Some(115));
    let Body::Nats(m) = part.body else { panic!() };
    assert_eq!((m.op, m.subject.unwrap()), ("PUB", Text::from_static("big")));
    match p.parse(C, &Bytes::from_static(b"HELLO world\r\nPING\r\n")) {
        Parse::Invalid { len, error } => assert_eq!((len, error.as_str()), (13, "unknown NATS operation \"HELLO\"")),
        other => panic!("{other:?}"),
    }
    match p.parse(C, &Bytes::from_static(b"PUB a 1\r\nxy\r\n")) {
        Parse::Invalid { error, .. } => assert_eq!(error, "PUB payload not followed by CRLF"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(p.parse(C, &Bytes::from_static(b"PUB a\r\n")), Parse::Invalid { .. }));
    // More arguments than any operation takes (the split stops at six).
    for line in [&b"HMSG a 1 r 2 3 x\r\n"[..], b"PUB a b c d e f g 0\r\n\r\n", b"PING x\r\n", b"PUB a +1\r\nx\r\n"] {
        assert!(matches!(p.parse(C, &Bytes::copy_from_slice(line)), Parse::Invalid { .. }), "{line:?}");
    }
    assert_eq!(p.resync(C, b"xx\r\nyy\r\nMSG a 1 1\r\nx\r\n"), Some(8));
    assert_eq!(p.resync(C, b"xx yy zz"), None);
    assert_eq!(p.resync(C, b"junk\nPI"), Some(5));
    let long = Bytes::from(vec![b'P'; 70_000]);
    assert!(matches!(p.parse(C, &long), Parse::Invalid { .. }));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), prefix in 0usize..4) {
        let mut p = parser();
        let mut v = ["", "PUB a ", "HMSG a 1 ", "CONNECT "][prefix].as_bytes().to_vec();
        v.extend(data);
        let buf = Bytes::from(v);
        match p.parse(C, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len().max(1)),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(C, &buf);
        if let Some(o) = p.resync(C, &buf) { prop_assert!(o <= buf.len()); }
    }

    #[test]
    fn any_split_yields_the_same_message(split in 1usize..60) {
        let all = Bytes::from_static(b"HMSG o 7 _R 22 27\r\nNATS/1.0\r\nK: v\r\n\r\nhello\r\n");
        let split = split.min(all.len() - 1);
        let expected = parser().parse(S, &all);
        let mut p = parser();
        let need = matches!(p.parse(S, &all.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(p.parse(S, &all), expected);
    }
}

/// The operation lookup is the plain search over [`OPS`] in any case.
fn op_reference(word: &[u8]) -> Option<&'static str> {
    OPS.iter().copied().find(|o| o.as_bytes().eq_ignore_ascii_case(word))
}

#[test]
fn every_operation_in_any_case_and_nothing_else_is_found() {
    for op in OPS {
        for w in [op.to_string(), op.to_ascii_lowercase(), op[..1].to_ascii_lowercase() + &op[1..]] {
            assert_eq!(op_of(w.as_bytes()), Some(op), "{w}");
        }
    }
    for w in ["", "P", "PUBS", "HPU", "PANG", "HSUB", "CONNEX", "+ok!", "-ER", "UNSUBS", "IN", "pong "] {
        assert_eq!(op_of(w.as_bytes()), op_reference(w.as_bytes()), "{w:?}");
    }
}

proptest! {
    #[test]
    fn the_operation_lookup_is_the_plain_search(w in proptest::collection::vec(prop_oneof![
        Just(b'P'), Just(b'U'), Just(b'B'), Just(b'I'), Just(b'N'), Just(b'G'), Just(b'O'), Just(b'H'),
        Just(b'M'), Just(b'S'), Just(b'p'), Just(b'u'), Just(b'+'), Just(b'-'), Just(b'K'), Just(b'E'),
        Just(b'R'), Just(b'C'), Just(b'T'), any::<u8>()], 0..8)) {
        prop_assert_eq!(op_of(&w), op_reference(&w));
    }

    #[test]
    fn numbers_read_as_str_parse_reads_plain_digits(a in "[0-9]{0,21}|[0-9 +x-]{0,5}") {
        let plain = !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit());
        let want = a.parse::<u64>().ok().filter(|_| plain && a.len() <= 19);
        prop_assert_eq!(number(a.as_bytes()), want);
    }

    #[test]
    fn arguments_split_as_the_vector_did(line in "[a-z \t]{0,40}") {
        let all: Vec<&[u8]> = line.as_bytes().split(|c| matches!(c, b' ' | b'\t')).filter(|a| !a.is_empty()).collect();
        let (args, n) = split_args(line.as_bytes());
        prop_assert_eq!(&args[..n], &all[..all.len().min(MAX_ARGS)]);
    }
}
