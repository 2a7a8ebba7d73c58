//! One connection (one socket per agent boot): its side (endpoints, role,
//! process), its identity, the socket's byte streams and the TLS plaintext
//! sub-stream, the protocol state inside them, its close totals, its place
//! in a two-witness pair, and the records waiting for the other end.

use std::collections::VecDeque;
use std::sync::Arc;

use super::assemble::Draft;
use super::detect::ConnHints;
use super::peers::PeerKey;
use super::streams::{Ctx, Streams};
use crate::capture::event::Meta;
use crate::identity::Identity;
use crate::record::{ConnEnd, DirTotals, Side};
use crate::types::{Direction, Role, Transport};

/// A connection's place in a two-witness pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twin {
    /// Alone (its peer is elsewhere, or pairing was not possible).
    None,
    /// It parses and makes the records; the witness is the other end.
    Primary(u64),
    /// Its bytes are claimed by the primary's records.
    Witness(u64),
}

/// Everything the table knows about one connection.
pub struct Connection {
    /// Connection id (one per socket per agent boot).
    pub id: u64,
    /// Endpoints, role and the process of the latest event.
    pub side: Side,
    /// The remote address came from a datagram's own argument (unconnected UDP).
    pub peer_from_arg: bool,
    /// Workload identity of `side`'s process.
    pub identity: Option<Arc<Identity>>,
    /// The connection at the other end, when it is on this host.
    pub peer: Option<u64>,
    /// Its identity (kept when the peer connection is gone).
    pub peer_identity: Option<Arc<Identity>>,
    /// Kernel time of the open (or first sight), of the latest event, of the close.
    pub open_ns: u64,
    pub last_ns: u64,
    pub close_ns: Option<u64>,
    /// connect/accept seen: positions count from the connection's first byte.
    pub open_seen: bool,
    /// The socket's bytes.
    pub socket: Streams,
    /// The TLS plaintext of the session on it, once a TLS library reported some.
    pub tls: Option<Box<Streams>>,
    /// Which TLS library (see `capture::tls::TlsRegistry`).
    pub tls_lib: u16,
    pub twin: Twin,
    /// Records waiting for the other end's observation (primary of a pair),
    /// or for the other end to appear (see [`Connection::awaits_peer`]).
    pub held: VecDeque<Draft>,
    /// Its `connection_open` record was made.
    pub open_reported: bool,
    /// Its streams were finished: why and when (it waits for the other end).
    pub done: Option<(ConnEnd, u64)>,
    /// Exchange and segment records made.
    pub exchanges: u64,
    pub segments: u64,
    /// Records with bytes made so far (too late to pair once non-zero).
    pub records_made: u64,
    /// Its key in the peer index.
    pub key: Option<PeerKey>,
    /// Bytes it held at the last accounting.
    pub accounted: usize,
}

impl Connection {
    /// A connection first seen through `m` (an open event when `role` is known).
    pub fn new(m: &Meta, role: Role, open_seen: bool) -> Self {
        let side = Side {
            conn_id: m.conn_id,
            transport: m.transport,
            local: Some(m.local),
            remote: (!m.peer_from_arg).then_some(m.remote),
            role,
            pid: m.pid,
            tid: m.tid,
            comm: m.comm,
            uid: m.uid,
            cgroup_id: m.cgroup_id,
            netns: m.netns,
        };
        Connection {
            id: m.conn_id,
            side,
            peer_from_arg: m.peer_from_arg,
            identity: None,
            peer: None,
            peer_identity: None,
            open_ns: m.ts_ns,
            last_ns: m.ts_ns,
            close_ns: None,
            open_seen,
            socket: Streams::new(false, role != Role::Unknown),
            tls: None,
            tls_lib: 0,
            twin: Twin::None,
            held: VecDeque::new(),
            open_reported: false,
            done: None,
            exchanges: 0,
            segments: 0,
            records_made: 0,
            key: None,
            accounted: 0,
        }
    }

    /// Takes the process facts of a later event; true when the process changed
    /// (its identity must be resolved again).
    pub fn update(&mut self, m: &Meta) -> bool {
        self.last_ns = self.last_ns.max(m.ts_ns);
        let s = &mut self.side;
        let changed = s.pid != m.pid || s.comm != m.comm || s.cgroup_id != m.cgroup_id;
        s.pid = m.pid;
        s.tid = m.tid;
        s.comm = m.comm;
        s.uid = m.uid;
        s.cgroup_id = m.cgroup_id;
        changed
    }

    /// An open event arrived for a connection first seen otherwise.
    pub fn opened(&mut self, m: &Meta, role: Role) {
        self.open_ns = self.open_ns.min(m.ts_ns);
        self.open_seen = true;
        self.side.role = role;
        self.side.transport = m.transport;
        self.side.local = Some(m.local);
        if !m.peer_from_arg {
            self.side.remote = Some(m.remote);
        }
        self.socket.role_known();
        if let Some(t) = &mut self.tls {
            t.role_known();
        }
    }

    /// What detection knows besides bytes.
    pub fn hints(&self) -> ConnHints {
        ConnHints {
            transport: self.side.transport,
            role: self.side.role,
            local_port: self.side.local.map(|a| a.port()),
            remote_port: self.side.remote.map(|a| a.port()),
        }
    }

    /// The position space of socket bytes or of TLS plaintext (created on
    /// first use; a witness's is a witness too).
    pub fn streams(&mut self, tls: bool) -> &mut Streams {
        if !tls {
            return &mut self.socket;
        }
        let role_known = self.side.role != Role::Unknown;
        let witness = matches!(self.twin, Twin::Witness(_));
        self.tls.get_or_insert_with(|| {
            let mut s = Streams::new(true, role_known);
            if witness {
                s.become_witness();
            }
            Box::new(s)
        })
    }

    /// Both position spaces.
    pub fn all_streams(&mut self) -> impl Iterator<Item = &mut Streams> {
        std::iter::once(&mut self.socket).chain(self.tls.as_deref_mut())
    }

    /// A loopback TCP connection whose other end has not been seen yet (the
    /// server may accept it later than the client starts talking): its
    /// records are held, for at most `window` after the open, so the two ends
    /// can still become one record.
    pub fn awaits_peer(&self, now: u64, window: u64) -> bool {
        self.peer.is_none()
            && self.twin == Twin::None
            && self.open_seen
            && self.done.is_none()
            && self.records_made == 0
            && self.tls.is_none()
            && self.is_tcp()
            && self.key.is_some_and(|k| k.loopback())
            && now < self.open_ns.saturating_add(window)
    }

    /// Bytes held in memory.
    pub fn buffered(&self) -> usize {
        self.socket.buffered()
            + self.tls.as_ref().map_or(0, |t| t.buffered())
            + self.held.iter().map(Draft::bytes).sum::<usize>()
    }

    /// Drafts the streams finished.
    pub fn take_drafts(&mut self) -> Vec<Draft> {
        let mut d = Vec::new();
        self.take_drafts_into(&mut d);
        d
    }

    /// Drafts the streams finished, appended to `out`.
    pub fn take_drafts_into(&mut self, out: &mut Vec<Draft>) {
        self.socket.take_drafts_into(out);
        if let Some(t) = &mut self.tls {
            t.take_drafts_into(out);
        }
    }

    /// Close seen and every byte up to the final counts arrived.
    pub fn complete(&self) -> bool {
        let t = self.side.transport;
        self.close_ns.is_some() && self.socket.complete(t) && self.tls.as_ref().is_none_or(|s| s.complete(t))
    }

    /// Holes older than the reorder window become gaps; time bounds of the assemblers.
    pub fn expire(&mut self, ctx: &mut Ctx<'_>, now: u64) {
        let hints = self.hints();
        let deadline = now.saturating_sub(ctx.cfg.reorder_window_ns);
        for s in self.all_streams() {
            s.expire(ctx, hints, deadline);
            s.tick(ctx, now);
        }
    }

    /// Finishes both position spaces (missing bytes become gaps, partial
    /// messages and exchanges are recorded).
    pub fn finish_streams(&mut self, ctx: &mut Ctx<'_>) {
        let hints = self.hints();
        let ts = self.close_ns.unwrap_or(self.last_ns);
        if let Some(t) = &mut self.tls {
            // The plaintext's final counts are the highest the library reported.
            t.final_totals = [Some(t.seen_totals[0]), Some(t.seen_totals[1])];
        }
        for s in self.all_streams() {
            s.finish(ctx, hints, ts);
        }
    }

    /// Accounting of `dir` of the socket (or of the TLS plaintext).
    pub fn totals(&self, tls: bool, dir: Direction) -> Option<DirTotals> {
        let s = if tls { self.tls.as_deref()? } else { &self.socket };
        let (captured, gap) = s.accounting(dir);
        let kernel_total = if tls { None } else { s.final_totals[dir.index()] };
        let not_kept = if tls { None } else { s.not_kept(dir) };
        Some(DirTotals { captured, gap, kernel_total, not_kept })
    }

    /// The TLS blind spot of this connection: its socket began with a TLS
    /// hello and no plaintext of the session reached it; or its library's
    /// probes see only what it sends (`reads_unhooked`, see
    /// `TlsRegistry::reads_unhooked`) and ciphertext came in.
    pub fn tls_unseen(&self, reads_unhooked: bool) -> Option<crate::record::TlsUnseen> {
        let bytes = |d| self.socket.accounting(d).0;
        if self.socket.tls_ciphertext && self.tls.is_some() && reads_unhooked && bytes(Direction::Ingress) > 0 {
            return Some(crate::record::TlsUnseen {
                reason: "the plaintext this end received was not captured: its TLS library is hooked for what it \
                         sends only (rustls read through BufRead, as tokio-rustls does)"
                    .into(),
                egress_bytes: 0,
                ingress_bytes: bytes(Direction::Ingress),
            });
        }
        if !self.socket.tls_ciphertext || self.tls.is_some() {
            return None;
        }
        Some(crate::record::TlsUnseen {
            reason: "the socket carries TLS and no plaintext of it was captured: its library is not hooked \
                     (unsupported, stripped or hooked after the connection began) or it uses memory BIOs \
                     (its plaintext is then recorded without a connection)"
                .into(),
            egress_bytes: bytes(Direction::Egress),
            ingress_bytes: bytes(Direction::Ingress),
        })
    }

    /// UDP sockets are never paired and have no byte stream to close.
    pub fn is_tcp(&self) -> bool {
        self.side.transport == Transport::Tcp
    }
}
