//! The HTTP/1 message model: kinds, spans into the raw bytes, body framing,
//! and its JSON form.

use bytes::Bytes;
use serde::Serialize;

use super::*;

/// Request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1Kind {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// A byte range within a message's head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset from the start of the head.
    pub start: u32,
    /// Length.
    pub len: u32,
}

/// How the body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFraming {
    /// No body (request without length, HEAD response, 1xx/204/304).
    None,
    /// Content-Length bytes.
    Length,
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (response without length).
    Close,
    /// The connection switched protocol (101, CONNECT 2xx): the rest is opaque.
    Tunnel,
}

/// One parsed HTTP/1 message. Text fields are spans into `head` (one
/// shared handle per message instead of one per field); they serialize as
/// strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http1Message {
    /// Request or response.
    pub kind: Http1Kind,
    /// Start line and headers as captured (a zero-copy slice of the raw bytes).
    pub head: Bytes,
    /// Request method.
    pub method: Option<Span>,
    /// Request target.
    pub target: Option<Span>,
    /// Minor version (HTTP/1.0 or HTTP/1.1); `None` if the head was incomplete.
    pub version: Option<u8>,
    /// Response status code.
    pub status: Option<u16>,
    /// Response reason phrase.
    pub reason: Option<Span>,
    /// Header names and values in order (trailers of chunked bodies are in
    /// the raw bytes only).
    pub headers: Vec<(Span, Span)>,
    /// Bytes of start line and headers: the body starts at this raw offset.
    pub head_len: usize,
    /// Body delimitation.
    pub framing: BodyFraming,
    /// Body bytes after removing chunked framing.
    pub body_len: u64,
    /// For a response, the method of the request it answers (if seen).
    pub request_method: Option<Text>,
    /// Interim (1xx) response, not the final answer.
    pub interim: bool,
}

#[derive(Serialize)]
pub(super) struct HeaderView {
    pub(super) name: Text,
    pub(super) value: Text,
}

#[derive(Serialize)]
pub(super) struct MessageView<'a> {
    pub(super) kind: Http1Kind,
    pub(super) method: Option<Text>,
    pub(super) target: Option<Text>,
    pub(super) version: Option<u8>,
    pub(super) status: Option<u16>,
    pub(super) reason: Option<Text>,
    pub(super) headers: Vec<HeaderView>,
    pub(super) head_len: usize,
    pub(super) framing: BodyFraming,
    pub(super) body_len: u64,
    pub(super) request_method: &'a Option<Text>,
    pub(super) interim: bool,
}

impl Serialize for Http1Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = |sp: Span| Text(self.slice(sp));
        MessageView {
            kind: self.kind,
            method: self.method.map(text),
            target: self.target.map(text),
            version: self.version,
            status: self.status,
            reason: self.reason.map(text),
            headers: self.headers.iter().map(|&(n, v)| HeaderView { name: text(n), value: text(v) }).collect(),
            head_len: self.head_len,
            framing: self.framing,
            body_len: self.body_len,
            request_method: &self.request_method,
            interim: self.interim,
        }
        .serialize(s)
    }
}

impl Http1Message {
    pub(super) fn empty(kind: Http1Kind) -> Self {
        Http1Message {
            kind,
            head: Bytes::new(),
            method: None,
            target: None,
            version: None,
            status: None,
            reason: None,
            headers: Vec::new(),
            head_len: 0,
            framing: BodyFraming::None,
            body_len: 0,
            request_method: None,
            interim: false,
        }
    }

    /// The bytes of a span (empty if out of range).
    pub fn bytes(&self, sp: Span) -> &[u8] {
        let (a, b) = (sp.start as usize, sp.start as usize + sp.len as usize);
        self.head.get(a..b).unwrap_or(&[])
    }

    pub(super) fn slice(&self, sp: Span) -> Bytes {
        let (a, b) = (sp.start as usize, sp.start as usize + sp.len as usize);
        if b <= self.head.len() { self.head.slice(a..b) } else { Bytes::new() }
    }

    /// Request method.
    pub fn method(&self) -> Option<&[u8]> {
        self.method.map(|s| self.bytes(s))
    }

    /// Request target.
    pub fn target(&self) -> Option<&[u8]> {
        self.target.map(|s| self.bytes(s))
    }

    /// Reason phrase.
    pub fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|s| self.bytes(s))
    }

    /// Header (name, value) pairs in order.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|&(n, v)| (self.bytes(n), self.bytes(v)))
    }

    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.header_pairs().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }
}
