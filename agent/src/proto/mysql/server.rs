//! The server's packets: the greeting, authentication answers, and the
//! response to each command scanned packet by packet (OK, ERR, LOCAL INFILE
//! request, result sets with their definitions, rows and terminators,
//! PREPARE_OK with its definitions), summarised into one record.

use bytes::Bytes;

use super::messages::{self, MyAuth, MyPrepared, MyResponse, MySide, MysqlMessage, WITHHELD, lenenc};
use super::{Kind, MAX_PAYLOAD, MysqlError, MysqlParser, Pkt, message, packet};
use crate::proto::fields::{Body, ExchangeRole, Text};
use crate::proto::wire::{Reader, push_capped, slice};
use crate::proto::{Parse, Partial};

/// Where the scan of a response is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Start,
    /// `left` column (or parameter) definitions to come, then `next`.
    Defs {
        left: u64,
        next: Next,
    },
    /// Definitions end with an EOF packet (or may, when capabilities are unknown).
    DefsEof {
        next: Next,
        required: bool,
    },
    /// COM_FIELD_LIST: definitions until EOF.
    FieldDefs,
    Rows,
    Done,
}

/// What follows a run of definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    Rows,
    /// PREPARE_OK: the column definitions come after the parameter ones.
    PrepareColumns(u16),
    End,
}

/// The response being scanned.
pub(super) struct Scan {
    at: usize,
    /// Boxed: the scan moves in and out of the parser on every call (a
    /// response split across events), and the record takes it boxed.
    msg: Box<MysqlMessage>,
    key: Option<u64>,
    /// `None`: the request is unknown (after a gap): take the packets at hand.
    kind: Option<Kind>,
    state: State,
    /// The previous packet had the maximum length: this one continues it.
    long: bool,
    sql: Option<Bytes>,
    stmt: Option<u32>,
}

fn is_eof(p: &Pkt<'_>) -> bool {
    p.first() == Some(0xfe) && p.len < 9
}

impl MysqlParser {
    pub(super) fn parse_server(&mut self, buf: &Bytes) -> Parse {
        if !self.greeted {
            return self.greeting(buf);
        }
        let mut scan = self.scan.take().unwrap_or_else(|| self.new_scan());
        loop {
            if scan.state == State::Done || (scan.kind.is_none() && scan.at == buf.len() && scan.at > 0) {
                return self.finish(scan, false);
            }
            if scan.at >= self.lim.max_group {
                return self.finish(scan, true);
            }
            let p = match packet(buf, scan.at) {
                Some(p) if p.complete() => p,
                other => {
                    if scan.kind.is_none() && scan.at > 0 {
                        return self.finish(scan, false);
                    }
                    let min_len = other.map_or(scan.at + 4, |p| scan.at + p.total());
                    self.scan = Some(scan);
                    return Parse::Need { min_len: min_len.max(buf.len() + 1), total: None };
                }
            };
            if scan.kind.is_none() && scan.at > 0 && p.seq != scan.msg.seq.wrapping_add(scan.msg.packets as u8) {
                // The next response starts.
                return self.finish(scan, false);
            }
            if let Err(e) = self.step(buf, &mut scan, &p) {
                if scan.at > 0 {
                    return self.finish(scan, false);
                }
                return Parse::Invalid { len: p.total(), error: e.to_string() };
            }
            scan.at += p.total();
        }
    }

    fn greeting(&mut self, buf: &Bytes) -> Parse {
        let Some(p) = packet(buf, 0).filter(Pkt::complete) else {
            let total = packet(buf, 0).map(|p| p.total());
            return Parse::Need { min_len: total.unwrap_or(4).max(buf.len() + 1), total: total.map(|t| t as u64) };
        };
        self.greeted = true;
        let mut m = MysqlMessage::new(MySide::Server, p.seq);
        m.packets = 1;
        match p.first() {
            Some(0x0a) => match messages::greeting(buf, p.payload) {
                Some(g) => {
                    self.server_caps = Some(g.capabilities);
                    self.attrs.set(self.client_dir.opposite().index(), "mysql.server_version", &g.server_version.0);
                    m.greeting = Some(g);
                }
                None => return Parse::Invalid { len: p.total(), error: MysqlError::Malformed("greeting").to_string() },
            },
            Some(0xff) => {
                let error = messages::err_packet(buf, p.payload);
                m.response = Some(MyResponse { error, ..MyResponse::default() });
            }
            other => {
                let e = MysqlError::Greeting(other.unwrap_or(0));
                return Parse::Invalid { len: p.total(), error: e.to_string() };
            }
        }
        message(p.total(), m, None)
    }

    fn new_scan(&mut self) -> Scan {
        let pending = self.pending.pop_front();
        let mut msg = Box::new(MysqlMessage::new(MySide::Server, 0));
        msg.response = Some(MyResponse { command: pending.as_ref().and_then(|p| p.command), ..MyResponse::default() });
        Scan {
            at: 0,
            msg,
            key: pending.as_ref().map(|p| p.key),
            kind: pending.as_ref().map(|p| p.kind),
            state: State::Start,
            long: false,
            stmt: pending.as_ref().and_then(|p| p.stmt),
            sql: pending.and_then(|p| p.sql),
        }
    }

    /// Whether the response just returned was cut and its next record continues it.
    pub(super) fn response_continues(&self) -> bool {
        self.scan.as_ref().is_some_and(|s| s.msg.continued && s.key.is_some())
    }

    /// Emit the scanned packets; `cut`: the response goes on in the next record.
    fn finish(&mut self, scan: Scan, cut: bool) -> Parse {
        let Scan { at, msg, key, kind, state, long, sql, stmt } = scan;
        let exchange = key.map(|k| (k, ExchangeRole::Response));
        // A prepared statement's result columns, for executions whose
        // definitions the server skips.
        if kind == Some(Kind::Prepare)
            && let Some(r) = &msg.response
            && let Some(p) = &r.prepared
            && let Some(s) = self.stmts.get_mut(&p.statement_id)
        {
            s.columns = r.column_names.clone();
        }
        if cut {
            let mut next = Box::new(MysqlMessage::new(MySide::Server, 0));
            next.continued = true;
            next.response =
                Some(MyResponse { command: msg.response.as_ref().and_then(|r| r.command), ..MyResponse::default() });
            self.scan = Some(Scan { at: 0, msg: next, key, kind, state, long, sql, stmt });
        }
        message(at.max(1), msg, exchange)
    }

    /// Account for packet `p` of the response (`p.payload` may be cut short
    /// when the record is interrupted: only its type byte and length count).
    fn step(&mut self, buf: &Bytes, scan: &mut Scan, p: &Pkt<'_>) -> Result<(), MysqlError> {
        if scan.msg.packets == 0 {
            scan.msg.seq = p.seq;
        }
        scan.msg.packets += 1;
        if std::mem::replace(&mut scan.long, p.len == MAX_PAYLOAD) {
            return Ok(());
        }
        let caps = self.caps();
        let column_eof = self.column_eof();
        let max_listed = self.lim.max_listed;
        let r = scan.msg.response.get_or_insert_with(MyResponse::default);
        let first = p.first();
        let Some(kind) = scan.kind else {
            // Unknown request: summarise what the packets are.
            match first {
                Some(0x00) if scan.msg.packets == 1 => r.ok = messages::ok_packet(buf, p.payload, caps),
                Some(0xff) => r.error = messages::err_packet(buf, p.payload),
                _ => {}
            }
            return Ok(());
        };
        scan.state = match (scan.state, kind) {
            (State::Start, Kind::Auth) => match first {
                Some(0x00) => {
                    r.ok = messages::ok_packet(buf, p.payload, caps);
                    State::Done
                }
                Some(0xff) => {
                    r.error = messages::err_packet(buf, p.payload);
                    State::Done
                }
                Some(0xfe) => {
                    let mut rd = Reader::new(p.payload.get(1..).unwrap_or_default());
                    let plugin = rd.cstr().map(|n| Text(slice(buf, n)));
                    let data_len = rd.remaining();
                    scan.msg.auth = Some(MyAuth { step: "auth_switch_request", plugin, data: WITHHELD, data_len });
                    State::Done
                }
                Some(0x01) => {
                    let data = p.payload.get(1..).unwrap_or_default();
                    scan.msg.auth =
                        Some(MyAuth { step: "auth_more_data", plugin: None, data: WITHHELD, data_len: data.len() });
                    // caching_sha2_password fast authentication success: OK follows.
                    if data == [0x03] { State::Start } else { State::Done }
                }
                _ => return Err(MysqlError::Malformed("authentication answer")),
            },
            (State::Start, Kind::Simple) => {
                match first {
                    Some(0x00) => r.ok = messages::ok_packet(buf, p.payload, caps),
                    Some(0xff) => r.error = messages::err_packet(buf, p.payload),
                    Some(0xfe) if p.len >= 9 => {
                        let mut rd = Reader::new(p.payload.get(1..).unwrap_or_default());
                        let plugin = rd.cstr().map(|n| Text(slice(buf, n)));
                        let data_len = rd.remaining();
                        scan.msg.auth = Some(MyAuth { step: "auth_switch_request", plugin, data: WITHHELD, data_len });
                    }
                    Some(0xfe) => {}
                    _ => return Err(MysqlError::Malformed("OK/ERR")),
                }
                State::Done
            }
            (State::Start, Kind::Text) => {
                r.text = Some(Text(slice(buf, p.payload)));
                State::Done
            }
            (State::Start, Kind::Prepare) => match first {
                Some(0x00) => {
                    let mut rd = Reader::new(p.payload.get(1..).unwrap_or_default());
                    let (Some(id), Some(columns), Some(params)) = (rd.le32(), rd.le16(), rd.le16()) else {
                        return Err(MysqlError::Malformed("PREPARE_OK"));
                    };
                    rd.u8();
                    let warnings = rd.le16().unwrap_or(0);
                    r.prepared = Some(MyPrepared { statement_id: id, columns, params, warnings });
                    if let Some(sql) = scan.sql.take() {
                        self.remember(id, sql, params);
                    }
                    defs_then(u64::from(params), Next::PrepareColumns(columns), column_eof)
                }
                Some(0xff) => {
                    r.error = messages::err_packet(buf, p.payload);
                    State::Done
                }
                _ => return Err(MysqlError::Malformed("PREPARE_OK")),
            },
            (State::Start | State::FieldDefs, Kind::FieldList) => match first {
                Some(0xff) => {
                    r.error = messages::err_packet(buf, p.payload);
                    State::Done
                }
                Some(0xfe) if p.len < 9 => State::Done,
                _ => {
                    if let Some(n) = messages::column_name(p.payload) {
                        push_capped(&mut r.column_names, Text(slice(buf, n)), max_listed);
                    }
                    r.columns = Some(r.columns.unwrap_or(0) + 1);
                    State::FieldDefs
                }
            },
            (State::Start, Kind::Rows) => rows(buf, r, p, caps),
            (State::Start, _) => match first {
                Some(0x00) => {
                    let ok = messages::ok_packet(buf, p.payload, caps);
                    let more = ok.as_ref().is_some_and(|o| o.status_flags & messages::SERVER_MORE_RESULTS_EXISTS != 0);
                    r.ok = ok;
                    if more { State::Start } else { State::Done }
                }
                Some(0xff) => {
                    r.error = messages::err_packet(buf, p.payload);
                    State::Done
                }
                Some(0xfb) => {
                    r.local_infile = Some(Text(slice(buf, p.payload.get(1..).unwrap_or_default())));
                    self.infile = true;
                    State::Done
                }
                Some(_) => {
                    let mut rd = Reader::new(p.payload);
                    let n = lenenc(&mut rd).ok_or(MysqlError::Malformed("column count"))?;
                    // MariaDB metadata caching: a 0 here means no definitions
                    // follow (the EOF after them still does); the names are
                    // those of the prepared statement.
                    let metadata = rd.u8() != Some(0);
                    r.result_sets += 1;
                    if r.result_sets == 1 {
                        r.columns = Some(n);
                        if !metadata && let Some(s) = scan.stmt.and_then(|id| self.stmts.get(&id)) {
                            r.column_names = s.columns.clone();
                        }
                    }
                    defs_then(if metadata { n } else { 0 }, Next::Rows, column_eof)
                }
                None => return Err(MysqlError::Empty("column count")),
            },
            (State::Defs { left, next }, _) => {
                let wanted = (next == Next::Rows && r.result_sets == 1) || (next == Next::End && kind == Kind::Prepare);
                if wanted && let Some(n) = messages::column_name(p.payload) {
                    push_capped(&mut r.column_names, Text(slice(buf, n)), max_listed);
                }
                if left > 1 { State::Defs { left: left - 1, next } } else { defs_then(0, next, column_eof) }
            }
            (State::DefsEof { next, required }, _) => {
                if is_eof(p) {
                    after(next, column_eof)
                } else if required {
                    return Err(MysqlError::Malformed("EOF after definitions"));
                } else {
                    // No EOF: this packet is the first of what follows.
                    scan.state = after(next, column_eof);
                    scan.msg.packets -= 1;
                    scan.long = false;
                    return self.step(buf, scan, p);
                }
            }
            (State::Rows, _) => rows(buf, r, p, caps),
            (state, _) => state,
        };
        Ok(())
    }

    pub(super) fn server_interrupted(&mut self, buf: &Bytes) -> Partial {
        if !self.greeted {
            self.greeted = true;
            let m = MysqlMessage::new(MySide::Server, 0);
            let total = packet(buf, 0).map(|p| p.total() as u64);
            return Partial { body: Body::Mysql(Box::new(m)), exchange: None, total, complete_at_end: false };
        }
        let mut scan = self.scan.take().unwrap_or_else(|| self.new_scan());
        let mut total = None;
        if let Some(p) = packet(buf, scan.at) {
            // Count the packet being cut: the scan goes on after it.
            total = Some((scan.at + p.total()) as u64);
            if self.step(buf, &mut scan, &p).is_err() {
                scan.state = State::Done;
            }
        }
        let done = scan.state == State::Done || scan.kind.is_none() || total.is_none();
        let Scan { msg, key, kind, state, long, sql, stmt, .. } = scan;
        let exchange = key.map(|k| (k, ExchangeRole::Response));
        if !done {
            let mut next = Box::new(MysqlMessage::new(MySide::Server, 0));
            next.continued = true;
            next.response =
                Some(MyResponse { command: msg.response.as_ref().and_then(|r| r.command), ..MyResponse::default() });
            self.scan = Some(Scan { at: 0, msg: next, key, kind, state, long, sql, stmt });
        }
        Partial { body: Body::Mysql(msg), exchange, total, complete_at_end: false }
    }
}

/// `n` definitions, then their EOF (when the protocol has one), then `next`.
fn defs_then(n: u64, next: Next, column_eof: Option<bool>) -> State {
    if n > 0 {
        return State::Defs { left: n, next };
    }
    match column_eof {
        Some(false) => after(next, column_eof),
        Some(true) => State::DefsEof { next, required: true },
        None => State::DefsEof { next, required: false },
    }
}

/// The state after the definitions (and their EOF) of a run.
fn after(next: Next, column_eof: Option<bool>) -> State {
    match next {
        Next::Rows => State::Rows,
        Next::PrepareColumns(0) | Next::End => State::Done,
        Next::PrepareColumns(c) => defs_then(u64::from(c), Next::End, column_eof),
    }
}

/// A packet among rows: a row, ERR, or the terminator (EOF, or OK when
/// CLIENT_DEPRECATE_EOF; no row starts with 0xFE unless it is 16 MiB long).
fn rows(buf: &Bytes, r: &mut MyResponse, p: &Pkt<'_>, caps: u32) -> State {
    match p.first() {
        Some(0xff) => {
            r.error = messages::err_packet(buf, p.payload);
            State::Done
        }
        Some(0xfe) if p.len < MAX_PAYLOAD => {
            let status = if p.len < 9 && caps & messages::CLIENT_DEPRECATE_EOF == 0 {
                messages::eof_status(p.payload)
            } else {
                let ok = messages::ok_packet(buf, p.payload, caps);
                let status = ok.as_ref().map_or(0, |o| o.status_flags);
                r.ok = ok;
                status
            };
            if status & messages::SERVER_MORE_RESULTS_EXISTS != 0 { State::Start } else { State::Done }
        }
        _ => {
            r.rows += 1;
            State::Rows
        }
    }
}
