//! HTTP/2 (RFC 9113) with HPACK (RFC 7541) and gRPC on top: one record per
//! frame (the client preface is a record too), header blocks decoded when
//! complete, requests and responses paired by stream id.

pub mod frame;
pub mod grpc;
pub mod hpack;
pub mod huffman;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;
use frame::{FrameError, FrameHeader, HEADER_LEN};
use grpc::{Framer, GrpcInfo};
use hpack::{Decoder, Field};

/// HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest frame length believed when looking for a frame boundary.
const RESYNC_MAX_FRAME: usize = 1 << 20;

/// One decoded header field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct H2Header {
    /// Name.
    pub name: Text,
    /// Value.
    pub value: Text,
}

/// One HTTP/2 frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct H2Frame {
    /// This record is the client connection preface, not a frame.
    pub preface: bool,
    /// Frame type number.
    pub frame_type: u8,
    /// Frame type name.
    pub type_name: &'static str,
    /// Flags byte.
    pub flags: u8,
    /// Stream id.
    pub stream_id: u32,
    /// Payload length.
    pub length: u32,
    /// END_STREAM set (DATA, HEADERS).
    pub end_stream: bool,
    /// Decoded header list, on the frame that completed the header block.
    pub headers: Vec<H2Header>,
    /// The header block is continued in CONTINUATION frames.
    pub headers_continued: bool,
    /// Trailers (a second header block on the stream).
    pub trailers: bool,
    /// `:method`.
    pub method: Option<Text>,
    /// `:path`.
    pub path: Option<Text>,
    /// `:authority`.
    pub authority: Option<Text>,
    /// `:status`.
    pub status: Option<u16>,
    /// SETTINGS parameters (identifier, value).
    pub settings: Vec<(u16, u32)>,
    /// ACK flag of SETTINGS or PING.
    pub ack: bool,
    /// RST_STREAM or GOAWAY error code.
    pub error_code: Option<u32>,
    /// GOAWAY last stream id.
    pub last_stream_id: Option<u32>,
    /// WINDOW_UPDATE increment.
    pub window_increment: Option<u32>,
    /// PUSH_PROMISE promised stream id.
    pub promised_stream_id: Option<u32>,
    /// DATA payload bytes without padding.
    pub data_len: Option<u32>,
    /// gRPC fields, on gRPC streams.
    pub grpc: Option<GrpcInfo>,
    /// Tracking state of an older stream was dropped to stay within the cap.
    pub stream_state_evicted: bool,
}

#[derive(Debug, Default)]
struct StreamState {
    grpc: bool,
    request_seen: bool,
    response_seen: bool,
    framers: [Framer; 2],
    framing_lost: [bool; 2],
    ended: [bool; 2],
}

#[derive(Debug)]
struct Block {
    stream: u32,
    promise: bool,
    end_stream: bool,
    fragments: BytesMut,
}

/// Why an HTTP/2 frame's content could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Http2Error {
    /// Frame-level problem.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Header block decoding failed.
    #[error("header block on stream {stream}: {source}")]
    Hpack {
        /// Stream.
        stream: u32,
        /// Why.
        #[source]
        source: hpack::HpackError,
    },
}

/// HTTP/2 parser for one connection.
pub struct Http2Parser {
    client_dir: Direction,
    preface_pending: bool,
    decoders: [Decoder; 2],
    blocks: [Option<Block>; 2],
    streams: BTreeMap<u32, StreamState>,
    max_streams: usize,
    max_block: usize,
}

fn find(fields: &[Field], name: &[u8]) -> Option<Text> {
    fields.iter().find(|f| &f.name[..] == name).map(|f| Text(f.value.clone()))
}

fn parse_u32(t: &Text) -> Option<u32> {
    std::str::from_utf8(&t.0).ok()?.parse().ok()
}

impl Http2Parser {
    /// A parser; the client writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        let dec = || Decoder::new(cfg.max_hpack_table_bytes, cfg.max_headers, cfg.max_header_bytes);
        Http2Parser {
            client_dir,
            preface_pending: true,
            decoders: [dec(), dec()],
            blocks: [None, None],
            streams: BTreeMap::new(),
            max_streams: cfg.max_h2_streams.max(1),
            max_block: cfg.max_header_bytes.max(1),
        }
    }

    fn stream(&mut self, id: u32, f: &mut H2Frame) -> &mut StreamState {
        if !self.streams.contains_key(&id) && self.streams.len() >= self.max_streams {
            self.streams.pop_first();
            f.stream_state_evicted = true;
        }
        self.streams.entry(id).or_default()
    }

    /// A header block is complete: decode and apply it.
    fn headers(
        &mut self,
        dir: Direction,
        block: Block,
        f: &mut H2Frame,
    ) -> Result<Option<(u64, ExchangeRole)>, Http2Error> {
        let i = dir.index();
        let fields = self.decoders[i]
            .decode(&block.fragments)
            .map_err(|source| Http2Error::Hpack { stream: block.stream, source })?;
        f.headers =
            fields.iter().map(|h| H2Header { name: Text(h.name.clone()), value: Text(h.value.clone()) }).collect();
        if block.promise {
            f.method = find(&fields, b":method");
            f.path = find(&fields, b":path");
            f.authority = find(&fields, b":authority");
            return Ok(None);
        }
        let client = dir == self.client_dir;
        let stream_id = block.stream;
        let mut exchange = None;
        let content_type = find(&fields, b"content-type");
        let st = self.stream(stream_id, f);
        if content_type.is_some_and(|c| c.0.starts_with(b"application/grpc")) {
            st.grpc = true;
        }
        let status = find(&fields, b":status");
        let mut grpc = GrpcInfo::default();
        if client {
            if st.request_seen {
                f.trailers = true;
            } else {
                st.request_seen = true;
                exchange = Some((u64::from(stream_id), ExchangeRole::Request));
            }
            f.method = find(&fields, b":method");
            f.authority = find(&fields, b":authority");
            f.path = find(&fields, b":path");
            if let Some(p) = &f.path {
                (grpc.service, grpc.method) = grpc::split_path(p);
            }
            grpc.timeout = find(&fields, b"grpc-timeout");
        } else {
            f.status = status.as_ref().and_then(parse_u32).and_then(|s| u16::try_from(s).ok());
            match f.status {
                Some(s) if (100..200).contains(&s) => {}
                Some(_) if !st.response_seen => {
                    st.response_seen = true;
                    exchange = Some((u64::from(stream_id), ExchangeRole::Response));
                }
                _ => f.trailers = st.response_seen,
            }
            grpc.status = find(&fields, b"grpc-status").as_ref().and_then(parse_u32);
            grpc.message = find(&fields, b"grpc-message");
        }
        grpc.encoding = find(&fields, b"grpc-encoding");
        if st.grpc {
            f.grpc = Some(grpc);
        }
        if block.end_stream {
            self.end(dir, stream_id);
        }
        Ok(exchange)
    }

    fn end(&mut self, dir: Direction, stream: u32) {
        if let Some(st) = self.streams.get_mut(&stream) {
            st.ended[dir.index()] = true;
            if st.ended[0] && st.ended[1] {
                self.streams.remove(&stream);
            }
        }
    }

    fn frame(
        &mut self,
        dir: Direction,
        h: FrameHeader,
        payload: &[u8],
        f: &mut H2Frame,
    ) -> Result<Option<(u64, ExchangeRole)>, Http2Error> {
        use frame::*;
        let i = dir.index();
        // Only CONTINUATION of the same stream may follow an open header block.
        if let Some(b) = &self.blocks[i]
            && (h.kind != CONTINUATION || h.stream != b.stream)
        {
            self.blocks[i] = None;
            self.decoders[i].lose_state();
            return Err(FrameError::Continuation { stream: h.stream }.into());
        }
        let size = |name, expected: usize| -> Result<(), Http2Error> {
            if payload.len() != expected {
                return Err(FrameError::Size { name, len: payload.len(), expected }.into());
            }
            Ok(())
        };
        match h.kind {
            DATA => {
                let data = unpad(h.flags, payload)?;
                f.data_len = Some(data.len() as u32);
                f.end_stream = h.flags & FLAG_END_STREAM != 0;
                if !f.end_stream && h.stream != 0 {
                    // Known from here on, so `more_to_come` can tell.
                    self.stream(h.stream, f);
                }
                if let Some(st) = self.streams.get_mut(&h.stream)
                    && st.grpc
                    && !st.framing_lost[i]
                {
                    let (messages, continuation_bytes) = st.framers[i].feed(data);
                    f.grpc = Some(GrpcInfo { messages, continuation_bytes, ..GrpcInfo::default() });
                }
                if f.end_stream {
                    self.end(dir, h.stream);
                }
                Ok(None)
            }
            HEADERS | PUSH_PROMISE => {
                let mut p = unpad(h.flags, payload)?;
                if h.kind == HEADERS && h.flags & FLAG_PRIORITY != 0 {
                    p = p.get(5..).ok_or(FrameError::Size { name: "HEADERS priority", len: p.len(), expected: 5 })?;
                }
                if h.kind == PUSH_PROMISE {
                    if p.len() < 4 {
                        return Err(FrameError::Size { name: "PUSH_PROMISE", len: p.len(), expected: 4 }.into());
                    }
                    f.promised_stream_id = Some(be32(p, 0) & 0x7FFF_FFFF);
                    p = &p[4..];
                }
                f.end_stream = h.kind == HEADERS && h.flags & FLAG_END_STREAM != 0;
                if p.len() > self.max_block {
                    self.decoders[i].lose_state();
                    return Err(FrameError::HeaderBlock { max: self.max_block }.into());
                }
                let block = Block {
                    stream: h.stream,
                    promise: h.kind == PUSH_PROMISE,
                    end_stream: f.end_stream,
                    fragments: BytesMut::from(p),
                };
                if h.flags & FLAG_END_HEADERS != 0 {
                    self.headers(dir, block, f)
                } else {
                    f.headers_continued = true;
                    self.blocks[i] = Some(block);
                    Ok(None)
                }
            }
            CONTINUATION => {
                let Some(mut block) = self.blocks[i].take() else {
                    return Err(FrameError::Continuation { stream: h.stream }.into());
                };
                if block.fragments.len() + payload.len() > self.max_block {
                    self.decoders[i].lose_state();
                    return Err(FrameError::HeaderBlock { max: self.max_block }.into());
                }
                block.fragments.extend_from_slice(payload);
                if h.flags & FLAG_END_HEADERS != 0 {
                    f.end_stream = block.end_stream;
                    self.headers(dir, block, f)
                } else {
                    f.headers_continued = true;
                    self.blocks[i] = Some(block);
                    Ok(None)
                }
            }
            SETTINGS => {
                f.ack = h.flags & FLAG_ACK != 0;
                if !payload.len().is_multiple_of(6) {
                    return Err(FrameError::Size { name: "SETTINGS", len: payload.len(), expected: 6 }.into());
                }
                f.settings =
                    payload.chunks_exact(6).take(64).map(|c| (u16::from_be_bytes([c[0], c[1]]), be32(c, 2))).collect();
                Ok(None)
            }
            PING => {
                f.ack = h.flags & FLAG_ACK != 0;
                size("PING", 8).map(|_| None)
            }
            GOAWAY => {
                if payload.len() < 8 {
                    return Err(FrameError::Size { name: "GOAWAY", len: payload.len(), expected: 8 }.into());
                }
                f.last_stream_id = Some(be32(payload, 0) & 0x7FFF_FFFF);
                f.error_code = Some(be32(payload, 4));
                Ok(None)
            }
            RST_STREAM => {
                size("RST_STREAM", 4)?;
                f.error_code = Some(be32(payload, 0));
                self.streams.remove(&h.stream);
                Ok(None)
            }
            WINDOW_UPDATE => {
                size("WINDOW_UPDATE", 4)?;
                f.window_increment = Some(be32(payload, 0) & 0x7FFF_FFFF);
                Ok(None)
            }
            PRIORITY => size("PRIORITY", 5).map(|_| None),
            _ => Ok(None),
        }
    }

    fn frame_shell(h: &FrameHeader) -> H2Frame {
        H2Frame {
            frame_type: h.kind,
            type_name: frame::type_name(h.kind),
            flags: h.flags,
            stream_id: h.stream,
            length: h.len as u32,
            ..H2Frame::default()
        }
    }
}

impl Parser for Http2Parser {
    fn protocol(&self) -> Protocol {
        Protocol::Http2
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        if dir == self.client_dir && self.preface_pending {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] == H2_PREFACE[..n] {
                if n < H2_PREFACE.len() {
                    return Parse::Need { min_len: H2_PREFACE.len(), total: Some(H2_PREFACE.len() as u64) };
                }
                self.preface_pending = false;
                return Parse::Message(Parsed {
                    len: H2_PREFACE.len(),
                    body: Body::Http2(Box::new(H2Frame { preface: true, type_name: "PREFACE", ..H2Frame::default() })),
                    exchange: None,
                    error: None,
                });
            }
            self.preface_pending = false;
        }
        if buf.len() < HEADER_LEN {
            return Parse::Need { min_len: HEADER_LEN, total: None };
        }
        let h = FrameHeader::parse(buf);
        let total = HEADER_LEN + h.len;
        if buf.len() < total {
            return Parse::Need { min_len: total, total: Some(total as u64) };
        }
        let mut f = Self::frame_shell(&h);
        let result = self.frame(dir, h, &buf[HEADER_LEN..total], &mut f);
        // Every frame of a stream belongs to its exchange (request frames from
        // the client, response frames from the server); connection-level
        // frames and flow control are gathered apart.
        let role = if dir == self.client_dir { ExchangeRole::Request } else { ExchangeRole::Response };
        let (exchange, error) = match result {
            Ok(_)
                if h.stream != 0
                    && matches!(
                        h.kind,
                        frame::DATA | frame::HEADERS | frame::CONTINUATION | frame::RST_STREAM | frame::PUSH_PROMISE
                    ) =>
            {
                (Some((u64::from(h.stream), role)), None)
            }
            Ok(_) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        Parse::Message(Parsed { len: total, body: Body::Http2(Box::new(f)), exchange, error })
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        let i = dir.index();
        if buf.len() < HEADER_LEN {
            return Partial { body: Body::Http2(Box::default()), exchange: None, total: None, complete_at_end: false };
        }
        let h = FrameHeader::parse(buf);
        // A cut header block or DATA frame leaves HPACK or gRPC framing unknown.
        match h.kind {
            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION => {
                self.blocks[i] = None;
                self.decoders[i].lose_state();
            }
            frame::DATA => {
                if let Some(st) = self.streams.get_mut(&h.stream) {
                    st.framing_lost[i] = true;
                }
            }
            _ => {}
        }
        Partial {
            body: Body::Http2(Box::new(Self::frame_shell(&h))),
            exchange: None,
            total: Some((HEADER_LEN + h.len) as u64),
            complete_at_end: false,
        }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        (0..buf.len().min(4096)).find(|&start| {
            let mut at = start;
            for n in 0..3 {
                if at == buf.len() {
                    return n > 0;
                }
                let Some(hb) = buf.get(at..at + HEADER_LEN) else {
                    return n > 0;
                };
                let h = FrameHeader::parse(hb);
                if !frame::plausible(&h, RESYNC_MAX_FRAME) {
                    return false;
                }
                at += HEADER_LEN + h.len;
                if at > buf.len() {
                    return n > 0;
                }
            }
            true
        })
    }

    fn more_to_come(&self, dir: Direction, id: u64) -> bool {
        u32::try_from(id).ok().and_then(|id| self.streams.get(&id)).is_some_and(|st| !st.ended[dir.index()])
    }

    fn gathers_unpaired(&self) -> bool {
        true
    }

    fn gap(&mut self, dir: Direction) {
        let i = dir.index();
        self.preface_pending = false;
        self.blocks[i] = None;
        self.decoders[i].lose_state();
        for st in self.streams.values_mut() {
            st.framing_lost[i] = true;
        }
    }
}

#[cfg(test)]
mod tests;
