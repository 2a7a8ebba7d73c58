//! Reading the agent's records back in the end-to-end tests, typed: the
//! agent's own record type (`wiretrail_agent::record`), and rebuilding any
//! end's byte stream from the records (one end's parts, or the other end's
//! observation in a two-witness record) to check it byte for byte.
//!
//! Each test binary includes this module (`mod support;`); not every binary
//! uses every helper.
#![allow(dead_code)]

pub mod brokers;
pub mod segmentation;

use std::collections::BTreeSet;

#[allow(unused_imports)]
pub use wiretrail_agent::record::{
    ConnRecord, Exchange, GapRecord, Incomplete, Part, PartRole, Record, Segment, Side, Who,
};
#[allow(unused_imports)]
pub use wiretrail_agent::types::{Direction, GapReason, Role, Transport};

/// Every record of one run, in output order.
pub struct Records(pub Vec<Record>);

impl Records {
    /// Parses the agent's JSON lines; a line that is not a record fails the test.
    pub fn parse(text: &str) -> Records {
        Records(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a record ({e}): {l}")))
                .collect(),
        )
    }

    /// Writes the records to `WIRETRAIL_DUMP_DIR/<name>.jsonl` when that is set
    /// (to read when an assertion fails).
    pub fn dump(&self, name: &str) {
        if let Ok(d) = std::env::var("WIRETRAIL_DUMP_DIR") {
            let text: String = self.0.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
            std::fs::write(std::path::Path::new(&d).join(format!("{name}.jsonl")), text).expect("dump records");
        }
    }

    pub fn exchanges(&self) -> Vec<&Exchange> {
        self.0.iter().filter_map(|r| if let Record::Exchange(e) = r { Some(&**e) } else { None }).collect()
    }

    pub fn segments(&self) -> Vec<&Segment> {
        self.0.iter().filter_map(|r| if let Record::Segment(s) = r { Some(&**s) } else { None }).collect()
    }

    pub fn gaps(&self) -> Vec<&GapRecord> {
        self.0.iter().filter_map(|r| if let Record::Gap(g) = r { Some(&**g) } else { None }).collect()
    }

    /// Every end of a connection the records name (record sides and witnesses).
    pub fn sides(&self) -> Vec<Side> {
        let mut v: Vec<Side> = Vec::new();
        for w in self.0.iter().filter_map(Record::who) {
            v.push(w.side);
            v.extend(w.witness);
        }
        v
    }

    /// The one connection of process `pid` to `remote` over `transport`.
    pub fn conn_of(&self, pid: u32, remote: &str, transport: Transport) -> u64 {
        let ids: BTreeSet<u64> = self
            .sides()
            .iter()
            .filter(|s| {
                s.pid == pid && s.transport == transport && s.remote.map(|r| r.to_string()).as_deref() == Some(remote)
            })
            .map(|s| s.conn_id)
            .collect();
        assert_eq!(ids.len(), 1, "expected one {transport:?} connection from pid {pid} to {remote}, got {ids:?}");
        *ids.first().unwrap()
    }

    /// The TCP connection of `pid` to `remote`.
    pub fn client_conn(&self, pid: u32, remote: &str) -> u64 {
        self.conn_of(pid, remote, Transport::Tcp)
    }

    /// The connection whose own address is `local` and whose peer is `remote`
    /// that carries bytes (a server that forks after accept, like PostgreSQL,
    /// may have its accept and its bytes on different sockets).
    pub fn conn_between(&self, local: &str, remote: &str) -> u64 {
        let matching = |s: &Side| {
            s.local.map(|a| a.to_string()).as_deref() == Some(local)
                && s.remote.map(|a| a.to_string()).as_deref() == Some(remote)
        };
        let ids: BTreeSet<u64> = self.sides().iter().filter(|s| matching(s)).map(|s| s.conn_id).collect();
        let with_bytes: Vec<u64> = ids.iter().copied().filter(|id| !self.parts_of(*id).is_empty()).collect();
        assert_eq!(with_bytes.len(), 1, "expected one connection {local} <- {remote} with bytes, got {ids:?}");
        with_bytes[0]
    }

    /// The side `conn` as the records name it (its latest mention).
    pub fn side(&self, conn: u64) -> Side {
        *self.sides().iter().rev().find(|s| s.conn_id == conn).unwrap_or_else(|| panic!("no record names conn {conn}"))
    }

    /// The `connection` record covering `conn` (as its side or as the witness).
    pub fn connection(&self, conn: u64) -> &ConnRecord {
        let c: Vec<&ConnRecord> = self
            .0
            .iter()
            .filter_map(|r| if let Record::Connection(c) = r { Some(&**c) } else { None })
            .filter(|c| c.who.side.conn_id == conn || c.who.witness.is_some_and(|w| w.conn_id == conn))
            .collect();
        assert_eq!(c.len(), 1, "expected one connection record for {conn}: {c:#?}");
        c[0]
    }

    /// Every part holding `conn`'s bytes, as `conn` saw them.
    pub fn parts_of(&self, conn: u64) -> Vec<View> {
        self.0.iter().flat_map(|r| views(r, conn)).collect()
    }

    /// The exchanges holding `conn`'s bytes, in the order of their first byte.
    pub fn exchanges_of(&self, conn: u64) -> Vec<&Exchange> {
        let mut v: Vec<&Exchange> = self
            .exchanges()
            .into_iter()
            .filter(|e| e.who.side.conn_id == conn || e.who.witness.is_some_and(|w| w.conn_id == conn))
            .collect();
        v.sort_by_key(|e| e.parts.iter().map(|p| p.seen.first_ns).min());
        v
    }
}

/// One part as one end saw it: its direction from that end, its stream
/// range, the bytes present there and the ranges it missed.
#[derive(Debug, Clone)]
pub struct View {
    pub dir: Direction,
    pub role: PartRole,
    pub tls: bool,
    pub pos: u64,
    pub len: u64,
    /// Bytes present, in stream order.
    pub bytes: Vec<u8>,
    /// Missing ranges (offsets in the part).
    pub gaps: Vec<(u64, u64)>,
}

/// Present ranges of a part of `len` stream bytes with `gaps` (offset, len).
fn present(len: u64, gaps: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut gs = gaps.to_vec();
    gs.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (o, l) in gs {
        if o > at {
            out.push((at, o - at));
        }
        at = at.max(o + l);
    }
    if at < len {
        out.push((at, len - at));
    }
    out
}

/// The parts of `r` as `conn` saw them (none when `r` does not hold its bytes).
pub fn views(r: &Record, conn: u64) -> Vec<View> {
    let Some(who) = r.who() else { return vec![] };
    let mine = who.side.conn_id == conn;
    let theirs = who.witness.is_some_and(|w| w.conn_id == conn);
    let mut out = Vec::new();
    if let Record::Gap(g) = r {
        if mine {
            out.push(View {
                dir: g.direction,
                role: PartRole::Bytes,
                tls: g.tls,
                pos: g.pos,
                len: g.len,
                bytes: vec![],
                gaps: vec![(0, g.len)],
            });
        } else if theirs && let Some(w) = &g.witness_seen {
            let len = g.len - w.unseen;
            let gaps = w.gaps.iter().map(|x| (x.offset, x.len)).collect();
            out.push(View {
                dir: g.direction.opposite(),
                role: PartRole::Bytes,
                tls: g.tls,
                pos: g.pos,
                len,
                bytes: vec![],
                gaps,
            });
        }
        return out;
    }
    for p in r.parts() {
        if mine {
            let gaps = p.seen.gaps.iter().map(|g| (g.offset, g.len)).collect();
            out.push(View {
                dir: p.direction,
                role: p.role,
                tls: p.tls,
                pos: p.pos,
                len: p.len,
                bytes: p.raw.0.to_vec(),
                gaps,
            });
        } else if theirs && let Some(w) = &p.witness {
            let len = p.len - w.unseen;
            // TLS ciphertext the other end counted and did not keep (its
            // plaintext is captured) is not missing from its stream: the
            // record holds those bytes as this end saw them.
            let gaps: Vec<(u64, u64)> =
                w.gaps.iter().filter(|g| g.reason != GapReason::CiphertextNotKept).map(|g| (g.offset, g.len)).collect();
            let bytes = match &p.witness_raw {
                Some(raw) => raw.0.to_vec(),
                None => {
                    // Same bytes as this end where both saw them.
                    let mine_present =
                        present(p.len, &p.seen.gaps.iter().map(|g| (g.offset, g.len)).collect::<Vec<_>>());
                    let mut flat = Vec::new();
                    let mut at = 0usize;
                    let mut by_offset = vec![None; p.len as usize];
                    for (o, l) in mine_present {
                        for i in 0..l as usize {
                            by_offset[o as usize + i] = Some(p.raw.0[at + i]);
                        }
                        at += l as usize;
                    }
                    for (o, l) in present(len, &gaps) {
                        for i in o..o + l {
                            flat.push(
                                by_offset[i as usize]
                                    .expect("the witness saw bytes this end did not, without witness_raw"),
                            );
                        }
                    }
                    flat
                }
            };
            out.push(View { dir: p.direction.opposite(), role: p.role, tls: p.tls, pos: p.pos, len, bytes, gaps });
        }
    }
    out
}

/// One end's stream of one direction, rebuilt from every record.
#[derive(Debug)]
pub struct Stream {
    /// The bytes present, in stream order.
    pub bytes: Vec<u8>,
    /// Missing ranges (position, length).
    pub gaps: Vec<(u64, u64)>,
    /// The records tile the stream from 0 with no hole and no overlap.
    pub tiled: bool,
    /// Where the last record ends.
    pub end: u64,
}

/// Rebuilds `dir` of `conn` (TLS plaintext with `tls`).
pub fn stream(recs: &Records, conn: u64, dir: Direction, tls: bool) -> Stream {
    let mut vs: Vec<View> = recs.parts_of(conn).into_iter().filter(|v| v.dir == dir && v.tls == tls).collect();
    vs.sort_by_key(|v| v.pos);
    let mut s = Stream { bytes: Vec::new(), gaps: Vec::new(), tiled: true, end: 0 };
    for v in vs {
        if v.pos != s.end {
            s.tiled = false;
        }
        for (o, l) in &v.gaps {
            // Adjacent missing ranges are one gap, whichever records hold them.
            match s.gaps.last_mut() {
                Some((p, len)) if *p + *len == v.pos + o => *len += l,
                _ => s.gaps.push((v.pos + o, *l)),
            }
        }
        s.bytes.extend_from_slice(&v.bytes);
        s.end = s.end.max(v.pos + v.len);
    }
    s
}

/// Asserts that `dir` of `conn` is in the records whole — every byte in
/// exactly one record, from position 0, no gap — and returns its bytes.
pub fn assert_whole(recs: &Records, conn: u64, dir: Direction, tls: bool) -> Vec<u8> {
    let s = stream(recs, conn, dir, tls);
    assert!(s.tiled, "{dir:?} of conn {conn} is not tiled by its records (hole or overlap)");
    assert!(s.gaps.is_empty(), "{dir:?} of conn {conn} has gaps {:?}", s.gaps);
    assert!(!s.bytes.is_empty(), "nothing recorded on {dir:?} of conn {conn}");
    s.bytes
}

/// The bytes of `e` with `role`, as `conn` saw them.
pub fn role_bytes(e: &Exchange, conn: u64, role: PartRole) -> Vec<u8> {
    let r = Record::Exchange(Box::new(e.clone()));
    views(&r, conn).into_iter().filter(|v| v.role == role).flat_map(|v| v.bytes).collect()
}

/// The parsed fields of message `i` of `e`.
pub fn fields(e: &Exchange, i: usize) -> serde_json::Value {
    e.messages[i].fields.json()
}

/// The parsed fields of every message of `e` in `role`'s parts.
pub fn fields_of(e: &Exchange, role: PartRole) -> Vec<serde_json::Value> {
    e.messages.iter().filter(|m| e.parts[m.part].role == role).map(|m| m.fields.json()).collect()
}

/// Header `name` of HTTP fields.
pub fn header<'a>(f: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    f["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h["value"].as_str())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Asserts `e` is one whole exchange holding both ends when `both` (and the
/// other end's observation matched: no capture fault).
pub fn assert_whole_exchange(e: &Exchange, both: bool) {
    assert_eq!(e.incomplete, None, "{e:#?}");
    assert!(e.faults.is_empty(), "capture faults: {:?}", e.faults);
    assert!(e.messages.iter().all(|m| m.error.is_none()), "{e:#?}");
    if both {
        assert!(e.who.witness.is_some(), "expected both ends in one record: {e:#?}");
        assert!(
            e.parts.iter().all(|p| p.witness.as_ref().is_some_and(|w| w.unseen == 0 && w.gaps.is_empty())),
            "{e:#?}"
        );
    }
}

/// Time for the last events to reach the agent before it is stopped.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(400);

pub fn write_script(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One parsed message as one end saw it.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Its parsed fields.
    pub fields: serde_json::Value,
    /// Its exact bytes.
    pub raw: Vec<u8>,
    pub error: Option<String>,
    /// Stream position of its first byte.
    pub pos: u64,
    /// The exchange it belongs to (None for one-way messages).
    pub exchange_id: Option<u64>,
    /// Request, response or one-way message.
    pub role: PartRole,
    /// The record holding it held both ends.
    pub both_ends: bool,
    /// Which exchange record holds it (index among the run's exchange
    /// records): a request and its answer share it.
    pub record: usize,
    /// The exchange's latency (request's last byte to response's first).
    pub latency_ns: Option<u64>,
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} at {} (exchange {:?}, record {}): {} raw {:?}",
            self.role,
            self.pos,
            self.exchange_id,
            self.record,
            self.fields,
            String::from_utf8_lossy(&self.raw)
        )
    }
}

/// The messages `conn` sent (`Egress`) or received (`Ingress`), in stream
/// order, from every exchange record holding its bytes.
pub fn messages(recs: &Records, conn: u64, dir: Direction, tls: bool) -> Vec<Msg> {
    let mut out = Vec::new();
    let all = recs.exchanges();
    for e in recs.exchanges_of(conn) {
        let record = all.iter().position(|x| std::ptr::eq(*x, e)).expect("an exchange of the run");
        let r = Record::Exchange(Box::new(e.clone()));
        let vs = views(&r, conn);
        // views() yields one view per part, in part order.
        for m in &e.messages {
            let v = &vs[m.part];
            if v.dir != dir || v.tls != tls {
                continue;
            }
            // Map stream offsets of the message onto the present bytes.
            let ranges = present(v.len, &v.gaps);
            let mut raw = Vec::new();
            let mut at = 0usize;
            for (o, l) in ranges {
                let (lo, hi) = (o.max(m.offset), (o + l).min(m.offset + m.len));
                if lo < hi {
                    let from = at + (lo - o) as usize;
                    raw.extend_from_slice(&v.bytes[from..from + (hi - lo) as usize]);
                }
                at += l as usize;
            }
            out.push(Msg {
                fields: m.fields.json(),
                raw,
                error: m.error.clone(),
                pos: v.pos + m.offset,
                exchange_id: e.exchange_id,
                role: v.role,
                both_ends: e.who.witness.is_some(),
                record,
                latency_ns: e.latency_ns,
            });
        }
    }
    out.sort_by_key(|m| m.pos);
    out
}

/// FIX CheckSum of a whole message's bytes (everything before `10=`).
pub fn fix_checksum(msg: &[u8]) -> u64 {
    let body = &msg[..msg.len() - 7];
    assert!(msg[msg.len() - 7..].starts_with(b"10="));
    body.iter().map(|b| u64::from(*b)).sum::<u64>() % 256
}

/// Field `tag` of a FIX message.
pub fn fix_field(m: &Msg, tag: u64) -> Option<String> {
    m.fields["fields"].as_array()?.iter().find(|f| f["tag"] == tag).and_then(|f| f["value"].as_str()).map(String::from)
}
