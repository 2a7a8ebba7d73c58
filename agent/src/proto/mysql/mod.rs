//! MySQL / MariaDB client/server protocol: connection phase (server greeting,
//! login with user, database and connection attributes, authentication
//! steps), commands (COM_QUERY, COM_INIT_DB, COM_STMT_PREPARE / EXECUTE /
//! CLOSE / RESET / FETCH, ...), and response summaries (OK with affected rows
//! and last insert id, ERR with code, SQLSTATE and message, result sets with
//! column count, names and row count, prepared statement ids).
//!
//! **Records.** The client's packets are one record each (a command is one
//! packet). The server's answer to a command is one record holding all of its
//! packets (OK/ERR, or column count, definitions, rows and terminator, over
//! every result set); one larger than half the message cap is cut at a packet
//! boundary and the next record continues it (`continued`).
//!
//! **Pairing.** Ordinal of the client's request on the connection: each
//! command that gets an answer, the login packet and each authentication
//! packet of the client takes the next number, and the server's answer takes
//! the oldest unanswered one. COM_QUIT, COM_STMT_CLOSE and
//! COM_STMT_SEND_LONG_DATA get no answer and are one-way (`None`), as are the
//! server greeting and LOCAL INFILE data packets. A server packet that answers
//! nothing the parser saw (after a gap) is recorded alone, unpaired.
//!
//! **Prepared statements.** The SQL of COM_STMT_PREPARE is remembered under
//! the statement id the server returns, so COM_STMT_EXECUTE records name the
//! SQL they run and decode their binary parameter values by type
//! ([`values`]). At most `max_prepared_statements` statements and
//! `max_prepared_sql_bytes` of SQL are kept per connection; the oldest goes
//! first, and an execution of a forgotten statement says so
//! (`statement_known: false`).
//!
//! **Secrets.** The authentication response of the login packet, the data of
//! AuthSwitchRequest / AuthMoreData and every client authentication packet
//! are never put in parsed fields: only `"<withheld>"` and their length.
//!
//! **TLS and compression.** After an SSLRequest the rest of the connection is
//! TLS (its plaintext is captured on the TLS sub-stream and parsed there); a
//! connection that negotiates CLIENT_COMPRESS is recorded unparsed. Both are
//! marked on the login record.
//!
//! **Resync.** After a gap, a client packet boundary is a header with sequence
//! id 0 and a known command byte; a server boundary is a chain of packets with
//! consecutive sequence ids reaching the end of the buffer (or three of them).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::proto::fields::{Body, ExchangeRole, UnparsedReason};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

mod client;
mod messages;
mod server;
pub mod values;

pub use messages::{
    MyAuth, MyCommand, MyErr, MyGreeting, MyLogin, MyOk, MyPrepared, MyResponse, MySide, MysqlMessage, WITHHELD,
};
pub use values::MyValue;

/// Packet header: 3-byte little-endian payload length, 1-byte sequence id.
const HEADER: usize = 4;
/// A payload of this length continues in the next packet.
const MAX_PAYLOAD: usize = 0xff_ffff;
/// Most commands awaiting an answer (pipelining is rare in MySQL).
const MAX_PENDING: usize = 64;

/// Why MySQL bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MysqlError {
    /// The first server packet is not a Handshake v10 or an ERR.
    #[error("server greeting expected, found packet type 0x{0:02x}")]
    Greeting(u8),
    /// A packet whose payload does not decode as what it must be.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    /// An empty packet where a typed one must be.
    #[error("empty packet where a {0} packet was expected")]
    Empty(&'static str),
}

/// What the server's answer to a request looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// OK or ERR (or EOF for COM_SET_OPTION; AuthSwitch for COM_CHANGE_USER).
    Simple,
    /// OK, ERR, LOCAL INFILE request or result sets.
    ResultSet,
    /// COM_STMT_FETCH: rows only, then EOF/OK.
    Rows,
    /// COM_STMT_PREPARE: PREPARE_OK with definitions, or ERR.
    Prepare,
    /// COM_FIELD_LIST: column definitions until EOF, or ERR.
    FieldList,
    /// COM_STATISTICS: one text packet.
    Text,
    /// Login or authentication data: OK, ERR, AuthSwitchRequest or AuthMoreData.
    Auth,
}

/// A request the server has not answered yet.
pub(super) struct Pending {
    key: u64,
    kind: Kind,
    command: Option<&'static str>,
    /// COM_STMT_PREPARE: the SQL, to remember under the id the server returns.
    sql: Option<Bytes>,
    /// COM_STMT_EXECUTE: the statement (its column names stand in for
    /// definitions the server skips under MariaDB's metadata caching).
    stmt: Option<u32>,
}

/// A prepared statement remembered for COM_STMT_EXECUTE.
pub(super) struct Stmt {
    sql: Bytes,
    params: u16,
    /// Parameter types from the last execution that sent them (type, unsigned).
    types: Vec<(u8, bool)>,
    /// Result column names from the PREPARE_OK definitions (capped).
    columns: Vec<crate::proto::fields::Text>,
}

/// Limits from [`ProtoConfig`].
struct Limits {
    max_group: usize,
    max_listed: usize,
    max_value: usize,
    max_stmts: usize,
    max_sql_bytes: usize,
}

/// One physical packet.
#[derive(Clone, Copy)]
pub(super) struct Pkt<'a> {
    /// Declared payload length.
    len: usize,
    seq: u8,
    /// The payload bytes present (all of them unless the packet is cut).
    payload: &'a [u8],
}

/// MySQL parser for one connection.
pub struct MysqlParser {
    client_dir: Direction,
    lim: Limits,
    server_caps: Option<u32>,
    client_caps: Option<u32>,
    greeted: bool,
    logged_in: bool,
    opaque: Option<&'static str>,
    /// The client sends LOCAL INFILE data until an empty packet.
    infile: bool,
    /// The previous client packet had the maximum length: this one continues it.
    client_long: bool,
    next_key: u64,
    pending: VecDeque<Pending>,
    stmts: HashMap<u32, Stmt>,
    stmt_order: VecDeque<u32>,
    sql_bytes: usize,
    scan: Option<server::Scan>,
    attrs: crate::proto::wire::SenderAttrs,
}

impl MysqlParser {
    /// A parser; the client writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        MysqlParser {
            client_dir,
            lim: Limits {
                max_group: (cfg.max_message_bytes / 2).max(64),
                max_listed: cfg.max_values_listed,
                max_value: cfg.max_value_bytes,
                max_stmts: cfg.max_prepared_statements,
                max_sql_bytes: cfg.max_prepared_sql_bytes,
            },
            server_caps: None,
            client_caps: None,
            greeted: false,
            logged_in: false,
            opaque: None,
            infile: false,
            client_long: false,
            next_key: 0,
            pending: VecDeque::new(),
            stmts: HashMap::new(),
            stmt_order: VecDeque::new(),
            sql_bytes: 0,
            scan: None,
            attrs: Default::default(),
        }
    }

    /// Capabilities both sides agreed on (the client's, which are a subset).
    fn caps(&self) -> u32 {
        self.client_caps.or(self.server_caps).unwrap_or(messages::CLIENT_PROTOCOL_41)
    }

    /// Whether result sets end their column definitions with an EOF packet,
    /// when known.
    fn column_eof(&self) -> Option<bool> {
        self.client_caps.map(|c| c & messages::CLIENT_DEPRECATE_EOF == 0)
    }

    fn request(
        &mut self,
        kind: Kind,
        command: Option<&'static str>,
        sql: Option<Bytes>,
        stmt: Option<u32>,
    ) -> (u64, ExchangeRole) {
        let key = self.next_key;
        self.next_key += 1;
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending { key, kind, command, sql, stmt });
        (key, ExchangeRole::Request)
    }
}

/// The packet at `at`, if its header is in `buf` (payload possibly cut).
pub(super) fn packet(buf: &[u8], at: usize) -> Option<Pkt<'_>> {
    let h = buf.get(at..at + HEADER)?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let start = at + HEADER;
    let end = (start + len).min(buf.len());
    Some(Pkt { len, seq: h[3], payload: &buf[start..end] })
}

impl Pkt<'_> {
    fn complete(&self) -> bool {
        self.payload.len() == self.len
    }

    /// Bytes from the header start to the payload end.
    fn total(&self) -> usize {
        HEADER + self.len
    }

    fn first(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

fn message(len: usize, m: impl Into<Box<messages::MysqlMessage>>, exchange: Option<(u64, ExchangeRole)>) -> Parse {
    Parse::Message(Parsed { len, body: Body::Mysql(m.into()), exchange, error: None })
}

impl Parser for MysqlParser {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        if self.opaque.is_some() {
            return Parse::Message(Parsed {
                len: buf.len().max(1),
                body: Body::Unparsed { reason: UnparsedReason::UnknownProtocol },
                exchange: None,
                error: None,
            });
        }
        if dir == self.client_dir { self.parse_client(buf) } else { self.parse_server(buf) }
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        if dir == self.client_dir { self.client_interrupted(buf) } else { self.server_interrupted(buf) }
    }

    fn resync(&mut self, dir: Direction, buf: &[u8]) -> Option<usize> {
        if self.opaque.is_some() {
            return (!buf.is_empty()).then_some(0);
        }
        let client = dir == self.client_dir;
        (0..buf.len().min(4096)).find(|&i| {
            let Some(p) = packet(buf, i) else { return false };
            if p.len == 0 || p.len > 1 << 24 {
                return false;
            }
            if client {
                let known = p.first().is_some_and(|c| messages::command_name(c) != "COM_UNKNOWN");
                return p.seq == 0 && known && (i + p.total() == buf.len() || packet(buf, i + p.total()).is_some());
            }
            // Server: consecutive sequence ids up to the end or three packets.
            let (mut at, mut seq) = (i, p.seq);
            for n in 0..3 {
                let Some(q) = packet(buf, at) else { return n > 0 && at == buf.len() };
                if (n > 0 && q.seq != seq.wrapping_add(1)) || q.len > 1 << 24 || (n == 0 && !q.complete()) {
                    return false;
                }
                seq = q.seq;
                at += q.total();
                if at >= buf.len() {
                    return true;
                }
            }
            true
        })
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.attrs.get(dir.index())
    }

    fn more_to_come(&self, dir: Direction, _id: u64) -> bool {
        // A response cut at the cap continues in the next record of the same exchange.
        dir != self.client_dir && self.response_continues()
    }

    fn gap(&mut self, dir: Direction) {
        // Which request an answer belongs to is no longer known.
        self.pending.clear();
        self.infile = false;
        if dir == self.client_dir {
            self.client_long = false;
        } else {
            self.scan = None;
        }
    }
}

#[cfg(test)]
mod tests;
