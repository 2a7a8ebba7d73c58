//! A message whose bytes continue past a gap or past the parse limit: its
//! bytes are collected (gaps inside it marked) and handed on in pieces of at
//! most the limit, so memory stays bounded and no byte is dropped.

use bytes::BytesMut;

use crate::proto::fields::{Body, ExchangeRole};
use crate::record::{CallMark, GapMark};
use crate::types::GapReason;

use super::reassembly::Taken;

/// A message being collected across a gap or the cap.
#[derive(Debug)]
pub(super) struct Span {
    pub(super) start_pos: u64,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    pub(super) raw: BytesMut,
    pub(super) calls: Vec<CallMark>,
    /// Bytes held before they are handed on as a piece.
    pub(super) keep_limit: usize,
    /// A first piece (with the parsed fields) was handed on: the rest are continuations.
    pub(super) flushed: bool,
    pub(super) gaps: Vec<GapMark>,
    /// Stream bytes of the message still to come.
    pub(super) remaining: u64,
    pub(super) body: Body,
    pub(super) exchange: Option<(u64, ExchangeRole)>,
    pub(super) error: String,
}

impl Span {
    /// Stream bytes covered so far (bytes kept, bytes dropped, gaps).
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
        self.gaps.push(GapMark { offset, len, reason });
    }

    /// Add present bytes.
    pub(super) fn absorb(&mut self, t: Taken) {
        let base = self.covered();
        self.calls.extend(t.calls.iter().map(|c| CallMark { offset: c.offset + base, ..*c }));
        self.raw.extend_from_slice(&t.bytes);
        if !t.bytes.is_empty() {
            self.last_ts = t.last_ts;
        }
    }

    /// Holding the limit or more, with more of the message to come: hand on what is held.
    pub(super) fn full(&self) -> bool {
        self.remaining > 0 && self.raw.len() >= self.keep_limit
    }

    /// Takes what is held as (start position, stream length, bytes, calls, gaps,
    /// first and last time); the span goes on from the next position.
    pub(super) fn take_held(&mut self) -> (u64, u64, bytes::Bytes, Vec<CallMark>, Vec<GapMark>, u64, u64) {
        let len = self.covered();
        let start = self.start_pos;
        let out = (
            start,
            len,
            std::mem::take(&mut self.raw).freeze(),
            std::mem::take(&mut self.calls),
            std::mem::take(&mut self.gaps),
            self.first_ts,
            self.last_ts,
        );
        self.start_pos = start + len;
        self.first_ts = self.last_ts;
        out
    }
}
