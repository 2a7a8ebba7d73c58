//! From pieces to records: messages are paired into exchanges (a request with
//! its response, every frame of an HTTP/2 stream), one-way messages are one
//! record each, and unparsed bytes and gaps between messages are coalesced
//! per direction into segments bounded by size and time.
//!
//! The assembler makes [`Draft`]s: records without the connection's side,
//! identity and clock, which the connection adds (after the other end's
//! observation, for two-witness conversations).
//!
//! Pairing: a message with key `(id, Request)` opens (or continues) the
//! exchange `id`; `(id, Response)` continues the oldest exchange `id` whose
//! response is not done, or opens one without request. An exchange is done
//! when its request and its response are both done (the parser's
//! `more_to_come` said no more messages of that role follow). Bounds: an
//! exchange older than `exchange_max_age_ns` or larger than
//! `exchange_max_bytes` is recorded so far (`incomplete: continues`) and keeps
//! collecting; beyond `max_pending_exchanges` the oldest is recorded as it is.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::pump::{Piece, PieceKind};
use super::streams::Ctx;
use crate::proto::fields::{Body, ExchangeRole, UnparsedReason};
use crate::record::{Fault, Fields, GapMark, Incomplete, Message, Observation, Part, PartRole, Raw};
use crate::types::{Direction, GapReason};

/// An exchange record without its side.
#[derive(Debug)]
pub struct ExchangeDraft {
    pub exchange_id: Option<u64>,
    pub parts: Vec<Part>,
    pub messages: Vec<Message>,
    pub latency_ns: Option<u64>,
    pub incomplete: Option<Incomplete>,
    pub faults: Vec<Fault>,
}

/// A segment record without its side.
#[derive(Debug)]
pub struct SegmentDraft {
    pub reason: UnparsedReason,
    pub error: Option<String>,
    pub part: Part,
    pub faults: Vec<Fault>,
}

/// A record without its side.
#[derive(Debug)]
pub enum Draft {
    Exchange(ExchangeDraft),
    Segment(Box<SegmentDraft>),
    /// A stretch of missing bytes no other record holds.
    Gap {
        dir: Direction,
        pos: u64,
        len: u64,
        reason: GapReason,
        ts: u64,
        tls: bool,
    },
}

impl Draft {
    /// Kernel time of the record's first byte.
    pub fn first_ts(&self) -> u64 {
        match self {
            Draft::Exchange(e) => e.parts.iter().map(|p| p.seen.first_ns).min().unwrap_or(0),
            Draft::Segment(s) => s.part.seen.first_ns,
            Draft::Gap { ts, .. } => *ts,
        }
    }

    /// The parts holding bytes (for the other end's observation).
    pub fn parts_mut(&mut self) -> &mut [Part] {
        match self {
            Draft::Exchange(e) => &mut e.parts,
            Draft::Segment(s) => std::slice::from_mut(&mut s.part),
            Draft::Gap { .. } => &mut [],
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Draft::Exchange(e) => e.parts.iter().map(|p| p.raw.0.len()).sum(),
            Draft::Segment(s) => s.part.raw.0.len(),
            Draft::Gap { .. } => 0,
        }
    }
}

/// Parts and messages being collected.
#[derive(Debug, Default)]
struct Builder {
    parts: Vec<Part>,
    /// Bytes of the last part still being appended to.
    open: Option<BytesMut>,
    messages: Vec<Message>,
    bytes: usize,
}

impl Builder {
    /// Adds a piece as (part of) a part; returns (part index, offset in it).
    fn add(&mut self, p: &mut Piece, role: PartRole, tls: bool) -> (usize, u64) {
        let bytes = std::mem::take(&mut p.bytes);
        self.bytes += bytes.len();
        if let Some(last) = self.parts.last_mut()
            && last.direction == p.dir
            && last.role == role
            && last.end() == p.pos
            && last.peer.is_none()
            && p.peer.is_none()
        {
            let offset = last.len;
            let buf = self.open.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(last.raw.0.len() + bytes.len());
                b.extend_from_slice(&last.raw.0);
                b
            });
            buf.extend_from_slice(&bytes);
            last.len += p.len;
            last.seen.last_ns = last.seen.last_ns.max(p.last_ts);
            last.seen
                .calls
                .extend(p.calls.drain(..).map(|c| crate::record::CallMark { offset: c.offset + offset, ..c }));
            for g in p.gaps.drain(..) {
                let g = GapMark { offset: g.offset + offset, ..g };
                // Adjacent missing ranges of one reason are one gap.
                match last.seen.gaps.last_mut() {
                    Some(l) if l.reason == g.reason && l.offset + l.len == g.offset => l.len += g.len,
                    _ => last.seen.gaps.push(g),
                }
            }
            return (self.parts.len() - 1, offset);
        }
        self.seal();
        self.parts.push(Part {
            direction: p.dir,
            role,
            pos: p.pos,
            len: p.len,
            raw: Raw(bytes),
            seen: Observation {
                first_ns: p.first_ts,
                last_ns: p.last_ts,
                calls: std::mem::take(&mut p.calls),
                gaps: std::mem::take(&mut p.gaps),
                unseen: 0,
            },
            witness: None,
            witness_raw: None,
            tls,
            peer: p.peer,
        });
        (self.parts.len() - 1, 0)
    }

    /// Freezes the bytes of the part being appended to.
    fn seal(&mut self) {
        if let Some(b) = self.open.take()
            && let Some(last) = self.parts.last_mut()
        {
            last.raw = Raw(b.freeze());
        }
    }

    fn take(&mut self) -> (Vec<Part>, Vec<Message>) {
        self.seal();
        self.bytes = 0;
        (std::mem::take(&mut self.parts), std::mem::take(&mut self.messages))
    }
}

/// An exchange in progress.
#[derive(Debug)]
struct Pending {
    id: u64,
    b: Builder,
    request_seen: bool,
    request_done: bool,
    response_seen: bool,
    response_done: bool,
    request_last_ns: Option<u64>,
    response_first_ns: Option<u64>,
    /// Kernel time of its first byte (for the age bound).
    started_ns: u64,
    /// A record of it was made already (bounds): the next says it continues too.
    cut: bool,
}

/// Unparsed bytes (and gaps) of one direction being coalesced.
#[derive(Debug)]
struct OpenSegment {
    b: Builder,
    reason: UnparsedReason,
    error: Option<String>,
    started_ns: u64,
    /// Only gaps so far.
    gaps_only: bool,
    gap_reason: GapReason,
}

/// Connection-level messages of one direction (e.g. HTTP/2 SETTINGS,
/// WINDOW_UPDATE) gathered into one record.
#[derive(Debug)]
struct Gathered {
    b: Builder,
    started_ns: u64,
}

/// Pieces in, drafts out (see the module docs).
#[derive(Debug, Default)]
pub struct Assembler {
    /// TLS plaintext position space.
    pub tls: bool,
    /// Messages without a pairing key are gathered per direction instead of
    /// one record each (the parser's `gathers_unpaired`).
    pub gathers_unpaired: bool,
    pending: VecDeque<Pending>,
    segments: [Option<OpenSegment>; 2],
    gathered: [Option<Gathered>; 2],
    /// Finished drafts, in the order they were finished.
    pub out: Vec<Draft>,
}

impl Assembler {
    /// An assembler for one position space.
    pub fn new(tls: bool) -> Self {
        Assembler { tls, ..Default::default() }
    }

    /// Bytes held in exchanges and segments in progress.
    pub fn buffered(&self) -> usize {
        self.pending.iter().map(|p| p.b.bytes).sum::<usize>()
            + self.segments.iter().flatten().map(|s| s.b.bytes).sum::<usize>()
            + self.gathered.iter().flatten().map(|g| g.b.bytes).sum::<usize>()
    }

    /// Exchanges in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one piece.
    pub(super) fn piece(&mut self, ctx: &mut Ctx<'_>, mut p: Piece) {
        let dir = p.dir;
        match std::mem::replace(&mut p.kind, PieceKind::Gap { reason: GapReason::Lost }) {
            // Counted by its stream and stated in the connection record
            // (`DirTotals::not_kept`): not missing, so no gap and no segment.
            PieceKind::Gap { reason: GapReason::CiphertextNotKept } => {}
            PieceKind::Gap { reason } => {
                ctx.stats.gap_bytes += p.len;
                self.segment(ctx, p, UnparsedReason::Resync, None, Some(reason));
            }
            PieceKind::Unparsed { reason, error } => self.segment(ctx, p, reason, error, None),
            PieceKind::Continuation { exchange, last } => self.continuation(ctx, p, exchange, last),
            PieceKind::Message { body, exchange, more, more_other, error } => {
                self.close_segment(dir);
                match exchange {
                    None if self.gathers_unpaired => self.gather(ctx, p, body, error),
                    None => {
                        let mut b = Builder::default();
                        let (part, offset) = b.add(&mut p, PartRole::Message, self.tls);
                        b.messages.push(Message { part, offset, len: p.len, fields: Fields::Parsed(body), error });
                        let (parts, messages) = b.take();
                        self.emit_exchange(ctx, None, parts, messages, None, None);
                    }
                    Some((id, role)) => self.pair(ctx, p, id, role, (more, more_other), body, error),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut p: Piece,
        id: u64,
        role: ExchangeRole,
        (more, more_other): (bool, bool),
        body: Body,
        error: Option<String>,
    ) {
        let request = role == ExchangeRole::Request;
        let at = if request {
            self.pending.iter().position(|e| e.id == id && !e.request_done)
        } else {
            self.pending.iter().position(|e| e.id == id && !e.response_done)
        };
        let at = match at {
            Some(i) => i,
            None => {
                if self.pending.len() >= ctx.cfg.max_pending_exchanges.max(1) {
                    ctx.stats.exchanges_unanswered_bound += 1;
                    if let Some(old) = self.pending.pop_front() {
                        self.finish_pending(ctx, old);
                    }
                }
                self.pending.push_back(Pending {
                    id,
                    b: Builder::default(),
                    request_seen: false,
                    request_done: false,
                    response_seen: false,
                    response_done: false,
                    request_last_ns: None,
                    response_first_ns: None,
                    started_ns: p.first_ts,
                    cut: false,
                });
                self.pending.len() - 1
            }
        };
        let e = &mut self.pending[at];
        let part_role = if request { PartRole::Request } else { PartRole::Response };
        let (part, offset) = e.b.add(&mut p, part_role, self.tls);
        e.b.messages.push(Message { part, offset, len: p.len, fields: Fields::Parsed(body), error });
        if request {
            e.request_seen = true;
            e.request_done = !more;
            e.request_last_ns = Some(p.last_ts);
            // The other role may have ended meanwhile (e.g. a reset stream).
            e.response_done |= e.response_seen && !more_other;
        } else {
            if !e.response_seen {
                e.response_first_ns = Some(p.first_ts);
            }
            e.response_seen = true;
            e.response_done = !more;
            e.request_done |= e.request_seen && !more_other;
        }
        // A response with no request seen is whole once its role is done.
        let done = (e.request_done || !e.request_seen) && e.response_done;
        if done {
            let e = self.pending.remove(at).expect("index from position");
            self.finish_pending(ctx, e);
        } else if e.b.bytes > ctx.cfg.exchange_max_bytes {
            self.cut(ctx, at);
        }
    }

    /// More bytes of a message larger than the parse limit: into its exchange
    /// when that is still collecting, else a segment of their own.
    fn continuation(&mut self, ctx: &mut Ctx<'_>, mut p: Piece, exchange: Option<(u64, ExchangeRole)>, last: bool) {
        let request = matches!(exchange, Some((_, ExchangeRole::Request)));
        let at = exchange.and_then(|(id, _)| {
            self.pending
                .iter()
                .position(|e| e.id == id && if request { !e.request_done } else { e.response_seen && !e.response_done })
        });
        let Some(at) = at else {
            self.segment(ctx, p, UnparsedReason::Continuation, None, None);
            return;
        };
        let e = &mut self.pending[at];
        let role = if request { PartRole::Request } else { PartRole::Response };
        let len = p.len;
        let (part, offset) = e.b.add(&mut p, role, self.tls);
        if let Some(m) = e.b.messages.last_mut()
            && m.part == part
            && m.offset + m.len == offset
        {
            m.len += len;
        }
        if last {
            if request {
                e.request_done = true;
                e.request_last_ns = Some(p.last_ts);
            } else {
                e.response_done = true;
            }
        }
        let done = (e.request_done || !e.request_seen) && e.response_done;
        if done {
            let e = self.pending.remove(at).expect("index from position");
            self.finish_pending(ctx, e);
        } else if e.b.bytes > ctx.cfg.exchange_max_bytes {
            self.cut(ctx, at);
        }
    }

    /// Records what an exchange in progress holds so far; it keeps collecting.
    fn cut(&mut self, ctx: &mut Ctx<'_>, at: usize) {
        let e = &mut self.pending[at];
        e.cut = true;
        let (parts, messages) = e.b.take();
        let id = e.id;
        let latency = latency(e);
        ctx.stats.exchanges_cut += 1;
        self.emit_exchange(ctx, Some(id), parts, messages, latency, Some(Incomplete::Continues));
    }

    fn finish_pending(&mut self, ctx: &mut Ctx<'_>, mut e: Pending) {
        let (parts, messages) = e.b.take();
        if parts.is_empty() {
            return;
        }
        let incomplete = if !e.request_seen && !e.cut {
            Some(Incomplete::NoRequest)
        } else if !e.response_done {
            Some(Incomplete::NoResponse)
        } else {
            None
        };
        let latency = latency(&e);
        self.emit_exchange(ctx, Some(e.id), parts, messages, latency, incomplete);
    }

    fn emit_exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: Option<u64>,
        parts: Vec<Part>,
        messages: Vec<Message>,
        latency_ns: Option<u64>,
        incomplete: Option<Incomplete>,
    ) {
        ctx.stats.exchanges += 1;
        if incomplete.is_some() {
            ctx.stats.exchanges_incomplete += 1;
        }
        self.out.push(Draft::Exchange(ExchangeDraft {
            exchange_id: id,
            parts,
            messages,
            latency_ns,
            incomplete,
            faults: Vec::new(),
        }));
    }

    fn gather(&mut self, ctx: &mut Ctx<'_>, mut p: Piece, body: Body, error: Option<String>) {
        let i = p.dir.index();
        if let Some(g) = &self.gathered[i]
            && (g.b.bytes + p.bytes.len() > ctx.cfg.segment_max_bytes
                || p.first_ts.saturating_sub(g.started_ns) >= ctx.cfg.segment_max_age_ns
                || g.b.messages.len() >= 256)
        {
            self.close_gathered(ctx, p.dir);
        }
        let g = self.gathered[i].get_or_insert_with(|| Gathered { b: Builder::default(), started_ns: p.first_ts });
        let (part, offset) = g.b.add(&mut p, PartRole::Message, self.tls);
        g.b.messages.push(Message { part, offset, len: p.len, fields: Fields::Parsed(body), error });
    }

    fn close_gathered(&mut self, ctx: &mut Ctx<'_>, dir: Direction) {
        if let Some(mut g) = self.gathered[dir.index()].take() {
            let (parts, messages) = g.b.take();
            self.emit_exchange(ctx, None, parts, messages, None, None);
        }
    }

    /// Adds unparsed bytes or a gap (`gap` set) to the open segment of its direction.
    fn segment(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut p: Piece,
        reason: UnparsedReason,
        error: Option<String>,
        gap: Option<GapReason>,
    ) {
        let i = p.dir.index();
        if let Some(s) = &self.segments[i] {
            let end = s.b.parts.first().map_or(p.pos, |x| x.end());
            let joins = end == p.pos
                && (gap.is_some() || s.gaps_only || (s.reason == reason && s.error.is_none() && error.is_none()))
                && s.b.bytes + p.bytes.len() <= ctx.cfg.segment_max_bytes
                && p.first_ts.saturating_sub(s.started_ns) < ctx.cfg.segment_max_age_ns;
            if !joins {
                self.close_segment(p.dir);
            }
        }
        let s = self.segments[i].get_or_insert_with(|| OpenSegment {
            b: Builder::default(),
            reason,
            error: None,
            started_ns: p.first_ts,
            gaps_only: true,
            gap_reason: gap.unwrap_or(GapReason::Lost),
        });
        if gap.is_none() {
            if s.gaps_only {
                s.reason = reason;
            }
            s.gaps_only = false;
            if s.error.is_none() {
                s.error = error;
            }
        }
        s.b.add(&mut p, PartRole::Bytes, self.tls);
    }

    /// Ends the open segment of `dir` (a message follows, or a bound was reached).
    pub fn close_segment(&mut self, dir: Direction) {
        let Some(mut s) = self.segments[dir.index()].take() else { return };
        let (mut parts, _) = s.b.take();
        let Some(part) = parts.pop() else { return };
        if s.gaps_only {
            let gap_len: u64 = part.seen.gaps.iter().map(|g| g.len).sum();
            if gap_len == part.len {
                self.out.push(Draft::Gap {
                    dir,
                    pos: part.pos,
                    len: part.len,
                    reason: s.gap_reason,
                    ts: part.seen.first_ns,
                    tls: self.tls,
                });
                return;
            }
        }
        self.out.push(Draft::Segment(Box::new(SegmentDraft {
            reason: s.reason,
            error: s.error,
            part,
            faults: Vec::new(),
        })));
    }

    /// Time bounds at kernel time `now`: segments and gathered messages older
    /// than their age bound, and exchanges older than theirs, are recorded.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>, now: u64) {
        for dir in Direction::BOTH {
            let i = dir.index();
            if self.segments[i].as_ref().is_some_and(|s| now.saturating_sub(s.started_ns) >= ctx.cfg.segment_max_age_ns)
            {
                self.close_segment(dir);
            }
            if self.gathered[i].as_ref().is_some_and(|g| now.saturating_sub(g.started_ns) >= ctx.cfg.segment_max_age_ns)
            {
                self.close_gathered(ctx, dir);
            }
        }
        for at in 0..self.pending.len() {
            let e = &self.pending[at];
            if now.saturating_sub(e.started_ns) >= ctx.cfg.exchange_max_age_ns && e.b.bytes > 0 {
                self.cut(ctx, at);
                self.pending[at].started_ns = now;
            }
        }
    }

    /// The stream is over: everything in progress is recorded as it is, in
    /// the order of their first bytes.
    pub fn finish(&mut self, ctx: &mut Ctx<'_>) {
        let from = self.out.len();
        for dir in Direction::BOTH {
            self.close_segment(dir);
            self.close_gathered(ctx, dir);
        }
        while let Some(e) = self.pending.pop_front() {
            self.finish_pending(ctx, e);
        }
        self.out[from..].sort_by_key(Draft::first_ts);
    }
}

fn latency(e: &Pending) -> Option<u64> {
    match (e.request_last_ns, e.response_first_ns) {
        (Some(req), Some(resp)) => Some(resp.saturating_sub(req)),
        _ => None,
    }
}

/// Bytes of a draft's parts concatenated (tests, comparisons).
pub fn joined(parts: &[Part]) -> Bytes {
    let mut b = BytesMut::new();
    for p in parts {
        b.extend_from_slice(&p.raw.0);
    }
    b.freeze()
}
