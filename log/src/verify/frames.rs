//! `verify`'s reading of a segment: whole frames read in chunks, then each
//! chunk's leaves decompressed and hashed on several threads (the checks
//! that depend on order stay with the caller, in log order).

use std::io::Read;

use crate::frame::{self, FrameError, HEADER_LEN};
use crate::merkle::{Hash, leaf_hash};

/// Segment bytes read per chunk.
const CHUNK_BYTES: usize = 8 << 20;

/// Frames read from a segment.
#[derive(Default)]
pub(super) struct Chunk {
    /// The frames' bytes, back to back.
    pub buf: Vec<u8>,
    /// Header and start in `buf` of each frame.
    pub frames: Vec<(frame::Header, usize)>,
}

impl Chunk {
    /// The stored body of frame `k`.
    pub fn body(&self, k: usize) -> &[u8] {
        let (h, start) = &self.frames[k];
        &self.buf[start + HEADER_LEN..start + h.frame_len()]
    }

    /// Reads whole frames from `r`, positioned at byte `off` of a segment of
    /// `len` bytes: at most `max` frames and about [`CHUNK_BYTES`]. Returns
    /// true when it stopped at a frame that is malformed or runs past the
    /// end of the segment (it starts after the frames read).
    pub fn read(&mut self, r: &mut impl Read, off: u64, len: u64, max: u64) -> std::io::Result<bool> {
        self.buf.clear();
        self.frames.clear();
        let mut at = off;
        while at < len && (self.frames.len() as u64) < max && self.buf.len() < CHUNK_BYTES {
            let start = self.buf.len();
            self.buf.resize(start + HEADER_LEN, 0);
            let head = (at + HEADER_LEN as u64 <= len && r.read_exact(&mut self.buf[start..]).is_ok())
                .then(|| frame::header(self.buf[start..].try_into().expect("HEADER_LEN bytes")))
                .flatten()
                .filter(|h| at + h.frame_len() as u64 <= len);
            let Some(h) = head else {
                self.buf.truncate(start);
                return Ok(true);
            };
            self.buf.resize(start + h.frame_len(), 0);
            r.read_exact(&mut self.buf[start + HEADER_LEN..])?;
            self.frames.push((h, start));
            at += h.frame_len() as u64;
        }
        Ok(false)
    }

    /// The leaf hash and leaf length of every frame, in order, computed on
    /// up to `threads` threads.
    pub fn hash_all(&self, threads: usize) -> Vec<Result<(Hash, usize), FrameError>> {
        let one = |range: std::ops::Range<usize>| -> Vec<Result<(Hash, usize), FrameError>> {
            range
                .map(|k| frame::decode_body(&self.frames[k].0, self.body(k)).map(|l| (leaf_hash(&l), l.len())))
                .collect()
        };
        let n = self.frames.len();
        if threads <= 1 || n < 2 * threads {
            return one(0..n);
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            let others: Vec<_> =
                (1..threads).map(|t| s.spawn(move || one((t * per).min(n)..((t + 1) * per).min(n)))).collect();
            let mut out = one(0..per);
            for h in others {
                out.extend(h.join().expect("a hashing thread panicked"));
            }
            out
        })
    }
}

/// Reads `buf.len()` bytes of `f` at `at`, or as many as it holds; returns how many.
pub(super) fn read_up_to(f: &std::fs::File, buf: &mut [u8], at: u64) -> usize {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    got
}

/// Threads `verify` hashes with: the cores available, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `n` frames, compressed and not in turn; leaf `bad` (if any) has a damaged body.
    fn segment(n: u64, bad: Option<u64>) -> Vec<u8> {
        let mut on = frame::Encoder::new(Some(1)).unwrap();
        let mut off = frame::Encoder::new(None).unwrap();
        let mut seg = Vec::new();
        for i in 0..n {
            let start = seg.len();
            let leaf = format!("leaf {i} ").repeat(20).into_bytes();
            if i % 2 == 0 {
                on.encode(&mut seg, i, &leaf)
            } else {
                off.encode(&mut seg, i, &leaf)
            };
            if bad == Some(i) {
                let mid = (start + HEADER_LEN + seg.len()) / 2;
                seg[mid] ^= 0x20;
            }
        }
        seg
    }

    #[test]
    fn hashes_come_back_in_order_whatever_the_threads() {
        let seg = segment(101, Some(70));
        let mut c = Chunk::default();
        assert!(!c.read(&mut &seg[..], 0, seg.len() as u64, u64::MAX).unwrap());
        assert_eq!(c.frames.len(), 101);
        let one = c.hash_all(1);
        for threads in [2, 3, 4] {
            let many = c.hash_all(threads);
            assert_eq!(many.len(), 101);
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                match (a, b) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "leaf {i}, {threads} threads"),
                    (Err(_), Err(_)) => assert_eq!(i, 70),
                    _ => panic!("leaf {i}: one thread and {threads} threads disagree"),
                }
            }
        }
        let good = |i: usize| {
            let (h, _) = c.frames[i];
            many_ok(&c.hash_all(3)[i], &h.hash)
        };
        assert!(good(0) && good(69) && good(100) && !good(70));
    }

    fn many_ok(r: &Result<(Hash, usize), FrameError>, want: &Hash) -> bool {
        matches!(r, Ok((h, _)) if h == want)
    }

    #[test]
    fn reading_stops_at_the_limit_and_at_a_truncated_frame() {
        let seg = segment(10, None);
        let mut c = Chunk::default();
        assert!(!c.read(&mut &seg[..], 0, seg.len() as u64, 4).unwrap());
        assert_eq!(c.frames.iter().map(|f| f.0.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let cut = seg.len() as u64 - 3;
        assert!(c.read(&mut &seg[..cut as usize], 0, cut, u64::MAX).unwrap());
        assert_eq!(c.frames.len(), 9);
    }
}
