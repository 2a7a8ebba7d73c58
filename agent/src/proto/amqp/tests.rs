use super::*;
use crate::proto::fields::Text;
use crate::proto::testing::{self, Link};
use proptest::prelude::*;

const C: Direction = Direction::Egress;
const S: Direction = Direction::Ingress;

fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(FRAME_END);
    v
}

fn method(channel: u16, class: u16, m: u16, args: &[u8]) -> Vec<u8> {
    let p = [&class.to_be_bytes()[..], &m.to_be_bytes(), args].concat();
    frame_bytes(1, channel, &p)
}

fn ss(s: &str) -> Vec<u8> {
    [vec![s.len() as u8], s.as_bytes().to_vec()].concat()
}

fn ls(s: &[u8]) -> Vec<u8> {
    [(s.len() as u32).to_be_bytes().to_vec(), s.to_vec()].concat()
}

fn table(entries: &[(&str, u8, Vec<u8>)]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|(k, t, v)| [ss(k), vec![*t], v.clone()].concat()).collect();
    ls(&body)
}

/// A content header with message-id, correlation-id, delivery-mode and headers.
fn header(channel: u16, size: u64) -> Vec<u8> {
    let flags: u16 = 1 << 15 | 1 << 13 | 1 << 12 | 1 << 10 | 1 << 7;
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&size.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend(ss("application/json"));
    p.extend(table(&[("desk", b'S', ls(b"rates")), ("attempt", b'I', 2i32.to_be_bytes().to_vec())]));
    p.push(2);
    p.extend(ss("corr-9"));
    p.extend(ss("msg-42"));
    frame_bytes(2, channel, &p)
}

fn publish(channel: u16, body: &[u8]) -> Vec<u8> {
    let args = [vec![0, 0], ss("orders"), ss("fx.eur"), vec![0]].concat();
    [method(channel, 60, 40, &args), header(channel, body.len() as u64), frame_bytes(3, channel, body)].concat()
}

fn body(b: Body) -> AmqpFrame {
    match b {
        Body::Amqp(x) => *x,
        other => panic!("expected an AMQP record, got {other:?}"),
    }
}

fn parsed(p: Parse) -> (usize, AmqpFrame, Link) {
    let (len, b, ex) = testing::parsed(p);
    (len, body(b), ex)
}

fn one(p: &mut AmqpParser, dir: Direction, bytes: &[u8]) -> (AmqpFrame, Link) {
    let (b, ex) = testing::one(p, dir, bytes);
    (body(b), ex)
}

fn parser() -> AmqpParser {
    AmqpParser::new(C, &ProtoConfig::default())
}

#[test]
fn connection_handshake_user_vhost_and_withheld_password() {
    let mut p = parser();
    let (f, ex) = one(&mut p, C, PROTOCOL_HEADER);
    assert_eq!((f.kind, f.protocol.as_deref(), ex), (AmqpKind::ProtocolHeader, Some("0-9-1"), None));
    let start =
        [vec![0, 9], table(&[("product", b'S', ls(b"RabbitMQ"))]), ls(b"PLAIN AMQPLAIN"), ls(b"en_US")].concat();
    let (f, ex) = one(&mut p, S, &method(0, 10, 10, &start));
    let a = f.args.unwrap();
    assert_eq!(
        (f.method, a.version.as_deref(), ex),
        (Some("connection.start"), Some("0-9"), Some((10 << 16 | 10, ExchangeRole::Request)))
    );
    assert_eq!(
        (a.server_properties[0].name.clone(), a.server_properties[0].value.clone()),
        (Text::from_static("product"), Text::from_static("RabbitMQ"))
    );
    let start_ok = [
        table(&[("product", b'S', ls(b"Pika Python Client Library"))]),
        ss("PLAIN"),
        ls(b"\0trader\0s3cret-pw"),
        ss("en_US"),
    ]
    .concat();
    let (f, ex) = one(&mut p, C, &method(0, 10, 11, &start_ok));
    let a = f.args.unwrap();
    assert_eq!(
        (a.user.unwrap(), a.password, a.response_len, ex),
        (Text::from_static("trader"), Some(WITHHELD), Some(17), Some((10 << 16 | 10, ExchangeRole::Response)))
    );
    let json = serde_json::to_string(&f.method).unwrap() + &serde_json::to_string(&a.client_properties).unwrap();
    assert!(!json.contains("s3cret"));
    let (f, _) = one(&mut p, S, &method(0, 10, 30, &[0, 0, 0, 2, 0, 0, 0, 60]));
    assert_eq!((f.args.as_ref().unwrap().frame_max, f.args.unwrap().heartbeat), (Some(131_072), Some(60)));
    let (f, ex) = one(&mut p, C, &method(0, 10, 40, &[ss("/ledger"), ss(""), vec![0]].concat()));
    assert_eq!(
        (f.args.unwrap().virtual_host.unwrap(), ex),
        (Text::from_static("/ledger"), Some((10 << 16 | 40, ExchangeRole::Request)))
    );
    let (_, ex) = one(&mut p, S, &method(0, 10, 41, &ss("")));
    assert_eq!(ex, Some((10 << 16 | 40, ExchangeRole::Response)));
    assert_eq!(
        *p.sender_attributes(C),
        [
            ("amqp.user", "trader"),
            ("amqp.client_product", "Pika Python Client Library"),
            ("amqp.virtual_host", "/ledger")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        *p.sender_attributes(S),
        [("amqp.server_product", "RabbitMQ")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // AMQPLAIN names its user in a table.
    let amqplain = table(&[("LOGIN", b'S', ls(b"ops")), ("PASSWORD", b'S', ls(b"pw"))]);
    let start_ok = [table(&[]), ss("AMQPLAIN"), ls(&amqplain[4..]), ss("en_US")].concat();
    let (f, _) = one(&mut parser(), C, &method(0, 10, 11, &start_ok));
    assert_eq!(f.args.unwrap().user.unwrap(), "ops");
}

#[test]
fn publish_with_properties_and_body_then_confirm() {
    let mut p = parser();
    let (_, ex) = one(&mut p, C, &method(1, 20, 10, &ss("")));
    assert_eq!(ex, Some((1 << 32 | 20 << 16 | 10, ExchangeRole::Request)));
    one(&mut p, S, &method(1, 20, 11, &ls(b"")));
    // Without confirm mode a publish is one-way.
    let body = br#"{"pair":"EURUSD","px":"1.0842"}"#;
    let bytes = publish(1, body);
    let (f, ex) = one(&mut p, C, &bytes);
    assert_eq!((f.method, f.frames, f.body_complete, f.publish_seq, ex), (Some("basic.publish"), 3, true, None, None));
    let a = f.args.unwrap();
    assert_eq!(
        (a.exchange.unwrap(), a.routing_key.unwrap()),
        (Text::from_static("orders"), Text::from_static("fx.eur"))
    );
    let props = f.properties.unwrap();
    assert_eq!(
        (props.message_id.unwrap(), props.correlation_id.unwrap()),
        (Text::from_static("msg-42"), Text::from_static("corr-9"))
    );
    assert_eq!((props.content_type.unwrap(), props.delivery_mode), (Text::from_static("application/json"), Some(2)));
    let h: Vec<(String, String, char)> =
        props.headers.iter().map(|h| (h.name.to_string_lossy(), h.value.to_string_lossy(), h.r#type)).collect();
    assert_eq!(h, [("desk".into(), "rates".into(), 'S'), ("attempt".into(), "2".into(), 'I')]);
    let b = f.body.unwrap();
    assert_eq!(
        (b.len, b.text.unwrap().0, f.body_size),
        (body.len() as u64, Bytes::from_static(body), Some(body.len() as u64))
    );
    assert_eq!(&bytes[b.offset..b.offset + body.len()], body);
    // Confirm mode: publishes numbered from 1, acked by delivery tag.
    one(&mut p, C, &method(1, 85, 10, &[0]));
    one(&mut p, S, &method(1, 85, 11, &[]));
    let (f, ex) = one(&mut p, C, &publish(1, b"a"));
    assert_eq!((f.publish_seq, ex), (Some(1), Some((CONFIRM_KEY | 1 << 47 | 1, ExchangeRole::Request))));
    let (f, _) = one(&mut p, C, &publish(1, b"b"));
    assert_eq!(f.publish_seq, Some(2));
    let (f, ex) = one(&mut p, S, &method(1, 60, 80, &[&2u64.to_be_bytes()[..], &[1]].concat()));
    assert_eq!(f.args.unwrap().flags, vec!["multiple"]);
    assert_eq!(ex, Some((CONFIRM_KEY | 1 << 47 | 2, ExchangeRole::Response)));
    let (f, ex) = one(&mut p, S, &method(1, 60, 120, &[&3u64.to_be_bytes()[..], &[2]].concat()));
    assert_eq!(
        (f.method, f.args.unwrap().flags, ex.unwrap().1),
        (Some("basic.nack"), vec!["requeue"], ExchangeRole::Response)
    );
}

#[test]
fn deliver_is_one_way_and_interleaved_content_continues() {
    let mut p = parser();
    let deliver = [ss("ctag-1"), 7u64.to_be_bytes().to_vec(), vec![1], ss("orders"), ss("fx.eur")].concat();
    let body = b"hello";
    let all = [
        method(2, 60, 60, &deliver),
        header(2, 10),
        frame_bytes(3, 2, body),
        method(3, 20, 10, &ss("")),
        frame_bytes(3, 2, body),
    ]
    .concat();
    let all = Bytes::from(all);
    let (n, f, ex) = parsed(p.parse(S, &all));
    let a = f.args.unwrap();
    assert_eq!((f.method, a.delivery_tag, a.flags, ex), (Some("basic.deliver"), Some(7), vec!["redelivered"], None));
    assert_eq!((f.body_complete, f.body.unwrap().len, f.body_size), (false, 5, Some(10)));
    let (n2, f, _) = parsed(p.parse(S, &all.slice(n..)));
    assert_eq!((f.method, f.channel), (Some("channel.open"), 3));
    let (n3, f, _) = parsed(p.parse(S, &all.slice(n + n2..)));
    assert_eq!((f.kind, f.continued, f.body_complete, f.channel), (AmqpKind::Content, true, true, 2));
    assert_eq!(n + n2 + n3, all.len());
}

#[test]
fn no_wait_close_heartbeat_and_errors() {
    let mut p = parser();
    let declare = [vec![0, 0], ss("q1"), vec![0b10010], table(&[])].concat();
    let (f, ex) = one(&mut p, C, &method(1, 50, 10, &declare));
    assert_eq!((f.args.unwrap().flags, ex), (vec!["durable", "no_wait"], None));
    let close = [404u16.to_be_bytes().to_vec(), ss("NOT_FOUND - no queue 'x'"), vec![0, 50, 0, 10]].concat();
    let (f, ex) = one(&mut p, S, &method(1, 20, 40, &close));
    let a = f.args.unwrap();
    assert_eq!((a.reply_code, a.failing_method.as_deref()), (Some(404), Some("queue.declare")));
    assert_eq!(ex, Some((1 << 32 | 20 << 16 | 40, ExchangeRole::Request)));
    let (_, ex) = one(&mut p, C, &method(1, 20, 41, &[]));
    assert_eq!(ex, Some((1 << 32 | 20 << 16 | 40, ExchangeRole::Response)));
    let (f, ex) = one(&mut p, C, &frame_bytes(8, 0, &[]));
    assert_eq!((f.kind, ex), (AmqpKind::Heartbeat, None));
    match p.parse(C, &Bytes::from(method(1, 99, 1, &[]))) {
        Parse::Invalid { error, .. } => assert_eq!(error, "unknown method 99.1"),
        other => panic!("{other:?}"),
    }
    let mut bad = method(1, 20, 41, &[]);
    *bad.last_mut().unwrap() = 0;
    assert!(matches!(p.parse(C, &Bytes::from(bad)), Parse::Invalid { .. }));
    let stream = [b"xyz".to_vec(), method(1, 20, 41, &[]), frame_bytes(8, 0, &[])].concat();
    assert_eq!(p.resync(C, &stream), Some(3));
}

#[test]
fn large_bodies_are_cut_and_continued() {
    let cfg = ProtoConfig { max_message_bytes: 256, ..ProtoConfig::default() };
    let mut p = AmqpParser::new(C, &cfg);
    let chunks: Vec<Vec<u8>> = (0..6).map(|i| frame_bytes(3, 1, &[b'a' + i; 60])).collect();
    let args = [vec![0, 0], ss("x"), ss("k"), vec![0]].concat();
    let all = Bytes::from([method(1, 60, 40, &args), header(1, 360), chunks.concat()].concat());
    let (mut at, mut body, mut records) = (0, 0, 0);
    while at < all.len() {
        let (n, f, _) = parsed(p.parse(C, &all.slice(at..)));
        assert_eq!(f.continued, records > 0);
        body += f.body.map_or(0, |b| b.len);
        at += n;
        records += 1;
    }
    // 172 bytes (method, header, one body frame), then two body frames per record.
    assert_eq!((body, records), (360, 4));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), client in any::<bool>(), framed in any::<bool>()) {
        let mut p = parser();
        let dir = if client { C } else { S };
        let mut v = if framed { method(1, 60, 40, &[0, 0, 1, b'x', 1, b'k', 0]) } else { Vec::new() };
        v.extend(data);
        let buf = Bytes::from(v);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len().max(1)),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    #[test]
    fn any_split_yields_the_same_record(split in 1usize..120) {
        let all = Bytes::from(publish(1, b"payload bytes"));
        let split = split.min(all.len() - 1);
        let expected = parser().parse(C, &all);
        let mut p = parser();
        let need = matches!(p.parse(C, &all.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(p.parse(C, &all), expected);
    }
}
