//! FIX 4.x tag=value (and FIXT.1.1 session layer): framing by BodyLength,
//! CheckSum verification, header fields, session vs application messages,
//! and session tracking per direction (MsgSeqNum gaps, resends, ResendRequest,
//! SequenceReset: see [`session`]). Malformed messages are recorded with what
//! is wrong.
//!
//! Pairing: none. FIX is a pair of one-way message streams; every message is
//! a record of its own (`exchange: None`). The session flags relate them.

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::{Body, Text};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

pub mod session;
pub use session::{FixSession, SeqGap, SeqRange, SeqReset};

const SOH: u8 = 0x01;
/// "10=ddd<SOH>".
const TRAILER_LEN: usize = 7;
/// Longest BeginString/BodyLength prefix before the body.
const MAX_PREFIX: usize = 48;

/// What is wrong with a FIX message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FixError {
    /// The bytes do not start with `8=`.
    #[error("message does not start with BeginString (8=)")]
    NoBeginString,
    /// Tag 9 is not the second field or not a number.
    #[error("BodyLength (9) missing or invalid after BeginString")]
    BodyLength,
    /// BodyLength disagrees with where CheckSum was found.
    #[error("BodyLength {declared} but the body is {actual} bytes")]
    BodyLengthMismatch {
        /// Value of tag 9.
        declared: usize,
        /// Bytes between the BodyLength field and CheckSum.
        actual: usize,
    },
    /// CheckSum disagrees with the bytes.
    #[error("CheckSum {declared:03} but the bytes sum to {computed:03}")]
    CheckSum {
        /// Value of tag 10.
        declared: u16,
        /// Sum of the bytes modulo 256.
        computed: u8,
    },
    /// MsgType (35) is not the third field.
    #[error("MsgType (35) is not the third field")]
    MsgTypePosition,
    /// A field is not `tag=value` with a numeric tag.
    #[error("field at offset {offset} is not tag=value")]
    Field {
        /// Where.
        offset: usize,
    },
    /// A required standard header field is absent.
    #[error("required header field {tag} missing")]
    MissingHeader {
        /// The tag.
        tag: u32,
    },
    /// BeginString names no FIX version this parser knows.
    #[error("unknown BeginString {0:?}")]
    BeginString(String),
    /// Fields beyond the cap were not listed (all are in `raw`).
    #[error("more than {max} fields; the rest are not listed")]
    TooManyFields {
        /// The cap.
        max: usize,
    },
}

/// Session-level (admin) or application message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixCategory {
    /// Logon, Heartbeat, TestRequest, ResendRequest, Reject, SequenceReset, Logout.
    Session,
    /// Everything else (orders, executions, market data...).
    Application,
}

/// One tag=value field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixField {
    /// Tag number.
    pub tag: u32,
    /// Value bytes as sent.
    pub value: Text,
}

/// One FIX message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixMessage {
    /// BeginString (8), e.g. `FIX.4.4`.
    pub begin_string: Text,
    /// MsgType (35).
    pub msg_type: Option<Text>,
    /// Name of the MsgType, when it is a standard one.
    pub msg_type_name: Option<&'static str>,
    /// Session or application message.
    pub category: FixCategory,
    /// SenderCompID (49).
    pub sender_comp_id: Option<Text>,
    /// TargetCompID (56).
    pub target_comp_id: Option<Text>,
    /// MsgSeqNum (34).
    pub msg_seq_num: Option<u64>,
    /// SendingTime (52).
    pub sending_time: Option<Text>,
    /// PossDupFlag (43) is Y.
    pub poss_dup: bool,
    /// BodyLength (9) as declared.
    pub body_length: Option<usize>,
    /// CheckSum (10) as declared.
    pub checksum: Option<u16>,
    /// Both BodyLength and CheckSum agree with the bytes.
    pub valid: bool,
    /// Every problem found (empty when valid).
    pub errors: Vec<String>,
    /// All fields in order, header and trailer included (capped).
    pub fields: Vec<FixField>,
    /// Session tracking: sequence gaps, resends, ResendRequest, SequenceReset.
    pub session: FixSession,
}

/// Name of standard MsgType values.
pub fn msg_type_name(t: &[u8]) -> Option<&'static str> {
    Some(match t {
        b"0" => "Heartbeat",
        b"1" => "TestRequest",
        b"2" => "ResendRequest",
        b"3" => "Reject",
        b"4" => "SequenceReset",
        b"5" => "Logout",
        b"A" => "Logon",
        b"6" => "IndicationOfInterest",
        b"7" => "Advertisement",
        b"8" => "ExecutionReport",
        b"9" => "OrderCancelReject",
        b"B" => "News",
        b"C" => "Email",
        b"D" => "NewOrderSingle",
        b"E" => "NewOrderList",
        b"F" => "OrderCancelRequest",
        b"G" => "OrderCancelReplaceRequest",
        b"H" => "OrderStatusRequest",
        b"Q" => "DontKnowTrade",
        b"R" => "QuoteRequest",
        b"S" => "Quote",
        b"V" => "MarketDataRequest",
        b"W" => "MarketDataSnapshotFullRefresh",
        b"X" => "MarketDataIncrementalRefresh",
        b"Y" => "MarketDataRequestReject",
        b"j" => "BusinessMessageReject",
        b"AB" => "NewOrderMultileg",
        b"AE" => "TradeCaptureReport",
        b"n" => "XMLnonFIX",
        _ => return None,
    })
}

fn is_session(t: &[u8]) -> bool {
    matches!(t, b"0" | b"1" | b"2" | b"3" | b"4" | b"5" | b"A" | b"n")
}

pub(crate) fn parse_uint(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A complete trailer `10=ddd<SOH>` at `at`: its value.
fn trailer_at(buf: &[u8], at: usize) -> Option<u16> {
    let t = buf.get(at..at + TRAILER_LEN)?;
    if &t[..3] != b"10=" || t[6] != SOH {
        return None;
    }
    parse_uint(&t[3..6]).map(|v| v as u16)
}

/// Where the message ends, from its prefix.
enum Frame {
    /// Ends at this offset; the declared body length, if it disagreed.
    End(usize, Option<(usize, usize)>),
    /// Needs this many bytes; total if BodyLength is trusted.
    Need(usize, Option<u64>),
}

/// FIX parser for one connection (both directions are alike).
pub struct FixParser {
    max_fields: usize,
    max_message: usize,
    session: session::SessionTracker,
    /// Finds SOH "10=" (built once: a message split across events is
    /// searched on each of its pieces).
    trailer: memchr::memmem::Finder<'static>,
}

impl FixParser {
    /// A parser with the configured caps.
    pub fn new(cfg: &ProtoConfig) -> Self {
        FixParser {
            max_fields: cfg.max_fix_fields.max(4),
            max_message: cfg.max_message_bytes.max(64),
            session: session::SessionTracker::default(),
            trailer: memchr::memmem::Finder::new(b"\x0110=").into_owned(),
        }
    }

    /// BeginString and BodyLength: (begin string end, body start, declared length).
    fn prefix(buf: &[u8]) -> Result<Option<(usize, usize, usize)>, FixError> {
        if !buf.starts_with(b"8=") {
            let n = buf.len().min(2);
            return if buf[..n] == b"8="[..n] { Ok(None) } else { Err(FixError::NoBeginString) };
        }
        let Some(soh1) = memchr::memchr(SOH, &buf[..buf.len().min(MAX_PREFIX)]) else {
            return if buf.len() < MAX_PREFIX { Ok(None) } else { Err(FixError::BodyLength) };
        };
        let rest = &buf[soh1 + 1..];
        let n = rest.len().min(2);
        if rest[..n] != b"9="[..n] {
            return Err(FixError::BodyLength);
        }
        let Some(soh2) = memchr::memchr(SOH, &rest[..rest.len().min(MAX_PREFIX)]) else {
            return if rest.len() < MAX_PREFIX { Ok(None) } else { Err(FixError::BodyLength) };
        };
        let len = parse_uint(&rest[2..soh2]).ok_or(FixError::BodyLength)?;
        let len = usize::try_from(len).map_err(|_| FixError::BodyLength)?;
        Ok(Some((soh1, soh1 + 1 + soh2 + 1, len)))
    }

    fn frame(&self, buf: &[u8], body_start: usize, declared: usize) -> Frame {
        let declared_end = body_start.saturating_add(declared);
        if declared_end > 0 && buf.get(declared_end - 1) == Some(&SOH) && trailer_at(buf, declared_end).is_some() {
            return Frame::End(declared_end + TRAILER_LEN, None);
        }
        // Look for the real trailer: SOH "10=" ddd SOH.
        let mut from = body_start.saturating_sub(1);
        while let Some(i) = self.trailer.find(&buf[from..]) {
            let at = from + i + 1;
            if at + TRAILER_LEN > buf.len() {
                return Frame::Need(at + TRAILER_LEN, None);
            }
            if trailer_at(buf, at).is_some() {
                return Frame::End(at + TRAILER_LEN, Some((declared, at - body_start)));
            }
            from = at;
        }
        let total = declared_end.saturating_add(TRAILER_LEN);
        if buf.len() < total && total <= self.max_message {
            Frame::Need(total, Some(total as u64))
        } else {
            Frame::Need(buf.len() + 1, None)
        }
    }

    /// Parse the fields in `msg[..end]` (`end` at the SOH ending the last
    /// field); `complete` says whether required fields must all be there.
    fn fields(&self, msg: &Bytes, body_start: usize, end: usize, complete: bool, out: &mut FixMessage) {
        let mut errors: Vec<FixError> = Vec::new();
        let mut at = 0;
        let mut index = 0usize;
        // One allocation for the fields (at most the cap and its marker).
        let count = memchr::memchr_iter(SOH, &msg[..end]).count() + 1;
        out.fields.reserve(count.min(self.max_fields + 1));
        for field in msg[..end].split(|b| *b == SOH) {
            let offset = at;
            at += field.len() + 1;
            // The tag is a few digits: '=' is found sooner byte by byte
            // than through memchr's set-up.
            let Some(eq) = field.iter().position(|&b| b == b'=') else {
                errors.push(FixError::Field { offset });
                continue;
            };
            let Some(tag) = parse_uint(&field[..eq]).and_then(|t| u32::try_from(t).ok()) else {
                errors.push(FixError::Field { offset });
                continue;
            };
            let value = Text(msg.slice_ref(&field[eq + 1..]));
            if index == 2 && tag != 35 && offset >= body_start {
                errors.push(FixError::MsgTypePosition);
            }
            index += 1;
            match tag {
                35 => {
                    out.msg_type_name = msg_type_name(&value.0);
                    out.category = if is_session(&value.0) { FixCategory::Session } else { FixCategory::Application };
                    out.msg_type = Some(value.clone());
                }
                49 => out.sender_comp_id = Some(value.clone()),
                56 => out.target_comp_id = Some(value.clone()),
                34 => out.msg_seq_num = parse_uint(&value.0),
                52 => out.sending_time = Some(value.clone()),
                43 => out.poss_dup = &value.0[..] == b"Y",
                _ => {}
            }
            if out.fields.len() < self.max_fields {
                out.fields.push(FixField { tag, value });
            } else if out.fields.len() == self.max_fields {
                errors.push(FixError::TooManyFields { max: self.max_fields });
                out.fields.push(FixField { tag: 0, value: Text::default() });
            }
        }
        if out.fields.len() > self.max_fields {
            out.fields.pop();
        }
        for tag in [35, 49, 56, 34, 52].into_iter().filter(|_| complete) {
            let present = match tag {
                35 => out.msg_type.is_some(),
                49 => out.sender_comp_id.is_some(),
                56 => out.target_comp_id.is_some(),
                34 => out.msg_seq_num.is_some(),
                _ => out.sending_time.is_some(),
            };
            if !present {
                errors.push(FixError::MissingHeader { tag });
            }
        }
        out.errors.extend(errors.iter().map(ToString::to_string));
    }

    fn message(
        &self,
        buf: &Bytes,
        begin_end: usize,
        body_start: usize,
        declared: usize,
        end: usize,
        mismatch: Option<(usize, usize)>,
    ) -> FixMessage {
        let msg = buf.slice(..end);
        let trailer = end - TRAILER_LEN;
        let mut m = FixMessage {
            begin_string: Text(msg.slice(2..begin_end)),
            msg_type: None,
            msg_type_name: None,
            category: FixCategory::Application,
            sender_comp_id: None,
            target_comp_id: None,
            msg_seq_num: None,
            sending_time: None,
            poss_dup: false,
            body_length: Some(declared),
            checksum: trailer_at(&msg, trailer),
            valid: true,
            errors: Vec::new(),
            fields: Vec::new(),
            session: FixSession::default(),
        };
        if !matches!(
            &m.begin_string.0[..],
            b"FIX.4.0" | b"FIX.4.1" | b"FIX.4.2" | b"FIX.4.3" | b"FIX.4.4" | b"FIXT.1.1"
        ) {
            m.errors.push(FixError::BeginString(m.begin_string.to_string_lossy()).to_string());
        }
        if let Some((declared, actual)) = mismatch {
            m.valid = false;
            m.errors.push(FixError::BodyLengthMismatch { declared, actual }.to_string());
        }
        let computed = msg[..trailer].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if m.checksum != Some(u16::from(computed)) {
            m.valid = false;
            m.errors.push(FixError::CheckSum { declared: m.checksum.unwrap_or(0), computed }.to_string());
        }
        self.fields(&msg, body_start, trailer + TRAILER_LEN - 1, true, &mut m);
        m
    }

    fn empty(begin: Text) -> FixMessage {
        FixMessage {
            begin_string: begin,
            msg_type: None,
            msg_type_name: None,
            category: FixCategory::Application,
            sender_comp_id: None,
            target_comp_id: None,
            msg_seq_num: None,
            sending_time: None,
            poss_dup: false,
            body_length: None,
            checksum: None,
            valid: false,
            errors: Vec::new(),
            fields: Vec::new(),
            session: FixSession::default(),
        }
    }
}

impl Parser for FixParser {
    fn protocol(&self) -> Protocol {
        Protocol::Fix
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        let (begin_end, body_start, declared) = match Self::prefix(buf) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Parse::Need { min_len: buf.len() + 1, total: None };
            }
            Err(e) => {
                let next = memchr::memmem::find(&buf[1.min(buf.len())..], b"8=FIX").map_or(buf.len(), |i| i + 1);
                return Parse::Invalid { len: next.max(1), error: e.to_string() };
            }
        };
        match self.frame(buf, body_start, declared) {
            Frame::Need(min_len, total) => Parse::Need { min_len: min_len.max(buf.len() + 1), total },
            Frame::End(end, mismatch) => {
                let mut m = self.message(buf, begin_end, body_start, declared, end, mismatch);
                m.session = self.session.observe(dir.index(), &m, m.valid);
                let error = (!m.errors.is_empty()).then(|| m.errors.join("; "));
                Parse::Message(Parsed { len: end, body: Body::Fix(Box::new(m)), exchange: None, error })
            }
        }
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        let (begin, total, declared) = match Self::prefix(buf) {
            Ok(Some((be, bs, declared))) => {
                (Text(buf.slice(2..be)), Some((bs + declared + TRAILER_LEN) as u64), Some(declared))
            }
            _ => (Text::default(), None, None),
        };
        let mut m = Self::empty(begin);
        m.body_length = declared;
        m.errors.push("message incomplete".to_string());
        // Fields wholly before the cut are still evidence.
        if let Some(last) = memchr::memrchr(SOH, buf) {
            let body_start = Self::prefix(buf).ok().flatten().map_or(0, |p| p.1);
            self.fields(buf, body_start, last, false, &mut m);
        }
        m.session = self.session.observe(dir.index(), &m, false);
        Partial { body: Body::Fix(Box::new(m)), exchange: None, total, complete_at_end: false }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        if let Some(i) = memchr::memmem::find(buf, b"8=FIX") {
            return Some(i);
        }
        // A start cut by the end of the buffer.
        (1..5).rev().find(|&n| buf.len() >= n && buf.ends_with(&b"8=FIX"[..n])).map(|n| buf.len() - n)
    }

    fn gap(&mut self, dir: Direction) {
        self.session.gap(dir.index());
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.session.sender_attributes(dir.index())
    }
}

#[cfg(test)]
mod tests;
