//! One position space of a connection — the socket's bytes, or the TLS
//! plaintext of the session on it — with both directions' reassembly and
//! either the protocol parser and the exchange assembler (the usual case) or,
//! for the witness end of a two-witness conversation, the buffers the other
//! end's records claim from.

use std::net::SocketAddr;

use bytes::Bytes;

use super::assemble::{Assembler, Draft};
use super::config::ConnConfig;
use super::detect::{ConnHints, Detect, detect, detect_datagram};
use super::pump::{Piece, PieceKind};
use super::reassembly::{DirStream, Seg, Taken};
use super::span::Span;
use super::stats::ConnStats;
use super::witness::{Left, WitnessBuf};
use crate::proto::fields::{Body, UnparsedReason};
use crate::proto::{Parse, Parser, Protocol, make_parser};
use crate::types::{Call, Direction, GapReason, Transport};

/// Limits and counters shared by one table operation.
pub struct Ctx<'a> {
    pub cfg: &'a ConnConfig,
    pub stats: &'a mut ConnStats,
}

#[derive(Debug)]
pub(super) enum SyncState {
    /// At a message boundary; do not call the parser before `need_min` bytes.
    InSync { need_min: usize },
    /// Looking for a message boundary.
    Desynced,
    /// Inside a message being collected across a gap or the cap.
    Spanning(Box<Span>),
}

/// One direction: reassembly and where the parser stands in it.
#[derive(Debug)]
pub(super) struct DirState {
    pub stream: DirStream,
    pub sync: SyncState,
}

/// The parser and the assembler of one position space.
pub struct Parsing {
    pub(super) parser: Option<Box<dyn Parser>>,
    pub(super) asm: Assembler,
}

/// What a position space does with its in-order bytes.
// `Parse` is what nearly every connection holds: boxing it would add a
// pointer chase per event to save memory only on witness streams.
#[allow(clippy::large_enum_variant)]
pub enum Mode {
    /// Parse them into records.
    Parse(Parsing),
    /// Keep them for the other end's records to claim (two witnesses).
    Witness(Box<[WitnessBuf; 2]>),
}

/// Bytes of one direction capture reports it did not deliver.
#[derive(Clone, Copy, Debug)]
pub struct Missing {
    pub dir: Direction,
    /// Stream position of the first missing byte.
    pub pos: u64,
    pub len: u64,
    pub reason: GapReason,
    /// Kernel time of the report.
    pub ts: u64,
}

/// One position space of a connection.
pub struct Streams {
    /// TLS plaintext (own positions) rather than socket bytes.
    pub tls: bool,
    pub(super) dirs: [DirState; 2],
    /// Detected protocol.
    pub protocol: Protocol,
    pub mode: Mode,
    /// Highest per-direction totals the kernel reported on events.
    pub seen_totals: [u64; 2],
    /// Final per-direction totals (the close event), once known.
    pub final_totals: [Option<u64>; 2],
    /// Bytes taken from the streams so far (parsed, or handed to the buffers).
    pub consumed: u64,
    /// The first bytes were a TLS hello (the socket carries ciphertext).
    pub tls_ciphertext: bool,
}

impl Streams {
    /// An empty position space; `role_known` false means the connection was
    /// first seen mid-stream (parsing starts by looking for a message boundary).
    pub fn new(tls: bool, role_known: bool) -> Self {
        let sync = || if role_known { SyncState::InSync { need_min: 0 } } else { SyncState::Desynced };
        Streams {
            tls,
            dirs: [
                DirState { stream: DirStream::new(), sync: sync() },
                DirState { stream: DirStream::new(), sync: sync() },
            ],
            protocol: Protocol::Undetected,
            mode: Mode::Parse(Parsing { parser: None, asm: Assembler::new(tls) }),
            seen_totals: [0, 0],
            final_totals: [None, None],
            consumed: 0,
            tls_ciphertext: false,
        }
    }

    /// The role became known (an open event arrived after other events):
    /// parsing may start at a message boundary if it has not started.
    pub fn role_known(&mut self) {
        if let Mode::Parse(p) = &self.mode
            && p.parser.is_none()
            && self.consumed == 0
        {
            for d in &mut self.dirs {
                d.sync = SyncState::InSync { need_min: 0 };
            }
        }
    }

    /// Bytes held in memory.
    pub fn buffered(&self) -> usize {
        let streams: usize = self
            .dirs
            .iter()
            .map(|d| {
                d.stream.buffered()
                    + match &d.sync {
                        SyncState::Spanning(s) => s.raw.len(),
                        _ => 0,
                    }
            })
            .sum();
        streams
            + match &self.mode {
                Mode::Parse(p) => p.asm.buffered() + p.asm.out.iter().map(Draft::bytes).sum::<usize>(),
                Mode::Witness(b) => b[0].buffered() + b[1].buffered(),
            }
    }

    /// Payload bytes captured and gap bytes, per direction.
    pub fn accounting(&self, dir: Direction) -> (u64, u64) {
        let s = &self.dirs[dir.index()].stream;
        (s.captured, s.gap_bytes)
    }

    /// Ciphertext of `dir` counted and not kept (none on most streams).
    pub fn not_kept(&self, dir: Direction) -> Option<crate::record::NotKept> {
        let n = self.dirs[dir.index()].stream.not_kept;
        (n.calls > 0).then_some(n)
    }

    /// Application identity attributes of whoever sends in `dir`, as the
    /// parser learned them so far (none before the parser starts).
    pub(super) fn sender_attributes(&self, dir: Direction) -> crate::proto::AppAttrs {
        match &self.mode {
            Mode::Parse(p) => p.parser.as_ref().map(|p| p.sender_attributes(dir)).unwrap_or_default(),
            _ => Default::default(),
        }
    }

    /// The parser has started or bytes were consumed: too late to become a witness.
    pub fn started(&self) -> bool {
        self.consumed > 0
            || match &self.mode {
                Mode::Parse(p) => p.asm.pending() > 0 || !p.asm.out.is_empty(),
                Mode::Witness(_) => false,
            }
    }

    /// Drafts finished so far, appended to `out` (the assembler keeps its
    /// buffer, so no allocation per record).
    pub fn take_drafts_into(&mut self, out: &mut Vec<Draft>) {
        if let Mode::Parse(p) = &mut self.mode {
            out.append(&mut p.asm.out);
        }
    }

    /// The witness buffer of `dir`, in witness mode.
    pub fn witness_buf(&mut self, dir: Direction) -> Option<&mut WitnessBuf> {
        match &mut self.mode {
            Mode::Witness(b) => Some(&mut b[dir.index()]),
            Mode::Parse(_) => None,
        }
    }

    /// From now on keep in-order bytes for the other end's records.
    pub fn become_witness(&mut self) {
        let start = |d: &DirState| WitnessBuf::starting_at(d.stream.front_pos());
        self.mode = Mode::Witness(Box::new([start(&self.dirs[0]), start(&self.dirs[1])]));
    }

    /// Back to parsing on its own (the other end is gone): what no record
    /// claimed becomes segments, and parsing resumes at the next message boundary.
    pub fn become_standalone(&mut self, ctx: &mut Ctx<'_>) {
        let Mode::Witness(bufs) =
            std::mem::replace(&mut self.mode, Mode::Parse(Parsing { parser: None, asm: Assembler::new(self.tls) }))
        else {
            return;
        };
        let Mode::Parse(p) = &mut self.mode else { unreachable!("set above") };
        let mut bufs = *bufs;
        for dir in Direction::BOTH {
            for left in bufs[dir.index()].drain() {
                let piece = match left {
                    Left::Bytes(pos, t) => {
                        ctx.stats.witness_unclaimed_bytes += t.bytes.len() as u64;
                        unparsed(dir, pos, t, UnparsedReason::Unclaimed)
                    }
                    Left::Gap(g) => Piece::gap(dir, g),
                };
                p.asm.piece(ctx, piece);
            }
            p.asm.close_segment(dir);
            self.dirs[dir.index()].sync = SyncState::Desynced;
        }
    }

    /// Payload bytes at `pos` of `dir` (TCP: reassembled; UDP: one datagram).
    #[allow(clippy::too_many_arguments)]
    pub fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        hints: ConnHints,
        dir: Direction,
        pos: u64,
        ts: u64,
        call: Call,
        data: Bytes,
        peer: Option<SocketAddr>,
    ) {
        if hints.transport == Transport::Udp {
            self.on_datagram(ctx, hints, dir, pos, ts, call, data, peer);
            return;
        }
        let out = self.dirs[dir.index()].stream.insert_data(pos, ts, call, data, ctx.cfg.max_reorder_bytes);
        ctx.stats.overlap_bytes += out.overlap;
        ctx.stats.reorder_overflows += out.overflow_gaps;
        self.advance(ctx, hints, false);
    }

    /// Bytes capture knows it did not deliver.
    pub fn on_gap(&mut self, ctx: &mut Ctx<'_>, hints: ConnHints, missing: Missing) {
        let Missing { dir, pos, len, reason, ts } = missing;
        let out = self.dirs[dir.index()].stream.insert_gap(pos, len, reason, ts);
        ctx.stats.overlap_gap_bytes += out.overlap;
        if hints.transport == Transport::Udp {
            // Datagrams are not reassembled: the gap goes out as it is.
            self.dirs[dir.index()].stream.fill_to(pos + len, reason, ts);
        }
        self.advance(ctx, hints, false);
    }

    /// Holes whose later bytes are older than `deadline` become `lost` gaps.
    pub fn expire(&mut self, ctx: &mut Ctx<'_>, hints: ConnHints, deadline: u64) {
        let mut lost = 0;
        for d in &mut self.dirs {
            lost += d.stream.expire_holes(deadline);
        }
        if lost > 0 {
            ctx.stats.lost_bytes += lost;
            self.advance(ctx, hints, false);
        }
    }

    /// Every byte below the final counts (TCP) or the highest position seen
    /// that did not arrive becomes a gap; partial messages are recorded.
    pub fn finish(&mut self, ctx: &mut Ctx<'_>, hints: ConnHints, ts: u64) {
        let tcp = hints.transport == Transport::Tcp;
        for (i, d) in self.dirs.iter_mut().enumerate() {
            let total = self.final_totals[i].unwrap_or(self.seen_totals[i]);
            let waiting = d.stream.high_water() > d.stream.next_pos();
            let (target, reason) = match self.final_totals[i] {
                Some(_) if tcp => (total.max(d.stream.high_water()), GapReason::MissingAtClose),
                _ if tcp => (total.max(d.stream.high_water()), GapReason::MissingAtFlush),
                _ => (d.stream.high_water(), GapReason::MissingAtFlush),
            };
            if tcp || waiting {
                let before = d.stream.gap_bytes;
                d.stream.fill_to(target, reason, ts);
                ctx.stats.lost_bytes += d.stream.gap_bytes - before;
            }
        }
        self.advance(ctx, hints, true);
        if let Mode::Parse(p) = &mut self.mode {
            p.asm.finish(ctx);
        }
    }

    /// Close seen and both directions delivered up to the final counts.
    pub fn complete(&self, transport: Transport) -> bool {
        transport == Transport::Udp
            || self.dirs.iter().enumerate().all(|(i, d)| {
                let total = self.final_totals[i].unwrap_or(self.seen_totals[i]);
                d.stream.next_pos() >= total && d.stream.high_water() <= d.stream.next_pos()
            })
    }

    /// Time bounds of the assembler.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>, now: u64) {
        if let Mode::Parse(p) = &mut self.mode {
            p.asm.tick(ctx, now);
        }
    }

    fn advance(&mut self, ctx: &mut Ctx<'_>, hints: ConnHints, final_: bool) {
        match &mut self.mode {
            Mode::Witness(bufs) => {
                for (i, d) in self.dirs.iter_mut().enumerate() {
                    while let Some(seg) = d.stream.pop_front() {
                        match seg {
                            Seg::Data(mut data) => {
                                let pos = data.pos;
                                let n = data.len();
                                self.consumed += n as u64;
                                bufs[i].push_data(pos, data.take(n));
                            }
                            Seg::Gap(g) => bufs[i].push_gap(g),
                        }
                    }
                }
            }
            Mode::Parse(p) => {
                if p.parser.is_none() {
                    let Some((proto, client_dir, tls)) = detect_front(&mut self.dirs, ctx, hints, final_) else {
                        return;
                    };
                    self.protocol = proto;
                    self.tls_ciphertext = tls && !self.tls;
                    let parser = make_parser(proto, client_dir, hints.transport, &ctx.cfg.proto);
                    p.asm.gathers_unpaired = parser.gathers_unpaired();
                    p.parser = Some(parser);
                }
                let before: u64 = self.dirs.iter().map(|d| d.stream.front_pos()).sum();
                for dir in Direction::BOTH {
                    p.pump(&mut self.dirs, ctx, dir, final_);
                }
                let after: u64 = self.dirs.iter().map(|d| d.stream.front_pos()).sum();
                self.consumed += after.saturating_sub(before);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        hints: ConnHints,
        dir: Direction,
        pos: u64,
        ts: u64,
        call: Call,
        data: Bytes,
        peer: Option<SocketAddr>,
    ) {
        let st = &mut self.dirs[dir.index()].stream;
        st.captured += data.len() as u64;
        // Datagram positions only count bytes; keep the accounting moving.
        st.skip_to(pos + data.len() as u64);
        if data.is_empty() {
            return;
        }
        self.consumed += data.len() as u64;
        let Mode::Parse(p) = &mut self.mode else { return };
        if p.parser.is_none()
            && let Detect::Found(proto, client_dir) = detect_datagram(hints, Some((dir, &data)))
        {
            self.protocol = proto;
            p.parser = Some(make_parser(proto, client_dir, hints.transport, &ctx.cfg.proto));
        }
        let t = Taken {
            bytes: data.clone(),
            first_ts: ts,
            last_ts: ts,
            calls: vec![crate::record::CallMark { offset: 0, ns: ts, call }],
        };
        let Some(parser) = p.parser.as_mut() else {
            let mut piece = unparsed(dir, pos, t, UnparsedReason::UnknownProtocol);
            piece.peer = peer;
            p.asm.piece(ctx, piece);
            p.asm.close_segment(dir);
            return;
        };
        let kind = match parser.parse(dir, &data) {
            Parse::Message(m) => {
                let error = if m.len < data.len() {
                    Some(
                        m.error.unwrap_or_default()
                            + &format!("{} bytes after the message in the datagram", data.len() - m.len),
                    )
                } else {
                    m.error
                };
                let more = m.exchange.is_some_and(|(id, _)| parser.more_to_come(dir, id));
                let more_other = m.exchange.is_some_and(|(id, _)| parser.more_to_come(dir.opposite(), id));
                match m.body {
                    Body::Unparsed { reason } => PieceKind::Unparsed { reason, error },
                    body => PieceKind::Message { body, exchange: m.exchange, more, more_other, error },
                }
            }
            Parse::Need { .. } => {
                ctx.stats.incomplete_messages += 1;
                let partial = parser.interrupted(dir, &data);
                PieceKind::Message {
                    body: partial.body,
                    exchange: partial.exchange,
                    more: false,
                    more_other: false,
                    error: Some("datagram ends inside the message".to_string()),
                }
            }
            Parse::Invalid { error, .. } => {
                ctx.stats.malformed_messages += 1;
                PieceKind::Unparsed { reason: UnparsedReason::Malformed, error: Some(error) }
            }
        };
        let mut piece = Piece {
            dir,
            pos,
            len: t.bytes.len() as u64,
            bytes: t.bytes,
            first_ts: ts,
            last_ts: ts,
            calls: t.calls,
            gaps: Vec::new(),
            kind,
            peer: None,
        };
        piece.peer = peer;
        let unparsed = matches!(piece.kind, PieceKind::Unparsed { .. });
        p.asm.piece(ctx, piece);
        if unparsed {
            // Each datagram is its own record.
            p.asm.close_segment(dir);
        }
    }
}

/// A piece of bytes without fields.
fn unparsed(dir: Direction, pos: u64, t: Taken, reason: UnparsedReason) -> Piece {
    Piece {
        dir,
        pos,
        len: t.bytes.len() as u64,
        bytes: t.bytes,
        first_ts: t.first_ts,
        last_ts: t.last_ts,
        calls: t.calls,
        gaps: Vec::new(),
        kind: PieceKind::Unparsed { reason, error: None },
        peer: None,
    }
}

/// Protocol detection from the first in-order bytes of each direction; the
/// bool says they were a TLS hello.
fn detect_front(
    dirs: &mut [DirState; 2],
    ctx: &Ctx<'_>,
    hints: ConnHints,
    final_: bool,
) -> Option<(Protocol, Direction, bool)> {
    let mut fronts: [Bytes; 2] = [Bytes::new(), Bytes::new()];
    let mut forced = final_;
    for (i, st) in dirs.iter_mut().enumerate() {
        match st.stream.front_mut() {
            Some(Seg::Data(d)) => {
                let b = d.contiguous().clone();
                forced |= b.len() >= ctx.cfg.detect_max_bytes;
                fronts[i] = b;
            }
            Some(Seg::Gap(_)) => forced = true,
            None => {}
        }
    }
    match detect(hints, &fronts[0], &fronts[1], forced) {
        Detect::NeedMore => None,
        Detect::Found(proto, client_dir) => {
            Some((proto, client_dir, fronts.iter().any(|b| super::detect::looks_like_tls(b))))
        }
    }
}
