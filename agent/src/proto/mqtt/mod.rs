//! MQTT 3.1, 3.1.1 and 5.0: every control packet, with CONNECT (client id,
//! user, will, keep alive; password withheld), CONNACK, PUBLISH (topic,
//! topic alias resolved, QoS, retain, dup, packet id, payload), the QoS 1/2
//! acknowledgements, SUBSCRIBE / SUBACK, UNSUBSCRIBE / UNSUBACK, PINGREQ /
//! PINGRESP, DISCONNECT, AUTH, and MQTT 5 properties.
//!
//! **Records.** One control packet per record.
//!
//! **Pairing.** By packet identifier, in the namespace of the side that
//! started the flow (client and server number their publishes
//! independently): key = side << 20 | flow << 16 | packet id, with flow 1 for
//! PUBLISH (QoS 1: PUBACK, QoS 2: PUBREC answers), 2 for PUBREL → PUBCOMP, 3
//! for SUBSCRIBE → SUBACK, 4 for UNSUBSCRIBE → UNSUBACK. CONNECT → CONNACK
//! and PINGREQ → PINGRESP pair by ordinal (1 << 24, 2 << 24). QoS 0
//! publishes, DISCONNECT and AUTH are one-way.
//!
//! **Version.** The protocol level of CONNECT decides whether packets carry
//! MQTT 5 properties; a connection joined after its CONNECT is read as 3.1.1
//! unless a packet only decodes as MQTT 5.
//!
//! **Limits and resync.** Topic aliases are remembered per direction up to
//! 1024 of them. After a gap a boundary is a fixed header with a valid type
//! and flags and a remaining length that ends the buffer or is followed by
//! another valid fixed header.

use std::collections::HashMap;

use bytes::Bytes;

use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::wire::{Payload, Reader};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

mod packets;

use packets::{Caps, TYPES};
pub use packets::{MqttPacket, MqttSubscription, MqttWill, WITHHELD};

const MAX_ALIASES: usize = 1024;
const CONNECT_KEY: u64 = 1 << 24;
const PING_KEY: u64 = 2 << 24;

/// Why MQTT bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MqttError {
    /// Type 0, or flags a packet type does not allow.
    #[error("invalid fixed header 0x{0:02x}")]
    Header(u8),
    /// A remaining length longer than four bytes.
    #[error("malformed remaining length")]
    Length,
    /// The packet's contents do not decode.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// A fixed header's type and flags are a valid combination.
fn valid_header(b: u8) -> bool {
    let (t, f) = (b >> 4, b & 0x0f);
    match t {
        0 => false,
        3 => (f >> 1) & 3 != 3,
        6 | 8 | 10 => f == 2,
        _ => f == 0,
    }
}

/// The fixed header at `at`: (header length, remaining length), or `None`
/// when more bytes are needed.
fn fixed(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, MqttError> {
    let Some(&b) = buf.get(at) else { return Ok(None) };
    if !valid_header(b) {
        return Err(MqttError::Header(b));
    }
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&c) = buf.get(at + 1 + i) else { return Ok(None) };
        v |= usize::from(c & 0x7f) << (7 * i);
        if c & 0x80 == 0 {
            return Ok(Some((2 + i, v)));
        }
    }
    Err(MqttError::Length)
}

/// MQTT parser for one connection.
pub struct MqttParser {
    client_dir: Direction,
    caps: Caps,
    version: Option<u8>,
    aliases: [HashMap<u16, Text>; 2],
    connects: [u64; 2],
    pings: [u64; 2],
    attrs: crate::proto::wire::SenderAttrs,
}

impl MqttParser {
    /// A parser; the client writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        MqttParser {
            client_dir,
            caps: Caps {
                listed: cfg.max_values_listed,
                value: cfg.max_value_bytes,
                preview: cfg.max_payload_preview_bytes,
            },
            version: None,
            aliases: [HashMap::new(), HashMap::new()],
            connects: [0, 0],
            pings: [0, 0],
            attrs: Default::default(),
        }
    }

    /// Decode the packet's body (`body` starts at `base` in `buf`).
    fn decode(
        &mut self,
        dir: Direction,
        buf: &Bytes,
        t: u8,
        body: &[u8],
        base: usize,
        m: &mut MqttPacket,
    ) -> Option<()> {
        let mut r = Reader::new(body);
        let v5 = self.version == Some(5);
        let caps = self.caps;
        match t {
            1 => {
                let level = packets::connect(buf, &mut r, m, caps, base)?;
                self.version = Some(level);
                let i = dir.index();
                for (key, v) in [("mqtt.client_id", &m.client_id), ("mqtt.user", &m.user)] {
                    if let Some(v) = v {
                        self.attrs.set(i, key, &v.0);
                    }
                }
                m.protocol_version = Some(level);
            }
            2 => {
                m.session_present = Some(r.u8()? & 1 != 0);
                m.reason_code = Some(r.u8()?);
                if v5 && r.remaining() > 0 {
                    packets::properties(buf, &mut r, m, caps)?;
                }
            }
            3 => {
                let qos = (m.flags >> 1) & 3;
                m.qos = Some(qos);
                m.retain = Some(m.flags & 1 != 0);
                m.dup = Some(m.flags & 8 != 0);
                let topic = packets::string(buf, &mut r)?;
                if qos > 0 {
                    m.packet_id = Some(r.be16()?);
                }
                if v5 {
                    packets::properties(buf, &mut r, m, caps)?;
                }
                let aliases = &mut self.aliases[dir.index()];
                m.topic = match m.topic_alias {
                    Some(a) if topic.0.is_empty() => aliases.get(&a).cloned(),
                    Some(a) => {
                        if aliases.len() < MAX_ALIASES || aliases.contains_key(&a) {
                            aliases.insert(a, Text(Bytes::copy_from_slice(&topic.0)));
                        }
                        Some(topic)
                    }
                    None => Some(topic),
                };
                let payload = r.rest();
                m.payload = Some(Payload::of(buf, payload, base + r.at, caps.preview));
            }
            4..=7 => {
                m.packet_id = Some(r.be16()?);
                if v5 && r.remaining() > 0 {
                    m.reason_code = Some(r.u8()?);
                    if r.remaining() > 0 {
                        packets::properties(buf, &mut r, m, caps)?;
                    }
                }
            }
            8 | 10 => {
                m.packet_id = Some(r.be16()?);
                if v5 {
                    packets::properties(buf, &mut r, m, caps)?;
                }
                while r.remaining() > 0 {
                    let filter = packets::string(buf, &mut r)?;
                    let options = if t == 8 { r.u8()? } else { 0 };
                    let s = MqttSubscription { filter, qos: options & 3, options };
                    crate::proto::wire::push_capped(&mut m.subscriptions, s, caps.listed);
                }
            }
            9 | 11 => {
                m.packet_id = Some(r.be16()?);
                if v5 {
                    packets::properties(buf, &mut r, m, caps)?;
                }
                let codes = r.rest();
                m.reason_codes = codes[..codes.len().min(caps.listed)].to_vec();
            }
            14 | 15 if r.remaining() > 0 => {
                m.reason_code = Some(r.u8()?);
                if v5 && r.remaining() > 0 {
                    packets::properties(buf, &mut r, m, caps)?;
                }
            }
            _ => {}
        }
        Some(())
    }

    fn pairing(&mut self, dir: Direction, m: &MqttPacket, t: u8) -> Option<(u64, ExchangeRole)> {
        let side = u64::from(dir != self.client_dir);
        let key = |side: u64, flow: u64, id: u16| side << 20 | flow << 16 | u64::from(id);
        let (req, resp) = (ExchangeRole::Request, ExchangeRole::Response);
        let i = dir.index();
        match t {
            1 => {
                self.connects[i] += 1;
                Some((CONNECT_KEY | self.connects[i], req))
            }
            2 => (self.connects[1 - i] > 0).then_some((CONNECT_KEY | self.connects[1 - i], resp)),
            12 => {
                self.pings[i] += 1;
                Some((PING_KEY | self.pings[i], req))
            }
            13 => (self.pings[1 - i] > 0).then_some((PING_KEY | self.pings[1 - i], resp)),
            3 if m.qos.unwrap_or(0) > 0 => Some((key(side, 1, m.packet_id?), req)),
            4 | 5 => Some((key(1 - side, 1, m.packet_id?), resp)),
            6 => Some((key(side, 2, m.packet_id?), req)),
            7 => Some((key(1 - side, 2, m.packet_id?), resp)),
            8 => Some((key(side, 3, m.packet_id?), req)),
            9 => Some((key(1 - side, 3, m.packet_id?), resp)),
            10 => Some((key(side, 4, m.packet_id?), req)),
            11 => Some((key(1 - side, 4, m.packet_id?), resp)),
            _ => None,
        }
    }
}

impl Parser for MqttParser {
    fn protocol(&self) -> Protocol {
        Protocol::Mqtt
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        let (hlen, rem) = match fixed(buf, 0) {
            Ok(Some(h)) => h,
            Ok(None) => return Parse::Need { min_len: buf.len() + 1, total: None },
            Err(e) => return Parse::Invalid { len: 1, error: e.to_string() },
        };
        let total = hlen + rem;
        if buf.len() < total {
            return Parse::Need { min_len: total, total: Some(total as u64) };
        }
        let t = buf[0] >> 4;
        let name = TYPES[usize::from(t)];
        let mut m = MqttPacket {
            packet_type: name,
            flags: buf[0] & 0x0f,
            remaining_length: rem as u64,
            protocol_version: self.version,
            ..MqttPacket::default()
        };
        let body = &buf[hlen..total];
        let before = self.version;
        if self.decode(dir, buf, t, body, hlen, &mut m).is_none() {
            // A connection joined after CONNECT may be MQTT 5: try that once.
            let mut again = MqttPacket { properties: Vec::new(), ..m.clone() };
            self.version = Some(5);
            if before.is_none() && t != 1 && self.decode(dir, buf, t, body, hlen, &mut again).is_some() {
                again.protocol_version = Some(5);
                m = again;
            } else {
                self.version = before;
                return Parse::Invalid { len: total, error: MqttError::Malformed(name).to_string() };
            }
        }
        let exchange = self.pairing(dir, &m, t);
        Parse::Message(Parsed { len: total, body: Body::Mqtt(Box::new(m)), exchange, error: None })
    }

    fn interrupted(&mut self, _dir: Direction, buf: &Bytes) -> Partial {
        let mut m = MqttPacket { packet_type: "UNKNOWN", protocol_version: self.version, ..MqttPacket::default() };
        let mut total = None;
        if let Ok(Some((hlen, rem))) = fixed(buf, 0) {
            m.packet_type = TYPES[usize::from(buf[0] >> 4)];
            m.flags = buf[0] & 0x0f;
            m.remaining_length = rem as u64;
            total = Some((hlen + rem) as u64);
            if buf[0] >> 4 == 3 {
                // The topic of a large PUBLISH is at its start.
                let mut r = Reader::new(&buf[hlen..]);
                m.topic = packets::string(buf, &mut r);
                m.qos = Some((m.flags >> 1) & 3);
            }
        }
        Partial { body: Body::Mqtt(Box::new(m)), exchange: None, total, complete_at_end: false }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        (0..buf.len().min(4096)).find(|&i| match fixed(buf, i) {
            Ok(Some((h, rem))) => {
                let next = i + h + rem;
                next == buf.len() || (next < buf.len() && fixed(buf, next).is_ok())
            }
            _ => false,
        })
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.attrs.get(dir.index())
    }

    fn gap(&mut self, dir: Direction) {
        // Aliases set in the lost bytes are unknown now.
        self.aliases[dir.index()].clear();
    }
}

#[cfg(test)]
mod tests;
