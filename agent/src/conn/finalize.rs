//! Drafts become records: the connection's side, identities and clock are
//! added, and for a two-witness pair each part claims the witness's
//! observation of the same positions.

use std::sync::Arc;

use super::assemble::{Draft, SegmentDraft};
use super::connection::{Connection, Twin};
use super::table::ConnTable;
use super::witness;
use crate::capture::event::CaptureEvent;
use crate::capture::tls::{TlsLib, TlsRegistry};
use crate::identity::Identity;
use crate::proto::Protocol;
use crate::proto::fields::UnparsedReason;
use crate::record::{
    ConnEnd, ConnRecord, Exchange, Fault, GapMark, GapRecord, Observation, Part, PartRole, Raw, Record, Segment, Stamp,
    Who,
};
use crate::types::{Direction, Role};

fn who(registry: &TlsRegistry, c: &Connection, w: Option<&Connection>, tls: bool, peer: Option<Arc<Identity>>) -> Who {
    let streams = if tls { c.tls.as_deref() } else { Some(&c.socket) };
    let app = |dir| streams.map(|s| s.sender_attributes(dir)).unwrap_or_default();
    Who {
        app: app(Direction::Egress),
        peer_app: app(Direction::Ingress),
        side: c.side,
        identity: c.identity.clone(),
        peer_identity: w.and_then(|w| w.identity.clone()).or(peer),
        witness: w.map(|w| w.side),
        tls: tls.then(|| tls_lib(registry, c.tls_lib)),
        witness_tls: w.filter(|w| tls && w.tls.is_some()).map(|w| tls_lib(registry, w.tls_lib)),
    }
}

/// The library named on TLS records (always set, so TLS plaintext is never
/// mistaken for socket bytes).
fn tls_lib(registry: &TlsRegistry, cookie: u16) -> TlsLib {
    registry.get(cookie).unwrap_or(TlsLib {
        path: "unknown".into(),
        library: "unknown".into(),
        version: "unknown".into(),
    })
}

impl ConnTable {
    /// The identity of connection `id`'s peer, when it is on this host.
    fn peer_identity(&self, id: u64) -> Option<Arc<Identity>> {
        let c = self.conns.get(&id)?;
        c.peer.and_then(|p| self.conns.get(&p)).and_then(|p| p.identity.clone()).or_else(|| c.peer_identity.clone())
    }

    /// Makes the record of draft `d` of connection `id`, with the witness's
    /// observation when `witness` is the other end.
    pub(super) fn finalize(&mut self, id: u64, witness: Option<u64>, d: Draft) -> Record {
        let peer = self.peer_identity(id);
        if let Some(c) = self.conns.get_mut(&id) {
            let side = c.side;
            c.identity = Some(self.ids.resolve(side.pid, side.comm, side.cgroup_id));
        }
        let (c, mut w) = match witness.filter(|w| *w != id && self.conns.contains_key(w)) {
            Some(w) => match self.conns.get_disjoint_mut([&id, &w]) {
                [Some(c), w] => (c, w),
                [None, _] => unreachable!("finalize is called for tracked connections only"),
            },
            None => match self.conns.get_mut(&id) {
                Some(c) => (c, None),
                None => unreachable!("finalize is called for tracked connections only"),
            },
        };
        let mut gap_witness = None;
        let d = match (d, w.as_deref_mut()) {
            (Draft::Gap { dir, pos, len, reason, ts, tls }, Some(wc)) => {
                // The witness may have the bytes this end lost.
                match witness_buf(wc, tls, dir).map(|b| b.claim(pos, len)) {
                    Some(claim) if !claim.present.is_empty() => {
                        let mut part = Part {
                            direction: dir,
                            role: PartRole::Bytes,
                            pos,
                            len,
                            raw: Raw::default(),
                            seen: Observation {
                                first_ns: ts,
                                last_ns: ts,
                                calls: vec![],
                                gaps: vec![GapMark { offset: 0, len, reason }],
                                unseen: 0,
                            },
                            witness: None,
                            witness_raw: None,
                            tls,
                            peer: None,
                        };
                        let mut faults = Vec::new();
                        witness::attach(&mut part, 0, claim, &mut faults);
                        Draft::Segment(Box::new(SegmentDraft {
                            reason: UnparsedReason::Resync,
                            error: None,
                            part,
                            faults,
                        }))
                    }
                    Some(claim) => {
                        gap_witness = Some(claim.obs);
                        Draft::Gap { dir, pos, len, reason, ts, tls }
                    }
                    None => Draft::Gap { dir, pos, len, reason, ts, tls },
                }
            }
            (d, _) => d,
        };
        let first_ts = d.first_ts();
        let stamp = Stamp::kernel(first_ts, &self.clock);
        match d {
            Draft::Exchange(mut e) => {
                if let Some(wc) = w.as_deref_mut() {
                    for (i, part) in e.parts.iter_mut().enumerate() {
                        if let Some(b) = witness_buf(wc, part.tls, part.direction) {
                            witness::attach(part, i, b.claim(part.pos, part.len), &mut e.faults);
                        }
                    }
                }
                count_faults(&mut self.stats, &e.faults);
                let tls = e.parts.iter().any(|p| p.tls);
                c.exchanges += 1;
                c.records_made += 1;
                self.stats.records += 1;
                let protocol = protocol_of(c, tls);
                let who = who(&self.tls, c, w.as_deref(), tls, peer);
                Record::Exchange(Box::new(Exchange {
                    stamp,
                    who,
                    protocol,
                    exchange_id: e.exchange_id,
                    parts: e.parts,
                    messages: e.messages,
                    latency_ns: e.latency_ns,
                    incomplete: e.incomplete,
                    faults: e.faults,
                    redactions: Vec::new(),
                }))
            }
            Draft::Segment(mut s) => {
                if let Some(wc) = w.as_deref_mut()
                    && s.part.witness.is_none()
                    && let Some(b) = witness_buf(wc, s.part.tls, s.part.direction)
                {
                    let claim = b.claim(s.part.pos, s.part.len);
                    witness::attach(&mut s.part, 0, claim, &mut s.faults);
                }
                count_faults(&mut self.stats, &s.faults);
                c.segments += 1;
                c.records_made += 1;
                self.stats.records += 1;
                self.stats.segments += 1;
                let tls = s.part.tls;
                let protocol = protocol_of(c, tls);
                let who = who(&self.tls, c, w.as_deref(), tls, peer);
                Record::Segment(Box::new(Segment {
                    stamp,
                    who,
                    protocol,
                    reason: s.reason,
                    error: s.error,
                    part: s.part,
                    faults: s.faults,
                    redactions: Vec::new(),
                }))
            }
            Draft::Gap { dir, pos, len, reason, tls, .. } => {
                self.stats.records += 1;
                self.stats.gap_records += 1;
                tracing::debug!(conn_id = id, ?dir, pos, len, ?reason, "bytes missing from stream");
                let protocol = protocol_of(c, tls);
                let who = who(&self.tls, c, w.as_deref(), tls, peer);
                Record::Gap(Box::new(GapRecord {
                    stamp,
                    who,
                    protocol,
                    direction: dir,
                    tls,
                    pos,
                    len,
                    reason,
                    witness_seen: gap_witness,
                }))
            }
        }
    }

    /// The `connection` record of `id` (with its witness, in a pair), or its
    /// `connection_open` record for `end == Open`.
    pub(super) fn connection_record(&mut self, id: u64, end: ConnEnd) -> Record {
        let peer = self.peer_identity(id);
        if let Some(c) = self.conns.get_mut(&id) {
            let side = c.side;
            c.identity = Some(self.ids.resolve(side.pid, side.comm, side.cgroup_id));
        }
        let c = self.conns.get(&id).expect("connection_record is called for tracked connections");
        let w = match c.twin {
            Twin::Primary(w) => self.conns.get(&w),
            _ => None,
        };
        self.stats.records += 1;
        let r = ConnRecord {
            stamp: Stamp::kernel(c.open_ns, &self.clock),
            who: who(&self.tls, c, w, false, peer),
            protocol: c.socket.protocol,
            tls_protocol: c.tls.as_ref().map(|t| t.protocol),
            open_ns: c.open_ns,
            close_ns: c.close_ns,
            open_seen: c.open_seen,
            end,
            egress: c.totals(false, Direction::Egress).unwrap_or_default(),
            ingress: c.totals(false, Direction::Ingress).unwrap_or_default(),
            tls_egress: c.totals(true, Direction::Egress),
            tls_ingress: c.totals(true, Direction::Ingress),
            exchanges: c.exchanges,
            segments: c.segments,
            witness_egress: w.and_then(|w| w.totals(false, Direction::Egress)),
            witness_ingress: w.and_then(|w| w.totals(false, Direction::Ingress)),
            witness_close_ns: w.and_then(|w| w.close_ns),
            tls_unseen: c.tls_unseen(self.tls.reads_unhooked(c.tls_lib)),
            witness_tls_unseen: w.and_then(|w| w.tls_unseen(self.tls.reads_unhooked(w.tls_lib))),
        };
        if end == ConnEnd::Open { Record::ConnectionOpen(Box::new(r)) } else { Record::Connection(Box::new(r)) }
    }

    /// An event that cannot join a tracked connection (the kernel could not
    /// track the socket, or its positions are out of range): recorded as it is.
    pub(super) fn orphan(&mut self, ev: CaptureEvent, error: Option<String>, out: &mut Vec<Record>) {
        let m = ev.meta();
        let mut c = Connection::new(m, Role::Unknown, false);
        c.identity = Some(self.ids.resolve(m.pid, m.comm, m.cgroup_id));
        let stamp = Stamp::kernel(m.ts_ns, &self.clock);
        let tls = m.tls;
        if tls {
            c.tls_lib = m.tls_lib;
        }
        let who = who(&self.tls, &c, None, tls, None);
        self.stats.records += 1;
        let r = match ev {
            CaptureEvent::Data { meta, direction, pos, payload } => {
                self.stats.segments += 1;
                let len = payload.len() as u64;
                let part = Part {
                    direction,
                    role: PartRole::Bytes,
                    pos,
                    len,
                    raw: Raw(payload),
                    seen: Observation {
                        first_ns: meta.ts_ns,
                        last_ns: meta.ts_ns,
                        calls: vec![crate::record::CallMark { offset: 0, ns: meta.ts_ns, call: meta.call }],
                        gaps: vec![],
                        unseen: 0,
                    },
                    witness: None,
                    witness_raw: None,
                    tls,
                    peer: meta.peer_from_arg.then_some(meta.remote),
                };
                Record::Segment(Box::new(Segment {
                    stamp,
                    who,
                    protocol: Protocol::Undetected,
                    reason: UnparsedReason::Orphan,
                    error,
                    part,
                    faults: vec![],
                    redactions: Vec::new(),
                }))
            }
            CaptureEvent::Truncated { direction, pos, len, reason, .. } => {
                self.stats.gap_records += 1;
                Record::Gap(Box::new(GapRecord {
                    stamp,
                    who,
                    protocol: Protocol::Undetected,
                    direction,
                    tls,
                    pos,
                    len,
                    reason,
                    witness_seen: None,
                }))
            }
            CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } | CaptureEvent::Close { .. } => {
                let (end, role) = match ev {
                    CaptureEvent::Connect { .. } => (ConnEnd::Open, Role::Client),
                    CaptureEvent::Accept { .. } => (ConnEnd::Open, Role::Server),
                    _ => (ConnEnd::Closed, Role::Unknown),
                };
                let mut who = who;
                who.side.role = role;
                let closed = end == ConnEnd::Closed;
                let totals =
                    |t: u64| crate::record::DirTotals { kernel_total: closed.then_some(t), ..Default::default() };
                let r = ConnRecord {
                    stamp,
                    who,
                    protocol: Protocol::Undetected,
                    tls_protocol: None,
                    open_ns: m.ts_ns,
                    close_ns: closed.then_some(m.ts_ns),
                    open_seen: !closed,
                    end,
                    egress: totals(m.tx_total),
                    ingress: totals(m.rx_total),
                    tls_egress: None,
                    tls_ingress: None,
                    exchanges: 0,
                    segments: 0,
                    witness_egress: None,
                    witness_ingress: None,
                    witness_close_ns: None,
                    tls_unseen: None,
                    witness_tls_unseen: None,
                };
                if closed { Record::Connection(Box::new(r)) } else { Record::ConnectionOpen(Box::new(r)) }
            }
            CaptureEvent::Exec { .. } => return,
        };
        out.push(r);
    }
}

/// The witness's buffer for the positions a part of the primary covers: the
/// witness's opposite direction of the same position space.
fn witness_buf(wc: &mut Connection, tls: bool, dir: Direction) -> Option<&mut witness::WitnessBuf> {
    let s = if tls { wc.tls.as_deref_mut()? } else { &mut wc.socket };
    s.witness_buf(dir.opposite())
}

fn protocol_of(c: &Connection, tls: bool) -> Protocol {
    if tls { c.tls.as_ref().map_or(Protocol::Undetected, |t| t.protocol) } else { c.socket.protocol }
}

fn count_faults(stats: &mut super::stats::ConnStats, faults: &[Fault]) {
    for f in faults {
        match f.kind.as_str() {
            "witness_missing" => stats.witness_missing_bytes += f.len,
            _ => stats.witness_mismatches += 1,
        }
    }
}
