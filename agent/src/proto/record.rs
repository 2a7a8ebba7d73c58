//! The record: one message, gap or connection summary, with parsed fields
//! *and* the raw bytes they were parsed from.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Serialize, Serializer};

use crate::flow::input::{Direction, GapReason, ProcessIdentity, Role, Transport};
use crate::proto::Protocol;
use crate::proto::dns::DnsMessage;
use crate::proto::fix::FixMessage;
use crate::proto::http1::Http1Message;
use crate::proto::http2::H2Frame;
use crate::proto::postgres::PgMessages;
use crate::proto::redis::RedisMessage;

/// Raw captured bytes; serialized as base64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw(pub Bytes);

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// A parsed text field sliced from the raw bytes (no copy); serialized as a
/// string with invalid UTF-8 replaced (the exact bytes stay in `raw`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text(pub Bytes);

impl Text {
    /// A text from a static string (tests, fixed names).
    pub fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// The bytes as a string, lossily.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Missing bytes inside (or at the end of) a record's stream range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GapMarker {
    /// Offset of the missing bytes from the record's `stream_pos`.
    pub offset: u64,
    /// Number of missing bytes.
    pub len: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

/// Whether a message asks or answers (for pairing and latency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeRole {
    /// A request, query or command.
    Request,
    /// The answer to the request with the same exchange id.
    Response,
}

/// Links a request record to its response record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// Protocol-defined pairing key within the connection (HTTP/1 and RESP
    /// ordinal, HTTP/2 stream id, DNS id, PostgreSQL ordinal).
    pub id: u64,
    /// Request or response.
    pub role: ExchangeRole,
    /// For a response: ns from the request's last byte to the response's first
    /// byte, when the request was seen.
    pub latency_ns: Option<u64>,
}

/// Why a connection record was produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnEnd {
    /// Close event received and every byte accounted for (or linger expired).
    Closed,
    /// No event for the idle timeout.
    Idle,
    /// Evicted by the connection or memory cap.
    Evicted,
    /// The engine was shut down.
    Shutdown,
}

/// Per-direction byte accounting of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirBytes {
    /// Payload bytes received from capture.
    pub captured: u64,
    /// Bytes covered by gaps.
    pub gap: u64,
    /// Final count from the close event, if any.
    pub kernel_total: Option<u64>,
}

/// The connection summary record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnSummary {
    /// Kernel ns of the open event (or first event when no open was seen).
    pub open_ts_ns: u64,
    /// Kernel ns of the close event, if one arrived.
    pub close_ts_ns: Option<u64>,
    /// Local endpoint.
    pub local: Option<SocketAddr>,
    /// Remote endpoint.
    pub remote: Option<SocketAddr>,
    /// TCP or UDP.
    pub transport: Transport,
    /// Client, server or unknown.
    pub role: Role,
    /// Whether an open event was seen (false: mid-stream or lost).
    pub open_seen: bool,
    /// Process identity from capture.
    pub identity: ProcessIdentity,
    /// Egress accounting.
    pub egress: DirBytes,
    /// Ingress accounting.
    pub ingress: DirBytes,
    /// Message records produced for this connection.
    pub messages: u64,
    /// Why this record was produced.
    pub end: ConnEnd,
}

/// A gap as a record of its own (every gap produces one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GapInfo {
    /// Missing bytes.
    pub len: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

/// Why bytes were recorded raw, without protocol fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnparsedReason {
    /// No known protocol was detected.
    UnknownProtocol,
    /// Bytes after a gap or malformed message, before the next message boundary.
    Resync,
    /// Bytes a parser rejected as a message start (the record's `error` says why).
    Malformed,
    /// Events that could not be tied to a live connection.
    Orphan,
}

/// Parsed fields of a record, by protocol.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Connection summary (at close, idle flush or eviction).
    Connection(ConnSummary),
    /// Missing bytes.
    Gap(GapInfo),
    /// Raw bytes with no parsed fields.
    Unparsed {
        /// Why the bytes were not parsed.
        reason: UnparsedReason,
    },
    /// One HTTP/1.x request or response.
    Http1(Http1Message),
    /// One HTTP/2 frame (with decoded headers and gRPC fields).
    Http2(Box<H2Frame>),
    /// A group of PostgreSQL messages (one query or one response).
    Postgres(Box<PgMessages>),
    /// One RESP command or reply.
    Redis(RedisMessage),
    /// One DNS message.
    Dns(Box<DnsMessage>),
    /// One FIX message.
    Fix(Box<FixMessage>),
}

/// One record shipped to the collector.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Connection the record belongs to.
    pub conn_id: u64,
    /// Stream the bytes came from (`None` for connection records).
    pub direction: Option<Direction>,
    /// Protocol detected for the connection.
    pub protocol: Protocol,
    /// Kernel ns of the first byte (or event).
    pub first_ts_ns: u64,
    /// Kernel ns of the last byte (or event).
    pub last_ts_ns: u64,
    /// Stream position of the record's first byte (raw or gap).
    pub stream_pos: u64,
    /// Stream bytes the record covers: raw bytes plus gap bytes.
    pub stream_len: u64,
    /// The exact captured bytes the fields were parsed from, in stream order
    /// with gap bytes left out (see `gaps`).
    pub raw: Raw,
    /// Missing byte ranges inside the record, relative to `stream_pos`.
    pub gaps: Vec<GapMarker>,
    /// Pairing with the matching request or response.
    pub exchange: Option<Exchange>,
    /// Set when the message is malformed or incomplete: what is wrong.
    pub error: Option<String>,
    /// Parsed fields.
    pub body: Body,
}

impl Record {
    /// The record as a JSON value (raw bytes base64).
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing these types cannot fail: all map keys are strings.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
