//! The client's packets: login (HandshakeResponse41 / SSLRequest),
//! authentication data (withheld), LOCAL INFILE data, and commands, with
//! prepared statements remembered for COM_STMT_EXECUTE.

use bytes::Bytes;

use super::messages::{self, MyAuth, MyCommand, MySide, MysqlMessage, WITHHELD, command_name, lenenc};
use super::values::{MyValue, decode};
use super::{Kind, MAX_PAYLOAD, MysqlError, MysqlParser, Pkt, Stmt, message, packet};
use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::wire::{Reader, push_capped, slice};
use crate::proto::{Parse, Partial};

/// COM_STMT_EXECUTE flag (MySQL 8 query attributes): a parameter count follows.
const PARAMETER_COUNT_AVAILABLE: u8 = 0x08;
/// MariaDB: execute the statement prepared last.
const LAST_PREPARED: u32 = 0xffff_ffff;

/// A client message (boxed, as the record takes it) and its pairing.
type ClientMessage = (Box<MysqlMessage>, Option<(u64, ExchangeRole)>);

impl MysqlParser {
    pub(super) fn parse_client(&mut self, buf: &Bytes) -> Parse {
        let Some(p) = packet(buf, 0) else {
            return Parse::Need { min_len: buf.len() + 1, total: None };
        };
        if !p.complete() {
            return Parse::Need { min_len: p.total().max(buf.len() + 1), total: Some(p.total() as u64) };
        }
        let long = std::mem::replace(&mut self.client_long, p.len == MAX_PAYLOAD);
        match self.client_packet(buf, p, long) {
            Ok((m, exchange)) => message(p.total(), m, exchange),
            Err(e) => Parse::Invalid { len: p.total(), error: e.to_string() },
        }
    }

    fn client_packet(&mut self, buf: &Bytes, p: Pkt<'_>, long: bool) -> Result<ClientMessage, MysqlError> {
        // Boxed from the start: the record takes it boxed (no copy of the message).
        let mut m = Box::new(MysqlMessage::new(MySide::Client, p.seq));
        m.packets = 1;
        if long {
            // The rest of a command longer than 16 MiB.
            m.continued = true;
            return Ok((m, None));
        }
        if p.seq != 0 && self.infile {
            let done = p.len == 0;
            let mut c = MyCommand { name: "LOCAL_INFILE_DATA", ..MyCommand::default() };
            if done {
                self.infile = false;
                c.name = "LOCAL_INFILE_END";
            }
            m.command = Some(c);
            return Ok((m, done.then(|| self.request(Kind::Simple, Some("LOCAL_INFILE"), None, None))));
        }
        if p.seq == 1 && !self.logged_in && p.len >= 32 {
            let l = messages::login(buf, p.payload, self.lim.max_listed, self.lim.max_value)
                .ok_or(MysqlError::Malformed("HandshakeResponse"))?;
            self.client_caps = Some(l.capabilities);
            if l.ssl_request {
                self.opaque = Some("tls");
                m.login = Some(l);
                return Ok((m, None));
            }
            self.logged_in = true;
            let i = self.client_dir.index();
            for (key, v) in [("mysql.user", &l.user), ("mysql.database", &l.database)] {
                if let Some(v) = v {
                    self.attrs.set(i, key, &v.0);
                }
            }
            for (k, v) in &l.attributes {
                match &k.0[..] {
                    b"_client_name" => self.attrs.set(i, "mysql.client_name", &v.0),
                    b"program_name" => self.attrs.set(i, "mysql.program_name", &v.0),
                    _ => {}
                }
            }
            if l.capabilities & messages::CLIENT_COMPRESS != 0 {
                self.opaque = Some("compressed");
            }
            m.login = Some(l);
            return Ok((m, Some(self.request(Kind::Auth, None, None, None))));
        }
        if p.seq != 0 {
            // Authentication data (a scramble, a token or a password): withheld.
            m.auth = Some(MyAuth { step: "auth_data", plugin: None, data: WITHHELD, data_len: p.len });
            return Ok((m, Some(self.request(Kind::Auth, None, None, None))));
        }
        let code = p.first().ok_or(MysqlError::Empty("command"))?;
        let (c, kind) = self.command(buf, code, p.payload);
        let sql = (code == 0x16).then(|| c.query.as_ref().map(|q| Bytes::copy_from_slice(&q.0))).flatten();
        let (name, stmt) = (c.name, c.statement_id.filter(|_| code == 0x17));
        m.command = Some(c);
        let exchange = kind.map(|k| self.request(k, Some(name), sql, stmt));
        Ok((m, exchange))
    }

    /// Decode command `code`; the kind of answer it gets (`None`: no answer).
    fn command(&mut self, buf: &Bytes, code: u8, payload: &[u8]) -> (MyCommand, Option<Kind>) {
        let mut c = MyCommand { code, name: command_name(code), ..MyCommand::default() };
        let arg = payload.get(1..).unwrap_or_default();
        let mut r = Reader::new(arg);
        let kind = match code {
            0x03 | 0x16 => {
                let sql = if code == 0x03 && self.caps() & messages::CLIENT_QUERY_ATTRIBUTES != 0 {
                    // Parameter count and set count, then the SQL (no attributes sent).
                    let n = lenenc(&mut r).unwrap_or(0);
                    lenenc(&mut r);
                    if n == 0 { r.rest() } else { arg }
                } else {
                    arg
                };
                c.query = Some(Text(slice(buf, sql)));
                Some(if code == 0x03 { Kind::ResultSet } else { Kind::Prepare })
            }
            0x02 | 0x05 | 0x06 => {
                c.schema = Some(Text(slice(buf, arg)));
                Some(Kind::Simple)
            }
            0x04 => {
                c.schema = r.cstr().map(|t| Text(slice(buf, t)));
                Some(Kind::FieldList)
            }
            0x17 => {
                self.execute(buf, arg, &mut c);
                Some(Kind::ResultSet)
            }
            0x19 | 0x18 => {
                c.statement_id = r.le32();
                if code == 0x19
                    && let Some(id) = c.statement_id
                {
                    self.forget(id);
                }
                None
            }
            0x1a => {
                c.statement_id = r.le32();
                Some(Kind::Simple)
            }
            0x1c => {
                c.statement_id = r.le32();
                c.fetch_rows = r.le32();
                Some(Kind::Rows)
            }
            0x11 => {
                c.user = r.cstr().map(|t| Text(slice(buf, t)));
                Some(Kind::Auth)
            }
            0x09 => Some(Kind::Text),
            0x01 => None,
            0xfa => {
                c.statement_id = r.le32();
                Some(Kind::ResultSet)
            }
            _ => Some(Kind::Simple),
        };
        (c, kind)
    }

    /// COM_STMT_EXECUTE: statement, flags, and parameter values.
    fn execute(&mut self, buf: &Bytes, arg: &[u8], c: &mut MyCommand) {
        let mut r = Reader::new(arg);
        let Some(mut id) = r.le32() else { return };
        if id == LAST_PREPARED
            && let Some(last) = self.stmt_order.back()
        {
            id = *last;
        }
        c.statement_id = Some(id);
        let Some(flags) = r.u8() else { return };
        c.cursor_flags = Some(flags);
        r.le32(); // iteration count, always 1
        let attrs = self.caps() & messages::CLIENT_QUERY_ATTRIBUTES != 0;
        let Some(stmt) = self.stmts.get_mut(&id) else {
            c.statement_known = Some(false);
            return;
        };
        c.statement_known = Some(true);
        c.query = Some(Text(stmt.sql.clone()));
        let mut n = usize::from(stmt.params);
        if attrs && flags & PARAMETER_COUNT_AVAILABLE != 0 {
            n = lenenc(&mut r).and_then(|v| usize::try_from(v).ok()).unwrap_or(n);
        }
        c.param_count = u16::try_from(n).ok();
        if n == 0 {
            return;
        }
        let Some(nulls) = r.bytes(n.div_ceil(8)) else { return };
        if r.u8() == Some(1) {
            let mut types = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let (Some(t), Some(f)) = (r.u8(), r.u8()) else { return };
                if attrs {
                    messages::lenenc_str(&mut r);
                }
                types.push((t, f & 0x80 != 0));
            }
            stmt.types = types;
        }
        for i in 0..n {
            let (t, unsigned) = stmt.types.get(i).copied().unwrap_or((0x06, false));
            let v = if nulls[i / 8] & (1 << (i % 8)) != 0 {
                Some(MyValue { r#type: super::values::type_name(t), unsigned, null: true, ..MyValue::default() })
            } else {
                decode(buf, &mut r, t, unsigned, self.lim.max_value)
            };
            // A value that does not decode ends the list: the rest cannot be placed.
            let Some(v) = v else { return };
            if !push_capped(&mut c.params, v, self.lim.max_listed) {
                return;
            }
        }
    }

    /// Remember a prepared statement (the server's PREPARE_OK).
    pub(super) fn remember(&mut self, id: u32, sql: Bytes, params: u16) {
        self.forget(id);
        let sql = if sql.len() > self.lim.max_sql_bytes { sql.slice(..self.lim.max_sql_bytes) } else { sql };
        while self.stmt_order.len() >= self.lim.max_stmts.max(1)
            || (!self.stmt_order.is_empty() && self.sql_bytes + sql.len() > self.lim.max_sql_bytes)
        {
            let Some(old) = self.stmt_order.front().copied() else { break };
            self.forget(old);
        }
        self.sql_bytes += sql.len();
        self.stmts.insert(id, Stmt { sql, params, types: Vec::new(), columns: Vec::new() });
        self.stmt_order.push_back(id);
    }

    fn forget(&mut self, id: u32) {
        if let Some(s) = self.stmts.remove(&id) {
            self.sql_bytes -= s.sql.len();
            self.stmt_order.retain(|x| *x != id);
        }
    }

    pub(super) fn client_interrupted(&mut self, buf: &Bytes) -> Partial {
        let mut m = MysqlMessage::new(MySide::Client, 0);
        let mut exchange = None;
        let mut total = None;
        if let Some(p) = packet(buf, 0) {
            m.seq = p.seq;
            m.packets = 1;
            total = Some(p.total() as u64);
            self.client_long = p.len == MAX_PAYLOAD;
            if p.seq == 0
                && let Some(code) = p.first()
            {
                // A command cut short: its beginning (e.g. the SQL's start).
                let (mut c, kind) = self.command(buf, code, p.payload);
                if code == 0x16 {
                    c.query = c.query.map(|q| Text(q.0.slice(..q.0.len().min(self.lim.max_value))));
                }
                let name = c.name;
                m.command = Some(c);
                exchange = kind.map(|k| self.request(k, Some(name), None, None));
            } else if p.seq != 0 {
                m.auth = Some(MyAuth { step: "auth_data", plugin: None, data: WITHHELD, data_len: p.len });
            }
        }
        Partial { body: Body::Mysql(Box::new(m)), exchange, total, complete_at_end: false }
    }
}
