//! AMQP 0-9-1 (RabbitMQ): the protocol header, method frames with their
//! arguments (connection and channel opens with virtual host and user,
//! declarations, bindings, consumers, publishes, deliveries, acks, nacks,
//! closes with reply codes), content headers with the basic properties
//! (message id, correlation id, headers, ...) and bodies, and heartbeats.
//!
//! **Records.** One method frame per record, with the content header and body
//! frames that follow it on the same channel (basic.publish, basic.deliver,
//! basic.get-ok, basic.return): a published or delivered message is one
//! record with its exchange, routing key, properties and body. If another
//! frame comes between (frames of other channels may interleave), the rest of
//! the content is recorded as `content` records of that channel
//! (`continued`). A message larger than half the message cap is cut at a
//! frame boundary and continued the same way. Heartbeats and the protocol
//! header are records of their own.
//!
//! **Pairing.** Synchronous methods pair with their `-ok` answer on the same
//! channel: key = channel << 32 | class << 16 | request method (AMQP allows one
//! outstanding synchronous request per channel and peer). Requests flagged
//! `no-wait` get no answer and are one-way. Either side may ask: the server's
//! connection.start pairs with the client's start-ok, a server channel.close
//! with the client's close-ok. Publisher confirms: once the client sent
//! confirm.select on a channel, each basic.publish is a request numbered from
//! 1 on that channel (`publish_seq`) and the server's basic.ack/basic.nack with
//! that delivery tag is its answer (key = 1 << 63 | channel << 47 | tag; an
//! ack with `multiple` pairs with its own tag and covers the ones before).
//! Everything else (deliveries, consumer acks, rejects, returns, heartbeats)
//! is one-way.
//!
//! **Secrets.** The SASL response of connection.start-ok and the data of
//! connection.secure / secure-ok are never put in parsed fields: the user of
//! PLAIN and AMQPLAIN is kept, the password is `"<withheld>"` and the
//! response's length is given.
//!
//! **Limits and resync.** Frames up to 16 MiB are accepted (RabbitMQ's
//! frame_max is 128 KiB); channel state is kept for at most 4096 channels.
//! After a gap a boundary is a frame header (type 1, 2, 3 or 8, a plausible
//! size, frame-end octet 0xCE) followed by another one or the end of the buffer.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::{Body, ExchangeRole};
use crate::proto::wire::{Payload, Reader};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

mod fields;
pub mod methods;

pub use fields::{AmqpField, AmqpProperties};
pub use methods::{AmqpArgs, WITHHELD};

/// The protocol header a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_END: u8 = 0xce;
const MAX_FRAME: usize = 1 << 24;
const MAX_CHANNELS: usize = 4096;
/// Publisher-confirm pairing keys.
const CONFIRM_KEY: u64 = 1 << 63;
const TAG_MASK: u64 = (1 << 47) - 1;

/// Why AMQP bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmqpError {
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    FrameType(u8),
    /// A frame larger than 16 MiB.
    #[error("frame size {0} over 16 MiB")]
    FrameSize(u32),
    /// The frame does not end with 0xCE.
    #[error("frame end octet 0x{0:02x} instead of 0xce")]
    FrameEnd(u8),
    /// A method frame whose class and method ids name no method.
    #[error("unknown method {0}.{1}")]
    Method(u16, u16),
    /// A frame payload that does not decode.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmqpKind {
    /// `AMQP` 0 0 9 1.
    ProtocolHeader,
    /// A method frame (with its content when it has one).
    Method,
    /// Content header/body frames continuing an earlier method's content.
    Content,
    /// A heartbeat frame.
    Heartbeat,
}

/// One AMQP record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AmqpFrame {
    /// What the record holds.
    pub kind: AmqpKind,
    /// Channel number.
    pub channel: u16,
    /// Frames in the record.
    pub frames: u32,
    /// Continues the content of an earlier record.
    pub continued: bool,
    /// Protocol version of a protocol header (`0-9-1`).
    pub protocol: Option<String>,
    /// Class id.
    pub class_id: Option<u16>,
    /// Method id.
    pub method_id: Option<u16>,
    /// Method name, e.g. `basic.publish`.
    pub method: Option<&'static str>,
    /// Method arguments.
    pub args: Option<AmqpArgs>,
    /// Publisher-confirm sequence number of a basic.publish.
    pub publish_seq: Option<u64>,
    /// Content properties.
    pub properties: Option<AmqpProperties>,
    /// Body size declared by the content header.
    pub body_size: Option<u64>,
    /// Body bytes in this record (`len`) and a preview of them.
    pub body: Option<Payload>,
    /// The whole declared body is in this record (or its continuations so far).
    pub body_complete: bool,
}

impl AmqpFrame {
    fn new(kind: AmqpKind, channel: u16) -> Self {
        AmqpFrame {
            kind,
            channel,
            frames: 0,
            continued: false,
            protocol: None,
            class_id: None,
            method_id: None,
            method: None,
            args: None,
            publish_seq: None,
            properties: None,
            body_size: None,
            body: None,
            body_complete: false,
        }
    }
}

/// Per-channel state shared by both directions.
#[derive(Clone, Copy, Debug, Default)]
struct Chan {
    /// confirm.select was sent.
    confirm: bool,
    /// Publishes so far under confirm mode.
    published: u64,
}

/// Content still to come on a channel, per direction.
#[derive(Clone, Copy, Debug)]
struct Content {
    /// `None` until the content header arrives.
    remaining: Option<u64>,
}

/// A record being assembled (kept across `Need`).
struct Scan {
    at: usize,
    /// Boxed: the scan moves out of and back into the parser on every call
    /// (content split across events), and the record takes it boxed.
    rec: Box<AmqpFrame>,
    exchange: Option<(u64, ExchangeRole)>,
}

/// One frame at the front of a buffer.
struct Frame<'a> {
    kind: u8,
    channel: u16,
    payload: &'a [u8],
    /// Offset of the payload in the buffer.
    at: usize,
    /// Bytes of the whole frame.
    total: usize,
}

/// AMQP 0-9-1 parser for one connection.
pub struct AmqpParser {
    client_dir: Direction,
    max_group: usize,
    caps: fields::Caps,
    preview: usize,
    channels: HashMap<u16, Chan>,
    content: [HashMap<u16, Content>; 2],
    scan: [Option<Scan>; 2],
    attrs: crate::proto::wire::SenderAttrs,
}

/// The frame at `at`: `Ok(None)` when more bytes are needed (with the total if known).
fn frame(buf: &[u8], at: usize) -> Result<Result<Frame<'_>, Option<usize>>, AmqpError> {
    let Some(h) = buf.get(at..at + 7) else { return Ok(Err(None)) };
    let kind = h[0];
    if !matches!(kind, 1..=3 | 8) {
        return Err(AmqpError::FrameType(kind));
    }
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
    if size as usize > MAX_FRAME {
        return Err(AmqpError::FrameSize(size));
    }
    let total = 7 + size as usize + 1;
    let Some(end) = buf.get(at + total - 1) else { return Ok(Err(Some(at + total))) };
    if *end != FRAME_END {
        return Err(AmqpError::FrameEnd(*end));
    }
    Ok(Ok(Frame {
        kind,
        channel: u16::from_be_bytes([h[1], h[2]]),
        payload: &buf[at + 7..at + total - 1],
        at: at + 7,
        total,
    }))
}

impl AmqpParser {
    /// A parser; the client writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        AmqpParser {
            client_dir,
            max_group: (cfg.max_message_bytes / 2).max(64),
            caps: fields::Caps { listed: cfg.max_values_listed, value: cfg.max_value_bytes },
            preview: cfg.max_payload_preview_bytes,
            channels: HashMap::new(),
            content: [HashMap::new(), HashMap::new()],
            scan: [None, None],
            attrs: Default::default(),
        }
    }

    fn chan(&mut self, channel: u16) -> Option<&mut Chan> {
        if !self.channels.contains_key(&channel) && self.channels.len() >= MAX_CHANNELS {
            return None;
        }
        Some(self.channels.entry(channel).or_default())
    }

    /// Start a record with the frame `f` (the first of the record).
    fn first(&mut self, dir: Direction, buf: &Bytes, f: &Frame<'_>) -> Result<Scan, AmqpError> {
        let i = dir.index();
        let mut scan = Scan { at: 0, rec: Box::new(AmqpFrame::new(AmqpKind::Content, f.channel)), exchange: None };
        match f.kind {
            8 => scan.rec.kind = AmqpKind::Heartbeat,
            1 => {
                scan.rec.kind = AmqpKind::Method;
                let mut r = Reader::new(f.payload);
                let (class, method) = (r.be16(), r.be16());
                let (Some(class), Some(method)) = (class, method) else {
                    return Err(AmqpError::Malformed("method frame"));
                };
                let name = methods::method_name(class, method).ok_or(AmqpError::Method(class, method))?;
                let args = methods::args(buf, class, method, &mut r, self.caps).ok_or(AmqpError::Malformed(name))?;
                scan.rec.class_id = Some(class);
                scan.rec.method_id = Some(method);
                scan.rec.method = Some(name);
                scan.exchange = self.pairing(dir, f.channel, class, method, &args, &mut scan.rec);
                self.learn(i, &args);
                scan.rec.args = Some(args);
                if methods::has_content(class, method) {
                    if self.content[i].len() < MAX_CHANNELS {
                        self.content[i].insert(f.channel, Content { remaining: None });
                    }
                } else {
                    self.content[i].remove(&f.channel);
                }
            }
            _ => {
                scan.rec.continued = true;
            }
        }
        Ok(scan)
    }

    /// Pairing of a method, and channel state changes.
    fn pairing(
        &mut self,
        dir: Direction,
        channel: u16,
        class: u16,
        method: u16,
        args: &AmqpArgs,
        rec: &mut AmqpFrame,
    ) -> Option<(u64, ExchangeRole)> {
        let key = |m: u16| u64::from(channel) << 32 | u64::from(class) << 16 | u64::from(m);
        let client = dir == self.client_dir;
        match (class, method) {
            (20, 10) | (20, 41) => {
                self.channels.remove(&channel);
            }
            (85, 10) if client => {
                if let Some(c) = self.chan(channel) {
                    c.confirm = true;
                }
            }
            (60, 40) if client => {
                if let Some(c) = self.chan(channel).filter(|c| c.confirm) {
                    c.published += 1;
                    rec.publish_seq = Some(c.published);
                    let tag = c.published & TAG_MASK;
                    return Some((CONFIRM_KEY | u64::from(channel) << 47 | tag, ExchangeRole::Request));
                }
                return None;
            }
            (60, 80) | (60, 120) if !client => {
                let tag = args.delivery_tag? & TAG_MASK;
                let confirm = self.channels.get(&channel).is_some_and(|c| c.confirm);
                return confirm.then_some((CONFIRM_KEY | u64::from(channel) << 47 | tag, ExchangeRole::Response));
            }
            _ => {}
        }
        if let Some(req) = methods::answers(class, method) {
            return Some((key(req), ExchangeRole::Response));
        }
        (methods::is_request(class, method) && !args.no_wait()).then(|| (key(method), ExchangeRole::Request))
    }

    /// Add frame `f` (content of the record's channel) to the record; false
    /// if it does not belong (another channel, or no content expected).
    fn add_content(&mut self, i: usize, buf: &Bytes, scan: &mut Scan, f: &Frame<'_>) -> Result<bool, AmqpError> {
        if f.channel != scan.rec.channel || !matches!(f.kind, 2 | 3) {
            return Ok(false);
        }
        let Some(c) = self.content[i].get_mut(&f.channel) else { return Ok(false) };
        match (f.kind, c.remaining) {
            (2, None) => {
                let mut r = Reader::new(f.payload);
                let (Some(_class), Some(_weight), Some(size), Some(flags)) = (r.be16(), r.be16(), r.be64(), r.be16())
                else {
                    return Err(AmqpError::Malformed("content header"));
                };
                let mut all = flags;
                let mut more = flags;
                while more & 1 != 0 {
                    more = r.be16().ok_or(AmqpError::Malformed("content header"))?;
                    all &= !1;
                }
                let props = fields::properties(buf, &mut r, all, self.caps)
                    .ok_or(AmqpError::Malformed("content properties"))?;
                scan.rec.properties = Some(props);
                scan.rec.body_size = Some(size);
                c.remaining = Some(size);
            }
            (3, Some(left)) => {
                let n = f.payload.len() as u64;
                c.remaining = Some(left.saturating_sub(n));
                match &mut scan.rec.body {
                    Some(b) => b.len += n,
                    // The record starts at the buffer's start: offsets are the same.
                    None => scan.rec.body = Some(Payload::of(buf, f.payload, f.at, self.preview)),
                }
            }
            _ => return Ok(false),
        }
        scan.rec.frames += 1;
        if c.remaining == Some(0) {
            scan.rec.body_complete = true;
            self.content[i].remove(&f.channel);
        }
        Ok(true)
    }

    /// Identity attributes from connection.start / start-ok / open.
    fn learn(&mut self, i: usize, a: &AmqpArgs) {
        let prop =
            |list: &[AmqpField], name: &[u8]| list.iter().find(|f| &f.name.0[..] == name).map(|f| f.value.0.clone());
        let pairs = [
            ("amqp.user", a.user.as_ref().map(|t| t.0.clone())),
            ("amqp.virtual_host", a.virtual_host.as_ref().map(|t| t.0.clone())),
            ("amqp.client_product", prop(&a.client_properties, b"product")),
            ("amqp.connection_name", prop(&a.client_properties, b"connection_name")),
            ("amqp.server_product", prop(&a.server_properties, b"product")),
            ("amqp.server_version", prop(&a.server_properties, b"version")),
        ];
        for (key, v) in pairs {
            if let Some(v) = v {
                self.attrs.set(i, key, &v);
            }
        }
    }

    fn content_done(&self, i: usize, channel: u16) -> bool {
        !self.content[i].contains_key(&channel)
    }
}

impl Parser for AmqpParser {
    fn protocol(&self) -> Protocol {
        Protocol::Amqp
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        let i = dir.index();
        if self.scan[i].is_none() && buf.first() == Some(&b'A') {
            let n = buf.len().min(4);
            if buf[..n] == b"AMQP"[..n] {
                if buf.len() < 8 {
                    return Parse::Need { min_len: 8, total: Some(8) };
                }
                let mut rec = AmqpFrame::new(AmqpKind::ProtocolHeader, 0);
                rec.protocol = Some(format!("{}-{}-{}", buf[5], buf[6], buf[7]));
                rec.frames = 1;
                return Parse::Message(Parsed { len: 8, body: Body::Amqp(Box::new(rec)), exchange: None, error: None });
            }
        }
        let mut scan = match self.scan[i].take() {
            Some(s) => s,
            None => match frame(buf, 0) {
                Ok(Ok(f)) => match self.first(dir, buf, &f) {
                    Ok(mut s) => {
                        if f.kind == 1 || f.kind == 8 {
                            s.rec.frames = 1;
                            s.at = f.total;
                        }
                        s
                    }
                    Err(e) => return Parse::Invalid { len: f.total, error: e.to_string() },
                },
                Ok(Err(total)) => {
                    return Parse::Need {
                        min_len: total.unwrap_or(7).max(buf.len() + 1),
                        total: total.map(|t| t as u64),
                    };
                }
                Err(e) => return Parse::Invalid { len: buf.len().clamp(1, 7), error: e.to_string() },
            },
        };
        loop {
            if scan.at > 0 && (scan.rec.kind == AmqpKind::Heartbeat || self.content_done(i, scan.rec.channel)) {
                return finish(scan);
            }
            if scan.at >= self.max_group {
                let rest = Box::new(AmqpFrame::new(AmqpKind::Content, scan.rec.channel));
                let exchange = scan.exchange;
                let done = std::mem::replace(&mut scan, Scan { at: 0, rec: rest, exchange });
                scan.rec.continued = true;
                self.scan[i] = Some(scan);
                return finish(done);
            }
            match frame(buf, scan.at) {
                Ok(Ok(f)) => match self.add_content(i, buf, &mut scan, &f) {
                    Ok(true) => scan.at += f.total,
                    Ok(false) | Err(_) if scan.at > 0 => return finish(scan),
                    Ok(false) => {
                        // A content frame with no content expected on its channel.
                        let e = AmqpError::Malformed("content frame without a method");
                        return Parse::Invalid { len: f.total, error: e.to_string() };
                    }
                    Err(e) => return Parse::Invalid { len: f.total, error: e.to_string() },
                },
                Ok(Err(total)) => {
                    let min_len = total.unwrap_or(scan.at + 7).max(buf.len() + 1);
                    self.scan[i] = Some(scan);
                    return Parse::Need { min_len, total: None };
                }
                Err(_) if scan.at > 0 => return finish(scan),
                Err(e) => return Parse::Invalid { len: buf.len().clamp(1, 7), error: e.to_string() },
            }
        }
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        let i = dir.index();
        let scan = self.scan[i].take();
        let (rec, exchange, at) = match scan {
            Some(s) => (s.rec, s.exchange, s.at),
            None => (Box::new(AmqpFrame::new(AmqpKind::Method, 0)), None, 0),
        };
        let total = match frame(buf, at) {
            Ok(Err(Some(t))) => Some(t as u64),
            _ => None,
        };
        // The cut frame's bytes are skipped: the content it belonged to can
        // no longer be followed.
        if total.is_none() {
            self.content[i].remove(&rec.channel);
        }
        Partial { body: Body::Amqp(rec), exchange, total, complete_at_end: false }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        (0..buf.len().min(4096)).find(|&i| {
            if buf[i..].starts_with(b"AMQP\0") {
                return true;
            }
            match frame(buf, i) {
                Ok(Ok(f)) => {
                    let next = i + f.total;
                    next == buf.len() || matches!(frame(buf, next), Ok(Ok(_)) | Ok(Err(_)))
                }
                _ => false,
            }
        })
    }

    fn gap(&mut self, dir: Direction) {
        let i = dir.index();
        self.scan[i] = None;
        self.content[i].clear();
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.attrs.get(dir.index())
    }
}

fn finish(scan: Scan) -> Parse {
    Parse::Message(Parsed { len: scan.at.max(1), body: Body::Amqp(scan.rec), exchange: scan.exchange, error: None })
}

#[cfg(test)]
mod tests;
