//! Where a record's bytes came from: parts (contiguous stretches of one
//! direction's stream), the calls that handed them over, the gaps inside
//! them, and the other end's observation of the same bytes.
use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::fields::Body;
use crate::types::{Call, Direction, GapReason};

/// Raw captured bytes; serialized as base64 (standard alphabet, padded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw(pub Bytes);

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(|v| Raw(Bytes::from(v)))
            .map_err(serde::de::Error::custom)
    }
}

/// One call's bytes inside a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMark {
    /// Offset from the part's `pos` of the first byte the call handed over.
    pub offset: u64,
    /// Kernel time of the call (CLOCK_BOOTTIME ns).
    pub ns: u64,
    /// The syscall or TLS function.
    pub call: Call,
}

/// Missing bytes inside a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapMark {
    /// Offset from the part's `pos`.
    pub offset: u64,
    /// Missing bytes.
    pub len: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

/// How one side saw a stretch of stream bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Kernel time (CLOCK_BOOTTIME ns) of the first byte.
    pub first_ns: u64,
    /// Kernel time of the last byte.
    pub last_ns: u64,
    /// The calls that handed the bytes over, in stream order.
    pub calls: Vec<CallMark>,
    /// Bytes this side did not see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<GapMark>,
    /// The other end's observation only: bytes at the end of the part that
    /// had not reached it when the record was made (if they do, they are
    /// recorded on their own, as that end's records).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unseen: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Observation {
    /// Bytes of the part this side did not see.
    pub fn gap_bytes(&self) -> u64 {
        self.gaps.iter().map(|g| g.len).sum()
    }
}

/// What a part is within its exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartRole {
    /// Bytes of the request.
    Request,
    /// Bytes of the response.
    Response,
    /// A message of a one-way protocol, or connection-level messages.
    Message,
    /// Unparsed bytes (segments).
    Bytes,
}

impl PartRole {
    /// The name used in JSON and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            PartRole::Request => "request",
            PartRole::Response => "response",
            PartRole::Message => "message",
            PartRole::Bytes => "",
        }
    }
}

/// One contiguous stretch `[pos, pos + len)` of one direction's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// From the record's side: egress = that process sent these bytes.
    pub direction: Direction,
    /// Request, response, message or plain bytes.
    pub role: PartRole,
    /// Stream position of the first byte.
    pub pos: u64,
    /// Stream bytes covered, gaps included.
    pub len: u64,
    /// The bytes present, in stream order (gap bytes left out; see `seen.gaps`).
    pub raw: Raw,
    /// How the record's side saw them.
    pub seen: Observation,
    /// Both ends on this host: how the other end saw the same positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Observation>,
    /// The other end saw different bytes: its bytes (kept beside ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_raw: Option<Raw>,
    /// TLS plaintext (positions count the TLS session's plaintext bytes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// Unconnected UDP: the datagram's own peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
}

impl Part {
    /// Position just past the part.
    pub fn end(&self) -> u64 {
        self.pos + self.len
    }
}

/// Parsed fields of one message: typed when the agent made them, JSON when
/// read back (tests, tools).
#[derive(Clone, Debug, PartialEq)]
pub enum Fields {
    /// As parsed.
    Parsed(Body),
    /// As read back from a JSON line.
    Json(serde_json::Value),
}

impl Fields {
    /// The fields as a JSON value.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Fields::Parsed(b) => serde_json::to_value(b).unwrap_or(serde_json::Value::Null),
            Fields::Json(v) => v.clone(),
        }
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Fields::Parsed(b) => b.serialize(s),
            Fields::Json(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Fields::Json)
    }
}

/// One parsed message inside an exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Index of the part holding it.
    pub part: usize,
    /// Offset of its first byte from the part's `pos`, and its stream length.
    pub offset: u64,
    /// Stream bytes of the message (gaps included).
    pub len: u64,
    /// The parsed fields.
    pub fields: Fields,
    /// Set when the message is malformed or incomplete: what is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something wrong with the agent's own capture, found while building a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `witness_mismatch` (the ends saw different bytes at the same
    /// positions), `witness_filled_gap` (the other end saw bytes this end
    /// missed) or `witness_missing` (the other end did not see some bytes).
    pub kind: String,
    /// Index of the part concerned.
    pub part: usize,
    /// Offset in the part of the first byte concerned, and how many.
    pub offset: u64,
    /// Bytes concerned.
    pub len: u64,
    /// In words.
    pub detail: String,
}

/// Bytes of a part masked by a redaction rule (`crate::redact`) before the
/// record was written: the bytes at these positions are the mask, not what
/// crossed the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// Index of the part.
    pub part: usize,
    /// Stream position of the first masked byte, and how many.
    pub pos: u64,
    pub len: u64,
    /// The rule (`http_headers`, `card_number`, `custom.<name>`, ...).
    pub rule: String,
    /// Version of the built-in rule set in force.
    pub rules_version: u32,
    /// In the other end's bytes (`witness_raw`), not the part's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub witness: bool,
    /// Keyed tokens (card numbers): the id of the key that made the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}
