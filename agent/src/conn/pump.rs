//! The rules that move one direction's in-order bytes through the parser:
//! messages, invalid bytes, resynchronisation, gaps, caps and spans. What
//! comes out are [`Piece`]s for the assembler (`super::assemble`).

use bytes::BytesMut;

use super::reassembly::{GapSeg, Seg, Taken};
use super::span::Span;
use super::streams::{Ctx, DirState, Parsing, SyncState};
use crate::proto::Parse;
use crate::proto::fields::{Body, ExchangeRole, UnparsedReason};
use crate::record::{CallMark, GapMark};
use crate::types::{Direction, GapReason};

/// What a piece of stream is.
#[derive(Debug)]
pub(super) enum PieceKind {
    /// A parsed message (possibly cut short: `error` says so).
    Message {
        body: Body,
        exchange: Option<(u64, ExchangeRole)>,
        /// More messages of the same exchange and role follow.
        more: bool,
        /// More messages of the same exchange follow in the other direction.
        more_other: bool,
        error: Option<String>,
    },
    /// Bytes no parser claimed.
    Unparsed { reason: UnparsedReason, error: Option<String> },
    /// Bytes known missing, between messages.
    Gap { reason: GapReason },
    /// More bytes of the message before, which was larger than the parse
    /// limit (its fields are on its first piece); `last` on the final piece.
    Continuation { exchange: Option<(u64, ExchangeRole)>, last: bool },
}

/// A contiguous stretch of one direction, with its provenance.
#[derive(Debug)]
pub(super) struct Piece {
    pub dir: Direction,
    pub pos: u64,
    /// Stream bytes covered (bytes present plus gaps).
    pub len: u64,
    pub bytes: bytes::Bytes,
    pub first_ts: u64,
    pub last_ts: u64,
    pub calls: Vec<CallMark>,
    pub gaps: Vec<GapMark>,
    pub kind: PieceKind,
    /// Unconnected UDP: the datagram's own peer.
    pub peer: Option<std::net::SocketAddr>,
}

impl Piece {
    fn taken(dir: Direction, pos: u64, t: Taken, kind: PieceKind) -> Piece {
        Piece {
            dir,
            pos,
            len: t.bytes.len() as u64,
            bytes: t.bytes,
            first_ts: t.first_ts,
            last_ts: t.last_ts,
            calls: t.calls,
            gaps: Vec::new(),
            kind,
            peer: None,
        }
    }

    pub(super) fn gap(dir: Direction, g: GapSeg) -> Piece {
        Piece {
            dir,
            pos: g.pos,
            len: g.len,
            bytes: bytes::Bytes::new(),
            first_ts: g.ts_ns,
            last_ts: g.ts_ns,
            calls: Vec::new(),
            gaps: vec![GapMark { offset: 0, len: g.len, reason: g.reason }],
            kind: PieceKind::Gap { reason: g.reason },
            peer: None,
        }
    }

    /// What a span holds, as a piece: the message with its fields, or a
    /// continuation of it after a first piece was handed on.
    fn span(dir: Direction, s: &mut Span, last: bool) -> Piece {
        let (pos, len, bytes, calls, gaps, first_ts, last_ts) = s.take_held();
        let kind = if s.flushed {
            PieceKind::Continuation { exchange: s.exchange, last }
        } else {
            s.flushed = true;
            PieceKind::Message {
                body: std::mem::replace(&mut s.body, Body::Unparsed { reason: UnparsedReason::Resync }),
                exchange: s.exchange,
                more: !last,
                more_other: false,
                error: Some(s.error.clone()),
            }
        };
        Piece { dir, pos, len, bytes, first_ts, last_ts, calls, gaps, kind, peer: None }
    }
}

impl Parsing {
    /// Turn the in-order front of `dir` into pieces (handed to the assembler).
    pub(super) fn pump(&mut self, dirs: &mut [DirState; 2], ctx: &mut Ctx<'_>, dir: Direction, final_: bool) {
        let i = dir.index();
        let max_msg = ctx.cfg.proto.max_message_bytes.max(1);
        loop {
            let has_second = dirs[i].stream.has_second();
            let end_follows = has_second || final_;
            let DirState { stream, sync, .. } = &mut dirs[i];
            let Some(front) = stream.front_mut() else {
                break;
            };
            let d = match front {
                Seg::Gap(g) => {
                    let g = *g;
                    stream.pop_front();
                    if g.reason == GapReason::CiphertextNotKept {
                        // Counted by the stream (`DirStream::not_kept`), stated
                        // in the connection record: no piece, no gap record,
                        // no gap mark. A message it cuts ends where the kept
                        // bytes do, saying why.
                        if let SyncState::Spanning(mut span) = std::mem::replace(sync, SyncState::Desynced) {
                            span.error
                                .push_str("; the rest is TLS ciphertext counted, not kept (its plaintext is captured)");
                            self.asm.piece(ctx, Piece::span(dir, &mut span, true));
                        }
                        *sync = SyncState::Desynced;
                        if let Some(p) = self.parser.as_mut() {
                            p.gap(dir);
                        }
                        self.asm.close_segment(dir);
                        continue;
                    }
                    self.handle_gap(sync, ctx, dir, g);
                    continue;
                }
                Seg::Data(d) => d,
            };
            let len = d.len();
            if len == 0 {
                if has_second {
                    stream.pop_front();
                    continue;
                }
                break;
            }
            let Some(parser) = self.parser.as_mut() else {
                return;
            };
            match sync {
                SyncState::Spanning(span) => {
                    let n = (span.remaining.min(len as u64)) as usize;
                    let t = d.take(n);
                    span.absorb(t);
                    span.remaining -= n as u64;
                    if span.full() {
                        ctx.stats.message_cap_bytes += span.raw.len() as u64;
                        self.asm.piece(ctx, Piece::span(dir, span, false));
                    } else if span.remaining == 0 {
                        let SyncState::Spanning(mut span) = std::mem::replace(sync, SyncState::InSync { need_min: 0 })
                        else {
                            unreachable!("matched Spanning above")
                        };
                        self.asm.piece(ctx, Piece::span(dir, &mut span, true));
                    }
                }
                SyncState::Desynced => {
                    let buf = d.contiguous().clone();
                    let off = match parser.resync(dir, &buf) {
                        Some(off) if off <= len => {
                            *sync = SyncState::InSync { need_min: 0 };
                            off
                        }
                        _ => len,
                    };
                    if off > 0 {
                        let pos = d.pos;
                        let t = d.take(off);
                        ctx.stats.unparsed_bytes += off as u64;
                        let kind = PieceKind::Unparsed { reason: UnparsedReason::Resync, error: None };
                        self.asm.piece(ctx, Piece::taken(dir, pos, t, kind));
                    }
                }
                SyncState::InSync { need_min } => {
                    if len < *need_min && len < max_msg && !end_follows {
                        break;
                    }
                    match parser.parse(dir, d.contiguous()) {
                        Parse::Message(p) => {
                            *need_min = 0;
                            let n = if p.len == 0 || p.len > len {
                                tracing::warn!(protocol = ?parser.protocol(), len = p.len, "parser broke its contract; bytes recorded raw");
                                ctx.stats.parser_contract_violations += 1;
                                *sync = SyncState::Desynced;
                                len
                            } else {
                                p.len
                            };
                            if p.error.is_some() {
                                ctx.stats.malformed_messages += 1;
                            }
                            let more = p.exchange.is_some_and(|(id, _)| parser.more_to_come(dir, id));
                            let more_other = p.exchange.is_some_and(|(id, _)| parser.more_to_come(dir.opposite(), id));
                            let pos = d.pos;
                            let t = d.take(n);
                            let kind = match p.body {
                                Body::Unparsed { reason } => PieceKind::Unparsed { reason, error: p.error },
                                body => {
                                    PieceKind::Message { body, exchange: p.exchange, more, more_other, error: p.error }
                                }
                            };
                            self.asm.piece(ctx, Piece::taken(dir, pos, t, kind));
                        }
                        Parse::Invalid { len: n, error } => {
                            let n = if n == 0 || n > len {
                                ctx.stats.parser_contract_violations += 1;
                                len
                            } else {
                                n
                            };
                            *sync = SyncState::Desynced;
                            parser.gap(dir);
                            ctx.stats.malformed_messages += 1;
                            let pos = d.pos;
                            let t = d.take(n);
                            let kind = PieceKind::Unparsed { reason: UnparsedReason::Malformed, error: Some(error) };
                            self.asm.piece(ctx, Piece::taken(dir, pos, t, kind));
                        }
                        Parse::Need { min_len, total } => {
                            let _ = total; // the partial below reports the same length
                            let over_cap = len >= max_msg;
                            if !over_cap && !end_follows {
                                *need_min = min_len.max(len + 1);
                                d.want((*need_min).min(max_msg));
                                break;
                            }
                            let partial = parser.interrupted(dir, d.contiguous());
                            ctx.stats.incomplete_messages += 1;
                            let pos = d.pos;
                            let t = d.take(len);
                            let error = if over_cap {
                                ctx.stats.message_cap_hits += 1;
                                format!(
                                    "message larger than the {max_msg}-byte parse limit: fields from its first bytes, all its bytes kept"
                                )
                            } else if has_second {
                                "message interrupted by a gap".to_string()
                            } else {
                                "stream ended inside the message".to_string()
                            };
                            let rest = partial.total.and_then(|t| t.checked_sub(len as u64)).filter(|r| *r > 0);
                            // Collect the rest of a message of known length
                            // into one piece, unless the stream is over.
                            match rest {
                                Some(remaining) if !final_ || has_second => {
                                    let mut raw = BytesMut::with_capacity(t.bytes.len());
                                    raw.extend_from_slice(&t.bytes);
                                    *sync = SyncState::Spanning(Box::new(Span {
                                        start_pos: pos,
                                        first_ts: t.first_ts,
                                        last_ts: t.last_ts,
                                        keep_limit: max_msg,
                                        flushed: false,
                                        raw,
                                        calls: t.calls,
                                        gaps: Vec::new(),
                                        remaining,
                                        body: partial.body,
                                        exchange: partial.exchange,
                                        error,
                                    }));
                                }
                                _ => {
                                    *sync = SyncState::Desynced;
                                    let error = if partial.complete_at_end && final_ && !has_second && !over_cap {
                                        ctx.stats.incomplete_messages -= 1;
                                        None
                                    } else {
                                        Some(error)
                                    };
                                    let kind = match partial.body {
                                        Body::Unparsed { reason } => PieceKind::Unparsed { reason, error },
                                        body => PieceKind::Message {
                                            body,
                                            exchange: partial.exchange,
                                            more: false,
                                            more_other: false,
                                            error,
                                        },
                                    };
                                    self.asm.piece(ctx, Piece::taken(dir, pos, t, kind));
                                }
                            }
                        }
                    }
                }
            }
        }
        if final_ && let SyncState::Spanning(_) = dirs[i].sync {
            let SyncState::Spanning(mut span) = std::mem::replace(&mut dirs[i].sync, SyncState::Desynced) else {
                unreachable!("matched Spanning above")
            };
            span.error.push_str("; stream ended before the message did");
            self.asm.piece(ctx, Piece::span(dir, &mut span, true));
        }
    }

    fn handle_gap(&mut self, sync: &mut SyncState, ctx: &mut Ctx<'_>, dir: Direction, g: GapSeg) {
        match sync {
            SyncState::Spanning(span) if g.len < span.remaining => {
                span.push_gap(g.len, g.reason);
                span.remaining -= g.len;
                span.last_ts = span.last_ts.max(g.ts_ns);
            }
            SyncState::Spanning(_) => {
                let SyncState::Spanning(mut span) = std::mem::replace(sync, SyncState::Desynced) else {
                    unreachable!("matched Spanning above")
                };
                let fits = g.len == span.remaining;
                span.push_gap(span.remaining, g.reason);
                let rest = g.len - span.remaining;
                span.remaining = 0;
                if fits {
                    *sync = SyncState::InSync { need_min: 0 };
                } else if let Some(p) = self.parser.as_mut() {
                    p.gap(dir);
                }
                let message_end = span.start_pos + span.covered();
                self.asm.piece(ctx, Piece::span(dir, &mut span, true));
                if rest > 0 {
                    // The gap runs past the message: the rest is a gap of its own.
                    self.asm.piece(ctx, Piece::gap(dir, GapSeg { pos: message_end, len: rest, ..g }));
                }
            }
            _ => {
                *sync = SyncState::Desynced;
                if let Some(p) = self.parser.as_mut() {
                    p.gap(dir);
                }
                self.asm.piece(ctx, Piece::gap(dir, g));
            }
        }
    }
}
