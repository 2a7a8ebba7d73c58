//! One direction's byte stream: chunks ordered by position (events from
//! different CPUs arrive out of order), explicit gap segments where bytes are
//! missing, and the in-order part waiting for the parser.
//!
//! Every byte below `next_pos` is accounted for, as data or as a gap. A hole
//! (bytes after it arrived, it did not) waits for the reorder window on the
//! kernel clock and then becomes a `Lost` gap ([`DirStream::expire_holes`]); at
//! the end the stream is filled to the kernel's final count
//! ([`DirStream::fill_to`]). Each chunk keeps the call that handed it over
//! and its kernel time, so records say where their bytes came from.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::record::CallMark;
use crate::types::{Call, GapReason};

/// Bookkeeping bytes charged per out-of-order entry (map node, handle).
const OOO_ENTRY_COST: usize = 64;

/// Where a chunk starts, when it was handed over and by which call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    pos: u64,
    ts: u64,
    call: Call,
}

/// Bytes taken from the front of the stream, with their provenance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The bytes.
    pub bytes: Bytes,
    /// Kernel time of the first and the last byte.
    pub first_ts: u64,
    pub last_ts: u64,
    /// The calls that handed them over (offsets from the first byte).
    pub calls: Vec<CallMark>,
}

/// In-order bytes not yet consumed, with the kernel time and call of each chunk.
#[derive(Debug, Default)]
pub struct DataSeg {
    /// Stream position of the first unconsumed byte.
    pub pos: u64,
    head: Bytes,
    tail: BytesMut,
    /// Each chunk start still (partly) unconsumed.
    marks: VecDeque<Mark>,
    /// Bytes the parser waits for (assembly buffer size hint).
    want: usize,
}

impl DataSeg {
    fn new(pos: u64, ts: u64, call: Call, data: Bytes) -> Self {
        let mut marks = VecDeque::with_capacity(2);
        marks.push_back(Mark { pos, ts, call });
        DataSeg { pos, head: data, tail: BytesMut::new(), marks, want: 0 }
    }

    fn append(&mut self, ts: u64, call: Call, data: &Bytes) {
        let end = self.pos + self.len() as u64;
        // A large call arrives as several chunks with one time and call: one mark.
        if self.marks.back().is_none_or(|m| m.ts != ts || m.call != call) {
            self.marks.push_back(Mark { pos: end, ts, call });
        }
        if self.head.is_empty() && self.tail.is_empty() {
            self.head = data.clone();
        } else {
            if self.tail.is_empty() {
                // Start assembling: copy the head once into a buffer sized for
                // the message being waited for, so each byte is copied once.
                let need = (self.head.len() + data.len()).max(self.want);
                self.tail.reserve(need);
                self.tail.extend_from_slice(&self.head);
                self.head = Bytes::new();
            }
            self.tail.extend_from_slice(data);
        }
    }

    /// The parser needs `n` contiguous bytes before it can progress: size the
    /// assembly buffer for it (capped by the caller).
    pub fn want(&mut self, n: usize) {
        self.want = n;
    }

    /// Unconsumed bytes.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All unconsumed bytes as one buffer (copies only when a message spans
    /// chunks).
    pub fn contiguous(&mut self) -> &Bytes {
        if !self.tail.is_empty() {
            if self.head.is_empty() {
                self.head = self.tail.split().freeze();
            } else {
                let mut all = BytesMut::with_capacity(self.head.len() + self.tail.len());
                all.extend_from_slice(&self.head);
                all.extend_from_slice(&self.tail);
                self.tail.clear();
                self.head = all.freeze();
            }
        }
        &self.head
    }

    /// Index of the mark of the chunk holding stream position `pos`.
    fn mark_at(&self, pos: u64) -> usize {
        self.marks.partition_point(|m| m.pos <= pos).saturating_sub(1)
    }

    /// Kernel time of the chunk holding stream position `pos`.
    pub fn ts_at(&self, pos: u64) -> u64 {
        self.marks.get(self.mark_at(pos)).map_or(0, |m| m.ts)
    }

    /// Remove the first `n` bytes (clamped to what is there), with the time of
    /// their first and last byte and the calls they came from.
    pub fn take(&mut self, n: usize) -> Taken {
        let n = n.min(self.len());
        if n > self.head.len() {
            self.contiguous();
        }
        let start = self.pos;
        let end = start + n as u64;
        let first_mark = self.mark_at(start);
        // The marks of the chunks the bytes came from (at least the first).
        let marks = self.marks.range(first_mark..).take_while(|m| m.pos < end).count();
        let mut calls = Vec::with_capacity(marks.max(1));
        let mut last_ts = 0;
        for m in self.marks.iter().skip(first_mark) {
            if m.pos >= end && !calls.is_empty() {
                break;
            }
            calls.push(CallMark { offset: m.pos.saturating_sub(start), ns: m.ts, call: m.call });
            last_ts = m.ts;
        }
        let first_ts = calls.first().map_or(0, |c| c.ns);
        let bytes = self.head.split_to(n);
        self.pos = end;
        self.want = 0;
        while self.marks.len() > 1 && self.marks[1].pos <= self.pos {
            self.marks.pop_front();
        }
        Taken { bytes, first_ts, last_ts, calls }
    }
}

/// A known-missing range at the front of the in-order part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapSeg {
    /// Stream position of the first missing byte.
    pub pos: u64,
    /// Missing bytes.
    pub len: u64,
    /// Why.
    pub reason: GapReason,
    /// Kernel time the gap was reported or declared.
    pub ts_ns: u64,
}

/// An in-order piece of the stream.
#[derive(Debug)]
pub enum Seg {
    /// Bytes.
    Data(DataSeg),
    /// Missing bytes.
    Gap(GapSeg),
}

#[derive(Debug)]
enum Ooo {
    Data { ts_ns: u64, call: Call, data: Bytes },
    Gap { ts_ns: u64, len: u64, reason: GapReason },
}

impl Ooo {
    fn len(&self) -> u64 {
        match self {
            Ooo::Data { data, .. } => data.len() as u64,
            Ooo::Gap { len, .. } => *len,
        }
    }

    fn cost(&self) -> usize {
        OOO_ENTRY_COST
            + match self {
                Ooo::Data { data, .. } => data.len(),
                Ooo::Gap { .. } => 0,
            }
    }

    /// Drop the first `n` bytes (n < len).
    fn trim_front(&mut self, n: u64) {
        match self {
            Ooo::Data { data, .. } => {
                let _ = data.split_to(n as usize);
            }
            Ooo::Gap { len, .. } => *len -= n,
        }
    }

    /// Keep only the first `n` bytes (n < len).
    fn truncate(&mut self, n: u64) {
        match self {
            Ooo::Data { data, .. } => data.truncate(n as usize),
            Ooo::Gap { len, .. } => *len = n,
        }
    }
}

/// What an insertion did beyond storing bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Bytes that overlapped bytes already held (first copy kept).
    pub overlap: u64,
    /// Gaps declared because the out-of-order window overflowed.
    pub overflow_gaps: u64,
}

/// Ordered reassembly of one direction.
#[derive(Debug, Default)]
pub struct DirStream {
    next_pos: u64,
    segs: VecDeque<Seg>,
    ooo: BTreeMap<u64, Ooo>,
    ooo_cost: usize,
    /// Payload bytes received.
    pub captured: u64,
    /// Bytes covered by gaps (reported or declared).
    pub gap_bytes: u64,
    /// TLS ciphertext counted, not kept ([`GapReason::CiphertextNotKept`]):
    /// not a gap, and never handed to a parser.
    pub not_kept: crate::record::NotKept,
}

impl DirStream {
    /// An empty stream expecting position 0.
    pub fn new() -> Self {
        DirStream::default()
    }

    /// Position of the next byte expected in order.
    pub fn next_pos(&self) -> u64 {
        self.next_pos
    }

    /// Stream bytes in order but not taken yet (data and gaps).
    pub fn queued(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Data(d) => d.len() as u64,
                Seg::Gap(g) => g.len,
            })
            .sum()
    }

    /// Position of the first byte in order not taken yet (`next_pos` less
    /// what is queued: the in-order pieces are contiguous up to `next_pos`).
    pub fn front_pos(&self) -> u64 {
        let pos = match self.segs.front() {
            Some(Seg::Data(d)) => d.pos,
            Some(Seg::Gap(g)) => g.pos,
            None => self.next_pos,
        };
        debug_assert_eq!(pos, self.next_pos - self.queued(), "in-order pieces are contiguous");
        pos
    }

    /// Datagrams: positions below `pos` were handed over whole (they are not
    /// reassembled); only later gaps are accounted here.
    pub fn skip_to(&mut self, pos: u64) {
        if pos > self.next_pos && self.segs.is_empty() {
            self.next_pos = pos;
        }
        self.drain();
    }

    /// Highest position known (in order or not).
    pub fn high_water(&self) -> u64 {
        self.ooo.iter().next_back().map_or(self.next_pos, |(p, e)| (p + e.len()).max(self.next_pos))
    }

    /// Bytes held in memory (in-order unconsumed plus out-of-order).
    pub fn buffered(&self) -> usize {
        let in_order: usize = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Data(d) => d.len(),
                Seg::Gap(_) => 0,
            })
            .sum();
        in_order + self.ooo_cost
    }

    /// The in-order front piece.
    pub fn front_mut(&mut self) -> Option<&mut Seg> {
        self.segs.front_mut()
    }

    /// True if another piece follows the front one.
    pub fn has_second(&self) -> bool {
        self.segs.len() > 1
    }

    /// Drop the front piece (after it was fully handled).
    pub fn pop_front(&mut self) -> Option<Seg> {
        self.segs.pop_front()
    }

    /// Insert payload bytes at `pos`, handed over by `call` at kernel time
    /// `ts_ns`. Out-of-order bytes beyond `max_reorder` turn the oldest hole
    /// into a `ReorderOverflow` gap.
    pub fn insert_data(&mut self, pos: u64, ts_ns: u64, call: Call, data: Bytes, max_reorder: usize) -> InsertOutcome {
        self.captured += data.len() as u64;
        let mut out = InsertOutcome::default();
        if data.is_empty() {
            return out;
        }
        self.insert(pos, Ooo::Data { ts_ns, call, data }, &mut out);
        while self.ooo_cost > max_reorder {
            let Some((&first, _)) = self.ooo.first_key_value() else {
                break;
            };
            let ts = self.ooo_ts(first);
            self.push_in_order_gap(first - self.next_pos, GapReason::ReorderOverflow, ts);
            out.overflow_gaps += 1;
            self.drain();
        }
        out
    }

    /// Insert a known-missing range.
    pub fn insert_gap(&mut self, pos: u64, len: u64, reason: GapReason, ts_ns: u64) -> InsertOutcome {
        let mut out = InsertOutcome::default();
        if len > 0 {
            self.insert(pos, Ooo::Gap { ts_ns, len, reason }, &mut out);
        }
        out
    }

    /// Declare every byte below `end` that has not arrived a gap with `reason`
    /// (the stream ended there), and move everything in order.
    pub fn fill_to(&mut self, end: u64, reason: GapReason, ts_ns: u64) {
        while let Some((&first, _)) = self.ooo.first_key_value() {
            if first > self.next_pos {
                self.push_in_order_gap(first - self.next_pos, reason, ts_ns);
            }
            self.drain();
        }
        if end > self.next_pos {
            self.push_in_order_gap(end - self.next_pos, reason, ts_ns);
        }
    }

    /// Holes whose later bytes arrived at or before `deadline_ns` (kernel
    /// time) are given up on: each becomes a `Lost` gap. Returns the bytes
    /// declared lost.
    pub fn expire_holes(&mut self, deadline_ns: u64) -> u64 {
        let mut lost = 0;
        while let Some((&first, item)) = self.ooo.first_key_value() {
            let ts = match item {
                Ooo::Data { ts_ns, .. } | Ooo::Gap { ts_ns, .. } => *ts_ns,
            };
            if ts > deadline_ns {
                break;
            }
            let n = first - self.next_pos;
            lost += n;
            self.push_in_order_gap(n, GapReason::Lost, ts);
            self.drain();
        }
        lost
    }

    /// Kernel time of the oldest out-of-order entry (waiting for a hole to fill).
    pub fn oldest_waiting_ts(&self) -> Option<u64> {
        self.ooo
            .values()
            .map(|i| match i {
                Ooo::Data { ts_ns, .. } | Ooo::Gap { ts_ns, .. } => *ts_ns,
            })
            .min()
    }

    fn ooo_ts(&self, pos: u64) -> u64 {
        match self.ooo.get(&pos) {
            Some(Ooo::Data { ts_ns, .. }) | Some(Ooo::Gap { ts_ns, .. }) => *ts_ns,
            None => 0,
        }
    }

    fn insert(&mut self, mut pos: u64, mut item: Ooo, out: &mut InsertOutcome) {
        // Already delivered in order: trim.
        if pos < self.next_pos {
            let skip = self.next_pos - pos;
            if skip >= item.len() {
                out.overlap += item.len();
                return;
            }
            out.overlap += skip;
            item.trim_front(skip);
            pos = self.next_pos;
        }
        if pos == self.next_pos && self.ooo.is_empty() {
            self.push_in_order(item);
            return;
        }
        // Trim against the out-of-order neighbours.
        if let Some((&p, prev)) = self.ooo.range(..=pos).next_back() {
            let prev_end = p + prev.len();
            if prev_end > pos {
                let skip = prev_end - pos;
                if skip >= item.len() {
                    out.overlap += item.len();
                    return;
                }
                out.overlap += skip;
                item.trim_front(skip);
                pos = prev_end;
            }
        }
        if let Some((&n, _)) = self.ooo.range(pos..).next() {
            let end = pos + item.len();
            if end > n {
                let keep = n - pos;
                if keep == 0 {
                    out.overlap += item.len();
                    return;
                }
                out.overlap += item.len() - keep;
                item.truncate(keep);
            }
        }
        self.ooo_cost += item.cost();
        self.ooo.insert(pos, item);
        self.drain();
    }

    /// Move out-of-order entries that became in order.
    fn drain(&mut self) {
        while let Some(entry) = self.ooo.first_entry() {
            if *entry.key() > self.next_pos {
                break;
            }
            let key = *entry.key();
            let mut item = entry.remove();
            self.ooo_cost -= item.cost();
            if key < self.next_pos {
                let skip = self.next_pos - key;
                if skip >= item.len() {
                    continue;
                }
                item.trim_front(skip);
            }
            self.push_in_order(item);
        }
    }

    fn push_in_order(&mut self, item: Ooo) {
        match item {
            Ooo::Data { ts_ns, call, data } => {
                let len = data.len();
                match self.segs.back_mut() {
                    Some(Seg::Data(d)) => d.append(ts_ns, call, &data),
                    _ => self.segs.push_back(Seg::Data(DataSeg::new(self.next_pos, ts_ns, call, data))),
                }
                self.next_pos += len as u64;
            }
            Ooo::Gap { ts_ns, len, reason } => self.push_in_order_gap(len, reason, ts_ns),
        }
    }

    fn push_in_order_gap(&mut self, len: u64, reason: GapReason, ts_ns: u64) {
        if len == 0 {
            return;
        }
        self.segs.push_back(Seg::Gap(GapSeg { pos: self.next_pos, len, reason, ts_ns }));
        if reason == GapReason::CiphertextNotKept {
            let n = &mut self.not_kept;
            n.first_ns = if n.calls == 0 { ts_ns } else { n.first_ns.min(ts_ns) };
            n.last_ns = n.last_ns.max(ts_ns);
            n.bytes += len;
            n.calls += 1;
        } else {
            self.gap_bytes += len;
        }
        self.next_pos += len;
    }
}

#[cfg(test)]
mod tests;
