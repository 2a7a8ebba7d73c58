//! RFC 9162 Merkle tree: hashing, proofs and their verification, signed checkpoints.
//!
//! Leaves are hashed as `SHA-256(0x00 || leaf)` and interior nodes as
//! `SHA-256(0x01 || left || right)`; the tree of `n` leaves splits at the largest
//! power of two smaller than `n`.

mod hash;
mod keyring;
mod memtree;
mod note;
mod proof;

pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash, root_of_leaf_hashes, split_point};
pub use keyring::{Epoch, KeyRing};
pub use memtree::MemTree;
pub use note::{Checkpoint, NoteError, SignedCheckpoint, Signer, Verifier};
pub use proof::{
    HashSource, ProofError, consistency_proof, inclusion_proof, subtree_hash, verify_consistency, verify_inclusion,
};

#[cfg(test)]
mod tests;
