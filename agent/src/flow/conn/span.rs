//! A message collected across a gap or the message cap into one record.

use bytes::BytesMut;

use crate::flow::input::GapReason;
use crate::proto::record::{Body, ExchangeRole, GapMarker};

/// A message whose bytes continue past a gap or the message cap: collected
/// into one record.
#[derive(Debug)]
pub(super) struct Span {
    pub(super) start_pos: u64,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    pub(super) raw: BytesMut,
    pub(super) keep_limit: usize,
    pub(super) gaps: Vec<GapMarker>,
    pub(super) remaining: u64,
    pub(super) body: Body,
    pub(super) exchange: Option<(u64, ExchangeRole)>,
    pub(super) error: String,
}

impl Span {
    pub(super) fn covered(&self) -> u64 {
        self.raw.len() as u64 + self.gaps.iter().map(|g| g.len).sum::<u64>()
    }

    pub(super) fn push_gap(&mut self, len: u64, reason: GapReason) {
        let offset = self.covered();
        if let Some(last) = self.gaps.last_mut()
            && last.reason == reason
            && last.offset + last.len == offset
        {
            last.len += len;
            return;
        }
        self.gaps.push(GapMarker { offset, len, reason });
    }

    /// Add present bytes, keeping up to the limit; returns bytes not kept.
    pub(super) fn absorb(&mut self, bytes: &[u8], ts: u64) -> u64 {
        let room = self.keep_limit.saturating_sub(self.raw.len());
        let keep = room.min(bytes.len());
        self.raw.extend_from_slice(&bytes[..keep]);
        let dropped = (bytes.len() - keep) as u64;
        if dropped > 0 {
            self.push_gap(dropped, GapReason::MessageCap);
        }
        self.last_ts = ts;
        dropped
    }
}
