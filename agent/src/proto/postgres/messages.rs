//! The PostgreSQL message model (startup, notices, message groups), message
//! names by type byte, and a bounds-checked cursor over message bodies.

use serde::Serialize;

use super::statements::{PgBind, PgExecute};
use super::*;

/// Which side sent the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgSide {
    /// Client.
    Frontend,
    /// Server.
    Backend,
}

/// Startup parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgStartup {
    /// Protocol version requested, e.g. 196608 for 3.0.
    pub protocol: u32,
    /// `user` parameter.
    pub user: Option<Text>,
    /// `database` parameter.
    pub database: Option<Text>,
    /// `application_name` parameter.
    pub application_name: Option<Text>,
    /// All parameters, in order.
    pub params: Vec<(Text, Text)>,
}

/// An ErrorResponse or NoticeResponse.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgNotice {
    /// Severity (S).
    pub severity: Option<Text>,
    /// SQLSTATE code (C).
    pub code: Option<Text>,
    /// Primary message (M).
    pub message: Option<Text>,
    /// Detail (D).
    pub detail: Option<Text>,
}

/// One CommandComplete, summarised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgResult {
    /// The command tag as sent, e.g. `INSERT 0 1`.
    pub tag: Text,
    /// The command, e.g. `INSERT`.
    pub command: Text,
    /// Rows affected or returned, from the tag.
    pub rows: Option<u64>,
    /// DataRow messages of this command in the record.
    pub data_rows: u64,
}

impl PgResult {
    pub(super) fn of(tag: Text, data_rows: u64) -> Self {
        let s = &tag.0[..];
        let cmd_end = s.iter().position(|c| *c == b' ').unwrap_or(s.len());
        let last = s.rsplit(|c| *c == b' ').next().unwrap_or_default();
        let rows = if cmd_end < s.len() { std::str::from_utf8(last).ok().and_then(|n| n.parse().ok()) } else { None };
        PgResult { command: Text(tag.0.slice(..cmd_end)), tag, rows, data_rows }
    }
}

/// One message in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgMsg {
    /// Message name, e.g. `Query`, `DataRow`.
    pub name: &'static str,
    /// Offset within the record's raw bytes.
    pub offset: usize,
    /// Length on the wire (type byte included).
    pub len: usize,
}

/// A group of PostgreSQL messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgMessages {
    /// Frontend or backend.
    pub side: PgSide,
    /// This group continues the previous record (cut by the size cap or a gap).
    pub continued: bool,
    /// Messages in the group.
    pub message_count: u64,
    /// The first messages (capped at `max_pg_messages_listed`).
    pub messages: Vec<PgMsg>,
    /// StartupMessage.
    pub startup: Option<PgStartup>,
    /// SSLRequest, GSSENCRequest or CancelRequest, by name.
    pub request: Option<&'static str>,
    /// Server's one-byte answer to SSLRequest/GSSENCRequest (`S` or `N`).
    pub encryption_response: Option<char>,
    /// SQL text of Query and Parse messages.
    pub queries: Vec<Text>,
    /// Prepared statement names of Parse/Bind messages (empty = unnamed).
    pub statements: Vec<Text>,
    /// Parameter counts of Bind messages.
    pub bind_params: Vec<u16>,
    /// Bind messages with their parameter values (decoded by type).
    pub binds: Vec<PgBind>,
    /// Execute messages, resolved to the statement and SQL they run.
    pub executes: Vec<PgExecute>,
    /// Authentication codes (0 = ok, 3 cleartext, 5 MD5, 10 SASL, ...).
    pub auth: Vec<u32>,
    /// ParameterStatus pairs.
    pub parameters: Vec<(Text, Text)>,
    /// BackendKeyData process id.
    pub backend_pid: Option<u32>,
    /// RowDescription column names.
    pub columns: Vec<Text>,
    /// DataRow messages.
    pub rows: u64,
    /// CommandComplete tags (e.g. `SELECT 3`).
    pub command_tags: Vec<Text>,
    /// Each CommandComplete: command, rows affected or returned, DataRows.
    pub results: Vec<PgResult>,
    /// DataRows counted when the last CommandComplete was seen.
    #[serde(skip)]
    pub(super) rows_at_tag: u64,
    /// ErrorResponses.
    pub errors: Vec<PgNotice>,
    /// NoticeResponses.
    pub notices: u64,
    /// ReadyForQuery transaction status (`I`, `T`, `E`).
    pub ready_status: Option<char>,
}

impl PgMessages {
    pub(super) fn new(side: PgSide, continued: bool) -> Self {
        PgMessages {
            side,
            continued,
            message_count: 0,
            messages: Vec::new(),
            startup: None,
            request: None,
            encryption_response: None,
            queries: Vec::new(),
            statements: Vec::new(),
            bind_params: Vec::new(),
            binds: Vec::new(),
            executes: Vec::new(),
            auth: Vec::new(),
            parameters: Vec::new(),
            backend_pid: None,
            columns: Vec::new(),
            rows: 0,
            command_tags: Vec::new(),
            results: Vec::new(),
            rows_at_tag: 0,
            errors: Vec::new(),
            notices: 0,
            ready_status: None,
        }
    }
}

pub(super) fn push_capped<T>(v: &mut Vec<T>, x: T) {
    if v.len() < MAX_LISTED {
        v.push(x);
    }
}

pub(super) fn frontend_name(t: u8) -> Option<&'static str> {
    Some(match t {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'E' => "Execute",
        b'D' => "Describe",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'X' => "Terminate",
        b'p' => "PasswordMessage",
        b'F' => "FunctionCall",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        _ => return None,
    })
}

pub(super) fn backend_name(t: u8) -> Option<&'static str> {
    Some(match t {
        b'R' => "Authentication",
        b'S' => "ParameterStatus",
        b'K' => "BackendKeyData",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        b'D' => "DataRow",
        b'C' => "CommandComplete",
        b'E' => "ErrorResponse",
        b'N' => "NoticeResponse",
        b'1' => "ParseComplete",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'n' => "NoData",
        b's' => "PortalSuspended",
        b'I' => "EmptyQueryResponse",
        b't' => "ParameterDescription",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'A' => "NotificationResponse",
        b'V' => "FunctionCallResponse",
        b'v' => "NegotiateProtocolVersion",
        _ => return None,
    })
}

/// A cursor over one message body.
pub(super) struct Cur<'a> {
    pub(super) b: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cur<'a> {
    pub(super) fn cstr(&mut self) -> Option<&'a [u8]> {
        let rest = self.b.get(self.at..)?;
        let n = memchr::memchr(0, rest)?;
        self.at += n + 1;
        Some(&rest[..n])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        let v = self.b.get(self.at..self.at + 2)?;
        self.at += 2;
        Some(u16::from_be_bytes([v[0], v[1]]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let v = self.b.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
}

pub(super) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
