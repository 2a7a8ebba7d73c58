//! Extended-query state of one connection: prepared statements (name → SQL
//! and parameter type OIDs, from Parse and ParameterDescription) and portals
//! (name → statement, from Bind), so that Bind records carry their parameter
//! values decoded by type and Execute records name the SQL they run.
//!
//! Memory is bounded: at most `max_prepared_statements` statements (and as
//! many portals) and `max_prepared_sql_bytes` of SQL; the oldest statement is
//! forgotten first, and an Execute of a forgotten statement has no `query`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde::Serialize;

use super::values::{decode_binary, type_name};
use crate::proto::fields::Text;
use crate::proto::wire::{Reader, capped, cut_string, hex, push_capped, slice};

/// Most Describe-statement requests waiting for their ParameterDescription.
const MAX_DESCRIBES: usize = 64;

/// One bound parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgParam {
    /// Type OID from Parse or ParameterDescription (`None`: unspecified).
    pub oid: Option<u32>,
    /// Type name, for the common types.
    pub r#type: Option<&'static str>,
    /// `text` or `binary`.
    pub format: &'static str,
    /// SQL NULL.
    pub null: bool,
    /// The value as text (text format as sent; binary decoded by type).
    pub value: Option<Text>,
    /// Binary values of other types (or text that is not UTF-8), in hex.
    pub hex: Option<String>,
    /// The value was cut at the configured length.
    pub truncated: bool,
}

/// A Bind message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgBind {
    /// Portal name (empty: unnamed).
    pub portal: Text,
    /// Statement name (empty: unnamed).
    pub statement: Text,
    /// SQL of the statement, when it was parsed on this connection and is remembered.
    pub query: Option<Text>,
    /// Parameters bound.
    pub param_count: u16,
    /// Parameter values (capped).
    pub params: Vec<PgParam>,
}

/// An Execute message, resolved to its statement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgExecute {
    /// Portal name (empty: unnamed).
    pub portal: Text,
    /// Statement the portal was bound to.
    pub statement: Option<Text>,
    /// SQL of that statement.
    pub query: Option<Text>,
    /// Row limit (0: none).
    pub max_rows: u32,
}

struct Stmt {
    sql: Bytes,
    oids: Vec<u32>,
}

/// Prepared statements and portals of one connection.
pub(super) struct Statements {
    stmts: HashMap<Bytes, Stmt>,
    order: VecDeque<Bytes>,
    sql_bytes: usize,
    portals: HashMap<Bytes, Bytes>,
    describes: VecDeque<Bytes>,
    max_stmts: usize,
    max_sql: usize,
    pub(super) max_listed: usize,
    pub(super) max_value: usize,
}

impl Statements {
    pub(super) fn new(max_stmts: usize, max_sql: usize, max_listed: usize, max_value: usize) -> Self {
        Statements {
            stmts: HashMap::new(),
            order: VecDeque::new(),
            sql_bytes: 0,
            portals: HashMap::new(),
            describes: VecDeque::new(),
            max_stmts: max_stmts.max(1),
            max_sql,
            max_listed,
            max_value,
        }
    }

    /// Parse: statement `name` is `sql` with these parameter type OIDs.
    pub(super) fn parse(&mut self, name: &[u8], sql: &[u8], oids: Vec<u32>) {
        self.forget(name);
        let sql = Bytes::copy_from_slice(&sql[..sql.len().min(self.max_sql)]);
        while !self.order.is_empty()
            && (self.order.len() >= self.max_stmts || self.sql_bytes + sql.len() > self.max_sql)
        {
            if let Some(old) = self.order.pop_front()
                && let Some(s) = self.stmts.remove(&old)
            {
                self.sql_bytes -= s.sql.len();
            }
        }
        let name = Bytes::copy_from_slice(name);
        self.sql_bytes += sql.len();
        self.order.push_back(name.clone());
        self.stmts.insert(name, Stmt { sql, oids });
    }

    fn forget(&mut self, name: &[u8]) {
        if let Some(s) = self.stmts.remove(name) {
            self.sql_bytes -= s.sql.len();
            self.order.retain(|n| n[..] != *name);
        }
    }

    /// Close ('S' statement or 'P' portal).
    pub(super) fn close(&mut self, kind: u8, name: &[u8]) {
        match kind {
            b'S' => self.forget(name),
            _ => {
                self.portals.remove(name);
            }
        }
    }

    /// Describe of a statement: its ParameterDescription comes back.
    pub(super) fn describe(&mut self, kind: u8, name: &[u8]) {
        if kind == b'S' && self.describes.len() < MAX_DESCRIBES {
            self.describes.push_back(Bytes::copy_from_slice(name));
        }
    }

    /// ParameterDescription: the types of the statement described first.
    pub(super) fn parameter_description(&mut self, oids: Vec<u32>) {
        if let Some(name) = self.describes.pop_front()
            && let Some(s) = self.stmts.get_mut(&name)
        {
            s.oids = oids;
        }
    }

    /// Bytes were lost: pending describes can no longer be matched.
    pub(super) fn gap(&mut self) {
        self.describes.clear();
    }

    /// Decode a Bind body; remembers the portal.
    pub(super) fn bind(&mut self, buf: &Bytes, body: &[u8]) -> Option<PgBind> {
        let mut r = Reader::new(body);
        let portal = r.cstr()?;
        let stmt = r.cstr()?;
        let nfmt = usize::from(r.be16()?);
        let fmts: Vec<u16> = (0..nfmt).map(|_| r.be16()).collect::<Option<_>>()?;
        let n = r.be16()?;
        let known = self.stmts.get(stmt);
        let mut b = PgBind {
            portal: Text(slice(buf, portal)),
            statement: Text(slice(buf, stmt)),
            query: known.map(|s| Text(s.sql.clone())),
            param_count: n,
            params: Vec::new(),
        };
        for i in 0..usize::from(n) {
            let len = r.be32()? as i32;
            let binary = match fmts.len() {
                0 => false,
                1 => fmts[0] == 1,
                _ => fmts.get(i).copied()? == 1,
            };
            let oid = known.and_then(|s| s.oids.get(i).copied()).filter(|o| *o != 0);
            let mut p = PgParam {
                oid,
                r#type: oid.and_then(type_name),
                format: if binary { "binary" } else { "text" },
                ..PgParam::default()
            };
            if len < 0 {
                p.null = true;
            } else {
                let v = r.bytes(len as usize)?;
                self.value(buf, &mut p, v, binary);
            }
            push_capped(&mut b.params, p, self.max_listed);
        }
        self.portals.insert(Bytes::copy_from_slice(portal), Bytes::copy_from_slice(stmt));
        if self.portals.len() > self.max_stmts {
            // Portals live until the transaction ends; keep the map bounded.
            self.portals.retain(|k, _| k.is_empty() || k[..] == *portal);
        }
        Some(b)
    }

    fn value(&self, buf: &Bytes, p: &mut PgParam, v: &[u8], binary: bool) {
        let decoded = if binary { p.oid.and_then(|o| decode_binary(o, v)) } else { None };
        if let Some(text) = decoded {
            let (t, cut) = cut_string(text, self.max_value);
            (p.value, p.truncated) = (Some(t), cut);
            return;
        }
        if !binary && std::str::from_utf8(v).is_ok() {
            let (t, cut) = capped(buf, v, self.max_value);
            (p.value, p.truncated) = (Some(t), cut);
        } else {
            p.hex = Some(hex(v, self.max_value / 2));
            p.truncated = v.len() > self.max_value / 2;
        }
    }

    /// Decode an Execute body, resolving its portal to a statement and SQL.
    pub(super) fn execute(&self, buf: &Bytes, body: &[u8]) -> Option<PgExecute> {
        let mut r = Reader::new(body);
        let portal = r.cstr()?;
        let max_rows = r.be32()?;
        let stmt = self.portals.get(portal);
        Some(PgExecute {
            portal: Text(slice(buf, portal)),
            statement: stmt.map(|s| Text(s.clone())),
            query: stmt.and_then(|s| self.stmts.get(s)).map(|s| Text(s.sql.clone())),
            max_rows,
        })
    }
}
