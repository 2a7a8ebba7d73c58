//! What parsers return: the parsed fields of one message ([`Body`]), the text
//! type they slice from the raw bytes, and how messages pair into exchanges.
//! The record that carries them (with the raw bytes and provenance) is
//! `crate::record`.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::amqp::AmqpFrame;
use crate::proto::dns::DnsMessage;
use crate::proto::fix::FixMessage;
use crate::proto::http1::Http1Message;
use crate::proto::http2::H2Frame;
use crate::proto::mqtt::MqttPacket;
use crate::proto::mysql::MysqlMessage;
use crate::proto::nats::NatsMessage;
use crate::proto::postgres::PgMessages;
use crate::proto::redis::RedisMessage;

/// A parsed text field sliced from the raw bytes (no copy); serialized as a
/// string with invalid UTF-8 replaced (the exact bytes stay in the record's raw bytes).
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

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(Bytes::from(String::deserialize(d)?)))
    }
}

/// Whether a message asks or answers (for pairing into exchanges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeRole {
    /// A request, query or command.
    Request,
    /// The answer to the request with the same pairing key.
    Response,
}

/// Why bytes were recorded without protocol fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnparsedReason {
    /// No known protocol was detected.
    UnknownProtocol,
    /// Bytes after a gap or a malformed message, before the next message boundary.
    Resync,
    /// Bytes a parser rejected as a message start (the record's `error` says why).
    Malformed,
    /// Events that could not be tied to a tracked connection (the kernel's
    /// tracking map was full): positions are not meaningful.
    Orphan,
    /// Bytes the other end of a two-witness conversation saw that no record of
    /// this end claimed (the ends fell out of step).
    Unclaimed,
    /// The rest of a message larger than the parse limit whose exchange is
    /// no longer in memory (its fields are on the record with its first bytes).
    Continuation,
}

/// Parsed fields of one message, by protocol (read back as JSON: see
/// `crate::record::Fields`). Every protocol's fields are boxed: a body moves
/// by value from the parser's result through the piece, the assembler and the
/// record, and a 16-byte enum moves cheaper than the largest message inline
/// (152 bytes for HTTP/1; measured in BENCHMARKS.md, `bench flows`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Bytes with no parsed fields.
    Unparsed {
        /// Why the bytes were not parsed.
        reason: UnparsedReason,
    },
    /// One HTTP/1.x request or response.
    Http1(Box<Http1Message>),
    /// One HTTP/2 frame (with decoded headers and gRPC fields).
    Http2(Box<H2Frame>),
    /// A group of PostgreSQL messages (one query or one response).
    Postgres(Box<PgMessages>),
    /// One RESP command or reply.
    Redis(Box<RedisMessage>),
    /// One DNS message.
    Dns(Box<DnsMessage>),
    /// One FIX message.
    Fix(Box<FixMessage>),
    /// One MySQL command, or the whole response to one (cut at the size cap).
    Mysql(Box<MysqlMessage>),
    /// One AMQP 0-9-1 method with its content header and body frames.
    Amqp(Box<AmqpFrame>),
    /// One NATS protocol message.
    Nats(Box<NatsMessage>),
    /// One MQTT control packet.
    Mqtt(Box<MqttPacket>),
}
