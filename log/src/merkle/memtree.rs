//! A tree held in memory from its leaf hashes, for many proofs over one tree
//! size: a verifier or exporter that read a log's hashes from somewhere else
//! (ClickHouse) answers proofs without recomputing the tree for each.
//!
//! The leaf hashes are kept, plus every perfect subtree of
//! [`MemTree::CACHED_FROM`] leaves or more (one hash per 256 leaves at the
//! lowest cached level, about 1 % over the leaves); smaller subtrees are
//! hashed from the leaves when a proof asks (at most 255 node hashes).

use super::hash::{Hash, node_hash};
use super::proof::{HashSource, ProofError};

/// Leaf hashes and the perfect subtrees above [`MemTree::CACHED_FROM`] leaves.
pub struct MemTree {
    leaves: Vec<Hash>,
    /// `levels[k]` holds the perfect subtrees of `2^(LEVEL0 + k)` leaves, left to right.
    levels: Vec<Vec<Hash>>,
}

/// log2 of [`MemTree::CACHED_FROM`].
const LEVEL0: u32 = 8;

impl MemTree {
    /// Subtrees of this many leaves and more are kept.
    pub const CACHED_FROM: u64 = 1 << LEVEL0;

    /// Builds the tree of `leaves` (linear time).
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels: Vec<Vec<Hash>> = Vec::new();
        let mut below: Vec<Hash> =
            leaves.chunks_exact(Self::CACHED_FROM as usize).map(super::hash::root_of_leaf_hashes).collect();
        while !below.is_empty() {
            let next: Vec<Hash> = below.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
            levels.push(below);
            below = next;
        }
        MemTree { leaves, levels }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }
}

impl HashSource for MemTree {
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ProofError> {
        self.leaves.as_slice().leaf_hashes(start, end)
    }

    fn cached_node(&self, level: u32, index: u64) -> Option<Hash> {
        let k = level.checked_sub(LEVEL0)?;
        self.levels.get(k as usize)?.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{inclusion_proof, leaf_hash, root_of_leaf_hashes, subtree_hash, verify_inclusion};

    #[test]
    fn proofs_equal_those_over_the_plain_leaves_and_verify() {
        for n in [1u64, 2, 255, 256, 257, 511, 512, 1000, 1024, 4097] {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let tree = MemTree::new(leaves.clone());
            assert_eq!(tree.size(), n);
            let root = root_of_leaf_hashes(&leaves);
            assert_eq!(subtree_hash(&tree, 0, n).unwrap(), root, "n={n}");
            for size in [1, n / 2 + 1, n] {
                let sub = root_of_leaf_hashes(&leaves[..size as usize]);
                for i in [0, size / 3, size - 1] {
                    let p = inclusion_proof(&tree, i, size).unwrap();
                    assert_eq!(p, inclusion_proof(leaves.as_slice(), i, size).unwrap(), "n={n} size={size} i={i}");
                    verify_inclusion(i, size, &leaves[i as usize], &p, &sub).unwrap();
                }
            }
        }
    }

    #[test]
    fn only_perfect_subtrees_of_256_leaves_or_more_are_cached() {
        let leaves: Vec<Hash> = (0..1000u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let tree = MemTree::new(leaves.clone());
        assert_eq!(tree.cached_node(7, 0), None);
        assert_eq!(tree.cached_node(8, 2), Some(root_of_leaf_hashes(&leaves[512..768])));
        assert_eq!(tree.cached_node(8, 3), None, "leaves 768..1024 are not all there");
        assert_eq!(tree.cached_node(9, 0), Some(root_of_leaf_hashes(&leaves[..512])));
        assert_eq!(tree.cached_node(10, 0), None);
    }
}
