//! Turning parser results, gaps and spans into records, with request pairing.

use bytes::Bytes;

use super::{Conn, Ctx, Span};
use crate::flow::input::Direction;
use crate::flow::stream::GapSeg;
use crate::proto::record::{Body, Exchange, ExchangeRole, GapInfo, GapMarker, Raw, Record, UnparsedReason};

impl Conn {
    pub(super) fn exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        ex: Option<(u64, ExchangeRole)>,
        first: u64,
        last: u64,
    ) -> Option<Exchange> {
        let (id, role) = ex?;
        let mut latency_ns = None;
        match role {
            ExchangeRole::Request => {
                if self.pending.len() >= ctx.cfg.max_pending_exchanges.max(1) {
                    self.pending.pop_front();
                    ctx.stats.exchanges_dropped += 1;
                }
                self.pending.push_back((id, last));
            }
            ExchangeRole::Response => {
                if let Some(i) = self.pending.iter().position(|p| p.0 == id)
                    && let Some((_, req_last)) = self.pending.remove(i)
                {
                    latency_ns = Some(first.saturating_sub(req_last));
                }
            }
        }
        Some(Exchange { id, role, latency_ns })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Direction,
        pos: u64,
        raw: Bytes,
        gaps: Vec<GapMarker>,
        first: u64,
        last: u64,
        body: Body,
        exchange: Option<(u64, ExchangeRole)>,
        error: Option<String>,
    ) {
        let exchange = self.exchange(ctx, exchange, first, last);
        let stream_len = raw.len() as u64 + gaps.iter().map(|g| g.len).sum::<u64>();
        match &body {
            Body::Unparsed { reason: UnparsedReason::Resync } => ctx.stats.unparsed_bytes += raw.len() as u64,
            Body::Unparsed { reason: UnparsedReason::Malformed } => ctx.stats.malformed_messages += 1,
            _ => self.messages += 1,
        }
        ctx.stats.records += 1;
        ctx.out.push(Record {
            conn_id: self.id,
            direction: Some(dir),
            protocol: self.protocol,
            first_ts_ns: first,
            last_ts_ns: last,
            stream_pos: pos,
            stream_len,
            raw: Raw(raw),
            gaps,
            exchange,
            error,
            body,
        });
    }

    pub(super) fn emit_gap(&mut self, ctx: &mut Ctx<'_>, dir: Direction, g: GapSeg) {
        ctx.stats.gap_records += 1;
        ctx.stats.gap_bytes += g.len;
        ctx.stats.records += 1;
        ctx.out.push(Record {
            conn_id: self.id,
            direction: Some(dir),
            protocol: self.protocol,
            first_ts_ns: g.ts_ns,
            last_ts_ns: g.ts_ns,
            stream_pos: g.pos,
            stream_len: g.len,
            raw: Raw::default(),
            gaps: vec![GapMarker { offset: 0, len: g.len, reason: g.reason }],
            exchange: None,
            error: None,
            body: Body::Gap(GapInfo { len: g.len, reason: g.reason }),
        });
    }

    pub(super) fn emit_span(&mut self, ctx: &mut Ctx<'_>, dir: Direction, span: Box<Span>) {
        let s = *span;
        self.emit(
            ctx,
            dir,
            s.start_pos,
            s.raw.freeze(),
            s.gaps,
            s.first_ts,
            s.last_ts,
            s.body,
            s.exchange,
            Some(s.error),
        );
    }
}
