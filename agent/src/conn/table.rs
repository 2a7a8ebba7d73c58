//! The agent's one connection table: one entry per socket, one clock (the
//! kernel's CLOCK_BOOTTIME, from events and from `tick`), one idle timeout,
//! one bound on connections and one on bytes held. Events in, records out.
//!
//! Lifecycle: a connection is created by its first event (connect/accept, or
//! data of a socket older than the agent), finished when it is closed and
//! every byte up to the kernel's final counts arrived (or the reorder window
//! passed), when it is idle, when a bound evicts it, or at shutdown. Finishing
//! turns missing bytes into gaps, records partial messages and exchanges, and
//! makes its `connection` record. A two-witness pair is finished together:
//! the primary's records claim what the witness saw, and one `connection`
//! record covers both ends.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::assemble::Draft;
use super::config::ConnConfig;
use super::connection::{Connection, Twin};
use super::peers::{self, PeerIndex};
use super::stats::ConnStats;
use super::streams::{Ctx, Missing};
use crate::capture::event::{CaptureEvent, Meta};
use crate::capture::tls::TlsRegistry;
use crate::clock::ClockSync;
use crate::identity::IdentityResolver;
use crate::record::{ConnEnd, Record};
use crate::types::{GapReason, Role};

/// Highest stream position accepted: keeps all position arithmetic far from
/// overflow (2^62 bytes is ~4.6 EB per direction).
pub const MAX_STREAM_POS: u64 = 1 << 62;

/// Connection ids are a counter: mix them just enough for the hash table.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

type Conns = HashMap<u64, Connection, BuildHasherDefault<IdHasher>>;

/// The connection table (see the module docs).
pub struct ConnTable {
    pub(super) cfg: ConnConfig,
    /// What it did.
    pub stats: ConnStats,
    pub(super) conns: Conns,
    peers: PeerIndex,
    /// Bytes held across connections (as of their last accounting).
    buffered: usize,
    /// Latest kernel time seen (events and ticks).
    pub(super) now: u64,
    pub(super) ids: IdentityResolver,
    pub(super) tls: Arc<TlsRegistry>,
    pub(super) clock: ClockSync,
    /// Drafts taken from a connection by `settle` (kept for its capacity).
    drafts: Vec<Draft>,
}

impl ConnTable {
    /// A table; identities come from `ids`, TLS library names from `tls`.
    pub fn new(cfg: ConnConfig, ids: IdentityResolver, tls: Arc<TlsRegistry>) -> Self {
        ConnTable {
            cfg,
            stats: ConnStats::default(),
            conns: Conns::default(),
            peers: PeerIndex::default(),
            buffered: 0,
            now: 0,
            ids,
            tls,
            clock: ClockSync::measure(),
            drafts: Vec::new(),
        }
    }

    /// Kernel time → UTC from now on.
    pub fn set_clock(&mut self, clock: ClockSync) {
        self.clock = clock;
    }

    /// The conversion in use.
    pub fn clock(&self) -> &ClockSync {
        &self.clock
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when none is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Bytes held across connections.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Takes one event; the records it completes are appended to `out`.
    pub fn on_event(&mut self, ev: CaptureEvent, out: &mut Vec<Record>) {
        self.stats.events += 1;
        let m = ev.meta();
        self.now = self.now.max(m.ts_ns);
        if let CaptureEvent::Exec { .. } = ev {
            return;
        }
        if m.untracked || m.conn_id == 0 {
            self.stats.untracked_events += 1;
            self.orphan(ev, None, out);
            return;
        }
        if let Some(e) = invalid(&ev) {
            tracing::warn!(conn_id = m.conn_id, error = %e, "capture event out of range; recorded raw");
            self.stats.invalid_events += 1;
            self.orphan(ev, Some(e), out);
            return;
        }
        let id = m.conn_id;
        if !self.conns.contains_key(&id) {
            self.create(m, &ev);
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.update(m) {
            c.identity = Some(self.ids.resolve(m.pid, m.comm, m.cgroup_id));
        }
        let mut ctx = Ctx { cfg: &self.cfg, stats: &mut self.stats };
        let hints = c.hints();
        match ev {
            CaptureEvent::Connect { meta } if !c.open_seen => c.opened(&meta, Role::Client),
            CaptureEvent::Accept { meta } if !c.open_seen => c.opened(&meta, Role::Server),
            CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } | CaptureEvent::Exec { .. } => {}
            CaptureEvent::Data { meta, direction, pos, payload } => {
                ctx.stats.data_bytes += payload.len() as u64;
                let peer = meta.peer_from_arg.then_some(meta.remote);
                if meta.tls {
                    c.tls_lib = meta.tls_lib;
                }
                let s = c.streams(meta.tls);
                note_totals(s, &meta);
                s.on_data(&mut ctx, hints, direction, pos, meta.ts_ns, meta.call, payload, peer);
            }
            CaptureEvent::Truncated { meta, direction, pos, len, reason } => {
                if reason == GapReason::CiphertextNotKept {
                    ctx.stats.not_kept_bytes += len;
                } else {
                    ctx.stats.gap_bytes += len;
                }
                let s = c.streams(meta.tls);
                note_totals(s, &meta);
                s.on_gap(&mut ctx, hints, Missing { dir: direction, pos, len, reason, ts: meta.ts_ns });
            }
            CaptureEvent::Close { meta } => {
                c.close_ns = Some(meta.ts_ns);
                c.socket.final_totals = [Some(meta.tx_total), Some(meta.rx_total)];
                note_totals(&mut c.socket, &meta);
            }
        }
        self.settle(id, out);
    }

    /// Periodic work at kernel time `now`: holes past the reorder window
    /// become gaps, time bounds are applied, long-lived connections get their
    /// `connection_open` record, closed, idle and waiting connections are finished.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Record>) {
        self.now = self.now.max(now);
        let now = self.now;
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            let mut ctx = Ctx { cfg: &self.cfg, stats: &mut self.stats };
            c.expire(&mut ctx, now);
            let window = self.cfg.reorder_window_ns;
            let waited = c.close_ns.is_some_and(|t| now >= t.saturating_add(window));
            let idle = now >= c.last_ns.saturating_add(self.cfg.idle_timeout_ns);
            let open_due = !c.open_reported
                && c.done.is_none()
                && !matches!(c.twin, Twin::Witness(_))
                && now >= c.open_ns.saturating_add(self.cfg.open_record_delay_ns);
            if open_due {
                c.open_reported = true;
                out.push(self.connection_record(id, ConnEnd::Open));
            }
            self.settle(id, out);
            if let Some(c) = self.conns.get(&id)
                && c.done.is_none()
            {
                if waited {
                    self.finish(id, ConnEnd::Closed, out);
                } else if idle {
                    self.finish(id, ConnEnd::Idle, out);
                }
            }
            // A primary whose witness outlives it by more than the window: part.
            if let Some(c) = self.conns.get(&id)
                && let (Twin::Primary(w), Some((_, at))) = (c.twin, c.done)
                && now >= at.saturating_add(window)
            {
                self.unpair(id, w, out);
            }
        }
        self.enforce_bounds(out);
    }

    /// Finishes every connection (agent shutdown).
    pub fn finish_all(&mut self, out: &mut Vec<Record>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if self.conns.get(&id).is_some_and(|c| c.done.is_none()) {
                self.finish(id, ConnEnd::Shutdown, out);
            }
        }
        // Pairs whose other end never finished.
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get(&id) {
                match c.twin {
                    Twin::Primary(w) => self.end_pair(id, w, out),
                    Twin::Witness(p) => self.end_pair(p, id, out),
                    Twin::None => {}
                }
            }
        }
    }

    fn create(&mut self, m: &Meta, ev: &CaptureEvent) {
        let (role, open_seen) = match ev {
            CaptureEvent::Connect { .. } => (Role::Client, true),
            CaptureEvent::Accept { .. } => (Role::Server, true),
            _ => (Role::Unknown, false),
        };
        self.stats.conns_opened += 1;
        if !open_seen {
            self.stats.conns_without_open += 1;
        }
        let mut c = Connection::new(m, role, open_seen);
        c.identity = Some(self.ids.resolve(m.pid, m.comm, m.cgroup_id));
        c.key = peers::key(&c.side, c.peer_from_arg);
        let id = c.id;
        let other = c.key.and_then(|k| self.peers.insert(k, id));
        self.conns.insert(id, c);
        if let Some(o) = other
            && o != id
        {
            self.meet(id, o);
        }
    }

    /// Two connections found to be the two ends of one conversation.
    fn meet(&mut self, a: u64, b: u64) {
        let [Some(ca), Some(cb)] = self.conns.get_disjoint_mut([&a, &b]) else { return };
        ca.peer = Some(b);
        cb.peer = Some(a);
        ca.peer_identity = cb.identity.clone();
        cb.peer_identity = ca.identity.clone();
        let pairable = |c: &Connection| {
            c.is_tcp()
                && c.open_seen
                && c.twin == Twin::None
                && c.records_made == 0
                && c.done.is_none()
                && c.tls.is_none()
        };
        if !self.cfg.twins || !pairable(ca) || !pairable(cb) {
            return;
        }
        // The witness must not have parsed anything yet; the client is the
        // primary when either could be.
        let a_primary = match (ca.socket.started(), cb.socket.started()) {
            (true, true) => return,
            (true, false) => true,
            (false, true) => false,
            (false, false) => ca.side.role == Role::Client || cb.side.role != Role::Client,
        };
        let (p, w) = if a_primary { (ca, cb) } else { (cb, ca) };
        p.twin = Twin::Primary(w.id);
        w.twin = Twin::Witness(p.id);
        w.socket.become_witness();
        self.stats.twins += 1;
        tracing::trace!(primary = p.id, witness = w.id, "two witnesses paired");
    }

    /// After an event or a tick: records the connection's finished drafts
    /// (or holds them for the witness), finishes it when complete, accounts bytes.
    fn settle(&mut self, id: u64, out: &mut Vec<Record>) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        // One buffer for every event's drafts (most events finish none or one).
        let mut drafts = std::mem::take(&mut self.drafts);
        c.take_drafts_into(&mut drafts);
        match c.twin {
            Twin::None if self.cfg.twins && c.awaits_peer(self.now, self.cfg.reorder_window_ns) => {
                c.held.extend(drafts.drain(..));
            }
            Twin::None if c.held.is_empty() => {
                for d in drafts.drain(..) {
                    let r = self.finalize(id, None, d);
                    out.push(r);
                }
            }
            Twin::None => {
                let held: Vec<_> = c.held.drain(..).chain(drafts.drain(..)).collect();
                for d in held {
                    let r = self.finalize(id, None, d);
                    out.push(r);
                }
            }
            Twin::Primary(w) => {
                c.held.extend(drafts.drain(..));
                self.release(id, w, false, out);
            }
            Twin::Witness(p) => self.release(p, id, false, out),
        }
        self.drafts = drafts;
        // One lookup unless the connection is finished here: accounted in place.
        if let Some(c) = self.conns.get_mut(&id) {
            if c.done.is_none() && c.complete() {
                self.finish(id, ConnEnd::Closed, out);
                self.reaccount(id);
            } else {
                account(&mut self.buffered, c);
            }
        }
        self.enforce_bounds(out);
    }

    /// Finishes connection `id`'s streams; alone it is recorded and removed,
    /// in a pair it waits for the other end.
    pub(super) fn finish(&mut self, id: u64, end: ConnEnd, out: &mut Vec<Record>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.done.is_some() {
            return;
        }
        let mut ctx = Ctx { cfg: &self.cfg, stats: &mut self.stats };
        c.finish_streams(&mut ctx);
        match end {
            ConnEnd::Closed => self.stats.conns_closed += 1,
            ConnEnd::Idle => self.stats.conns_idle += 1,
            ConnEnd::Evicted => self.stats.conns_evicted += 1,
            ConnEnd::Shutdown | ConnEnd::Open => {}
        }
        c.done = Some((end, now));
        match c.twin {
            Twin::None => {
                let drafts = c.take_drafts();
                let held: Vec<_> = c.held.drain(..).chain(drafts).collect();
                for d in held {
                    let r = self.finalize(id, None, d);
                    out.push(r);
                }
                out.push(self.connection_record(id, end));
                self.remove(id);
            }
            Twin::Primary(w) => {
                let drafts = c.take_drafts();
                c.held.extend(drafts);
                self.release(id, w, false, out);
                if self.conns.get(&w).is_none_or(|x| x.done.is_some()) {
                    self.end_pair(id, w, out);
                }
            }
            Twin::Witness(p) => {
                self.release(p, id, false, out);
                if self.conns.get(&p).is_none_or(|x| x.done.is_some()) {
                    self.end_pair(p, id, out);
                }
            }
        }
    }

    /// Both ends are done: the primary's records take what the witness saw,
    /// what no record claimed is recorded on its own, one record covers both.
    fn end_pair(&mut self, p: u64, w: u64, out: &mut Vec<Record>) {
        self.release(p, w, true, out);
        if let Some(wc) = self.conns.get_mut(&w) {
            let mut ctx = Ctx { cfg: &self.cfg, stats: &mut self.stats };
            for s in wc.all_streams() {
                s.become_standalone(&mut ctx);
                if let super::streams::Mode::Parse(pp) = &mut s.mode {
                    pp.asm.finish(&mut ctx);
                }
            }
            wc.twin = Twin::None;
            let drafts = wc.take_drafts();
            for d in drafts {
                let r = self.finalize(w, None, d);
                out.push(r);
            }
        }
        if let Some(pc) = self.conns.get_mut(&p) {
            pc.twin = Twin::Primary(w);
            let end = pc.done.map_or(ConnEnd::Shutdown, |d| d.0);
            out.push(self.connection_record(p, end));
        }
        self.remove(p);
        self.remove(w);
    }

    /// The primary is done but its witness lives on: the primary's records
    /// are made with what the witness saw so far, and the witness goes on alone.
    fn unpair(&mut self, p: u64, w: u64, out: &mut Vec<Record>) {
        self.release(p, w, true, out);
        if let Some(pc) = self.conns.get(&p) {
            let end = pc.done.map_or(ConnEnd::Shutdown, |d| d.0);
            out.push(self.connection_record(p, end));
        }
        self.remove(p);
        if let Some(wc) = self.conns.get_mut(&w) {
            let mut ctx = Ctx { cfg: &self.cfg, stats: &mut self.stats };
            for s in wc.all_streams() {
                s.become_standalone(&mut ctx);
            }
            wc.twin = Twin::None;
        }
        self.settle(w, out);
    }

    /// Records the primary's held drafts the witness has caught up with
    /// (all of them when `force`, and those older than the reorder window).
    fn release(&mut self, p: u64, w: u64, force: bool, out: &mut Vec<Record>) {
        let window = self.cfg.reorder_window_ns;
        let now = self.now;
        loop {
            let pair = if p == w { [self.conns.get_mut(&p), None] } else { self.conns.get_disjoint_mut([&p, &w]) };
            let [Some(pc), Some(wc)] = pair else {
                // The witness is gone: record what is held without it.
                let Some(pc) = self.conns.get_mut(&p) else { return };
                let held: Vec<_> = pc.held.drain(..).collect();
                for d in held {
                    let r = self.finalize(p, None, d);
                    out.push(r);
                }
                return;
            };
            let Some(d) = pc.held.front_mut() else { return };
            let covered = d.parts_mut().iter().all(|part| {
                let s = if part.tls { wc.tls.as_deref_mut() } else { Some(&mut wc.socket) };
                s.and_then(|s| s.witness_buf(part.direction.opposite())).is_none_or(|b| b.covered_to() >= part.end())
            });
            let expired = now >= d.first_ts().saturating_add(window);
            if !(covered || force || expired || wc.done.is_some()) {
                return;
            }
            let d = pc.held.pop_front().expect("front checked");
            let r = self.finalize(p, Some(w), d);
            out.push(r);
        }
    }

    fn reaccount(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            account(&mut self.buffered, c);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            self.buffered -= c.accounted;
            if let Some(k) = &c.key {
                self.peers.remove(k, id);
            }
        }
    }

    /// Over a bound: the least recently active connections are finished.
    fn enforce_bounds(&mut self, out: &mut Vec<Record>) {
        while self.conns.len() > self.cfg.max_conns.max(1) || self.buffered > self.cfg.max_buffered_bytes {
            let n = (self.conns.len() / 64).max(1);
            let mut all: Vec<(u64, u64)> =
                self.conns.values().filter(|c| c.done.is_none()).map(|c| (c.last_ns, c.id)).collect();
            if all.is_empty() {
                // Only pairs waiting for each other: end them.
                let Some((&id, c)) = self.conns.iter().next() else { return };
                match c.twin {
                    Twin::Primary(w) => self.end_pair(id, w, out),
                    Twin::Witness(p) => self.end_pair(p, id, out),
                    Twin::None => self.remove(id),
                }
                continue;
            }
            let n = n.min(all.len());
            all.select_nth_unstable(n - 1);
            all.truncate(n);
            for (_, id) in all {
                let held = self.conns.get(&id).map_or(0, Connection::buffered);
                self.stats.evicted_buffered_bytes += held as u64;
                tracing::debug!(conn_id = id, held, "finishing a connection to stay within the table's bounds");
                let twin = self.conns.get(&id).map(|c| c.twin);
                self.finish(id, ConnEnd::Evicted, out);
                // Memory is the point: a pair goes together.
                match twin {
                    Some(Twin::Primary(w)) => {
                        self.finish(w, ConnEnd::Evicted, out);
                        self.end_pair(id, w, out);
                    }
                    Some(Twin::Witness(p)) => {
                        self.finish(p, ConnEnd::Evicted, out);
                        self.end_pair(p, id, out);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn note_totals(s: &mut super::streams::Streams, m: &Meta) {
    s.seen_totals[0] = s.seen_totals[0].max(m.tx_total);
    s.seen_totals[1] = s.seen_totals[1].max(m.rx_total);
}

/// Why an event's positions cannot be used.
fn invalid(ev: &CaptureEvent) -> Option<String> {
    let end = |pos: u64, len: u64| pos.checked_add(len).is_some_and(|e| e <= MAX_STREAM_POS);
    let m = ev.meta();
    match ev {
        CaptureEvent::Data { pos, payload, .. } if !end(*pos, payload.len() as u64) => {
            Some(format!("position {pos} + length {} is past the stream limit 2^62", payload.len()))
        }
        CaptureEvent::Truncated { pos, len, .. } if !end(*pos, *len) => {
            Some(format!("position {pos} + length {len} is past the stream limit 2^62"))
        }
        CaptureEvent::Close { .. } if m.tx_total > MAX_STREAM_POS || m.rx_total > MAX_STREAM_POS => {
            Some(format!("close totals tx {} / rx {} are past the stream limit 2^62", m.tx_total, m.rx_total))
        }
        _ => None,
    }
}

/// Brings the table's total of buffered bytes (`total`) up to date with
/// connection `c`'s current holding.
fn account(total: &mut usize, c: &mut Connection) {
    let now = c.buffered();
    *total = *total - c.accounted + now;
    c.accounted = now;
}
