//! Byte accounting for one direction of one connection.
use std::{collections::BTreeMap, time::Instant};

/// Received byte ranges of one direction; everything below `next` is accounted for.
#[derive(Debug, Default)]
pub struct StreamAccount {
    /// Every byte below this position was seen (as data or an explicit gap).
    pub next: u64,
    /// Ranges seen beyond `next`: start → (end, when first seen). The holes between
    /// them are bytes not (yet) seen: late events from other CPUs, or lost ones.
    ahead: BTreeMap<u64, (u64, Instant)>,
}

/// A missing range found by [`StreamAccount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    pub pos: u64,
    pub len: u64,
}

impl StreamAccount {
    /// Records that `[pos, pos + len)` was seen. Returns the number of bytes that
    /// overlapped what was already accounted for (should be 0).
    pub fn seen(&mut self, pos: u64, len: u64, now: Instant) -> u64 {
        let end = pos + len;
        if end <= self.next {
            return len;
        }
        let overlap = self.next.saturating_sub(pos);
        let pos = pos.max(self.next);
        if pos == self.next {
            self.next = end;
            self.absorb();
        } else {
            let e = self.ahead.entry(pos).or_insert((end, now));
            e.0 = e.0.max(end);
        }
        overlap
    }

    fn absorb(&mut self) {
        while let Some((&start, &(end, _))) = self.ahead.first_key_value() {
            if start > self.next {
                break;
            }
            self.ahead.pop_first();
            self.next = self.next.max(end);
        }
    }

    /// True if bytes beyond `next` are waiting for a hole to fill.
    pub fn has_holes(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// Declares holes older than `deadline` lost: returns them and moves past them.
    pub fn expire(&mut self, deadline: Instant) -> Vec<Hole> {
        let mut out = Vec::new();
        while let Some((&start, &(_, first))) = self.ahead.first_key_value() {
            if first > deadline {
                break;
            }
            out.push(Hole { pos: self.next, len: start - self.next });
            self.next = start;
            self.absorb();
        }
        out
    }

    /// Closes the account at `total` bytes: every byte below it not seen is a hole.
    pub fn finish(&mut self, total: u64) -> Vec<Hole> {
        let mut out = Vec::new();
        while let Some((start, (end, _))) = self.ahead.pop_first() {
            if start > self.next {
                out.push(Hole { pos: self.next, len: start - self.next });
            }
            self.next = self.next.max(end);
        }
        if total > self.next {
            out.push(Hole { pos: self.next, len: total - self.next });
            self.next = total;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_has_no_holes() {
        let now = Instant::now();
        let mut s = StreamAccount::default();
        assert_eq!(s.seen(0, 10, now), 0);
        assert_eq!(s.seen(10, 5, now), 0);
        assert_eq!(s.next, 15);
        assert!(s.finish(15).is_empty());
    }

    #[test]
    fn late_chunk_fills_hole() {
        let now = Instant::now();
        let mut s = StreamAccount::default();
        s.seen(10, 5, now);
        assert!(s.has_holes());
        s.seen(0, 10, now);
        assert!(!s.has_holes());
        assert_eq!(s.next, 15);
    }

    #[test]
    fn expired_hole_is_reported_once() {
        let t0 = Instant::now();
        let mut s = StreamAccount::default();
        s.seen(0, 4, t0);
        s.seen(10, 4, t0);
        assert!(s.expire(t0 - Duration::from_millis(1)).is_empty());
        assert_eq!(s.expire(t0), vec![Hole { pos: 4, len: 6 }]);
        assert_eq!(s.next, 14);
        assert!(s.expire(t0 + Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn finish_reports_inner_and_trailing_holes() {
        let now = Instant::now();
        let mut s = StreamAccount::default();
        s.seen(0, 4, now);
        s.seen(8, 2, now);
        assert_eq!(s.finish(20), vec![Hole { pos: 4, len: 4 }, Hole { pos: 10, len: 10 }]);
    }

    proptest! {
        /// Any arrival order of a stream's chunks, with some chunks lost, accounts
        /// for every byte exactly once: seen bytes + hole bytes == total.
        #[test]
        fn every_byte_accounted_once(sizes in prop::collection::vec(1u64..5000, 1..40),
                                      order in prop::collection::vec(any::<u32>(), 40),
                                      lost in prop::collection::vec(any::<bool>(), 40)) {
            let now = Instant::now();
            let mut chunks = Vec::new();
            let mut pos = 0;
            for s in &sizes { chunks.push((pos, *s)); pos += s; }
            let total = pos;
            let mut idx: Vec<usize> = (0..chunks.len()).collect();
            idx.sort_by_key(|&i| order[i]);
            let mut s = StreamAccount::default();
            let mut seen = 0;
            for i in idx {
                if lost[i] { continue; }
                prop_assert_eq!(s.seen(chunks[i].0, chunks[i].1, now), 0);
                seen += chunks[i].1;
            }
            let holes: u64 = s.finish(total).iter().map(|h| h.len).sum();
            prop_assert_eq!(seen + holes, total);
            let expected_lost: u64 = chunks.iter().zip(&lost).filter(|(_, l)| **l).map(|(c, _)| c.1).sum();
            prop_assert_eq!(holes, expected_lost);
        }
    }
}
