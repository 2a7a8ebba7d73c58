//! The rules that move one direction's in-order bytes through the parser:
//! messages, invalid bytes, resynchronisation, gaps, caps and spans.

use bytes::BytesMut;

use super::{Conn, Ctx, DirState, Span, SyncState};
use crate::flow::input::Direction;
use crate::flow::stream::{GapSeg, Seg};
use crate::proto::Parse;
use crate::proto::record::{Body, UnparsedReason};

impl Conn {
    /// Turn the in-order front of `dir` into records.
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_>, dir: Direction, final_: bool) {
        let i = dir.index();
        let max_msg = ctx.cfg.proto.max_message_bytes.max(1);
        loop {
            let has_second = self.dirs[i].stream.has_second();
            let end_follows = has_second || final_;
            let DirState { stream, sync, .. } = &mut self.dirs[i];
            let Some(front) = stream.front_mut() else {
                break;
            };
            let d = match front {
                Seg::Gap(g) => {
                    let g = *g;
                    stream.pop_front();
                    self.handle_gap(ctx, dir, g);
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
                    let (bytes, _, last) = d.take(n);
                    ctx.stats.message_cap_bytes += span.absorb(&bytes, last);
                    span.remaining -= n as u64;
                    if span.remaining == 0 {
                        let SyncState::Spanning(span) = std::mem::replace(sync, SyncState::InSync { need_min: 0 })
                        else {
                            unreachable!("matched Spanning above")
                        };
                        self.emit_span(ctx, dir, span);
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
                        let (raw, first, last) = d.take(off);
                        let pos = d.pos - off as u64;
                        self.emit(
                            ctx,
                            dir,
                            pos,
                            raw,
                            Vec::new(),
                            first,
                            last,
                            Body::Unparsed { reason: UnparsedReason::Resync },
                            None,
                            None,
                        );
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
                                tracing::warn!(conn_id = self.id, protocol = ?self.protocol, len = p.len, "parser broke its contract; bytes recorded raw");
                                ctx.stats.parser_contract_violations += 1;
                                *sync = SyncState::Desynced;
                                len
                            } else {
                                p.len
                            };
                            if p.error.is_some() {
                                ctx.stats.malformed_messages += 1;
                            }
                            let pos = d.pos;
                            let (raw, first, last) = d.take(n);
                            self.emit(ctx, dir, pos, raw, Vec::new(), first, last, p.body, p.exchange, p.error);
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
                            let pos = d.pos;
                            let (raw, first, last) = d.take(n);
                            let body = Body::Unparsed { reason: UnparsedReason::Malformed };
                            self.emit(ctx, dir, pos, raw, Vec::new(), first, last, body, None, Some(error));
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
                            let (raw, first, last) = d.take(len);
                            let error = if over_cap {
                                ctx.stats.message_cap_hits += 1;
                                format!("message exceeds the {max_msg}-byte cap")
                            } else if has_second {
                                "message interrupted by a gap".to_string()
                            } else {
                                "stream ended inside the message".to_string()
                            };
                            let rest = partial.total.and_then(|t| t.checked_sub(len as u64)).filter(|r| *r > 0);
                            // Collect the rest of a message of known length
                            // into one record, unless the stream is over.
                            match rest {
                                Some(remaining) if !final_ || has_second => {
                                    let mut raw_buf = BytesMut::with_capacity(raw.len());
                                    raw_buf.extend_from_slice(&raw);
                                    *sync = SyncState::Spanning(Box::new(Span {
                                        start_pos: pos,
                                        first_ts: first,
                                        last_ts: last,
                                        keep_limit: if over_cap { raw.len() } else { max_msg },
                                        raw: raw_buf,
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
                                    self.emit(
                                        ctx,
                                        dir,
                                        pos,
                                        raw,
                                        Vec::new(),
                                        first,
                                        last,
                                        partial.body,
                                        partial.exchange,
                                        error,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        if final_ {
            let st = &mut self.dirs[i];
            if let SyncState::Spanning(_) = st.sync {
                let SyncState::Spanning(mut span) = std::mem::replace(&mut st.sync, SyncState::Desynced) else {
                    unreachable!("matched Spanning above")
                };
                span.error.push_str("; stream ended before the message did");
                self.emit_span(ctx, dir, span);
            }
        }
    }

    fn handle_gap(&mut self, ctx: &mut Ctx<'_>, dir: Direction, g: GapSeg) {
        self.emit_gap(ctx, dir, g);
        let st = &mut self.dirs[dir.index()];
        match &mut st.sync {
            SyncState::Spanning(span) if g.len < span.remaining => {
                span.push_gap(g.len, g.reason);
                span.remaining -= g.len;
                span.last_ts = span.last_ts.max(g.ts_ns);
            }
            SyncState::Spanning(_) => {
                let SyncState::Spanning(mut span) = std::mem::replace(&mut st.sync, SyncState::Desynced) else {
                    unreachable!("matched Spanning above")
                };
                let fits = g.len == span.remaining;
                span.push_gap(span.remaining, g.reason);
                span.remaining = 0;
                if fits {
                    st.sync = SyncState::InSync { need_min: 0 };
                } else if let Some(p) = self.parser.as_mut() {
                    p.gap(dir);
                }
                self.emit_span(ctx, dir, span);
            }
            _ => {
                st.sync = SyncState::Desynced;
                if let Some(p) = self.parser.as_mut() {
                    p.gap(dir);
                }
            }
        }
    }
}
