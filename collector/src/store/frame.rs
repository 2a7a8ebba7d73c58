//! Segment frame format.
//!
//! ```text
//! u32 LE  leaf length L
//! u64 LE  leaf index (position in the log)
//! [32]    SHA-256(0x00 || leaf)  (the Merkle leaf hash)
//! [L]     leaf bytes (an encoded StoredLeaf)
//! ```

use crate::merkle::{Hash, leaf_hash};

/// Bytes before the leaf in a frame.
pub const HEADER_LEN: usize = 4 + 8 + 32;
/// Largest leaf accepted (a record plus metadata).
pub const MAX_LEAF_LEN: usize = 16 << 20;

/// Appends the frame of leaf `index` to `out`; returns the leaf hash.
pub fn encode(out: &mut Vec<u8>, index: u64, leaf: &[u8]) -> Hash {
    let hash = leaf_hash(leaf);
    out.extend_from_slice(&(leaf.len() as u32).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&hash);
    out.extend_from_slice(leaf);
    hash
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Leaf length.
    pub len: usize,
    /// Leaf index written in the frame.
    pub index: u64,
    /// Leaf hash written in the frame.
    pub hash: Hash,
}

/// Parses a frame header; `None` if the length field is out of bounds.
pub fn header(buf: &[u8; HEADER_LEN]) -> Option<Header> {
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    if len > MAX_LEAF_LEN {
        return None;
    }
    Some(Header { len, index: u64::from_le_bytes(buf[4..12].try_into().ok()?), hash: buf[12..44].try_into().ok()? })
}
