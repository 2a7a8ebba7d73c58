//! PostgreSQL frontend/backend protocol v3: startup (and SSL/GSS/cancel
//! requests), simple and extended query, results summary, errors.
//!
//! Extended query in depth ([`statements`]): Bind records carry their
//! parameter values (text format as text; binary format decoded by type OID
//! for the common types, [`values`], else hex), Execute records name the
//! statement and SQL their portal runs, also for a named prepared statement
//! parsed long before; each CommandComplete is summarised (command, rows
//! affected or returned, DataRows). PasswordMessage contents are never parsed
//! into fields.
//!
//! Records are groups of messages: a frontend group ends with a message that
//! waits for the server (Query, Sync, password, ...); a backend group ends with
//! ReadyForQuery or an authentication request. Groups pair in order. A group
//! larger than half the message cap is cut at a message boundary and the
//! next record continues it.

use bytes::Bytes;

use crate::proto::fields::{Body, ExchangeRole, Text, UnparsedReason};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

/// Protocol 3.0, SSLRequest, GSSENCRequest and CancelRequest codes.
const PROTO_V3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Largest message accepted as plausible (the server's own limit is 1 GiB).
const MAX_MSG: u32 = 1 << 30;
/// Most queries, columns, tags, errors and parameters listed per record.
const MAX_LISTED: usize = 64;

/// Why PostgreSQL bytes are invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PgError {
    /// A type byte no message has.
    #[error("unknown {side} message type 0x{byte:02x} at offset {offset}")]
    Type {
        /// frontend or backend.
        side: &'static str,
        /// The byte.
        byte: u8,
        /// Where.
        offset: usize,
    },
    /// A length below 4 or above 1 GiB.
    #[error("invalid message length {len} at offset {offset}")]
    Length {
        /// The length field.
        len: u32,
        /// Where.
        offset: usize,
    },
    /// A startup-family message with an unknown code.
    #[error("unknown startup code {code}")]
    StartupCode {
        /// The code.
        code: u32,
    },
    /// A message body that does not match its type.
    #[error("malformed {name} message at offset {offset}")]
    Body {
        /// Message name.
        name: &'static str,
        /// Where.
        offset: usize,
    },
}

use messages::*;
pub use messages::{PgMessages, PgMsg, PgNotice, PgResult, PgSide, PgStartup};
pub use statements::{PgBind, PgExecute, PgParam};

/// Scan progress of the group being parsed in one direction.
struct Scan {
    at: usize,
    /// Boxed: the scan moves out of and back into the parser on every call
    /// (a group split across events), and the record takes it boxed.
    group: Box<PgMessages>,
}

enum Step {
    /// A message of this length was added; true if it ends the group.
    Added(usize, bool),
    /// Need this many bytes (from the group start).
    Need(usize),
}

/// PostgreSQL parser for one connection.
pub struct PgParser {
    client_dir: Direction,
    max_group: usize,
    max_listed: usize,
    /// The frontend's next message is startup-family (no type byte).
    expect_startup: bool,
    /// The backend's next byte is the answer to SSLRequest/GSSENCRequest.
    expect_encryption_answer: bool,
    /// Encryption was accepted: the rest is opaque.
    encrypted: bool,
    scan: [Option<Scan>; 2],
    continued: [bool; 2],
    next: [u64; 2],
    st: statements::Statements,
    attrs: crate::proto::wire::SenderAttrs,
}

impl PgParser {
    /// A parser; the frontend (client) writes in `client_dir`.
    pub fn new(client_dir: Direction, cfg: &ProtoConfig) -> Self {
        PgParser {
            client_dir,
            max_group: (cfg.max_message_bytes / 2).max(64),
            max_listed: cfg.max_pg_messages_listed,
            expect_startup: true,
            expect_encryption_answer: false,
            encrypted: false,
            scan: [None, None],
            continued: [false, false],
            next: [0, 0],
            st: statements::Statements::new(
                cfg.max_prepared_statements,
                cfg.max_prepared_sql_bytes,
                cfg.max_values_listed,
                cfg.max_value_bytes,
            ),
            attrs: Default::default(),
        }
    }

    fn side(&self, dir: Direction) -> PgSide {
        if dir == self.client_dir { PgSide::Frontend } else { PgSide::Backend }
    }

    /// Add the message at `at` to the group.
    fn step(&mut self, side: PgSide, buf: &Bytes, at: usize, g: &mut PgMessages) -> Result<Step, PgError> {
        let rest = &buf[at..];
        if side == PgSide::Backend && self.expect_encryption_answer {
            let Some(&b) = rest.first() else {
                return Ok(Step::Need(at + 1));
            };
            if b != b'S' && b != b'N' {
                return Err(PgError::Type { side: "backend", byte: b, offset: at });
            }
            self.expect_encryption_answer = false;
            self.encrypted = b == b'S';
            g.encryption_response = Some(char::from(b));
            self.note(g, "EncryptionResponse", at, 1);
            return Ok(Step::Added(1, true));
        }
        if side == PgSide::Frontend && self.expect_startup {
            if rest.len() < 8 {
                return Ok(Step::Need(at + 8));
            }
            let len = be32(rest);
            if !(8..=10_000).contains(&len) {
                return Err(PgError::Length { len, offset: at });
            }
            let len = len as usize;
            if rest.len() < len {
                return Ok(Step::Need(at + len));
            }
            let code = be32(&rest[4..]);
            let body = &rest[8..len];
            let name = match code {
                SSL_REQUEST | GSSENC_REQUEST => {
                    self.expect_encryption_answer = true;
                    if code == SSL_REQUEST { "SSLRequest" } else { "GSSENCRequest" }
                }
                CANCEL_REQUEST => "CancelRequest",
                c if c >> 16 == PROTO_V3 >> 16 => {
                    self.expect_startup = false;
                    let st = startup(buf, at + 8, body, code);
                    let i = self.client_dir.index();
                    for (key, v) in [
                        ("pg.user", &st.user),
                        ("pg.database", &st.database),
                        ("pg.application_name", &st.application_name),
                    ] {
                        if let Some(v) = v {
                            self.attrs.set(i, key, &v.0);
                        }
                    }
                    g.startup = Some(st);
                    "StartupMessage"
                }
                code => return Err(PgError::StartupCode { code }),
            };
            if name != "StartupMessage" {
                g.request = Some(name);
            }
            self.note(g, name, at, len);
            return Ok(Step::Added(len, true));
        }
        if rest.len() < 5 {
            return Ok(Step::Need(at + 5));
        }
        let t = rest[0];
        let name = match side {
            PgSide::Frontend => frontend_name(t),
            PgSide::Backend => backend_name(t),
        };
        let Some(name) = name else {
            return Err(PgError::Type {
                side: if side == PgSide::Frontend { "frontend" } else { "backend" },
                byte: t,
                offset: at,
            });
        };
        let len = be32(&rest[1..]);
        if !(4..=MAX_MSG).contains(&len) {
            return Err(PgError::Length { len, offset: at });
        }
        let total = len as usize + 1;
        if rest.len() < total {
            return Ok(Step::Need(at + total));
        }
        let body = Cur { b: &rest[5..total], at: 0 };
        self.note(g, name, at, total);
        if side == PgSide::Backend && t == b'S' {
            let mut c = Cur { b: &rest[5..total], at: 0 };
            if let (Some(b"server_version"), Some(v)) = (c.cstr(), c.cstr()) {
                self.attrs.set(self.client_dir.opposite().index(), "pg.server_version", v);
            }
        }
        let ends = match side {
            PgSide::Frontend => frontend(&mut self.st, buf, t, body, g).ok_or(PgError::Body { name, offset: at })?,
            PgSide::Backend => backend(&mut self.st, buf, t, body, g).ok_or(PgError::Body { name, offset: at })?,
        };
        Ok(Step::Added(total, ends))
    }

    fn note(&self, g: &mut PgMessages, name: &'static str, offset: usize, len: usize) {
        g.message_count += 1;
        if g.messages.len() < self.max_listed {
            g.messages.push(PgMsg { name, offset, len });
        }
    }

    fn exchange(&mut self, dir: Direction, continued: bool) -> (u64, ExchangeRole) {
        let i = dir.index();
        let role = if dir == self.client_dir { ExchangeRole::Request } else { ExchangeRole::Response };
        if continued {
            return (self.next[i].saturating_sub(1), role);
        }
        self.next[i] += 1;
        (self.next[i] - 1, role)
    }
}

fn startup(buf: &Bytes, base: usize, body: &[u8], code: u32) -> PgStartup {
    let mut s = PgStartup { protocol: code, ..PgStartup::default() };
    let mut b = Cur { b: body, at: 0 };
    while let Some(k) = b.cstr() {
        if k.is_empty() {
            break;
        }
        let Some(v) = b.cstr() else { break };
        let (k, v) = (Text(buf.slice_ref(k)), Text(buf.slice_ref(v)));
        match &k.0[..] {
            b"user" => s.user = Some(v.clone()),
            b"database" => s.database = Some(v.clone()),
            b"application_name" => s.application_name = Some(v.clone()),
            _ => {}
        }
        push_capped(&mut s.params, (k, v));
    }
    let _ = base;
    s
}

/// Summarise a frontend message; `Some(true)` if it ends the group.
fn frontend(st: &mut statements::Statements, buf: &Bytes, t: u8, mut b: Cur<'_>, g: &mut PgMessages) -> Option<bool> {
    match t {
        b'Q' => {
            let q = b.cstr()?;
            push_capped(&mut g.queries, Text(buf.slice_ref(q)));
            Some(true)
        }
        b'P' => {
            let name = b.cstr()?;
            let q = b.cstr()?;
            let n = b.u16()?;
            let oids: Vec<u32> = (0..n).map(|_| b.u32()).collect::<Option<_>>()?;
            st.parse(name, q, oids);
            push_capped(&mut g.statements, Text(buf.slice_ref(name)));
            push_capped(&mut g.queries, Text(buf.slice_ref(q)));
            Some(false)
        }
        b'B' => {
            let bind = st.bind(buf, b.b)?;
            push_capped(&mut g.statements, bind.statement.clone());
            push_capped(&mut g.bind_params, bind.param_count);
            push_capped(&mut g.binds, bind);
            Some(false)
        }
        b'E' => {
            push_capped(&mut g.executes, st.execute(buf, b.b)?);
            Some(false)
        }
        b'D' | b'C' => {
            let kind = *b.b.first()?;
            b.at = 1;
            let name = b.cstr()?;
            if t == b'D' {
                st.describe(kind, name);
            } else {
                st.close(kind, name);
            }
            Some(false)
        }
        b'S' | b'H' | b'X' | b'p' | b'F' | b'c' | b'f' | b'd' => Some(true),
        _ => None,
    }
}

fn notice(buf: &Bytes, mut b: Cur<'_>) -> Option<PgNotice> {
    let mut n = PgNotice::default();
    loop {
        let code = *b.b.get(b.at)?;
        b.at += 1;
        if code == 0 {
            return Some(n);
        }
        let v = Text(buf.slice_ref(b.cstr()?));
        match code {
            b'S' => n.severity = Some(v),
            b'C' => n.code = Some(v),
            b'M' => n.message = Some(v),
            b'D' => n.detail = Some(v),
            _ => {}
        }
    }
}

/// Summarise a backend message; `Some(true)` if it ends the group.
fn backend(st: &mut statements::Statements, buf: &Bytes, t: u8, mut b: Cur<'_>, g: &mut PgMessages) -> Option<bool> {
    match t {
        b'R' => {
            let code = b.u32()?;
            push_capped(&mut g.auth, code);
            // Requests the client must answer end the group.
            Some(matches!(code, 3 | 5 | 7 | 8 | 9 | 10 | 11))
        }
        b'S' => {
            let k = b.cstr()?;
            let v = b.cstr()?;
            push_capped(&mut g.parameters, (Text(buf.slice_ref(k)), Text(buf.slice_ref(v))));
            Some(false)
        }
        b'K' => {
            g.backend_pid = Some(b.u32()?);
            Some(false)
        }
        b'Z' => {
            g.ready_status = Some(char::from(*b.b.first()?));
            Some(true)
        }
        b'T' => {
            let n = b.u16()?;
            for _ in 0..n {
                let name = b.cstr()?;
                b.at += 18;
                if b.at > b.b.len() {
                    return None;
                }
                push_capped(&mut g.columns, Text(buf.slice_ref(name)));
            }
            Some(false)
        }
        b'D' => {
            g.rows += 1;
            Some(false)
        }
        b'C' => {
            let tag = Text(buf.slice_ref(b.cstr()?));
            push_capped(&mut g.results, PgResult::of(tag.clone(), g.rows - g.rows_at_tag));
            g.rows_at_tag = g.rows;
            push_capped(&mut g.command_tags, tag);
            Some(false)
        }
        b't' => {
            let n = b.u16()?;
            let oids: Vec<u32> = (0..n).map(|_| b.u32()).collect::<Option<_>>()?;
            st.parameter_description(oids);
            Some(false)
        }
        b'E' => {
            let n = notice(buf, b)?;
            push_capped(&mut g.errors, n);
            Some(false)
        }
        b'N' => {
            notice(buf, b)?;
            g.notices += 1;
            Some(false)
        }
        // The server waits for copy data from the client.
        b'G' | b'W' => Some(true),
        _ => Some(false),
    }
}

impl Parser for PgParser {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn parse(&mut self, dir: Direction, buf: &Bytes) -> Parse {
        if self.encrypted {
            return Parse::Message(Parsed {
                len: buf.len().max(1),
                body: Body::Unparsed { reason: UnparsedReason::UnknownProtocol },
                exchange: None,
                error: None,
            });
        }
        let side = self.side(dir);
        let i = dir.index();
        let mut scan = self.scan[i]
            .take()
            .unwrap_or_else(|| Scan { at: 0, group: Box::new(PgMessages::new(side, self.continued[i])) });
        loop {
            // Cut an oversized group at a message boundary.
            if scan.at >= self.max_group {
                return self.finish(dir, scan, true);
            }
            match self.step(side, buf, scan.at, &mut scan.group) {
                Ok(Step::Added(n, ends)) => {
                    scan.at += n;
                    if ends || self.encrypted {
                        return self.finish(dir, scan, false);
                    }
                }
                Ok(Step::Need(min_len)) => {
                    let total = Some(min_len as u64);
                    self.scan[i] = Some(scan);
                    return Parse::Need { min_len: min_len.max(buf.len() + 1), total };
                }
                Err(e) => {
                    if scan.at > 0 {
                        // Record the valid messages; the bad one comes next.
                        return self.finish(dir, scan, true);
                    }
                    self.continued[i] = false;
                    return Parse::Invalid { len: buf.len().clamp(1, 5), error: e.to_string() };
                }
            }
        }
    }

    fn interrupted(&mut self, dir: Direction, buf: &Bytes) -> Partial {
        let side = self.side(dir);
        let i = dir.index();
        let scan = self.scan[i]
            .take()
            .unwrap_or_else(|| Scan { at: 0, group: Box::new(PgMessages::new(side, self.continued[i])) });
        // The message being cut has a known end once its header is in.
        let rest = &buf[scan.at.min(buf.len())..];
        let total = if side == PgSide::Frontend && self.expect_startup {
            (rest.len() >= 4).then(|| (scan.at + be32(rest) as usize) as u64)
        } else if rest.len() >= 5 {
            let len = be32(&rest[1..]);
            (4..=MAX_MSG).contains(&len).then(|| (scan.at + len as usize + 1) as u64)
        } else {
            None
        };
        let continued = scan.group.continued;
        let exchange = self.exchange(dir, continued);
        self.continued[i] = true;
        Partial { body: Body::Postgres(scan.group), exchange: Some(exchange), total, complete_at_end: false }
    }

    fn resync(&mut self, dir: Direction, buf: &[u8]) -> Option<usize> {
        let backend = dir != self.client_dir;
        // A frontend stream joined at its very start (e.g. a backend forked
        // after accept whose socket capture first sees on its first read)
        // begins with a startup-family packet: Int32 length, then the
        // protocol or request code, and no type byte.
        if !backend
            && self.expect_startup
            && let Some(h) = buf.get(..8)
            && (8..=10_000).contains(&be32(&h[..4]))
            && [PROTO_V3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST].contains(&be32(&h[4..]))
        {
            return Some(0);
        }
        let valid = |t: u8| {
            if backend { backend_name(t).is_some() } else { frontend_name(t).is_some() }
        };
        // A chain of well-formed message headers up to the end of the buffer
        // (or three messages) marks a boundary.
        let found = (0..buf.len().min(4096)).find(|&i| {
            let mut at = i;
            for _ in 0..3 {
                if at == buf.len() {
                    return at > i;
                }
                let Some(h) = buf.get(at..at + 5) else {
                    return false;
                };
                let len = be32(&h[1..]);
                if !valid(h[0]) || !(4..=1 << 24).contains(&len) {
                    return false;
                }
                at += len as usize + 1;
                if at > buf.len() {
                    return true;
                }
            }
            true
        });
        if found.is_some() && !backend {
            self.expect_startup = false;
        }
        found
    }

    fn more_to_come(&self, dir: Direction, _id: u64) -> bool {
        // A group cut at the cap (or at a buffer end) continues in the next message.
        self.continued[dir.index()]
    }

    fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        self.attrs.get(dir.index())
    }

    fn gap(&mut self, dir: Direction) {
        let i = dir.index();
        self.st.gap();
        self.scan[i] = None;
        self.continued[i] = false;
        // Group ordinals can no longer be matched: restart both in step.
        let n = self.next[0].max(self.next[1]);
        self.next = [n, n];
    }
}

impl PgParser {
    fn finish(&mut self, dir: Direction, scan: Scan, cut: bool) -> Parse {
        let i = dir.index();
        let continued = scan.group.continued;
        let exchange = self.exchange(dir, continued);
        self.continued[i] = cut;
        Parse::Message(Parsed { len: scan.at, body: Body::Postgres(scan.group), exchange: Some(exchange), error: None })
    }
}

mod messages;
mod statements;
pub mod values;

#[cfg(test)]
mod tests;
