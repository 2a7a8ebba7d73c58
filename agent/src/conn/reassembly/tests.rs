//! Unit and property tests of one direction's reassembly.

use super::*;
use proptest::prelude::*;

const W: Call = Call(wiretrail_common::SYS_WRITE);
const R: Call = Call(wiretrail_common::SYS_READ);

/// Flatten the in-order part: bytes, with gaps as `None` runs.
fn drain_all(s: &mut DirStream) -> Vec<(u64, Option<Vec<u8>>, u64)> {
    let mut out = Vec::new();
    while let Some(seg) = s.pop_front() {
        match seg {
            Seg::Data(mut d) => {
                let pos = d.pos;
                let n = d.len();
                let t = d.take(n);
                out.push((pos, Some(t.bytes.to_vec()), n as u64));
            }
            Seg::Gap(g) => out.push((g.pos, None, g.len)),
        }
    }
    out
}

#[test]
fn in_order_chunks_merge_into_one_segment() {
    let mut s = DirStream::new();
    s.insert_data(0, 1, W, Bytes::from_static(b"hello "), 1 << 20);
    s.insert_data(6, 2, W, Bytes::from_static(b"world"), 1 << 20);
    assert_eq!(s.next_pos(), 11);
    assert_eq!(drain_all(&mut s), vec![(0, Some(b"hello world".to_vec()), 11)]);
}

#[test]
fn out_of_order_waits_for_the_hole() {
    let mut s = DirStream::new();
    s.insert_data(5, 2, W, Bytes::from_static(b"world"), 1 << 20);
    assert!(s.front_mut().is_none());
    assert_eq!(s.buffered(), 5 + OOO_ENTRY_COST);
    s.insert_data(0, 1, W, Bytes::from_static(b"hello"), 1 << 20);
    assert_eq!(s.buffered(), 10);
    assert_eq!(drain_all(&mut s), vec![(0, Some(b"helloworld".to_vec()), 10)]);
    assert_eq!(s.buffered(), 0);
}

#[test]
fn timestamps_follow_chunks() {
    let mut s = DirStream::new();
    s.insert_data(0, 100, W, Bytes::from_static(b"abc"), 1 << 20);
    s.insert_data(3, 200, W, Bytes::from_static(b"def"), 1 << 20);
    s.insert_data(6, 300, R, Bytes::from_static(b"gh"), 1 << 20);
    let Some(Seg::Data(d)) = s.front_mut() else { panic!("no data") };
    let t = d.take(4);
    assert_eq!((&t.bytes[..], t.first_ts, t.last_ts), (&b"abcd"[..], 100, 200));
    assert_eq!(t.calls, vec![CallMark { offset: 0, ns: 100, call: W }, CallMark { offset: 3, ns: 200, call: W }]);
    let t = d.take(4);
    assert_eq!((&t.bytes[..], t.first_ts, t.last_ts), (&b"efgh"[..], 200, 300));
    assert_eq!(t.calls, vec![CallMark { offset: 0, ns: 200, call: W }, CallMark { offset: 2, ns: 300, call: R }]);
}

#[test]
fn explicit_gap_becomes_a_segment() {
    let mut s = DirStream::new();
    s.insert_data(0, 1, W, Bytes::from_static(b"ab"), 1 << 20);
    s.insert_data(7, 3, W, Bytes::from_static(b"hi"), 1 << 20);
    s.insert_gap(2, 5, GapReason::Lost, 2);
    assert_eq!(drain_all(&mut s), vec![(0, Some(b"ab".to_vec()), 2), (2, None, 5), (7, Some(b"hi".to_vec()), 2)]);
    assert_eq!(s.gap_bytes, 5);
}

#[test]
fn reorder_overflow_declares_the_hole_a_gap() {
    let mut s = DirStream::new();
    let out = s.insert_data(10, 1, W, Bytes::from(vec![1u8; 100]), 50);
    assert_eq!(out.overflow_gaps, 1);
    assert_eq!(s.buffered(), 100);
    let segs = drain_all(&mut s);
    assert_eq!(segs[0], (0, None, 10));
    assert_eq!(segs[1].0, 10);
}

#[test]
fn holes_expire_after_the_window_on_the_kernel_clock() {
    let mut s = DirStream::new();
    s.insert_data(0, 10, W, Bytes::from_static(b"ab"), 1 << 20);
    s.insert_data(5, 20, W, Bytes::from_static(b"fg"), 1 << 20);
    assert_eq!(s.oldest_waiting_ts(), Some(20));
    assert_eq!(s.expire_holes(19), 0, "the later bytes are not old enough yet");
    assert_eq!(s.expire_holes(20), 3);
    assert_eq!(s.oldest_waiting_ts(), None);
    assert_eq!(drain_all(&mut s), vec![(0, Some(b"ab".to_vec()), 2), (2, None, 3), (5, Some(b"fg".to_vec()), 2)]);
    assert_eq!(s.gap_bytes, 3);
}

#[test]
fn fill_to_closes_holes_and_the_tail() {
    let mut s = DirStream::new();
    s.insert_data(3, 1, W, Bytes::from_static(b"xy"), 1 << 20);
    s.fill_to(9, GapReason::MissingAtClose, 5);
    assert_eq!(drain_all(&mut s), vec![(0, None, 3), (3, Some(b"xy".to_vec()), 2), (5, None, 4)]);
    assert_eq!(s.next_pos(), 9);
}

#[test]
fn overlap_is_counted_and_first_copy_kept() {
    let mut s = DirStream::new();
    s.insert_data(0, 1, W, Bytes::from_static(b"abcd"), 1 << 20);
    let out = s.insert_data(2, 2, W, Bytes::from_static(b"XXef"), 1 << 20);
    assert_eq!(out.overlap, 2);
    s.insert_data(10, 2, W, Bytes::from_static(b"kl"), 1 << 20);
    let out = s.insert_data(8, 2, W, Bytes::from_static(b"ijKL"), 1 << 20);
    assert_eq!(out.overlap, 2);
    s.insert_data(6, 2, W, Bytes::from_static(b"gh"), 1 << 20);
    assert_eq!(drain_all(&mut s), vec![(0, Some(b"abcdefghijkl".to_vec()), 12)]);
}

proptest! {
    /// Any arrival order of chunks and gaps yields the same stream.
    #[test]
    fn any_permutation_yields_the_same_stream(
        pieces in proptest::collection::vec((1usize..40, any::<bool>()), 1..30),
        seed in any::<u64>(),
    ) {
        let mut items = Vec::new();
        let mut pos = 0u64;
        let mut expected: Vec<Option<u8>> = Vec::new();
        for (i, (len, is_gap)) in pieces.iter().enumerate() {
            if *is_gap {
                items.push((pos, None, *len as u64));
                expected.extend(std::iter::repeat_n(None, *len));
            } else {
                let data: Vec<u8> = (0..*len).map(|j| (i * 31 + j) as u8).collect();
                expected.extend(data.iter().map(|b| Some(*b)));
                items.push((pos, Some(data), *len as u64));
            }
            pos += *len as u64;
        }
        // Deterministic shuffle from the seed.
        let mut order: Vec<usize> = (0..items.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut s = DirStream::new();
        for &i in &order {
            let (p, d, len) = &items[i];
            match d {
                Some(d) => { s.insert_data(*p, 0, W, Bytes::from(d.clone()), usize::MAX); }
                None => { s.insert_gap(*p, *len, GapReason::Lost, 0); }
            }
        }
        let mut got: Vec<Option<u8>> = Vec::new();
        for (_, d, len) in drain_all(&mut s) {
            match d {
                Some(d) => got.extend(d.into_iter().map(Some)),
                None => got.extend(std::iter::repeat_n(None, len as usize)),
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(s.next_pos(), pos);
    }
}
