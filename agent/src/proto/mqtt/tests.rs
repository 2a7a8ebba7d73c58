use super::*;
use crate::proto::testing::{self, Link};
use proptest::prelude::*;

const C: Direction = Direction::Egress;
const S: Direction = Direction::Ingress;

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn s(x: &str) -> Vec<u8> {
    [(x.len() as u16).to_be_bytes().to_vec(), x.as_bytes().to_vec()].concat()
}

/// CONNECT: level, user and password flags, clean start, will on `rates/status`.
fn connect(level: u8) -> Vec<u8> {
    let mut b = [s("MQTT"), vec![level, 0xc0 | 0x04 | 0x02 | 0x08, 0, 60]].concat();
    if level == 5 {
        b.extend_from_slice(&[5, 0x11, 0, 0, 0, 30]);
    }
    b.extend(s("pricer-1"));
    if level == 5 {
        b.push(0);
    }
    b.extend(s("rates/status"));
    b.extend(s("offline"));
    b.extend(s("trader"));
    b.extend(s("hunter2"));
    packet(0x10, &b)
}

fn body(b: Body) -> MqttPacket {
    match b {
        Body::Mqtt(x) => *x,
        other => panic!("expected an MQTT record, got {other:?}"),
    }
}

fn one(p: &mut MqttParser, dir: Direction, bytes: &[u8]) -> (MqttPacket, Link) {
    let (b, ex) = testing::one(p, dir, bytes);
    (body(b), ex)
}

fn parser() -> MqttParser {
    MqttParser::new(C, &ProtoConfig::default())
}

#[test]
fn connect_311_without_the_password_and_connack() {
    let mut p = parser();
    let (m, ex) = one(&mut p, C, &connect(4));
    assert_eq!(
        (m.packet_type, m.protocol_version, m.protocol_name.clone().unwrap()),
        ("CONNECT", Some(4), Text::from_static("MQTT"))
    );
    assert_eq!(
        (m.client_id.clone().unwrap(), m.user.clone().unwrap()),
        (Text::from_static("pricer-1"), Text::from_static("trader"))
    );
    assert_eq!(
        (m.password, m.password_len, m.keep_alive, m.clean_start),
        (Some(WITHHELD), Some(7), Some(60), Some(true))
    );
    let w = m.will.clone().unwrap();
    assert_eq!(
        (w.topic, w.qos, w.retain, w.payload.text.unwrap()),
        (Text::from_static("rates/status"), 1, false, Text::from_static("offline"))
    );
    assert!(!serde_json::to_string(&m).unwrap().contains("hunter2"));
    assert_eq!(
        *p.sender_attributes(C),
        [("mqtt.client_id", "pricer-1"), ("mqtt.user", "trader")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert!(p.sender_attributes(S).is_empty());
    assert_eq!(ex, Some((CONNECT_KEY | 1, ExchangeRole::Request)));
    let (m, ex) = one(&mut p, S, &packet(0x20, &[0, 0]));
    assert_eq!(
        (m.session_present, m.reason_code, ex),
        (Some(false), Some(0), Some((CONNECT_KEY | 1, ExchangeRole::Response)))
    );
}

#[test]
fn publish_qos_flows_pair_by_packet_id_per_side() {
    let mut p = parser();
    one(&mut p, C, &connect(4));
    let bytes = packet(0x32, &[s("rates/eurusd"), vec![0, 7], b"1.0842".to_vec()].concat());
    let (m, ex) = one(&mut p, C, &bytes);
    let pl = m.payload.clone().unwrap();
    assert_eq!(
        (m.topic.unwrap(), m.qos, m.packet_id, m.retain),
        (Text::from_static("rates/eurusd"), Some(1), Some(7), Some(false))
    );
    assert_eq!((pl.text.unwrap(), &bytes[pl.offset..]), (Text::from_static("1.0842"), &b"1.0842"[..]));
    assert_eq!(ex, Some((1 << 16 | 7, ExchangeRole::Request)));
    assert_eq!(one(&mut p, S, &packet(0x40, &[0, 7])).1, Some((1 << 16 | 7, ExchangeRole::Response)));
    // The broker's own publish with the same id is another flow.
    let (_, ex) = one(&mut p, S, &packet(0x34, &[s("rates/eurusd"), vec![0, 7], b"x".to_vec()].concat()));
    assert_eq!(ex, Some((1 << 20 | 1 << 16 | 7, ExchangeRole::Request)));
    assert_eq!(one(&mut p, C, &packet(0x50, &[0, 7])).1, Some((1 << 20 | 1 << 16 | 7, ExchangeRole::Response)));
    assert_eq!(one(&mut p, S, &packet(0x62, &[0, 7])).1, Some((1 << 20 | 2 << 16 | 7, ExchangeRole::Request)));
    assert_eq!(one(&mut p, C, &packet(0x70, &[0, 7])).1, Some((1 << 20 | 2 << 16 | 7, ExchangeRole::Response)));
    // QoS 0 is one-way; retain and dup flags.
    let (m, ex) = one(&mut p, C, &packet(0x39, &[s("a/b"), b"z".to_vec()].concat()));
    assert_eq!((m.qos, m.retain, m.dup, m.packet_id, ex), (Some(0), Some(true), Some(true), None, None));
}

#[test]
fn subscribe_unsubscribe_ping_disconnect() {
    let mut p = parser();
    let (m, ex) = one(&mut p, C, &packet(0x82, &[vec![0, 3], s("rates/#"), vec![1], s("news/+"), vec![0]].concat()));
    let subs: Vec<(String, u8)> = m.subscriptions.iter().map(|s| (s.filter.to_string_lossy(), s.qos)).collect();
    assert_eq!(subs, [("rates/#".into(), 1), ("news/+".into(), 0)]);
    assert_eq!(ex, Some((3 << 16 | 3, ExchangeRole::Request)));
    let (m, ex) = one(&mut p, S, &packet(0x90, &[0, 3, 1, 0x80]));
    assert_eq!(
        (m.reason_codes.clone(), ex),
        (vec![1, 0x80], Some((3 << 16 | 3, ExchangeRole::Request)).map(|(k, _)| (k, ExchangeRole::Response)))
    );
    let (_, ex) = one(&mut p, C, &packet(0xa2, &[vec![0, 4], s("news/+")].concat()));
    assert_eq!(ex, Some((4 << 16 | 4, ExchangeRole::Request)));
    assert_eq!(one(&mut p, S, &packet(0xb0, &[0, 4])).1, Some((4 << 16 | 4, ExchangeRole::Response)));
    assert_eq!(one(&mut p, C, &packet(0xc0, &[])).1, Some((PING_KEY | 1, ExchangeRole::Request)));
    assert_eq!(one(&mut p, S, &packet(0xd0, &[])).1, Some((PING_KEY | 1, ExchangeRole::Response)));
    let (m, ex) = one(&mut p, C, &packet(0xe0, &[]));
    assert_eq!((m.packet_type, ex), ("DISCONNECT", None));
}

#[test]
fn mqtt5_properties_topic_alias_and_auth_data_withheld() {
    let mut p = parser();
    let (m, _) = one(&mut p, C, &connect(5));
    assert_eq!(
        (m.protocol_version, m.properties.clone()),
        (Some(5), vec![("session_expiry_interval", Text::from_static("30"))])
    );
    one(&mut p, S, &packet(0x20, &[0, 0, 3, 0x22, 0, 10]));
    // Alias 2 set with the topic, then used alone.
    let props = [
        vec![0x23, 0, 2, 0x03],
        s("application/json"),
        vec![0x09, 0, 2, 0xbe, 0xef],
        vec![0x26],
        s("desk"),
        s("rates"),
    ]
    .concat();
    let first = [s("rates/eurusd"), vec![props.len() as u8], props.clone(), b"{}".to_vec()].concat();
    let (m, _) = one(&mut p, C, &packet(0x30, &first));
    assert_eq!((m.topic.unwrap(), m.topic_alias), (Text::from_static("rates/eurusd"), Some(2)));
    let names: Vec<(&str, String)> = m.properties.iter().map(|(n, v)| (*n, v.to_string_lossy())).collect();
    assert_eq!(
        names,
        [
            ("topic_alias", "2".into()),
            ("content_type", "application/json".into()),
            ("correlation_data", "beef".into()),
            ("user_property", "desk=rates".into())
        ]
    );
    let (m, _) = one(&mut p, C, &packet(0x30, &[s(""), vec![3, 0x23, 0, 2], b"{}".to_vec()].concat()));
    assert_eq!((m.topic.unwrap(), m.topic_alias), (Text::from_static("rates/eurusd"), Some(2)));
    let props = [vec![0x15], s("SCRAM"), vec![0x16, 0, 2, 1, 2]].concat();
    let auth = [vec![0x18, props.len() as u8], props].concat();
    let (m, _) = one(&mut p, C, &packet(0xf0, &auth));
    assert_eq!(m.properties[1], ("authentication_data", Text::from_static(WITHHELD)));
    let (m, _) = one(&mut p, S, &packet(0x40, &[0, 9, 0x10]));
    assert_eq!((m.packet_id, m.reason_code), (Some(9), Some(0x10)));
}

#[test]
fn invalid_partial_and_resync() {
    let mut p = parser();
    assert!(matches!(p.parse(C, &Bytes::from_static(&[0x00, 0x00])), Parse::Invalid { len: 1, .. }));
    assert!(matches!(p.parse(C, &Bytes::from_static(&[0x82, 0x00])), Parse::Invalid { .. }));
    assert!(matches!(p.parse(C, &Bytes::from_static(&[0x30, 0xff, 0xff, 0xff, 0xff])), Parse::Invalid { .. }));
    let big = packet(0x30, &[s("bulk/data"), vec![b'x'; 300]].concat());
    let head = Bytes::copy_from_slice(&big[..40]);
    assert_eq!(p.parse(C, &head), Parse::Need { min_len: big.len(), total: Some(big.len() as u64) });
    let part = p.interrupted(C, &head);
    let Body::Mqtt(m) = part.body else { panic!() };
    assert_eq!(
        (m.packet_type, m.topic.unwrap(), part.total),
        ("PUBLISH", Text::from_static("bulk/data"), Some(big.len() as u64))
    );
    let stream = [vec![0x00, 0x01], packet(0xc0, &[]), packet(0xc0, &[])].concat();
    assert_eq!(p.resync(C, &stream), Some(2));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), v5 in any::<bool>(), client in any::<bool>()) {
        let mut p = parser();
        one(&mut p, C, &connect(if v5 { 5 } else { 4 }));
        let dir = if client { C } else { S };
        let buf = Bytes::from(data);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len().max(1)),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    #[test]
    fn any_split_yields_the_same_packet(split in 1usize..40) {
        let all = Bytes::from(connect(4));
        let split = split.min(all.len() - 1);
        let expected = parser().parse(C, &all);
        let mut p = parser();
        let need = matches!(p.parse(C, &all.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(p.parse(C, &all), expected);
    }
}

/// Parsed fields render with the record's `type` tag and no field of the
/// same name (MQTT's packet type is `packet_type`).
#[test]
fn bodies_serialize_with_their_protocol_tag() {
    let mut p = parser();
    let Parse::Message(m) = p.parse(C, &Bytes::from(connect(4))) else { panic!() };
    let v = serde_json::to_value(&m.body).unwrap();
    assert_eq!((v["type"].as_str(), v["packet_type"].as_str()), (Some("mqtt"), Some("CONNECT")));
    let text = serde_json::to_string(&m.body).unwrap();
    assert_eq!(text.matches("\"type\":").count(), 1, "{text}");
}
