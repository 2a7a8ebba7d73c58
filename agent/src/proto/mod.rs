//! Protocol parsers. Each parses messages from the front of one direction's
//! reassembled, gap-free bytes and reports how many bytes a message took and
//! how it pairs with others; the connection (`crate::conn`) cuts those bytes
//! out as the record's raw bytes and pairs messages into exchanges.

#![warn(missing_docs)]

pub mod amqp;
pub mod dns;
pub mod fields;
pub mod fix;
pub mod http1;
pub mod http2;
pub mod mqtt;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod redis;
#[cfg(test)]
pub(crate) mod testing;
pub mod unknown;
mod wire;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Direction, Transport};
use fields::{Body, ExchangeRole};

/// Application protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Not detected yet (only on records produced before detection).
    Undetected,
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (gRPC is HTTP/2 with `application/grpc` content).
    Http2,
    /// PostgreSQL frontend/backend protocol v3.
    Postgres,
    /// Redis RESP2/RESP3.
    Redis,
    /// DNS over UDP or TCP.
    Dns,
    /// FIX 4.x tag=value.
    Fix,
    /// MySQL / MariaDB client/server protocol.
    Mysql,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
    /// NATS client protocol.
    Nats,
    /// MQTT 3.1, 3.1.1 and 5.
    Mqtt,
    /// Nothing recognised: raw records only.
    Unknown,
}

/// Parser limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoConfig {
    /// Largest message kept whole; beyond it the message is recorded with its
    /// first bytes and a `MessageCap` gap.
    pub max_message_bytes: usize,
    /// Most headers parsed per HTTP message (HTTP/1 and HTTP/2).
    pub max_headers: usize,
    /// Largest HTTP/1 header block, request line included.
    pub max_header_bytes: usize,
    /// HPACK dynamic table size cap (bytes, RFC 7541 accounting), whatever the
    /// peer announces.
    pub max_hpack_table_bytes: usize,
    /// Most HTTP/2 streams tracked per connection for gRPC message framing.
    pub max_h2_streams: usize,
    /// Most RESP elements (all nesting levels) in one message.
    pub max_resp_elements: usize,
    /// Most RESP nesting depth.
    pub max_resp_depth: usize,
    /// Most PostgreSQL messages described individually per record.
    pub max_pg_messages_listed: usize,
    /// Most DNS resource records decoded per message.
    pub max_dns_records: usize,
    /// Most FIX fields kept per message.
    pub max_fix_fields: usize,
    /// Most prepared statements (PostgreSQL, MySQL) remembered per connection
    /// to resolve executions to their SQL; the oldest is forgotten first.
    pub max_prepared_statements: usize,
    /// Most bytes of SQL text remembered for prepared statements per connection.
    pub max_prepared_sql_bytes: usize,
    /// Most bound parameter values (SQL) or properties/headers (brokers) listed
    /// per message.
    pub max_values_listed: usize,
    /// Longest value (a bound parameter, a header, a payload preview) shown in
    /// the parsed fields; longer ones are cut and marked (all bytes stay in `raw`).
    pub max_value_bytes: usize,
    /// Longest preview of a message payload or body (brokers) in the parsed
    /// fields; all bytes stay in `raw`.
    pub max_payload_preview_bytes: usize,
}

impl Default for ProtoConfig {
    fn default() -> Self {
        ProtoConfig {
            max_message_bytes: 1 << 20,
            max_headers: 128,
            max_header_bytes: 64 << 10,
            max_hpack_table_bytes: 64 << 10,
            max_h2_streams: 1024,
            max_resp_elements: 65_536,
            max_resp_depth: 32,
            max_pg_messages_listed: 64,
            max_dns_records: 256,
            max_fix_fields: 1024,
            max_prepared_statements: 256,
            max_prepared_sql_bytes: 256 << 10,
            max_values_listed: 64,
            max_value_bytes: 256,
            max_payload_preview_bytes: 4096,
        }
    }
}

/// One parsed message.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// Bytes the message took from the front of the buffer (≥ 1).
    pub len: usize,
    /// Parsed fields.
    pub body: Body,
    /// Pairing key and role, if the protocol pairs messages.
    pub exchange: Option<(u64, ExchangeRole)>,
    /// Set when the message was framed but is invalid (the record says so).
    pub error: Option<String>,
}

/// What a parser found at the front of the buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Parse {
    /// A whole message.
    Message(Parsed),
    /// The message continues past the buffer.
    Need {
        /// Do not call again before the buffer holds this many bytes.
        min_len: usize,
        /// Total message length, once the parser knows it (lets a gap inside
        /// the message be absorbed into one record).
        total: Option<u64>,
    },
    /// The bytes are not a valid message start: record `len` bytes as
    /// unparsed with `error` and look for the next message boundary.
    Invalid {
        /// Bytes to record raw (≥ 1).
        len: usize,
        /// What is wrong.
        error: String,
    },
}

/// What a parser can say about a message cut short by a gap, a cap or the end
/// of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// Fields parsed from the bytes present (e.g. the request line and headers).
    pub body: Body,
    /// Pairing, if the message's role is known.
    pub exchange: Option<(u64, ExchangeRole)>,
    /// Total message length if known: a gap that ends inside it is absorbed
    /// and parsing resumes in sync after it.
    pub total: Option<u64>,
    /// The message is delimited by the end of the stream (HTTP/1 response
    /// without length): if the stream ends here, it is complete.
    pub complete_at_end: bool,
}

/// A per-connection protocol parser. Implementations must never panic, must
/// report `len >= 1` for messages and invalid bytes, and must bound every
/// allocation by the [`ProtoConfig`] limits.
pub trait Parser: Send {
    /// The protocol parsed.
    fn protocol(&self) -> Protocol;

    /// Parse one message at the front of `buf` (bytes of `dir`, starting at a
    /// message boundary, with no gap inside).
    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse;

    /// The message at the front of `buf` is cut short (the bytes after `buf`
    /// are missing or will not be kept). Describe it and reset so the next
    /// call to [`Parser::parse`] starts at a new message.
    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial;

    /// After a gap or invalid bytes, find the offset in `buf` where a message
    /// may start, or `None` if there is none in `buf`.
    fn resync(&mut self, dir: Direction, buf: &[u8]) -> Option<usize>;

    /// Bytes of `dir` were lost: forget state that depended on them.
    fn gap(&mut self, dir: Direction);

    /// Right after [`Parser::parse`] returned a message of `dir` with pairing
    /// key `id`: whether more messages of the same exchange and role follow
    /// (HTTP/2 frames of a stream before END_STREAM, a PostgreSQL response
    /// group cut at the cap). The exchange is one record once neither role
    /// has more to come. Default: each message is the whole request or response.
    fn more_to_come(&self, _dir: Direction, _id: u64) -> bool {
        false
    }

    /// Messages without a pairing key are one record each (one-way protocols
    /// such as FIX) unless this returns true: then consecutive ones of a
    /// direction are gathered into one record, bounded by size and time
    /// (HTTP/2 connection-level frames: SETTINGS, WINDOW_UPDATE, PING).
    fn gathers_unpaired(&self) -> bool {
        false
    }

    /// Attributes of the application identity that sends in `dir`, as learned
    /// so far from the messages (e.g. `("fix.sender_comp_id", "BUYSIDE")`).
    /// Only protocols that reveal application identities return any.
    ///
    /// The list is shared: a parser keeps one and hands out clones of the
    /// `Arc`, since every record of the connection carries it.
    fn sender_attributes(&self, dir: Direction) -> AppAttrs {
        let _ = dir;
        AppAttrs::default()
    }
}

/// Application identity attributes of one sender (`(key, value)` pairs), shared
/// by every record that carries them.
pub type AppAttrs = std::sync::Arc<[(String, String)]>;

impl Protocol {
    /// The snake_case name (as in JSON and on the wire).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Undetected => "undetected",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Postgres => "postgres",
            Protocol::Redis => "redis",
            Protocol::Dns => "dns",
            Protocol::Fix => "fix",
            Protocol::Mysql => "mysql",
            Protocol::Amqp => "amqp",
            Protocol::Nats => "nats",
            Protocol::Mqtt => "mqtt",
            Protocol::Unknown => "unknown",
        }
    }
}

/// A parser for `protocol`; `client_dir` is the direction carrying requests.
/// Over UDP every buffer handed to the parser is one datagram.
pub fn make_parser(
    protocol: Protocol,
    client_dir: Direction,
    transport: Transport,
    cfg: &ProtoConfig,
) -> Box<dyn Parser> {
    match protocol {
        Protocol::Http1 => Box::new(http1::Http1Parser::new(client_dir, cfg)),
        Protocol::Redis => Box::new(redis::RedisParser::new(client_dir, cfg)),
        Protocol::Fix => Box::new(fix::FixParser::new(cfg)),
        Protocol::Dns => Box::new(dns::DnsParser::new(transport, cfg)),
        Protocol::Postgres => Box::new(postgres::PgParser::new(client_dir, cfg)),
        Protocol::Http2 => Box::new(http2::Http2Parser::new(client_dir, cfg)),
        Protocol::Mysql => Box::new(mysql::MysqlParser::new(client_dir, cfg)),
        Protocol::Amqp => Box::new(amqp::AmqpParser::new(client_dir, cfg)),
        Protocol::Nats => Box::new(nats::NatsParser::new(client_dir, cfg)),
        Protocol::Mqtt => Box::new(mqtt::MqttParser::new(client_dir, cfg)),
        Protocol::Undetected | Protocol::Unknown => Box::new(unknown::UnknownParser::new(cfg)),
    }
}
