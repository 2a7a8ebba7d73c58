//! AMQP 0-9-1 methods: names, the arguments of the connection, channel,
//! exchange, queue, basic, confirm and tx classes, which methods carry
//! content, and which answer which (for pairing). Authentication responses
//! (connection.start-ok, secure, secure-ok) are withheld: only the user name
//! of PLAIN and AMQPLAIN is kept.

use bytes::Bytes;
use serde::Serialize;

use super::fields::{AmqpField, Caps, longstr, shortstr, table};
use crate::proto::fields::Text;
use crate::proto::wire::{Reader, slice};

/// Where a secret was on the wire: never its value.
pub const WITHHELD: &str = "<withheld>";

/// The arguments of one method (only those the method has are set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct AmqpArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_properties: Vec<AmqpField>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_properties: Vec<AmqpField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanisms: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Text>,
    /// User of a PLAIN or AMQPLAIN login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Text>,
    /// `<withheld>` wherever a password, challenge or response was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<&'static str>,
    /// Length of the withheld response or challenge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_max: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<Text>,
    /// Method that caused a close (`class.method`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_type: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_tag: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_tag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_count: Option<u16>,
    /// Bit flags by name (`durable`, `no_ack`, `multiple`, `requeue`, ...), those set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<AmqpField>,
}

impl AmqpArgs {
    /// The no-wait bit: no answer comes.
    pub fn no_wait(&self) -> bool {
        self.flags.contains(&"no_wait")
    }
}

/// Method name by class and method id.
pub fn method_name(class: u16, method: u16) -> Option<&'static str> {
    Some(match (class, method) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

/// Whether the method is followed by a content header and body.
pub fn has_content(class: u16, method: u16) -> bool {
    matches!((class, method), (60, 40) | (60, 50) | (60, 60) | (60, 71))
}

/// For a synchronous answer, the request method it answers.
pub fn answers(class: u16, method: u16) -> Option<u16> {
    Some(match (class, method) {
        (10, 61) => return None,
        (40, 51) => 40,
        (60, 72) => 70,
        (10 | 20 | 40 | 50 | 60 | 85 | 90, m) if m % 10 == 1 && method_name(class, m).is_some() => m - 1,
        _ => return None,
    })
}

/// Whether the method is a synchronous request that gets an answer.
pub fn is_request(class: u16, method: u16) -> bool {
    matches!((class, method), (40, 40) | (60, 70))
        || (method_name(class, method).is_some() && answers(class, method.wrapping_add(1)) == Some(method))
}

fn bits(r: &mut Reader<'_>, names: &[&'static str], out: &mut Vec<&'static str>) -> Option<()> {
    let b = r.u8()?;
    out.extend(names.iter().enumerate().filter(|(i, _)| b & (1 << i) != 0).map(|(_, n)| *n));
    Some(())
}

/// Decode the arguments of `class.method` from `r`.
pub(super) fn args(buf: &Bytes, class: u16, method: u16, r: &mut Reader<'_>, caps: Caps) -> Option<AmqpArgs> {
    let mut a = AmqpArgs::default();
    let s = |r: &mut Reader<'_>| shortstr(buf, r);
    match (class, method) {
        (10, 10) => {
            let (major, minor) = (r.u8()?, r.u8()?);
            a.version = Some(format!("{major}-{minor}"));
            a.server_properties = table(buf, r, caps)?;
            a.mechanisms = Some(Text(slice(buf, longstr(r)?)));
            a.locale = Some(Text(slice(buf, longstr(r)?)));
        }
        (10, 11) => {
            a.client_properties = table(buf, r, caps)?;
            let mechanism = s(r)?;
            let response = longstr(r)?;
            a.user = login_user(buf, &mechanism.0, response);
            a.mechanism = Some(mechanism);
            a.password = (!response.is_empty()).then_some(WITHHELD);
            a.response_len = Some(response.len());
            a.locale = Some(s(r)?);
        }
        (10, 20) | (10, 21) => {
            let v = longstr(r)?;
            a.password = Some(WITHHELD);
            a.response_len = Some(v.len());
        }
        (10, 30) | (10, 31) => {
            a.channel_max = Some(r.be16()?);
            a.frame_max = Some(r.be32()?);
            a.heartbeat = Some(r.be16()?);
        }
        (10, 40) => {
            a.virtual_host = Some(s(r)?);
        }
        (10, 50) | (20, 40) => {
            a.reply_code = Some(r.be16()?);
            a.reply_text = Some(s(r)?);
            let (c, m) = (r.be16()?, r.be16()?);
            a.failing_method = (c != 0).then(|| method_name(c, m).map_or(format!("{c}.{m}"), str::to_string));
        }
        (10, 60) => a.reply_text = Some(s(r)?),
        (20, 20) | (20, 21) => bits(r, &["active"], &mut a.flags)?,
        (40, 10) => {
            r.be16()?;
            a.exchange = Some(s(r)?);
            a.exchange_type = Some(s(r)?);
            bits(r, &["passive", "durable", "auto_delete", "internal", "no_wait"], &mut a.flags)?;
            a.arguments = table(buf, r, caps)?;
        }
        (40, 20) => {
            r.be16()?;
            a.exchange = Some(s(r)?);
            bits(r, &["if_unused", "no_wait"], &mut a.flags)?;
        }
        (40, 30) | (40, 40) => {
            r.be16()?;
            a.destination = Some(s(r)?);
            a.source = Some(s(r)?);
            a.routing_key = Some(s(r)?);
            bits(r, &["no_wait"], &mut a.flags)?;
            a.arguments = table(buf, r, caps)?;
        }
        (50, 10) => {
            r.be16()?;
            a.queue = Some(s(r)?);
            bits(r, &["passive", "durable", "exclusive", "auto_delete", "no_wait"], &mut a.flags)?;
            a.arguments = table(buf, r, caps)?;
        }
        (50, 11) => {
            a.queue = Some(s(r)?);
            a.message_count = Some(r.be32()?);
            a.consumer_count = Some(r.be32()?);
        }
        (50, 20) | (50, 50) => {
            r.be16()?;
            a.queue = Some(s(r)?);
            a.exchange = Some(s(r)?);
            a.routing_key = Some(s(r)?);
            if method == 20 {
                bits(r, &["no_wait"], &mut a.flags)?;
            }
            a.arguments = table(buf, r, caps)?;
        }
        (50, 30) | (50, 40) => {
            r.be16()?;
            a.queue = Some(s(r)?);
            let names: &[&str] = if method == 30 { &["no_wait"] } else { &["if_unused", "if_empty", "no_wait"] };
            bits(r, names, &mut a.flags)?;
        }
        (50, 31) | (50, 41) => a.message_count = Some(r.be32()?),
        (60, 10) => {
            a.prefetch_size = Some(r.be32()?);
            a.prefetch_count = Some(r.be16()?);
            bits(r, &["global"], &mut a.flags)?;
        }
        (60, 20) => {
            r.be16()?;
            a.queue = Some(s(r)?);
            a.consumer_tag = Some(s(r)?);
            bits(r, &["no_local", "no_ack", "exclusive", "no_wait"], &mut a.flags)?;
            a.arguments = table(buf, r, caps)?;
        }
        (60, 21) | (60, 31) => a.consumer_tag = Some(s(r)?),
        (60, 30) => {
            a.consumer_tag = Some(s(r)?);
            bits(r, &["no_wait"], &mut a.flags)?;
        }
        (60, 40) => {
            r.be16()?;
            a.exchange = Some(s(r)?);
            a.routing_key = Some(s(r)?);
            bits(r, &["mandatory", "immediate"], &mut a.flags)?;
        }
        (60, 50) => {
            a.reply_code = Some(r.be16()?);
            a.reply_text = Some(s(r)?);
            a.exchange = Some(s(r)?);
            a.routing_key = Some(s(r)?);
        }
        (60, 60) | (60, 71) => {
            if method == 60 {
                a.consumer_tag = Some(s(r)?);
            }
            a.delivery_tag = Some(r.be64()?);
            bits(r, &["redelivered"], &mut a.flags)?;
            a.exchange = Some(s(r)?);
            a.routing_key = Some(s(r)?);
            if method == 71 {
                a.message_count = Some(r.be32()?);
            }
        }
        (60, 70) => {
            r.be16()?;
            a.queue = Some(s(r)?);
            bits(r, &["no_ack"], &mut a.flags)?;
        }
        (60, 80) | (60, 90) | (60, 120) => {
            a.delivery_tag = Some(r.be64()?);
            let names: &[&str] = match method {
                80 => &["multiple"],
                90 => &["requeue"],
                _ => &["multiple", "requeue"],
            };
            bits(r, names, &mut a.flags)?;
        }
        (60, 100) | (60, 110) => bits(r, &["requeue"], &mut a.flags)?,
        (85, 10) => bits(r, &["no_wait"], &mut a.flags)?,
        _ => {}
    }
    Some(a)
}

/// The user of a PLAIN (`\0user\0password`) or AMQPLAIN (table with LOGIN)
/// response; the password is never read out.
fn login_user(buf: &Bytes, mechanism: &[u8], response: &[u8]) -> Option<Text> {
    match mechanism {
        b"PLAIN" => {
            let mut parts = response.splitn(3, |b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            parts.next()?;
            Some(Text(slice(buf, user)))
        }
        b"AMQPLAIN" => {
            let mut r = Reader::new(response);
            while r.remaining() > 0 {
                let name = shortstr(buf, &mut r)?;
                let code = r.u8()?;
                if code != b'S' {
                    return None;
                }
                let v = longstr(&mut r)?;
                if &name.0[..] == b"LOGIN" {
                    return Some(Text(slice(buf, v)));
                }
            }
            None
        }
        _ => None,
    }
}
