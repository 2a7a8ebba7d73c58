//! In-memory upper levels of the Merkle tree; lower levels come from the hashes file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::merkle::{Hash, HashSource, ProofError, node_hash, root_of_leaf_hashes, subtree_hash};

/// Perfect subtrees of `2^CACHE_LEVEL` leaves and above are kept in memory.
pub const CACHE_LEVEL: u32 = 6;
const CHUNK: u64 = 1 << CACHE_LEVEL;

/// The tree's cached nodes plus the leaf hashes not yet folded into them.
#[derive(Default)]
pub struct TreeCache {
    /// `levels[k]` = hashes of the perfect subtrees of `2^(CACHE_LEVEL+k)` leaves, left to right.
    levels: Vec<Vec<Hash>>,
    /// Leaf hashes after the last multiple of `2^CACHE_LEVEL`.
    tail: Vec<Hash>,
    /// Number of leaves.
    size: u64,
}

impl TreeCache {
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds one leaf hash.
    pub fn push(&mut self, h: Hash) {
        self.tail.push(h);
        self.size += 1;
        if self.tail.len() as u64 == CHUNK {
            let mut node = root_of_leaf_hashes(&self.tail);
            self.tail.clear();
            let mut k = 0;
            loop {
                if self.levels.len() == k {
                    self.levels.push(Vec::new());
                }
                self.levels[k].push(node);
                let n = self.levels[k].len();
                if n % 2 == 1 {
                    break;
                }
                node = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
                k += 1;
            }
        }
    }

    /// The cache as a snapshot body (see [`super::snapshot`]).
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        TreeSnap { levels: self.levels.iter().map(|l| l.concat()).collect(), tail: self.tail.concat(), size: self.size }
            .encode_to_vec()
    }

    /// The cache of a snapshot body; `None` when it is not the cache of
    /// `size` leaves (each level's length follows from the size).
    pub fn decode(body: &[u8]) -> Option<TreeCache> {
        use prost::Message;
        let s = TreeSnap::decode(body).ok()?;
        let hashes = |b: &[u8]| -> Option<Vec<Hash>> {
            b.len()
                .is_multiple_of(32)
                .then(|| b.chunks_exact(32).map(|c| Hash::try_from(c).expect("32 bytes")).collect())
        };
        let tail = hashes(&s.tail)?;
        if tail.len() as u64 != s.size % CHUNK {
            return None;
        }
        let mut levels = Vec::with_capacity(s.levels.len());
        for (k, l) in s.levels.iter().enumerate() {
            let level = hashes(l)?;
            if level.len() as u64 != s.size >> (CACHE_LEVEL as usize + k) {
                return None;
            }
            levels.push(level);
        }
        if s.size >> (CACHE_LEVEL as usize + levels.len()) != 0 {
            return None;
        }
        Some(TreeCache { levels, tail, size: s.size })
    }

    /// A hash source reading leaf hashes older than the tail from `hashes`.
    pub fn source<'a>(&'a self, hashes: &'a File) -> TreeSource<'a> {
        TreeSource { cache: self, hashes }
    }
}

/// Snapshot encoding of a [`TreeCache`]: each level's hashes concatenated.
#[derive(Clone, PartialEq, prost::Message)]
struct TreeSnap {
    /// `levels[k]`, 32 bytes per node.
    #[prost(bytes = "vec", repeated, tag = "1")]
    levels: Vec<Vec<u8>>,
    /// The tail's leaf hashes.
    #[prost(bytes = "vec", tag = "2")]
    tail: Vec<u8>,
    /// Number of leaves.
    #[prost(uint64, tag = "3")]
    size: u64,
}

/// [`HashSource`] over the cache and the hashes file.
pub struct TreeSource<'a> {
    /// The cached levels and tail.
    cache: &'a TreeCache,
    /// `log/hashes`: 32 bytes per leaf.
    hashes: &'a File,
}

impl TreeSource<'_> {
    /// Root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.cache.size {
            return Err(ProofError::OutOfRange(format!("tree size {size} > log size {}", self.cache.size)));
        }
        subtree_hash(self, 0, size)
    }
}

impl HashSource for TreeSource<'_> {
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ProofError> {
        if end > self.cache.size || start > end {
            return Err(ProofError::OutOfRange(format!("leaves {start}..{end} of {}", self.cache.size)));
        }
        let tail_start = self.cache.size - self.cache.tail.len() as u64;
        let mut out = Vec::with_capacity((end - start) as usize);
        let file_end = end.min(tail_start);
        if start < file_end {
            let mut buf = vec![0u8; ((file_end - start) * 32) as usize];
            self.hashes
                .read_exact_at(&mut buf, start * 32)
                .map_err(|e| ProofError::Source(format!("hashes file: {e}")))?;
            out.extend(buf.chunks_exact(32).map(|c| <Hash>::try_from(c).expect("32-byte chunk")));
        }
        let from = start.max(tail_start);
        if from < end {
            out.extend_from_slice(&self.cache.tail[(from - tail_start) as usize..(end - tail_start) as usize]);
        }
        Ok(out)
    }

    fn cached_node(&self, level: u32, index: u64) -> Option<Hash> {
        let k = level.checked_sub(CACHE_LEVEL)? as usize;
        self.cache.levels.get(k)?.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_mismatch() {
        for n in [0u64, 1, 63, 64, 65, 1000, 4096] {
            let mut t = TreeCache::default();
            for i in 0..n {
                t.push(crate::merkle::leaf_hash(&i.to_le_bytes()));
            }
            let d = TreeCache::decode(&t.encode()).expect("decodes");
            assert_eq!((d.size, &d.levels, &d.tail), (t.size, &t.levels, &t.tail), "n = {n}");
        }
        let mut t = TreeCache::default();
        for i in 0..200u64 {
            t.push(crate::merkle::leaf_hash(&i.to_le_bytes()));
        }
        t.size += 1; // a size its levels do not match
        assert!(TreeCache::decode(&t.encode()).is_none());
    }
}
