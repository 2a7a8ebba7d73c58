//! The database and broker tests read one socket's conversation as the
//! messages each direction carried ([`Msg`], from the exchange records that
//! hold them, whichever end's record that is) and check them field by field.
use serde_json::Value;

use super::{Direction, Msg, PartRole, Records, assert_whole, messages};

/// One socket's messages of both directions, in stream order.
pub struct Conversation {
    pub conn: u64,
    /// The messages the socket's process wrote.
    pub sent: Vec<Msg>,
    /// The messages it read.
    pub received: Vec<Msg>,
    /// The bytes each direction carried (the records hold them whole).
    pub sent_bytes: Vec<u8>,
    pub received_bytes: Vec<u8>,
}

fn conversation(recs: &Records, conn: u64, protocol: &str) -> Conversation {
    let c = Conversation {
        conn,
        sent: messages(recs, conn, Direction::Egress, false),
        received: messages(recs, conn, Direction::Ingress, false),
        sent_bytes: assert_whole(recs, conn, Direction::Egress, false),
        received_bytes: assert_whole(recs, conn, Direction::Ingress, false),
    };
    for m in c.sent.iter().chain(&c.received) {
        assert_eq!(m.error, None, "message with an error: {m}");
        assert_eq!(m.fields["type"], protocol, "{m}");
    }
    // The messages cover each direction's bytes exactly once.
    let joined = |ms: &[Msg]| ms.iter().flat_map(|m| m.raw.iter().copied()).collect::<Vec<u8>>();
    assert_eq!(joined(&c.sent), c.sent_bytes, "sent messages do not tile what conn {conn} sent");
    assert_eq!(joined(&c.received), c.received_bytes, "received messages do not tile what conn {conn} read");
    c
}

/// The client side (process `pid`, to `remote`): its records hold both
/// directions whole, every message parsed as `protocol` without error.
pub fn client_side(recs: &Records, pid: u32, remote: &str, protocol: &str) -> Conversation {
    conversation(recs, recs.client_conn(pid, remote), protocol)
}

/// The server side of the same TCP connection as `client`, checked the same
/// way; its bytes are the client's, directions swapped.
pub fn server_side(recs: &Records, client: &Conversation, remote: &str, protocol: &str) -> Conversation {
    let local = recs.side(client.conn).local.expect("client address").to_string();
    let s = conversation(recs, recs.conn_between(remote, &local), protocol);
    assert_eq!(s.received_bytes, client.sent_bytes, "server received != client sent");
    assert_eq!(s.sent_bytes, client.received_bytes, "server sent != client received");
    s
}

/// Parsed fields of a message.
pub fn fields(m: &Msg) -> &Value {
    &m.fields
}

/// Raw bytes of a message.
pub fn bytes(m: &Msg) -> Vec<u8> {
    m.raw.clone()
}

/// The messages whose fields match `pred`.
pub fn matching(ms: &[Msg], pred: impl Fn(&Value) -> bool) -> Vec<&Msg> {
    ms.iter().filter(|m| pred(&m.fields)).collect()
}

/// The one message matching `pred` (panics listing them all otherwise).
pub fn the<'a>(ms: &'a [Msg], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Msg {
    let m = matching(ms, pred);
    assert_eq!(
        m.len(),
        1,
        "expected one {what}, found {}:\n{:#?}",
        m.len(),
        ms.iter().map(|m| &m.fields).collect::<Vec<_>>()
    );
    m[0]
}

/// The answer to `req` among `answers`: the response in the same exchange
/// record, which gives the exchange's latency.
pub fn answer_to<'a>(answers: &'a [Msg], req: &Msg) -> &'a Msg {
    assert_eq!(req.role, PartRole::Request, "not a request: {req}");
    let m: Vec<&Msg> = answers.iter().filter(|a| a.record == req.record && a.role == PartRole::Response).collect();
    assert_eq!(m.len(), 1, "expected one answer to {req}, found {m:#?}");
    assert!(m[0].latency_ns.is_some(), "exchange without latency: {}", m[0]);
    m[0]
}

/// Asserts the message pairs with nothing (a one-way message).
pub fn assert_one_way(m: &Msg) {
    assert_eq!((m.role, m.exchange_id), (PartRole::Message, None), "expected a one-way message: {m}");
}

/// The bytes of a payload preview's source: `raw[offset .. offset + len]`.
pub fn payload_bytes(m: &Msg, payload: &Value) -> Vec<u8> {
    let (off, len) = (payload["offset"].as_u64().unwrap() as usize, payload["len"].as_u64().unwrap() as usize);
    m.raw[off..off + len].to_vec()
}

/// Asserts `secret` appears in no record's parsed fields.
pub fn assert_secret_not_parsed(recs: &Records, secret: &str) {
    for e in recs.exchanges() {
        for m in &e.messages {
            let text = m.fields.json().to_string();
            assert!(!text.contains(secret), "secret in parsed fields: {text}");
        }
    }
}

/// MySQL command messages by name (`COM_QUERY`, ...).
pub fn mysql_commands<'a>(ms: &'a [Msg], name: &str) -> Vec<&'a Msg> {
    matching(ms, |b| b["command"]["name"] == name)
}

/// The MySQL COM_QUERY message with exactly this SQL.
pub fn mysql_query<'a>(ms: &'a [Msg], sql: &str) -> &'a Msg {
    the(ms, &format!("COM_QUERY {sql:?}"), |b| b["command"]["name"] == "COM_QUERY" && b["command"]["query"] == sql)
}

/// A MySQL packet as sent: 3-byte length, sequence id, payload.
pub fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    [&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq][..], payload].concat()
}

/// AMQP method messages by name (`basic.publish`, ...).
pub fn amqp_methods<'a>(ms: &'a [Msg], name: &str) -> Vec<&'a Msg> {
    matching(ms, |b| b["method"] == name)
}

/// NATS messages by operation (`PUB`, `MSG`, ...).
pub fn nats_ops<'a>(ms: &'a [Msg], op: &str) -> Vec<&'a Msg> {
    matching(ms, |b| b["op"] == op)
}

/// MQTT messages by packet type (`PUBLISH`, ...).
pub fn mqtt_packets<'a>(ms: &'a [Msg], t: &str) -> Vec<&'a Msg> {
    matching(ms, |b| b["packet_type"] == t)
}
