//! Redis RESP2/RESP3: commands (arrays of bulk strings, or inline) and
//! replies, paired in order.

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

/// Largest bulk string accepted (Redis' default `proto-max-bulk-len`).
const MAX_BULK: i64 = 512 << 20;
/// Longest inline command or simple line.
const MAX_LINE: usize = 64 << 10;
/// Most command arguments listed in the record (all stay in `raw`).
const MAX_ARGS_LISTED: usize = 256;
/// Largest argument buffer a parser keeps between commands (entries).
const SPARE_ARGS: usize = 16;

/// Why RESP bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RespError {
    /// A byte that starts no RESP type.
    #[error("invalid RESP type byte 0x{byte:02x} at offset {offset}")]
    Type {
        /// The byte.
        byte: u8,
        /// Where.
        offset: usize,
    },
    /// A length or integer that is not a number or out of range.
    #[error("invalid RESP length or number at offset {offset}")]
    Number {
        /// Where.
        offset: usize,
    },
    /// Bulk data not followed by CRLF.
    #[error("bulk string at offset {offset} not followed by CRLF")]
    BulkEnd {
        /// Where CRLF was expected.
        offset: usize,
    },
    /// Nesting deeper than the cap.
    #[error("RESP nesting deeper than {max}")]
    TooDeep {
        /// The cap.
        max: usize,
    },
    /// More elements than the cap.
    #[error("more than {max} RESP elements in one message")]
    TooManyElements {
        /// The cap.
        max: usize,
    },
    /// A line longer than the cap without CRLF.
    #[error("RESP line longer than {max} bytes")]
    LineTooLong {
        /// The cap.
        max: usize,
    },
}

/// Command, reply or out-of-band push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisKind {
    /// Client command.
    Command,
    /// Server reply.
    Reply,
    /// RESP3 push (not a reply to a command).
    Push,
}

/// One RESP command or reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedisMessage {
    /// Command, reply or push.
    pub kind: RedisKind,
    /// Sent inline (space-separated line) rather than as a RESP array.
    pub inline: bool,
    /// Command name (first element) for commands.
    pub command: Option<Text>,
    /// Command arguments (at most 256 listed; all are in `raw`).
    pub args: Vec<Text>,
    /// RESP type of the reply's top value (`simple`, `error`, `integer`,
    /// `bulk`, `array`, `null`, `map`, ...).
    pub value_type: &'static str,
    /// Text of a simple string, error or bulk string reply.
    pub text: Option<Text>,
    /// Integer reply.
    pub integer: Option<i64>,
    /// Top-level element count of an aggregate reply.
    pub elements: Option<u64>,
}

enum Scan {
    Done(usize),
    Need(usize),
}

#[derive(Debug)]
struct Top {
    type_byte: u8,
    header_end: usize,
    count: Option<i64>,
    args: Vec<(usize, usize)>,
    collect_args: bool,
}

/// RESP parser for one connection.
pub struct RedisParser {
    client_dir: Direction,
    max_depth: usize,
    max_elements: usize,
    next: [u64; 2],
    /// Progress through a top-level aggregate still arriving, so its
    /// elements are scanned once however small the pieces it arrives in.
    resume: [Option<Resume>; 2],
    /// The argument offsets' buffer, reused from command to command (one
    /// allocation less per command); at most [`SPARE_ARGS`] entries kept.
    spare_args: Vec<(usize, usize)>,
}

/// Where scanning of a top-level array, set, push or map stopped.
#[derive(Debug)]
struct Resume {
    top: Top,
    /// Offset of the next element.
    pos: usize,
    /// Elements already scanned.
    done: i64,
    /// Element count so far (for the cap).
    elems: usize,
}

fn type_name(b: u8) -> &'static str {
    match b {
        b'+' => "simple",
        b'-' => "error",
        b':' => "integer",
        b'$' => "bulk",
        b'*' => "array",
        b'_' => "null",
        b',' => "double",
        b'#' => "boolean",
        b'!' => "blob_error",
        b'=' => "verbatim",
        b'(' => "big_number",
        b'%' => "map",
        b'~' => "set",
        b'>' => "push",
        b'|' => "attribute",
        _ => "inline",
    }
}

fn is_type(b: u8) -> bool {
    matches!(b, b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b',' | b'#' | b'!' | b'=' | b'(' | b'%' | b'~' | b'>' | b'|')
}

/// Lines searched byte by byte before `memchr` (RESP headers and lengths
/// are a few bytes; memchr's set-up costs more than scanning them).
const SHORT_LINE: usize = 24;

/// Position of the `\r` of the first CRLF at or after `at`.
fn find_crlf(buf: &[u8], at: usize) -> Option<usize> {
    let mut from = at;
    for (i, &b) in buf.get(at..)?.iter().take(SHORT_LINE).enumerate() {
        let p = at + i;
        if b == b'\r' {
            match buf.get(p + 1) {
                Some(b'\n') => return Some(p),
                None => return None,
                Some(_) => {}
            }
        }
        from = p + 1;
    }
    while let Some(i) = memchr::memchr(b'\r', buf.get(from..)?) {
        let p = from + i;
        if buf.get(p + 1) == Some(&b'\n') {
            return Some(p);
        }
        if p + 1 >= buf.len() {
            return None;
        }
        from = p + 1;
    }
    None
}

fn parse_int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v = 0i64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

impl RedisParser {
    /// A parser; commands travel in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        RedisParser {
            client_dir,
            max_depth: cfg.max_resp_depth.max(1),
            max_elements: cfg.max_resp_elements.max(1),
            next: [0, 0],
            resume: [None, None],
            spare_args: Vec::new(),
        }
    }

    /// Scan one value starting at `at`.
    fn value(
        &self,
        buf: &[u8],
        at: usize,
        depth: usize,
        elems: &mut usize,
        top: &mut Option<&mut Top>,
    ) -> Result<Scan, RespError> {
        if depth > self.max_depth {
            return Err(RespError::TooDeep { max: self.max_depth });
        }
        *elems += 1;
        if *elems > self.max_elements {
            return Err(RespError::TooManyElements { max: self.max_elements });
        }
        let Some(&t) = buf.get(at) else {
            return Ok(Scan::Need(at + 1));
        };
        if !is_type(t) {
            return Err(RespError::Type { byte: t, offset: at });
        }
        let Some(cr) = find_crlf(buf, at + 1) else {
            if buf.len() - at > MAX_LINE {
                return Err(RespError::LineTooLong { max: MAX_LINE });
            }
            return Ok(Scan::Need(buf.len() + 1));
        };
        let line = &buf[at + 1..cr];
        let after = cr + 2;
        if let Some(top) = top.as_deref_mut() {
            top.type_byte = t;
            top.header_end = cr;
        }
        match t {
            b'+' | b'-' | b'_' | b',' | b'#' | b'(' => Ok(Scan::Done(after)),
            b':' => {
                parse_int(line).ok_or(RespError::Number { offset: at + 1 })?;
                Ok(Scan::Done(after))
            }
            b'$' | b'!' | b'=' => {
                let n = parse_int(line).ok_or(RespError::Number { offset: at + 1 })?;
                if n == -1 {
                    return Ok(Scan::Done(after));
                }
                if !(0..=MAX_BULK).contains(&n) {
                    return Err(RespError::Number { offset: at + 1 });
                }
                let end = after + n as usize;
                if buf.len() < end + 2 {
                    return Ok(Scan::Need(end + 2));
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(RespError::BulkEnd { offset: end });
                }
                Ok(Scan::Done(end + 2))
            }
            _ => {
                // Aggregates: array, set, push, map (pairs), attribute (pairs).
                let n = parse_int(line).ok_or(RespError::Number { offset: at + 1 })?;
                if let Some(top) = top.as_deref_mut() {
                    top.count = Some(n);
                }
                if n < 0 {
                    return if n == -1 && t == b'*' {
                        Ok(Scan::Done(after))
                    } else {
                        Err(RespError::Number { offset: at + 1 })
                    };
                }
                let items = if t == b'%' || t == b'|' { n.saturating_mul(2) } else { n };
                if items > self.max_elements as i64 {
                    return Err(RespError::TooManyElements { max: self.max_elements });
                }
                let collect = top.as_ref().is_some_and(|t| t.collect_args);
                let mut pos = after;
                for _ in 0..items {
                    let start = pos;
                    match self.value(buf, pos, depth + 1, elems, &mut None)? {
                        Scan::Done(end) => pos = end,
                        need => return Ok(need),
                    }
                    if collect
                        && let Some(top) = top.as_deref_mut()
                        && top.args.len() < MAX_ARGS_LISTED + 1
                    {
                        top.args.push((start, pos));
                    }
                }
                // An attribute precedes the real value.
                if t == b'|' {
                    return self.value(buf, pos, depth + 1, elems, &mut None);
                }
                Ok(Scan::Done(pos))
            }
        }
    }

    /// The header line of a top-level aggregate: the offset after it, or
    /// `None` when the whole value should be scanned at once (null, partial
    /// header line).
    fn header(&self, buf: &[u8], elems: &mut usize, top: &mut Top) -> Result<Option<usize>, RespError> {
        let Some(cr) = find_crlf(buf, 1) else {
            return Ok(None);
        };
        let n = parse_int(&buf[1..cr]).ok_or(RespError::Number { offset: 1 })?;
        if n < 0 {
            return Ok(None);
        }
        let items = if buf[0] == b'%' { n.saturating_mul(2) } else { n };
        if items > self.max_elements as i64 {
            return Err(RespError::TooManyElements { max: self.max_elements });
        }
        *elems = 1;
        top.type_byte = buf[0];
        top.header_end = cr;
        top.count = Some(n);
        Ok(Some(cr + 2))
    }

    /// Scan the elements of a top-level aggregate from element `done` at
    /// `pos`; on running out of bytes, remember where for the next call.
    fn elements(
        &mut self,
        dir: Direction,
        buf: &[u8],
        mut pos: usize,
        mut done: i64,
        mut elems: usize,
        top: &mut Top,
    ) -> Result<Scan, RespError> {
        let n = top.count.unwrap_or(0);
        let items = if top.type_byte == b'%' { n.saturating_mul(2) } else { n };
        while done < items {
            let start = pos;
            match self.value(buf, pos, 2, &mut elems, &mut None)? {
                Scan::Done(end) => pos = end,
                Scan::Need(min) => {
                    let top = std::mem::replace(
                        top,
                        Top { type_byte: 0, header_end: 0, count: None, args: Vec::new(), collect_args: false },
                    );
                    self.resume[dir.index()] = Some(Resume { top, pos, done, elems });
                    return Ok(Scan::Need(min));
                }
            }
            if top.collect_args && top.args.len() < MAX_ARGS_LISTED + 1 {
                top.args.push((start, pos));
            }
            done += 1;
        }
        Ok(Scan::Done(pos))
    }

    fn inline(&self, buf: &Bytes) -> Result<Scan, RespError> {
        match memchr::memchr(b'\n', buf) {
            Some(i) => Ok(Scan::Done(i + 1)),
            None if buf.len() > MAX_LINE => Err(RespError::LineTooLong { max: MAX_LINE }),
            None => Ok(Scan::Need(buf.len() + 1)),
        }
    }

    fn message(&self, dir: Direction, buf: &Bytes, end: usize, top: &Top) -> RedisMessage {
        let command = dir == self.client_dir;
        let mut m = RedisMessage {
            kind: if command {
                RedisKind::Command
            } else if top.type_byte == b'>' {
                RedisKind::Push
            } else {
                RedisKind::Reply
            },
            inline: false,
            command: None,
            args: Vec::new(),
            value_type: type_name(top.type_byte),
            text: None,
            integer: None,
            elements: top.count.and_then(|c| u64::try_from(c).ok()),
        };
        if command {
            let bulk = |&(s, e): &(usize, usize)| -> Text {
                // An argument is `$len\r\n<data>\r\n`: keep <data>.
                let item = &buf[s..e];
                match (item.first(), find_crlf(item, 0)) {
                    (Some(b'$'), Some(cr)) if e - s >= cr + 4 => Text(buf.slice(s + cr + 2..e - 2)),
                    _ => Text(buf.slice(s..e)),
                }
            };
            let mut it = top.args.iter();
            m.command = it.next().map(bulk);
            m.args = it.take(MAX_ARGS_LISTED).map(bulk).collect();
            return m;
        }
        let line = buf.slice(1..top.header_end);
        match top.type_byte {
            b'+' | b'-' | b',' | b'#' | b'(' => m.text = Some(Text(line)),
            b':' => m.integer = parse_int(&line),
            b'$' | b'!' | b'=' if end >= top.header_end + 4 => {
                m.text = Some(Text(buf.slice(top.header_end + 2..end - 2)));
            }
            _ => {}
        }
        m
    }

    /// Keeps an argument buffer for the next command (emptied, and only a
    /// small one: a connection does not hold a long command's buffer).
    fn keep_args(&mut self, mut args: Vec<(usize, usize)>) {
        if args.capacity() > self.spare_args.capacity() && args.capacity() <= SPARE_ARGS {
            args.clear();
            self.spare_args = args;
        }
    }

    fn inline_message(buf: &Bytes, end: usize) -> RedisMessage {
        let line = buf.slice(..end).slice(..end - usize::from(buf[..end].ends_with(b"\n")));
        let line = line.slice(..line.len() - usize::from(line.ends_with(b"\r")));
        let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty()).map(|w| Text(line.slice_ref(w)));
        RedisMessage {
            kind: RedisKind::Command,
            inline: true,
            command: words.next(),
            args: words.take(MAX_ARGS_LISTED).collect(),
            value_type: "inline",
            text: None,
            integer: None,
            elements: None,
        }
    }
}

impl Parser for RedisParser {
    fn protocol(&self) -> Protocol {
        Protocol::Redis
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        let Some(&first) = buf.first() else {
            return Parse::Need { min_len: 1, total: None };
        };
        let client = dir == self.client_dir;
        let inline = client && !is_type(first);
        let args = if client { std::mem::take(&mut self.spare_args) } else { Vec::new() };
        let mut top = Top { type_byte: first, header_end: 0, count: None, args, collect_args: client };
        let resumable = matches!(first, b'*' | b'~' | b'>' | b'%');
        let scan = if inline {
            self.inline(buf)
        } else if resumable {
            match self.resume[dir.index()].take() {
                Some(r) => {
                    let fresh = std::mem::replace(&mut top, r.top);
                    self.keep_args(fresh.args);
                    self.elements(dir, buf, r.pos, r.done, r.elems, &mut top)
                }
                None => {
                    let mut elems = 0;
                    // Scan the header alone, then the elements resumably.
                    match self.header(buf, &mut elems, &mut top) {
                        Ok(Some(after)) => self.elements(dir, buf, after, 0, elems, &mut top),
                        Ok(None) => self.value(buf, 0, 1, &mut elems, &mut Some(&mut top)),
                        Err(e) => Err(e),
                    }
                }
            }
        } else {
            let mut elems = 0;
            self.value(buf, 0, 1, &mut elems, &mut Some(&mut top))
        };
        let parsed = match scan {
            Ok(Scan::Done(end)) => {
                let msg = if inline { Self::inline_message(buf, end) } else { self.message(dir, buf, end, &top) };
                let exchange = if msg.kind == RedisKind::Push {
                    None
                } else {
                    let n = &mut self.next[dir.index()];
                    *n += 1;
                    let role = if client { ExchangeRole::Request } else { ExchangeRole::Response };
                    Some((*n - 1, role))
                };
                Parse::Message(Parsed { len: end, body: Body::Redis(Box::new(msg)), exchange, error: None })
            }
            Ok(Scan::Need(min_len)) => Parse::Need { min_len: min_len.max(buf.len() + 1), total: None },
            Err(e) => {
                let len = find_crlf(buf, 0).map_or(buf.len(), |cr| cr + 2);
                Parse::Invalid { len: len.max(1), error: e.to_string() }
            }
        };
        // Whatever the outcome, the buffer serves the next command (a
        // command still arriving keeps its own in `resume`).
        self.keep_args(top.args);
        parsed
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        self.resume[dir.index()] = None;
        let client = dir == self.client_dir;
        let first = buf.first().copied().unwrap_or(b'*');
        let msg = RedisMessage {
            kind: if client { RedisKind::Command } else { RedisKind::Reply },
            inline: client && !is_type(first),
            command: None,
            args: Vec::new(),
            value_type: type_name(first),
            text: None,
            integer: None,
            elements: None,
        };
        // A top-level bulk string has a known total length.
        let total = if first == b'$' {
            find_crlf(buf, 1)
                .and_then(|cr| parse_int(&buf[1..cr]).map(|n| (cr, n)))
                .filter(|(_, n)| (0..=MAX_BULK).contains(n))
                .map(|(cr, n)| (cr + 2) as u64 + n as u64 + 2)
        } else {
            None
        };
        let n = &mut self.next[dir.index()];
        *n += 1;
        let role = if client { ExchangeRole::Request } else { ExchangeRole::Response };
        Partial { body: Body::Redis(Box::new(msg)), exchange: Some((*n - 1, role)), total, complete_at_end: false }
    }

    fn resync(&mut self, dir: Direction, buf: &[u8]) -> Option<usize> {
        let ok = |b: u8| {
            if dir == self.client_dir { b == b'*' } else { is_type(b) }
        };
        if buf.first().is_some_and(|b| ok(*b)) {
            return Some(0);
        }
        memchr::memchr_iter(b'\n', buf)
            .map(|i| i + 1)
            .find(|&i| i < buf.len() && i >= 2 && buf[i - 2] == b'\r' && ok(buf[i]))
    }

    fn gap(&mut self, dir: Direction) {
        self.resume[dir.index()] = None;
        // Ordinals can no longer be matched: restart both in step.
        let n = self.next[0].max(self.next[1]);
        self.next = [n, n];
    }
}

#[cfg(test)]
mod tests;
