//! HTTP/1.x (RFC 9112): requests and responses with Content-Length, chunked
//! and close-delimited bodies, keep-alive and pipelining, paired in order.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::proto::fields::{Body, ExchangeRole, Text, UnparsedReason};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

/// Hard ceiling on headers parsed per message (the config may set less).
const HEADER_SLOTS: usize = 256;
/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 4096;
/// Requests remembered for response framing (HEAD, CONNECT).
const MAX_PENDING_METHODS: usize = 1024;

const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

/// Why an HTTP/1 message is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Http1Error {
    /// The start line or a header is not valid HTTP.
    #[error("invalid HTTP/1 head at byte {offset}: {source}")]
    Head {
        /// Bytes parsed before the error (0: start line).
        offset: usize,
        /// What httparse found.
        #[source]
        source: httparse::Error,
    },
    /// More headers than the configured cap.
    #[error("more than {max} headers")]
    TooManyHeaders {
        /// The cap.
        max: usize,
    },
    /// Head larger than the configured cap without a terminating blank line.
    #[error("header block exceeds {max} bytes")]
    HeadTooLarge {
        /// The cap.
        max: usize,
    },
    /// Content-Length not a number, or several that disagree.
    #[error("invalid Content-Length {value:?}")]
    ContentLength {
        /// The offending value.
        value: String,
    },
    /// A chunk-size line is not valid.
    #[error("invalid chunk size line at body offset {offset}")]
    ChunkSize {
        /// Offset of the line within the body.
        offset: usize,
    },
    /// Chunk data not followed by CRLF.
    #[error("chunk data at body offset {offset} not followed by CRLF")]
    ChunkEnd {
        /// Offset where CRLF was expected.
        offset: usize,
    },
    /// Transfer-Encoding in a request whose final coding is not chunked.
    #[error("request Transfer-Encoding {value:?} does not end in chunked")]
    TransferEncoding {
        /// The header value.
        value: String,
    },
}

pub use message::{BodyFraming, Http1Kind, Http1Message, Span};

/// A parsed head waiting for its body.
#[derive(Debug)]
struct Pending {
    msg: Http1Message,
    /// Next offset to scan in a chunked body (a chunk-size line).
    chunk_at: usize,
    /// Offset of the trailer section once the last chunk was seen.
    trailers_at: Option<usize>,
    exchange: Option<(u64, ExchangeRole)>,
}

/// HTTP/1 parser for one connection.
pub struct Http1Parser {
    client_dir: Direction,
    max_headers: usize,
    max_head: usize,
    next_request: u64,
    next_response: u64,
    methods: VecDeque<Text>,
    tunnel: bool,
    pending: [Option<Pending>; 2],
    /// Bytes of an incomplete head already searched for its blank line, so
    /// a head arriving in small pieces is scanned once, not once per piece.
    head_scanned: [usize; 2],
    /// The last response was interim (1xx): the final response follows.
    interim: bool,
}

impl Http1Parser {
    /// A parser; requests travel in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        Http1Parser {
            client_dir,
            max_headers: cfg.max_headers.clamp(1, HEADER_SLOTS),
            max_head: cfg.max_header_bytes.max(16),
            next_request: 0,
            next_response: 0,
            methods: VecDeque::new(),
            tunnel: false,
            pending: [None, None],
            head_scanned: [0, 0],
            interim: false,
        }
    }

    fn parse_head(&mut self, dir: Direction, buf: &Bytes) -> Result<Option<Pending>, Http1Error> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
        let slots = &mut slots[..self.max_headers];
        let cfg = httparse::ParserConfig::default();
        let request = dir == self.client_dir;
        let (n, mut msg, headers) = if request {
            let mut req = httparse::Request::new(&mut []);
            match cfg.parse_request_with_uninit_headers(&mut req, buf, slots) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut msg = Http1Message::empty(Http1Kind::Request);
                    msg.method = req.method.map(|m| span(buf, m.as_bytes()));
                    msg.target = req.path.map(|p| span(buf, p.as_bytes()));
                    msg.version = req.version;
                    (n, msg, convert(buf, req.headers))
                }
                Ok(httparse::Status::Partial) => return self.partial_head(buf),
                Err(e) => return Err(self.head_error(buf, e)),
            }
        } else {
            let mut resp = httparse::Response::new(&mut []);
            match cfg.parse_response_with_uninit_headers(&mut resp, buf, slots) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut msg = Http1Message::empty(Http1Kind::Response);
                    msg.status = resp.code;
                    msg.reason = resp.reason.map(|r| span(buf, r.as_bytes()));
                    msg.version = resp.version;
                    (n, msg, convert(buf, resp.headers))
                }
                Ok(httparse::Status::Partial) => return self.partial_head(buf),
                Err(e) => return Err(self.head_error(buf, e)),
            }
        };
        msg.head_len = n;
        msg.head = buf.slice(..n);
        msg.headers = headers;
        let exchange = self.framing(&mut msg)?;
        Ok(Some(Pending { msg, chunk_at: n, trailers_at: None, exchange }))
    }

    fn partial_head(&self, buf: &[u8]) -> Result<Option<Pending>, Http1Error> {
        if buf.len() >= self.max_head { Err(Http1Error::HeadTooLarge { max: self.max_head }) } else { Ok(None) }
    }

    fn head_error(&self, buf: &[u8], e: httparse::Error) -> Http1Error {
        if e == httparse::Error::TooManyHeaders {
            Http1Error::TooManyHeaders { max: self.max_headers }
        } else {
            Http1Error::Head { offset: memchr::memchr(b'\n', buf).map_or(0, |i| i + 1), source: e }
        }
    }

    /// Decide the body framing (RFC 9112 §6.3) and the pairing.
    fn framing(&mut self, msg: &mut Http1Message) -> Result<Option<(u64, ExchangeRole)>, Http1Error> {
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        for (name, value) in msg.header_pairs() {
            if name.eq_ignore_ascii_case(b"content-length") {
                let bad = || Http1Error::ContentLength { value: String::from_utf8_lossy(value).into_owned() };
                let v = parse_decimal(value).ok_or_else(bad)?;
                if length.is_some_and(|l| l != v) {
                    return Err(bad());
                }
                length = Some(v);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = true;
                let last = value.rsplit(|b| *b == b',').next().unwrap_or(&[]);
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        match msg.kind {
            Http1Kind::Request => {
                msg.framing = if te {
                    if !chunked {
                        return Err(Http1Error::TransferEncoding { value: te_value(msg) });
                    }
                    BodyFraming::Chunked
                } else if let Some(l) = length {
                    msg.body_len = l;
                    BodyFraming::Length
                } else {
                    BodyFraming::None
                };
                if self.methods.len() >= MAX_PENDING_METHODS {
                    self.methods.pop_front();
                }
                self.methods.push_back(msg.method.map(|m| Text(msg.slice(m))).unwrap_or_default());
                let id = self.next_request;
                self.next_request += 1;
                Ok(Some((id, ExchangeRole::Request)))
            }
            Http1Kind::Response => {
                let status = msg.status.unwrap_or(0);
                msg.interim = (100..200).contains(&status) && status != 101;
                if msg.interim {
                    // Part of the response to the oldest request: the final one follows.
                    msg.framing = BodyFraming::None;
                    self.interim = true;
                    return Ok(Some((self.next_response, ExchangeRole::Response)));
                }
                self.interim = false;
                let method = self.methods.pop_front();
                let head = method.as_ref().is_some_and(|m| m == &"HEAD");
                let connect = method.as_ref().is_some_and(|m| m == &"CONNECT");
                msg.request_method = method;
                msg.framing = if status == 101 || (connect && (200..300).contains(&status)) {
                    self.tunnel = true;
                    BodyFraming::Tunnel
                } else if head || status == 204 || status == 304 {
                    BodyFraming::None
                } else if te && chunked {
                    BodyFraming::Chunked
                } else if te {
                    BodyFraming::Close
                } else if let Some(l) = length {
                    msg.body_len = l;
                    BodyFraming::Length
                } else {
                    BodyFraming::Close
                };
                let id = self.next_response;
                self.next_response += 1;
                Ok(Some((id, ExchangeRole::Response)))
            }
        }
    }

    /// Continue a chunked body; `Ok(Some(end))` when the message ends at `end`.
    fn scan_chunked(p: &mut Pending, buf: &[u8]) -> Result<Option<usize>, Http1Error> {
        loop {
            if let Some(t) = p.trailers_at {
                // Trailer fields end with an empty line.
                let mut at = t;
                loop {
                    let rest = &buf[at.min(buf.len())..];
                    if rest.starts_with(b"\r\n") {
                        return Ok(Some(at + 2));
                    }
                    match memchr::memchr(b'\n', rest) {
                        Some(i) => at += i + 1,
                        None => {
                            p.trailers_at = Some(at);
                            return Ok(None);
                        }
                    }
                }
            }
            let at = p.chunk_at;
            let rest = &buf[at.min(buf.len())..];
            match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((n, size))) => {
                    if size == 0 {
                        p.trailers_at = Some(at + n);
                        continue;
                    }
                    let data_end = (at + n) as u64 + size;
                    if (buf.len() as u64) < data_end + 2 {
                        // Remember the line so the next call starts here.
                        return Ok(None);
                    }
                    let data_end = data_end as usize;
                    if &buf[data_end..data_end + 2] != b"\r\n" {
                        return Err(Http1Error::ChunkEnd { offset: data_end - p.msg.head_len });
                    }
                    p.msg.body_len += size;
                    p.chunk_at = data_end + 2;
                }
                Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => return Ok(None),
                _ => {
                    return Err(Http1Error::ChunkSize { offset: at - p.msg.head_len });
                }
            }
        }
    }

    fn min_len_chunked(p: &Pending, buf: &[u8]) -> usize {
        if p.trailers_at.is_some() {
            return buf.len() + 1;
        }
        let rest = &buf[p.chunk_at.min(buf.len())..];
        match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((n, size))) => {
                usize::try_from((p.chunk_at + n) as u64 + size + 2).unwrap_or(usize::MAX)
            }
            _ => buf.len() + 1,
        }
    }
}

fn te_value(msg: &Http1Message) -> String {
    msg.header_pairs()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The span of `part` (a sub-slice of `buf`) relative to `buf`'s start.
fn span(buf: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    Span { start: u32::try_from(start).unwrap_or(u32::MAX), len: u32::try_from(part.len()).unwrap_or(0) }
}

fn convert(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<(Span, Span)> {
    headers.iter().map(|h| (span(buf, h.name.as_bytes()), span(buf, h.value))).collect()
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// A blank line (`\n\n` or `\n\r\n`) may end in `buf` after the first
/// `from` bytes, which were already searched.
fn blank_line_from(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[start.min(buf.len())..]).any(|i| {
        let rest = &buf[start + i + 1..];
        rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n") || rest.is_empty() || rest == b"\r"
    })
}

/// `b` starts like one of `pats`: fully, or `b` is a prefix of it.
fn starts_like(b: &[u8], pats: &[&[u8]]) -> bool {
    pats.iter().any(|p| {
        let n = b.len().min(p.len());
        b[..n] == p[..n]
    })
}

impl Parser for Http1Parser {
    fn protocol(&self) -> Protocol {
        Protocol::Http1
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        if self.tunnel {
            return Parse::Message(Parsed {
                len: buf.len().max(1),
                body: Body::Unparsed { reason: UnparsedReason::UnknownProtocol },
                exchange: None,
                error: None,
            });
        }
        let i = dir.index();
        let scanned = self.head_scanned[i];
        if self.pending[i].is_none() && scanned > 0 && scanned < self.max_head && !blank_line_from(buf, scanned) {
            self.head_scanned[i] = buf.len();
            return Parse::Need { min_len: buf.len() + 1, total: None };
        }
        let mut p = match self.pending[i].take() {
            Some(p) => {
                self.head_scanned[i] = 0;
                p
            }
            None => match self.parse_head(dir, buf) {
                Ok(Some(p)) => {
                    self.head_scanned[i] = 0;
                    p
                }
                Ok(None) => {
                    self.head_scanned[i] = buf.len();
                    return Parse::Need { min_len: buf.len() + 1, total: None };
                }
                Err(e) => {
                    self.head_scanned[i] = 0;
                    let len = memchr::memmem::find(buf, b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
                    return Parse::Invalid { len: len.max(1), error: e.to_string() };
                }
            },
        };
        let head_len = p.msg.head_len;
        let end = match p.msg.framing {
            BodyFraming::None => Some(head_len),
            BodyFraming::Tunnel => Some(head_len),
            BodyFraming::Length => {
                let total = head_len as u64 + p.msg.body_len;
                if (buf.len() as u64) >= total {
                    Some(total as usize)
                } else {
                    let min_len = usize::try_from(total).unwrap_or(usize::MAX);
                    self.pending[i] = Some(p);
                    return Parse::Need { min_len, total: Some(total) };
                }
            }
            BodyFraming::Chunked => match Self::scan_chunked(&mut p, buf) {
                Ok(Some(end)) => Some(end),
                Ok(None) => {
                    let min_len = Self::min_len_chunked(&p, buf);
                    self.pending[i] = Some(p);
                    return Parse::Need { min_len, total: None };
                }
                Err(e) => {
                    // The head is valid: record the message as far as it is
                    // framed, flagged, and resynchronise after it.
                    return Parse::Message(Parsed {
                        len: p.chunk_at.clamp(1, buf.len()),
                        body: Body::Http1(Box::new(p.msg)),
                        exchange: p.exchange,
                        error: Some(e.to_string()),
                    });
                }
            },
            BodyFraming::Close => None,
        };
        match end {
            Some(end) => Parse::Message(Parsed {
                len: end,
                body: Body::Http1(Box::new(p.msg)),
                exchange: p.exchange,
                error: None,
            }),
            None => {
                p.msg.body_len = (buf.len() - head_len) as u64;
                self.pending[i] = Some(p);
                Parse::Need { min_len: buf.len() + 1, total: None }
            }
        }
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        let i = dir.index();
        self.head_scanned[i] = 0;
        let pending = match self.pending[i].take() {
            Some(p) => Some(p),
            None => self.parse_head(dir, buf).ok().flatten(),
        };
        match pending {
            Some(mut p) => {
                let total = match p.msg.framing {
                    BodyFraming::Length => Some(p.msg.head_len as u64 + p.msg.body_len),
                    _ => None,
                };
                let complete_at_end = p.msg.framing == BodyFraming::Close;
                if complete_at_end {
                    p.msg.body_len = (buf.len().saturating_sub(p.msg.head_len)) as u64;
                }
                Partial { body: Body::Http1(Box::new(p.msg)), exchange: p.exchange, total, complete_at_end }
            }
            None => {
                let kind = if dir == self.client_dir { Http1Kind::Request } else { Http1Kind::Response };
                Partial {
                    body: Body::Http1(Box::new(Http1Message::empty(kind))),
                    exchange: None,
                    total: None,
                    complete_at_end: false,
                }
            }
        }
    }

    fn resync(&mut self, dir: Direction, buf: &[u8]) -> Option<usize> {
        if self.tunnel {
            return Some(0);
        }
        let pats: &[&[u8]] = if dir == self.client_dir { &METHODS } else { &[b"HTTP/1."] };
        if starts_like(buf, pats) {
            return Some(0);
        }
        memchr::memchr_iter(b'\n', buf).map(|i| i + 1).find(|&i| i < buf.len() && starts_like(&buf[i..], pats))
    }

    fn more_to_come(&self, dir: Direction, _id: u64) -> bool {
        dir != self.client_dir && self.interim
    }

    fn gap(&mut self, dir: Direction) {
        self.pending[dir.index()] = None;
        self.head_scanned[dir.index()] = 0;
        // Pairing across a gap is unknowable: restart both counters in step.
        self.methods.clear();
        let n = self.next_request.max(self.next_response);
        self.next_request = n;
        self.next_response = n;
    }
}

mod message;

#[cfg(test)]
mod tests;
