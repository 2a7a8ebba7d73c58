//! The MQTT record model and the decoders of each control packet's variable
//! header and payload, MQTT 5 properties included. The CONNECT password and
//! MQTT 5 authentication data are never put in parsed fields.

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::Text;
use crate::proto::wire::{Payload, Reader, capped, hex, push_capped, slice};

/// Where a secret was on the wire: never its value.
pub const WITHHELD: &str = "<withheld>";

/// Control packet type names (index = type).
pub(super) const TYPES: [&str; 16] = [
    "RESERVED",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

/// Caps applied while decoding.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub(super) listed: usize,
    pub(super) value: usize,
    pub(super) preview: usize,
}

/// The will message of a CONNECT.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttWill {
    /// Will topic.
    pub topic: Text,
    /// Will QoS.
    pub qos: u8,
    /// Will retain flag.
    pub retain: bool,
    /// Will payload.
    pub payload: Payload,
}

/// One subscription of a SUBSCRIBE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttSubscription {
    /// Topic filter.
    pub filter: Text,
    /// Maximum QoS asked for.
    pub qos: u8,
    /// The whole options byte (MQTT 5: no-local, retain-as-published, retain handling).
    pub options: u8,
}

/// One MQTT control packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttPacket {
    /// Packet type name, e.g. `PUBLISH`.
    pub packet_type: &'static str,
    /// Fixed-header flags (low 4 bits).
    pub flags: u8,
    /// Remaining length.
    pub remaining_length: u64,
    /// Protocol level in force (3 = 3.1, 4 = 3.1.1, 5 = 5.0), when known.
    pub protocol_version: Option<u8>,
    /// CONNECT: protocol name (`MQTT`, `MQIsdp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<Text>,
    /// CONNECT: client identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Text>,
    /// CONNECT: user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Text>,
    /// CONNECT: `<withheld>` when a password was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<&'static str>,
    /// CONNECT: length of the withheld password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_len: Option<usize>,
    /// CONNECT: clean session / clean start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_start: Option<bool>,
    /// CONNECT: keep alive (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<u16>,
    /// CONNECT: will message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub will: Option<MqttWill>,
    /// CONNACK: session present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_present: Option<bool>,
    /// Return / reason code (CONNACK, acks, DISCONNECT, AUTH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u8>,
    /// PUBLISH: topic (resolved from the topic alias when the packet sent none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Text>,
    /// PUBLISH: MQTT 5 topic alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_alias: Option<u16>,
    /// PUBLISH: QoS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// PUBLISH: retain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
    /// PUBLISH: duplicate delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dup: Option<bool>,
    /// Packet identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<u16>,
    /// PUBLISH payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// SUBSCRIBE: subscriptions; UNSUBSCRIBE: filters (qos 0).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<MqttSubscription>,
    /// SUBACK/UNSUBACK: one code per subscription.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reason_codes: Vec<u8>,
    /// MQTT 5 properties, name and value (authentication data withheld).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<(&'static str, Text)>,
}

pub(super) fn varint(r: &mut Reader<'_>) -> Option<u32> {
    let mut v = 0u32;
    for i in 0..4 {
        let b = r.u8()?;
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub(super) fn string(buf: &Bytes, r: &mut Reader<'_>) -> Option<Text> {
    let n = r.be16()?;
    Some(Text(slice(buf, r.bytes(usize::from(n))?)))
}

fn binary<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = r.be16()?;
    r.bytes(usize::from(n))
}

fn text(s: String) -> Text {
    Text(Bytes::from(s))
}

/// MQTT 5 properties; returns the topic alias if one is set.
pub(super) fn properties(buf: &Bytes, r: &mut Reader<'_>, out: &mut MqttPacket, caps: Caps) -> Option<()> {
    let len = usize::try_from(varint(r)?).ok()?;
    let mut p = Reader::new(r.bytes(len)?);
    while p.remaining() > 0 {
        let id = varint(&mut p)?;
        let (name, value): (&'static str, Text) = match id {
            0x01 => ("payload_format_indicator", text(p.u8()?.to_string())),
            0x02 => ("message_expiry_interval", text(p.be32()?.to_string())),
            0x03 => ("content_type", string(buf, &mut p)?),
            0x08 => ("response_topic", string(buf, &mut p)?),
            0x09 => ("correlation_data", text(hex(binary(&mut p)?, caps.value / 2))),
            0x0b => ("subscription_identifier", text(varint(&mut p)?.to_string())),
            0x11 => ("session_expiry_interval", text(p.be32()?.to_string())),
            0x12 => ("assigned_client_identifier", string(buf, &mut p)?),
            0x13 => ("server_keep_alive", text(p.be16()?.to_string())),
            0x15 => ("authentication_method", string(buf, &mut p)?),
            0x16 => {
                binary(&mut p)?;
                ("authentication_data", Text::from_static(WITHHELD))
            }
            0x17 => ("request_problem_information", text(p.u8()?.to_string())),
            0x18 => ("will_delay_interval", text(p.be32()?.to_string())),
            0x19 => ("request_response_information", text(p.u8()?.to_string())),
            0x1a => ("response_information", string(buf, &mut p)?),
            0x1c => ("server_reference", string(buf, &mut p)?),
            0x1f => ("reason_string", string(buf, &mut p)?),
            0x21 => ("receive_maximum", text(p.be16()?.to_string())),
            0x22 => ("topic_alias_maximum", text(p.be16()?.to_string())),
            0x23 => {
                let a = p.be16()?;
                out.topic_alias = Some(a);
                ("topic_alias", text(a.to_string()))
            }
            0x24 => ("maximum_qos", text(p.u8()?.to_string())),
            0x25 => ("retain_available", text(p.u8()?.to_string())),
            0x26 => {
                let (k, v) = (string(buf, &mut p)?, string(buf, &mut p)?);
                let mut s = k.to_string_lossy();
                s.push('=');
                s.push_str(&v.to_string_lossy());
                ("user_property", text(s))
            }
            0x27 => ("maximum_packet_size", text(p.be32()?.to_string())),
            0x28 => ("wildcard_subscription_available", text(p.u8()?.to_string())),
            0x29 => ("subscription_identifier_available", text(p.u8()?.to_string())),
            0x2a => ("shared_subscription_available", text(p.u8()?.to_string())),
            _ => return None,
        };
        let value = if value.0.len() > caps.value { capped(&value.0, &value.0, caps.value).0 } else { value };
        push_capped(&mut out.properties, (name, value), caps.listed);
    }
    Some(())
}

/// CONNECT's variable header and payload; returns the protocol level.
pub(super) fn connect(buf: &Bytes, r: &mut Reader<'_>, m: &mut MqttPacket, caps: Caps, base: usize) -> Option<u8> {
    m.protocol_name = Some(string(buf, r)?);
    let level = r.u8()?;
    let flags = r.u8()?;
    m.clean_start = Some(flags & 0x02 != 0);
    m.keep_alive = Some(r.be16()?);
    if level >= 5 {
        properties(buf, r, m, caps)?;
    }
    m.client_id = Some(string(buf, r)?);
    if flags & 0x04 != 0 {
        if level >= 5 {
            let mut will_props = MqttPacket::default();
            properties(buf, r, &mut will_props, caps)?;
        }
        let topic = string(buf, r)?;
        let payload = binary(r)?;
        let offset = base + r.at - payload.len();
        m.will = Some(MqttWill {
            topic,
            qos: (flags >> 3) & 3,
            retain: flags & 0x20 != 0,
            payload: Payload::of(buf, payload, offset, caps.preview),
        });
    }
    if flags & 0x80 != 0 {
        m.user = Some(string(buf, r)?);
    }
    if flags & 0x40 != 0 {
        let pw = binary(r)?;
        m.password = Some(WITHHELD);
        m.password_len = Some(pw.len());
    }
    Some(level)
}
