//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4).

use super::hash::{EMPTY_ROOT, Hash, node_hash, root_of_leaf_hashes, split_point};

/// Why a proof could not be produced or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// Indexes or sizes outside the tree.
    #[error("invalid proof request: {0}")]
    OutOfRange(String),
    /// The proof does not lead to the expected root(s).
    #[error("proof does not verify: {0}")]
    Mismatch(&'static str),
    /// Reading stored hashes failed.
    #[error("reading tree hashes: {0}")]
    Source(String),
}

/// Where proofs get hashes from.
pub trait HashSource {
    /// Hashes of leaves `start..end`.
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ProofError>;
    /// Hash of the perfect subtree of `2^level` leaves starting at `index * 2^level`,
    /// if the source has it precomputed.
    fn cached_node(&self, _level: u32, _index: u64) -> Option<Hash> {
        None
    }
}

impl HashSource for [Hash] {
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, ProofError> {
        self.get(start as usize..end as usize)
            .map(<[Hash]>::to_vec)
            .ok_or_else(|| ProofError::OutOfRange(format!("leaves {start}..{end}")))
    }
}

/// MTH(D[start:end]).
pub fn subtree_hash<S: HashSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, ProofError> {
    let n = end - start;
    if n == 0 {
        return Ok(EMPTY_ROOT);
    }
    if n.is_power_of_two()
        && start.is_multiple_of(n)
        && let Some(h) = src.cached_node(n.trailing_zeros(), start / n)
    {
        return Ok(h);
    }
    if n <= 256 {
        return Ok(root_of_leaf_hashes(&src.leaf_hashes(start, end)?));
    }
    let k = split_point(n);
    Ok(node_hash(&subtree_hash(src, start, start + k)?, &subtree_hash(src, start + k, end)?))
}

/// PATH(index, D[0:size]), leaf-to-root order.
pub fn inclusion_proof<S: HashSource + ?Sized>(src: &S, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!("leaf {index} not in tree of size {size}")));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: HashSource + ?Sized>(src: &S, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), ProofError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(subtree_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(subtree_hash(src, start, start + k)?);
    }
    Ok(())
}

/// PROOF(old, D[0:new]).
pub fn consistency_proof<S: HashSource + ?Sized>(src: &S, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange(format!("old size {old} > new size {new}")));
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(src, old, 0, new, true, &mut out)?;
    Ok(out)
}

fn subproof<S: HashSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out)?;
        out.push(subtree_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(subtree_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!("leaf {index} not in tree of size {size}")));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Mismatch("inclusion proof too long"));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Mismatch("inclusion proof too short"));
    }
    if &r != root {
        return Err(ProofError::Mismatch("inclusion proof leads to a different root"));
    }
    Ok(())
}

/// Checks that the tree (`old`, `old_root`) is a prefix of (`new`, `new_root`).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange(format!("old size {old} > new size {new}")));
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch("equal sizes need an empty proof and equal roots"))
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Mismatch("proof from empty tree must be empty"))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::Mismatch("empty consistency proof"));
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::Mismatch("consistency proof too long"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Mismatch("consistency proof too short"));
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::Mismatch("consistency proof leads to different roots"));
    }
    Ok(())
}
