//! The MySQL record model (greeting, login, authentication steps, commands,
//! response summaries) and the decoders of the connection-phase packets,
//! OK/ERR packets and column definitions.

use bytes::Bytes;
use serde::Serialize;

use super::values::MyValue;
use crate::proto::fields::Text;
use crate::proto::wire::{Reader, capped, push_capped, slice};

/// Capability flags the parser needs.
pub(super) const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub(super) const CLIENT_COMPRESS: u32 = 0x20;
pub(super) const CLIENT_PROTOCOL_41: u32 = 0x200;
pub(super) const CLIENT_SSL: u32 = 0x800;
pub(super) const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub(super) const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub(super) const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
pub(super) const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
pub(super) const CLIENT_SESSION_TRACK: u32 = 0x80_0000;
pub(super) const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;
pub(super) const CLIENT_QUERY_ATTRIBUTES: u32 = 0x800_0000;
/// Server status: another result set follows.
pub(super) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x8;

/// Where a secret was on the wire: never its value.
pub const WITHHELD: &str = "<withheld>";

/// Which side sent the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MySide {
    /// The client.
    Client,
    /// The server.
    Server,
}

/// The server's Handshake v10.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyGreeting {
    /// Protocol version (10).
    pub protocol_version: u8,
    /// Server version string (MariaDB: `5.5.5-10.11...-MariaDB`).
    pub server_version: Text,
    /// Connection (thread) id.
    pub connection_id: u32,
    /// Server capability flags (lower and upper 16 bits).
    pub capabilities: u32,
    /// MariaDB extended capabilities, when the server is MariaDB.
    pub mariadb_capabilities: Option<u32>,
    /// Default collation id.
    pub charset: u8,
    /// Server status flags.
    pub status_flags: u16,
    /// Default authentication plugin.
    pub auth_plugin: Option<Text>,
}

/// The client's HandshakeResponse41 (or SSLRequest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyLogin {
    /// An SSLRequest: the rest of the connection is TLS.
    pub ssl_request: bool,
    /// Client capability flags.
    pub capabilities: u32,
    /// MariaDB extended capabilities the client asks for.
    pub mariadb_capabilities: Option<u32>,
    /// Largest packet the client accepts.
    pub max_packet_size: u32,
    /// Collation id.
    pub charset: u8,
    /// User name.
    pub user: Option<Text>,
    /// Always `<withheld>` when the client sent an authentication response.
    pub password: Option<&'static str>,
    /// Length of the withheld authentication response.
    pub auth_response_len: usize,
    /// Initial database (CLIENT_CONNECT_WITH_DB).
    pub database: Option<Text>,
    /// Authentication plugin the response is for.
    pub auth_plugin: Option<Text>,
    /// Connection attributes (`_client_name`, `program_name`, ...), capped.
    pub attributes: Vec<(Text, Text)>,
}

/// One authentication step after the login packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyAuth {
    /// `auth_switch_request` (server), `auth_more_data` (server) or
    /// `auth_data` (client).
    pub step: &'static str,
    /// Plugin named by an AuthSwitchRequest.
    pub plugin: Option<Text>,
    /// Always `<withheld>`: the bytes are secrets or derived from them.
    pub data: &'static str,
    /// Length of the withheld data.
    pub data_len: usize,
}

/// One client command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyCommand {
    /// Command byte.
    pub code: u8,
    /// Command name, e.g. `COM_QUERY`.
    pub name: &'static str,
    /// SQL of COM_QUERY / COM_STMT_PREPARE, or the SQL of the prepared
    /// statement a COM_STMT_EXECUTE runs (cut at the message cap).
    pub query: Option<Text>,
    /// Schema of COM_INIT_DB (or table of COM_FIELD_LIST).
    pub schema: Option<Text>,
    /// Statement id of COM_STMT_* commands.
    pub statement_id: Option<u32>,
    /// COM_STMT_EXECUTE: the statement was prepared on this connection and
    /// remembered (its SQL and parameter count are known).
    pub statement_known: Option<bool>,
    /// COM_STMT_EXECUTE cursor flags.
    pub cursor_flags: Option<u8>,
    /// Parameters a COM_STMT_EXECUTE binds (count).
    pub param_count: Option<u16>,
    /// Parameter values decoded from the binary protocol (capped).
    pub params: Vec<MyValue>,
    /// Rows asked for by COM_STMT_FETCH.
    pub fetch_rows: Option<u32>,
    /// COM_CHANGE_USER: the new user (its password is withheld).
    pub user: Option<Text>,
}

/// An OK packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyOk {
    /// Affected rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status_flags: u16,
    /// Warnings.
    pub warnings: u16,
    /// Human-readable info (e.g. `Rows matched: 1  Changed: 1  Warnings: 0`).
    pub info: Option<Text>,
}

/// An ERR packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyErr {
    /// Error code (e.g. 1146).
    pub code: u16,
    /// SQLSTATE (e.g. `42S02`).
    pub sql_state: Option<Text>,
    /// Message.
    pub message: Text,
}

/// The answer to COM_STMT_PREPARE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyPrepared {
    /// Statement id the server assigned.
    pub statement_id: u32,
    /// Result columns.
    pub columns: u16,
    /// Parameters (`?` placeholders).
    pub params: u16,
    /// Warnings.
    pub warnings: u16,
}

/// Summary of one response (all its packets, or the part in this record).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyResponse {
    /// Name of the command answered, when the parser saw it.
    pub command: Option<&'static str>,
    /// Final OK packet (or the OK/EOF ending the last result set).
    pub ok: Option<MyOk>,
    /// ERR packet.
    pub error: Option<MyErr>,
    /// COM_STMT_PREPARE answer.
    pub prepared: Option<MyPrepared>,
    /// Result sets in the response.
    pub result_sets: u32,
    /// Column count of the first result set.
    pub columns: Option<u64>,
    /// Column names of the first result set (capped).
    pub column_names: Vec<Text>,
    /// Rows of all result sets (in this record).
    pub rows: u64,
    /// LOCAL INFILE request: the file the server asks for.
    pub local_infile: Option<Text>,
    /// Text answer (COM_STATISTICS) or packets the parser could not place.
    pub text: Option<Text>,
}

/// One MySQL record: a command or connection-phase packet from the client,
/// or a whole response (or part of one, `continued`) from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MysqlMessage {
    /// Client or server.
    pub side: MySide,
    /// Continues the previous record (a response cut at the size cap).
    pub continued: bool,
    /// Physical packets in the record.
    pub packets: u64,
    /// Sequence id of the first packet.
    pub seq: u8,
    /// Server greeting.
    pub greeting: Option<MyGreeting>,
    /// Client login (HandshakeResponse41 or SSLRequest).
    pub login: Option<MyLogin>,
    /// Authentication step.
    pub auth: Option<MyAuth>,
    /// Client command.
    pub command: Option<MyCommand>,
    /// Server response.
    pub response: Option<MyResponse>,
}

impl MysqlMessage {
    pub(super) fn new(side: MySide, seq: u8) -> Self {
        MysqlMessage {
            side,
            continued: false,
            packets: 0,
            seq,
            greeting: None,
            login: None,
            auth: None,
            command: None,
            response: None,
        }
    }
}

/// Command names by byte.
pub(super) fn command_name(c: u8) -> &'static str {
    match c {
        0x00 => "COM_SLEEP",
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0b => "COM_CONNECT",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        0x0e => "COM_PING",
        0x0f => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        0x11 => "COM_CHANGE_USER",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        0x1e => "COM_BINLOG_DUMP_GTID",
        0x1f => "COM_RESET_CONNECTION",
        0xfa => "COM_STMT_BULK_EXECUTE",
        0xfe => "COM_MULTI",
        _ => "COM_UNKNOWN",
    }
}

/// A length-encoded integer (`None` for the NULL marker 0xFB or past the end).
pub(super) fn lenenc(r: &mut Reader<'_>) -> Option<u64> {
    match r.u8()? {
        n @ 0..=0xfa => Some(u64::from(n)),
        0xfc => r.le16().map(u64::from),
        0xfd => r.le24().map(u64::from),
        0xfe => r.le64(),
        _ => None,
    }
}

/// A length-encoded string.
pub(super) fn lenenc_str<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = lenenc(r)?;
    r.bytes(usize::try_from(n).ok()?)
}

pub(super) fn greeting(buf: &Bytes, p: &[u8]) -> Option<MyGreeting> {
    let mut r = Reader::new(p);
    let mut g = MyGreeting { protocol_version: r.u8()?, ..MyGreeting::default() };
    g.server_version = Text(slice(buf, r.cstr()?));
    g.connection_id = r.le32()?;
    r.bytes(9)?; // auth-plugin-data part 1 and filler: not kept
    g.capabilities = u32::from(r.le16()?);
    if r.remaining() == 0 {
        return Some(g);
    }
    g.charset = r.u8()?;
    g.status_flags = r.le16()?;
    g.capabilities |= u32::from(r.le16()?) << 16;
    let data_len = r.u8()?;
    let reserved = r.bytes(10)?;
    if g.capabilities & 1 == 0 {
        g.mariadb_capabilities = Some(u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]]));
    }
    if g.capabilities & CLIENT_SECURE_CONNECTION != 0 {
        r.bytes(usize::from(data_len.saturating_sub(8)).max(13))?;
    }
    if g.capabilities & CLIENT_PLUGIN_AUTH != 0 {
        let rest = r.rest();
        let name = rest.split(|b| *b == 0).next().unwrap_or_default();
        g.auth_plugin = Some(Text(slice(buf, name)));
    }
    Some(g)
}

/// HandshakeResponse41, or an SSLRequest (its first 32 bytes alone).
pub(super) fn login(buf: &Bytes, p: &[u8], max_attrs: usize, cap: usize) -> Option<MyLogin> {
    let mut r = Reader::new(p);
    let mut l = MyLogin { capabilities: r.le32()?, max_packet_size: r.le32()?, charset: r.u8()?, ..MyLogin::default() };
    let filler = r.bytes(23)?;
    if l.capabilities & 1 == 0 {
        l.mariadb_capabilities = Some(u32::from_le_bytes([filler[19], filler[20], filler[21], filler[22]]));
    }
    if r.remaining() == 0 {
        l.ssl_request = l.capabilities & CLIENT_SSL != 0;
        return Some(l);
    }
    l.user = Some(Text(slice(buf, r.cstr()?)));
    let auth = if l.capabilities & CLIENT_PLUGIN_AUTH_LENENC != 0 {
        lenenc_str(&mut r)?
    } else if l.capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let n = r.u8()?;
        r.bytes(usize::from(n))?
    } else {
        r.cstr()?
    };
    l.auth_response_len = auth.len();
    l.password = (!auth.is_empty()).then_some(WITHHELD);
    if l.capabilities & CLIENT_CONNECT_WITH_DB != 0 && r.remaining() > 0 {
        l.database = Some(Text(slice(buf, r.cstr()?)));
    }
    if l.capabilities & CLIENT_PLUGIN_AUTH != 0 && r.remaining() > 0 {
        l.auth_plugin = Some(Text(slice(buf, r.cstr()?)));
    }
    if l.capabilities & CLIENT_CONNECT_ATTRS != 0 && r.remaining() > 0 {
        let all = lenenc_str(&mut r)?;
        let mut a = Reader::new(all);
        while a.remaining() > 0 {
            let k = lenenc_str(&mut a)?;
            let v = lenenc_str(&mut a)?;
            let (k, v) = (capped(buf, k, cap).0, capped(buf, v, cap).0);
            push_capped(&mut l.attributes, (k, v), max_attrs);
        }
    }
    Some(l)
}

pub(super) fn ok_packet(buf: &Bytes, p: &[u8], caps: u32) -> Option<MyOk> {
    let mut r = Reader::new(p);
    r.u8()?;
    let mut ok = MyOk { affected_rows: lenenc(&mut r)?, last_insert_id: lenenc(&mut r)?, ..MyOk::default() };
    if r.remaining() >= 4 {
        ok.status_flags = r.le16()?;
        ok.warnings = r.le16()?;
    }
    let info = if caps & CLIENT_SESSION_TRACK != 0 { lenenc_str(&mut r) } else { Some(r.rest()) };
    ok.info = info.filter(|i| !i.is_empty()).map(|i| Text(slice(buf, i)));
    Some(ok)
}

/// An EOF packet's status flags (0xFE, warnings, status).
pub(super) fn eof_status(p: &[u8]) -> u16 {
    let mut r = Reader::new(p);
    r.u8();
    r.le16();
    r.le16().unwrap_or(0)
}

pub(super) fn err_packet(buf: &Bytes, p: &[u8]) -> Option<MyErr> {
    let mut r = Reader::new(p);
    r.u8()?;
    let mut e = MyErr { code: r.le16()?, ..MyErr::default() };
    if r.rest().first() == Some(&b'#') && r.remaining() >= 6 {
        r.u8()?;
        e.sql_state = Some(Text(slice(buf, r.bytes(5)?)));
    }
    e.message = Text(slice(buf, r.rest()));
    Some(e)
}

/// Column name of a ColumnDefinition41 packet.
pub(super) fn column_name(p: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(p);
    for _ in 0..4 {
        lenenc_str(&mut r)?; // catalog, schema, table, org_table
    }
    lenenc_str(&mut r)
}
