//! NATS client protocol (text, line based): INFO, CONNECT (credentials
//! withheld), PUB / HPUB / MSG / HMSG with subject, reply subject, headers and
//! payload, SUB / UNSUB, PING / PONG, +OK / -ERR.
//!
//! **Records.** One protocol message per record (a PUB with its payload is one
//! record). Operation names are case-insensitive on the wire and recorded in
//! upper case.
//!
//! **Pairing.** PING pairs with the PONG the other side sends next: key =
//! 1 << 62 | (pinging side) << 61 | ordinal of that side's PINGs. With
//! `verbose` in CONNECT the server acknowledges every other client message
//! with +OK (or -ERR): each such client message is a request and the
//! acknowledgements answer them in order (key = 1 << 63 | ordinal). Everything
//! else is one-way: publishes and deliveries (request/reply over subjects is
//! an application pattern: the reply subject is recorded on both messages),
//! subscriptions, INFO, and -ERR without verbose.
//!
//! **Secrets.** CONNECT's `pass`, `auth_token`, `jwt` and `sig` are never put
//! in parsed fields: `"<withheld>"` says they were sent.
//!
//! **Limits and resync.** A control line longer than the HTTP header limit
//! (`max_header_bytes`) is invalid; payloads are bounded by the message cap
//! like any message. After a gap a boundary is a line start (after `\n`)
//! with a known operation followed by a space, a tab or the line end.

use bytes::Bytes;

use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::wire::{Payload, capped, slice};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

mod messages;

pub use messages::{NatsConnect, NatsInfo, NatsMessage, WITHHELD};

const PING_KEY: u64 = 1 << 62;

/// A whole message (length, fields), or the bytes needed (minimum, total if known).
type Framed = Result<(usize, Box<NatsMessage>), (usize, Option<u64>)>;
const VERBOSE_KEY: u64 = 1 << 63;

/// Why NATS bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsError {
    /// The line starts with no known operation.
    #[error("unknown NATS operation {0:?}")]
    Op(String),
    /// Wrong number or form of arguments.
    #[error("malformed {0} arguments")]
    Args(&'static str),
    /// The control line is longer than the limit.
    #[error("control line longer than {0} bytes")]
    LineTooLong(usize),
    /// The payload is not followed by CRLF.
    #[error("{0} payload not followed by CRLF")]
    PayloadEnd(&'static str),
    /// CONNECT or INFO whose JSON does not parse.
    #[error("{0} options are not valid JSON")]
    Json(&'static str),
    /// The header block of HPUB/HMSG does not parse.
    #[error("malformed {0} header block")]
    Headers(&'static str),
}

const OPS: [&str; 12] =
    ["CONNECT", "INFO", "PUB", "HPUB", "MSG", "HMSG", "SUB", "UNSUB", "PING", "PONG", "+OK", "-ERR"];

/// The operation `word` names (any case): the candidate picked by length and
/// first letters, then compared whole.
fn op_of(word: &[u8]) -> Option<&'static str> {
    let second = || word.get(1).map_or(0, u8::to_ascii_uppercase);
    let op = match (word.len(), word.first()?.to_ascii_uppercase()) {
        (3, b'P') => "PUB",
        (3, b'M') => "MSG",
        (3, b'S') => "SUB",
        (3, b'+') => "+OK",
        (4, b'H') if second() == b'P' => "HPUB",
        (4, b'H') => "HMSG",
        (4, b'P') if second() == b'I' => "PING",
        (4, b'P') => "PONG",
        (4, b'I') => "INFO",
        (4, b'-') => "-ERR",
        (5, b'U') => "UNSUB",
        (7, b'C') => "CONNECT",
        _ => return None,
    };
    op.as_bytes().eq_ignore_ascii_case(word).then_some(op)
}

/// Most arguments a control line has (HMSG with a reply subject: 5); a
/// line with more is malformed.
const MAX_ARGS: usize = 6;

/// The space- or tab-separated arguments of `rest`, at most [`MAX_ARGS`].
fn split_args(rest: &[u8]) -> ([&[u8]; MAX_ARGS], usize) {
    let mut out: [&[u8]; MAX_ARGS] = [&[]; MAX_ARGS];
    let mut n = 0;
    for a in rest.split(|c| matches!(c, b' ' | b'\t')).filter(|a| !a.is_empty()) {
        out[n] = a;
        n += 1;
        if n == MAX_ARGS {
            break;
        }
    }
    (out, n)
}

/// A decimal size or count (no sign, no spaces; at most 19 digits).
fn number(a: &[u8]) -> Option<u64> {
    if a.is_empty() || a.len() > 19 {
        return None;
    }
    a.iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
}

/// NATS parser for one connection.
pub struct NatsParser {
    client_dir: Direction,
    max_line: usize,
    max_listed: usize,
    max_value: usize,
    preview: usize,
    verbose: bool,
    pings: [u64; 2],
    pongs: [u64; 2],
    verbose_requests: u64,
    verbose_acks: u64,
    attrs: crate::proto::wire::SenderAttrs,
}

impl NatsParser {
    /// A parser; the client writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        NatsParser {
            client_dir,
            max_line: cfg.max_header_bytes.max(64),
            max_listed: cfg.max_values_listed,
            max_value: cfg.max_value_bytes,
            preview: cfg.max_payload_preview_bytes,
            verbose: false,
            pings: [0, 0],
            pongs: [0, 0],
            verbose_requests: 0,
            verbose_acks: 0,
            attrs: Default::default(),
        }
    }

    /// One message at the front of `buf`: its length and fields, or what is
    /// missing / wrong.
    fn message(&self, buf: &Bytes) -> Result<Framed, NatsError> {
        let scan = &buf[..buf.len().min(self.max_line + 2)];
        let Some(nl) = memchr::memchr(b'\n', scan) else {
            if buf.len() > self.max_line {
                return Err(NatsError::LineTooLong(self.max_line));
            }
            // An unknown operation is known as soon as its first word is.
            if let Some(sp) = buf.iter().position(|c| matches!(c, b' ' | b'\t'))
                && op_of(&buf[..sp]).is_none()
            {
                return Err(NatsError::Op(String::from_utf8_lossy(&buf[..sp.min(16)]).into_owned()));
            }
            return Ok(Err((buf.len() + 1, None)));
        };
        let head = nl + 1;
        let (mut m, sizes) = self.control(buf, nl)?;
        let Some((hdr, size)) = sizes else { return Ok(Ok((head, m))) };
        let op = m.op;
        let size = usize::try_from(size).map_err(|_| NatsError::Args(op))?;
        let total = head.checked_add(size).and_then(|n| n.checked_add(2)).ok_or(NatsError::Args(op))?;
        if buf.len() < total {
            return Ok(Err((total, Some(total as u64))));
        }
        if &buf[total - 2..total] != b"\r\n" {
            return Err(NatsError::PayloadEnd(op));
        }
        let body = &buf[head..head + size];
        let mut data_at = head;
        if let Some(h) = hdr {
            let h = usize::try_from(h).ok().filter(|h| *h <= size).ok_or(NatsError::Args(op))?;
            if !messages::header_block(buf, &body[..h], &mut m, self.max_listed, self.max_value) {
                return Err(NatsError::Headers(op));
            }
            m.header_len = Some(h as u64);
            data_at += h;
        }
        m.payload = Some(Payload::of(buf, &buf[data_at..head + size], data_at, self.preview));
        Ok(Ok((total, m)))
    }

    /// The control line ending at `nl`: the message's fields, and for
    /// messages with a payload the header and total sizes.
    #[allow(clippy::type_complexity)]
    fn control(&self, buf: &Bytes, nl: usize) -> Result<(Box<NatsMessage>, Option<(Option<u64>, u64)>), NatsError> {
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (word, rest) = match line.iter().position(|c| matches!(c, b' ' | b'\t')) {
            Some(sp) => (&line[..sp], &line[sp + 1..]),
            None => (line, &line[line.len()..]),
        };
        let op = op_of(word)
            .ok_or_else(|| NatsError::Op(String::from_utf8_lossy(&word[..word.len().min(16)]).into_owned()))?;
        // CONNECT, INFO and -ERR read `rest` whole.
        let (args, n) =
            if matches!(op, "CONNECT" | "INFO" | "-ERR") { ([&[][..]; MAX_ARGS], 0) } else { split_args(rest) };
        let args = &args[..n];
        // Boxed from the start: the record takes it boxed (no copy per move).
        let mut m = Box::new(NatsMessage { op, ..NatsMessage::default() });
        let t = |a: &[u8]| Text(slice(buf, a));
        let num = number;
        let sizes = match (op, args) {
            ("PUB", [s, size]) | ("PUB", [s, _, size]) => {
                m.subject = Some(t(s));
                m.reply_to = (args.len() == 3).then(|| t(args[1]));
                (None, num(size).ok_or(NatsError::Args(op))?)
            }
            ("HPUB", [s, h, size]) | ("HPUB", [s, _, h, size]) => {
                m.subject = Some(t(s));
                m.reply_to = (args.len() == 4).then(|| t(args[1]));
                (Some(num(h).ok_or(NatsError::Args(op))?), num(size).ok_or(NatsError::Args(op))?)
            }
            ("MSG", [s, sid, size]) | ("MSG", [s, sid, _, size]) => {
                m.subject = Some(t(s));
                m.sid = Some(t(sid));
                m.reply_to = (args.len() == 4).then(|| t(args[2]));
                (None, num(size).ok_or(NatsError::Args(op))?)
            }
            ("HMSG", [s, sid, h, size]) | ("HMSG", [s, sid, _, h, size]) => {
                m.subject = Some(t(s));
                m.sid = Some(t(sid));
                m.reply_to = (args.len() == 5).then(|| t(args[2]));
                (Some(num(h).ok_or(NatsError::Args(op))?), num(size).ok_or(NatsError::Args(op))?)
            }
            ("SUB", [s, sid]) | ("SUB", [s, _, sid]) => {
                m.subject = Some(t(s));
                m.queue_group = (args.len() == 3).then(|| t(args[1]));
                m.sid = Some(t(sid));
                return Ok((m, None));
            }
            ("UNSUB", [sid]) | ("UNSUB", [sid, _]) => {
                m.sid = Some(t(sid));
                m.max_msgs = args.get(1).and_then(|a| num(a));
                return Ok((m, None));
            }
            ("CONNECT", _) => {
                m.connect = Some(messages::connect(rest).ok_or(NatsError::Json(op))?);
                return Ok((m, None));
            }
            ("INFO", _) => {
                m.info = Some(messages::info(rest).ok_or(NatsError::Json(op))?);
                return Ok((m, None));
            }
            ("-ERR", _) => {
                let text = rest.trim_ascii();
                let text = text.strip_prefix(b"'").and_then(|x| x.strip_suffix(b"'")).unwrap_or(text);
                m.error = Some(capped(buf, text, self.max_value).0);
                return Ok((m, None));
            }
            ("PING" | "PONG" | "+OK", []) => return Ok((m, None)),
            _ => return Err(NatsError::Args(op)),
        };
        Ok((m, Some(sizes)))
    }

    fn pairing(&mut self, dir: Direction, m: &NatsMessage) -> Option<(u64, ExchangeRole)> {
        let i = dir.index();
        if let Some(c) = &m.connect {
            for (key, v) in [("nats.user", &c.user), ("nats.name", &c.name), ("nats.lang", &c.lang)] {
                if let Some(v) = v {
                    self.attrs.set(i, key, v.as_bytes());
                }
            }
        }
        if let Some(info) = &m.info {
            for (key, v) in [
                ("nats.server_id", &info.server_id),
                ("nats.server_name", &info.server_name),
                ("nats.version", &info.version),
            ] {
                if let Some(v) = v {
                    self.attrs.set(i, key, v.as_bytes());
                }
            }
        }
        match m.op {
            "PING" => {
                self.pings[i] += 1;
                return Some((PING_KEY | (i as u64) << 61 | self.pings[i], ExchangeRole::Request));
            }
            "PONG" => {
                // Answers the other side's oldest unanswered PING.
                if self.pongs[i] >= self.pings[1 - i] {
                    return None;
                }
                self.pongs[i] += 1;
                return Some((PING_KEY | ((1 - i) as u64) << 61 | self.pongs[i], ExchangeRole::Response));
            }
            _ => {}
        }
        if dir == self.client_dir {
            if let Some(c) = &m.connect {
                self.verbose = c.verbose;
            }
            if self.verbose {
                self.verbose_requests += 1;
                return Some((VERBOSE_KEY | self.verbose_requests, ExchangeRole::Request));
            }
        } else if matches!(m.op, "+OK" | "-ERR") && self.verbose && self.verbose_acks < self.verbose_requests {
            self.verbose_acks += 1;
            return Some((VERBOSE_KEY | self.verbose_acks, ExchangeRole::Response));
        }
        None
    }
}

impl Parser for NatsParser {
    fn protocol(&self) -> Protocol {
        Protocol::Nats
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        match self.message(buf) {
            Ok(Ok((len, m))) => {
                let exchange = self.pairing(dir, &m);
                Parse::Message(Parsed { len, body: Body::Nats(m), exchange, error: None })
            }
            Ok(Err((min_len, total))) => Parse::Need { min_len: min_len.max(buf.len() + 1), total },
            Err(e) => {
                // Skip the bad line (or up to the limit).
                let end = memchr::memchr(b'\n', &buf[..buf.len().min(self.max_line + 2)]).map_or(buf.len(), |n| n + 1);
                Parse::Invalid { len: end.clamp(1, buf.len().max(1)), error: e.to_string() }
            }
        }
    }

    fn interrupted(&mut self, _dir: Direction, buf: &Bytes) -> Partial {
        // The control line tells what the message is and how long it is.
        let mut m = Box::new(NatsMessage { op: "UNKNOWN", ..NatsMessage::default() });
        let mut total = None;
        if let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(self.max_line + 2)])
            && let Ok((c, sizes)) = self.control(buf, nl)
        {
            m = c;
            total = sizes.and_then(|(_, size)| (nl as u64 + 1).checked_add(size)?.checked_add(2));
        }
        Partial { body: Body::Nats(m), exchange: None, total, complete_at_end: false }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', buf).map(|i| i + 1));
        starts.take_while(|&i| i < buf.len()).find(|&i| {
            let rest = &buf[i..];
            let word_end = rest.iter().position(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
            match word_end {
                Some(n) => op_of(&rest[..n]).is_some(),
                None => {
                    rest.len() < 8
                        && OPS
                            .iter()
                            .any(|o| o.len() >= rest.len() && o.as_bytes()[..rest.len()].eq_ignore_ascii_case(rest))
                }
            }
        })
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.attrs.get(dir.index())
    }

    fn gap(&mut self, _dir: Direction) {
        // Which PING a PONG answers, and which message an +OK acknowledges,
        // are no longer known: start both in step.
        let p = self.pings[0].max(self.pings[1]).max(self.pongs[0]).max(self.pongs[1]);
        self.pings = [p, p];
        self.pongs = [p, p];
        let v = self.verbose_requests.max(self.verbose_acks);
        self.verbose_requests = v;
        self.verbose_acks = v;
    }
}

#[cfg(test)]
mod tests;
