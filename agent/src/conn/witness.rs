//! Two witnesses. When both ends of a TCP conversation are captured on this
//! host (loopback, or two network namespaces), one end is the *primary*: it
//! parses and makes the records. The other is the *witness*: its bytes are
//! not parsed but kept here, by position, until the primary's record for the
//! same positions claims them. The record then carries both observations
//! (times, calls, gaps) and the bytes once; where the witness saw different
//! bytes (or bytes the primary missed), its bytes are kept beside the
//! primary's and the record carries a capture fault.
//!
//! Positions match because both sockets were opened under capture: the
//! client's egress position p is the server's ingress position p.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::reassembly::{GapSeg, Taken};
use crate::record::{CallMark, Fault, GapMark, Observation, Part, Raw};
use crate::types::GapReason;

#[derive(Debug)]
enum Piece {
    Data { bytes: Bytes, calls: Vec<CallMark>, first_ts: u64, last_ts: u64 },
    Gap { len: u64, reason: GapReason, ts: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Data { bytes, .. } => bytes.len() as u64,
            Piece::Gap { len, .. } => *len,
        }
    }

    /// The sub-piece `[a, b)` (offsets within the piece).
    fn slice(&self, a: u64, b: u64) -> Piece {
        match self {
            Piece::Data { bytes, calls, .. } => {
                let mut sub = Vec::new();
                for (i, c) in calls.iter().enumerate() {
                    let end = calls.get(i + 1).map_or(bytes.len() as u64, |n| n.offset);
                    if c.offset < b && end > a {
                        sub.push(CallMark { offset: c.offset.saturating_sub(a), ..*c });
                    }
                }
                let first_ts = sub.first().map_or(0, |c| c.ns);
                let last_ts = sub.last().map_or(0, |c| c.ns);
                Piece::Data { bytes: bytes.slice(a as usize..b as usize), calls: sub, first_ts, last_ts }
            }
            Piece::Gap { reason, ts, .. } => Piece::Gap { len: b - a, reason: *reason, ts: *ts },
        }
    }
}

/// What no record claimed.
#[derive(Debug)]
pub enum Left {
    /// Bytes at a position.
    Bytes(u64, Taken),
    /// A gap.
    Gap(GapSeg),
}

/// What a claim found: the witness's view of a stretch.
#[derive(Debug, Default)]
pub struct Claim {
    /// Times, calls and gaps (positions the witness never saw, as gaps).
    pub obs: Observation,
    /// The bytes it saw, with their offsets in the stretch.
    pub present: Vec<(u64, Bytes)>,
    /// Bytes of the stretch the witness has not delivered (yet).
    pub uncovered: u64,
}

/// One direction of the witness's stream, waiting to be claimed.
///
/// Pieces are kept in position order in a deque, not a map: they arrive in
/// order and are claimed from the front, so a push is a push at the back and
/// a claim a drain at the front; a map allocated and freed a node each time
/// the buffer emptied and filled again (once per exchange).
#[derive(Debug, Default)]
pub struct WitnessBuf {
    /// (position, piece), ascending, not overlapping.
    pieces: VecDeque<(u64, Piece)>,
    /// Every position below this was delivered (as bytes or a gap).
    covered_to: u64,
    bytes: usize,
}

impl WitnessBuf {
    /// A buffer whose positions start at `pos`.
    pub fn starting_at(pos: u64) -> Self {
        WitnessBuf { covered_to: pos, ..Default::default() }
    }

    /// Every position below this was delivered.
    pub fn covered_to(&self) -> u64 {
        self.covered_to
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.bytes
    }

    /// In-order bytes of the witness's stream.
    pub fn push_data(&mut self, pos: u64, t: Taken) {
        if t.bytes.is_empty() {
            return;
        }
        let len = t.bytes.len() as u64;
        self.bytes += t.bytes.len();
        self.covered_to = self.covered_to.max(pos + len);
        self.insert(pos, Piece::Data { bytes: t.bytes, calls: t.calls, first_ts: t.first_ts, last_ts: t.last_ts });
    }

    /// Adds `p` at `pos` in position order (replacing a piece at the same position).
    fn insert(&mut self, pos: u64, p: Piece) {
        if self.pieces.back().is_none_or(|(k, _)| *k < pos) {
            self.pieces.push_back((pos, p));
            return;
        }
        let i = self.pieces.partition_point(|(k, _)| *k < pos);
        match self.pieces.get_mut(i) {
            Some((k, old)) if *k == pos => *old = p,
            _ => self.pieces.insert(i, (pos, p)),
        }
    }

    /// An in-order gap of the witness's stream.
    pub fn push_gap(&mut self, g: GapSeg) {
        if g.len == 0 {
            return;
        }
        self.covered_to = self.covered_to.max(g.pos + g.len);
        // Ciphertext not kept runs on for the rest of the connection and the
        // other end has no parts there to claim it: one growing piece, not
        // one per call.
        if g.reason == GapReason::CiphertextNotKept
            && let Some((k, Piece::Gap { len, reason: GapReason::CiphertextNotKept, .. })) = self.pieces.back_mut()
            && *k + *len == g.pos
        {
            *len += g.len;
            return;
        }
        self.insert(g.pos, Piece::Gap { len: g.len, reason: g.reason, ts: g.ts_ns });
    }

    /// Takes the witness's view of `[pos, pos + len)` out of the buffer.
    pub fn claim(&mut self, pos: u64, len: u64) -> Claim {
        let end = pos + len;
        // The pieces overlapping [pos, end): from the one before `pos` if it
        // reaches into it, to the last one starting before `end`.
        let mut from = self.pieces.partition_point(|(k, _)| *k < pos);
        if from > 0 && self.pieces[from - 1].0 + self.pieces[from - 1].1.len() > pos {
            from -= 1;
        }
        let to = self.pieces.partition_point(|(k, _)| *k < end).max(from);
        let taken: Vec<(u64, Piece)> = self.pieces.drain(from..to).collect();
        let mut c = Claim::default();
        let mut at = pos;
        let mut first = true;
        for (k, piece) in taken {
            let plen = piece.len();
            if let Piece::Data { bytes, .. } = &piece {
                self.bytes -= bytes.len();
            }
            let a = pos.max(k) - k;
            let b = end.min(k + plen) - k;
            // Keep what lies outside the claim.
            if a > 0 {
                self.put(k, piece.slice(0, a));
            }
            if b < plen {
                self.put(k + b, piece.slice(b, plen));
            }
            // Most claims take whole pieces: moved, not sliced (a slice
            // allocates its call marks anew).
            let inside = if a == 0 && b == plen { piece } else { piece.slice(a, b) };
            let off = k + a - pos;
            if off > at - pos {
                // Never delivered (or claimed earlier): not seen here.
                c.obs.gaps.push(GapMark { offset: at - pos, len: off - (at - pos), reason: GapReason::Lost });
            }
            match inside {
                Piece::Data { bytes, calls, first_ts, last_ts } => {
                    if first {
                        c.obs.first_ns = first_ts;
                        first = false;
                    }
                    c.obs.last_ns = last_ts;
                    c.obs.calls.extend(calls.into_iter().map(|m| CallMark { offset: m.offset + off, ..m }));
                    c.present.push((off, bytes));
                }
                Piece::Gap { len, reason, ts } => {
                    if first {
                        c.obs.first_ns = ts;
                        first = false;
                    }
                    c.obs.gaps.push(GapMark { offset: off, len, reason });
                }
            }
            at = k + b;
        }
        if at < end {
            let covered = self.covered_to.clamp(at, end);
            if covered > at {
                // Delivered but not here: claimed by an earlier record already.
                c.obs.gaps.push(GapMark { offset: at - pos, len: covered - at, reason: GapReason::Lost });
            }
            c.uncovered = end - covered;
            c.obs.unseen = c.uncovered;
        }
        c
    }

    fn put(&mut self, pos: u64, p: Piece) {
        if let Piece::Data { bytes, .. } = &p {
            self.bytes += bytes.len();
        }
        self.insert(pos, p);
    }

    /// Everything left, in position order: bytes (and gaps) no record claimed.
    pub fn drain(&mut self) -> Vec<Left> {
        let mut out = Vec::new();
        for (pos, p) in std::mem::take(&mut self.pieces) {
            out.push(match p {
                Piece::Data { bytes, calls, first_ts, last_ts } => {
                    Left::Bytes(pos, Taken { bytes, first_ts, last_ts, calls })
                }
                Piece::Gap { len, reason, ts } => Left::Gap(GapSeg { pos, len, reason, ts_ns: ts }),
            });
        }
        self.bytes = 0;
        out
    }
}

/// Present stretches of a part as (offset, len), from its gaps.
fn present_ranges(len: u64, gaps: &[GapMark]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut gs: Vec<&GapMark> = gaps.iter().collect();
    gs.sort_by_key(|g| g.offset);
    for g in gs {
        if g.offset > at {
            out.push((at, g.offset - at));
        }
        at = at.max(g.offset + g.len);
    }
    if at < len {
        out.push((at, len - at));
    }
    out
}

/// Attaches a claim to part `index`: the witness's observation, its bytes when
/// they differ, and the faults found.
pub fn attach(part: &mut Part, index: usize, claim: Claim, faults: &mut Vec<Fault>) {
    let Claim { obs, present, uncovered } = claim;
    let no_gaps = obs.gaps.is_empty() && uncovered == 0 && part.seen.gaps.is_empty();
    // The usual case: both ends saw every byte; the witness's pieces follow
    // each other from offset 0 and compare equal slice by slice.
    if no_gaps {
        let mut at = 0usize;
        let same = present.iter().all(|(off, b)| {
            let ok = *off as usize == at && part.raw.0.get(at..at + b.len()) == Some(&b[..]);
            at += b.len();
            ok
        }) && at == part.raw.0.len();
        if same {
            part.witness = Some(obs);
            return;
        }
    }
    // Otherwise compare where both have bytes, range by range.
    let mine = present_ranges(part.len, &part.seen.gaps);
    let mut differ: Option<(u64, u64)> = None;
    let mut extra: u64 = 0;
    for (off, bytes) in &present {
        let (lo, hi) = (*off, off + bytes.len() as u64);
        let mut covered = 0u64;
        let mut base = 0u64;
        for &(o, l) in &mine {
            let (a, b) = (lo.max(o), hi.min(o + l));
            if a < b {
                covered += b - a;
                let theirs = &bytes[(a - lo) as usize..(b - lo) as usize];
                let ours = &part.raw.0[(base + a - o) as usize..(base + b - o) as usize];
                if theirs != ours
                    && let Some(i) = theirs.iter().zip(ours).position(|(x, y)| x != y)
                {
                    let j = theirs.iter().zip(ours).rposition(|(x, y)| x != y).unwrap_or(i);
                    let (first, last) = (a + i as u64, a + j as u64);
                    differ = Some(match differ {
                        Some((f, l)) => (f.min(first), l.max(last)),
                        None => (first, last),
                    });
                }
            }
            base += l;
        }
        extra += (hi - lo) - covered;
    }
    // Ciphertext the other end counted and did not keep (its plaintext is
    // captured) is stated in its observation's gaps, not missing.
    let missing_gaps = || obs.gaps.iter().filter(|g| g.reason != GapReason::CiphertextNotKept);
    let witness_missing: u64 = missing_gaps().map(|g| g.len).sum::<u64>() + uncovered;
    if let Some((first, last)) = differ {
        faults.push(Fault {
            kind: "witness_mismatch".into(),
            part: index,
            offset: first,
            len: last - first + 1,
            detail: format!(
                "the other end saw different bytes between offsets {first} and {last} of this part; its bytes are kept in witness_raw"
            ),
        });
    }
    if extra > 0 {
        faults.push(Fault {
            kind: "witness_filled_gap".into(),
            part: index,
            offset: 0,
            len: extra,
            detail: format!("the other end saw {extra} bytes this end did not; its bytes are kept in witness_raw"),
        });
    }
    if witness_missing > 0 {
        let first = missing_gaps().next().map_or(part.len - uncovered, |g| g.offset);
        faults.push(Fault {
            kind: "witness_missing".into(),
            part: index,
            offset: first,
            len: witness_missing,
            detail: if uncovered > 0 {
                format!(
                    "the other end did not see {witness_missing} bytes of this part; {uncovered} of them had not reached it when the record was made (if they do, they are recorded on their own)"
                )
            } else {
                format!("the other end did not see {witness_missing} bytes of this part")
            },
        });
    }
    if differ.is_some() || extra > 0 {
        let mut b = BytesMut::new();
        for (_, bytes) in &present {
            b.extend_from_slice(bytes);
        }
        part.witness_raw = Some(Raw(b.freeze()));
    }
    part.witness = Some(obs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PartRole, Raw};
    use crate::types::{Call, Direction};

    const R: Call = Call(wiretrail_common::SYS_READ);

    fn taken(b: &'static [u8], ts: u64) -> Taken {
        Taken {
            bytes: Bytes::from_static(b),
            first_ts: ts,
            last_ts: ts,
            calls: vec![CallMark { offset: 0, ns: ts, call: R }],
        }
    }

    fn part(pos: u64, raw: &'static [u8], gaps: Vec<GapMark>) -> Part {
        let len = raw.len() as u64 + gaps.iter().map(|g| g.len).sum::<u64>();
        Part {
            direction: Direction::Egress,
            role: PartRole::Request,
            pos,
            len,
            raw: Raw(Bytes::from_static(raw)),
            seen: Observation { first_ns: 1, last_ns: 1, calls: vec![], gaps, unseen: 0 },
            witness: None,
            witness_raw: None,
            tls: false,
            peer: None,
        }
    }

    #[test]
    fn claims_split_pieces_and_keep_the_rest() {
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"GET / HT", 10));
        w.push_data(8, taken(b"TP/1.1\r\n", 20));
        assert_eq!(w.covered_to(), 16);
        let c = w.claim(4, 8);
        assert_eq!(c.uncovered, 0);
        assert_eq!(
            c.present.iter().map(|(o, b)| (*o, b.to_vec())).collect::<Vec<_>>(),
            vec![(0, b"/ HT".to_vec()), (4, b"TP/1".to_vec())]
        );
        assert_eq!((c.obs.first_ns, c.obs.last_ns), (10, 20));
        assert_eq!(c.obs.calls.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0, 4]);
        // What is left is still claimable.
        let rest = w.claim(0, 4);
        assert_eq!(rest.present[0].1, Bytes::from_static(b"GET "));
        let tail = w.claim(12, 4);
        assert_eq!(tail.present[0].1, Bytes::from_static(b".1\r\n"));
        assert_eq!(w.buffered(), 0);
    }

    #[test]
    fn equal_bytes_attach_without_faults() {
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"hello", 5));
        let mut p = part(0, b"hello", vec![]);
        let mut faults = vec![];
        attach(&mut p, 0, w.claim(0, 5), &mut faults);
        assert!(faults.is_empty());
        assert!(p.witness_raw.is_none());
        assert_eq!(p.witness.as_ref().unwrap().first_ns, 5);
    }

    #[test]
    fn different_bytes_are_kept_and_flagged() {
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"hellO", 5));
        let mut p = part(0, b"hello", vec![]);
        let mut faults = vec![];
        attach(&mut p, 0, w.claim(0, 5), &mut faults);
        assert_eq!(faults.len(), 1);
        assert_eq!((faults[0].kind.as_str(), faults[0].offset, faults[0].len), ("witness_mismatch", 4, 1));
        assert_eq!(p.witness_raw.as_ref().unwrap().0, Bytes::from_static(b"hellO"));
    }

    #[test]
    fn witness_fills_our_gap_and_we_fill_its() {
        // We missed bytes 2..4; the witness saw them but missed 5..6.
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"abcde", 1));
        w.push_gap(GapSeg { pos: 5, len: 1, reason: GapReason::Lost, ts_ns: 2 });
        let mut p = part(0, b"abef", vec![GapMark { offset: 2, len: 2, reason: GapReason::Lost }]);
        let mut faults = vec![];
        attach(&mut p, 0, w.claim(0, 6), &mut faults);
        let kinds: Vec<(&str, u64)> = faults.iter().map(|f| (f.kind.as_str(), f.len)).collect();
        assert_eq!(kinds, vec![("witness_filled_gap", 2), ("witness_missing", 1)], "{faults:?}");
        assert_eq!(p.witness_raw.as_ref().unwrap().0, Bytes::from_static(b"abcde"));
        assert_eq!(p.witness.as_ref().unwrap().gaps, vec![GapMark { offset: 5, len: 1, reason: GapReason::Lost }]);
    }

    #[test]
    fn ciphertext_not_kept_is_one_piece_however_many_calls() {
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"hello", 1));
        for i in 0..10_000u64 {
            w.push_gap(GapSeg { pos: 5 + i * 40, len: 40, reason: GapReason::CiphertextNotKept, ts_ns: 2 + i });
        }
        assert_eq!(w.pieces.len(), 2, "the bytes, then one not-kept stretch");
        let c = w.claim(0, 5 + 80);
        assert_eq!(c.obs.gaps, vec![GapMark { offset: 5, len: 80, reason: GapReason::CiphertextNotKept }]);
        assert_eq!(w.pieces.front().map(|(k, p)| (*k, p.len())), Some((85, 399_920)), "the rest stays, as one piece");
    }

    #[test]
    fn bytes_not_delivered_yet_are_unseen_not_gaps() {
        let mut w = WitnessBuf::default();
        w.push_data(0, taken(b"ab", 1));
        let c = w.claim(0, 5);
        assert_eq!((c.uncovered, c.obs.unseen), (3, 3));
        assert!(c.obs.gaps.is_empty());
        // When they come they are still there, for the witness's own records.
        w.push_data(2, taken(b"cde", 2));
        assert_eq!(w.drain().len(), 1);
    }
}
