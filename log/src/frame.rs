//! Segment frame format.
//!
//! ```text
//! u32 LE  length word: bits 0..=30 the stored body length L, bit 31 set when
//!         the body is compressed
//! u64 LE  leaf index (position in the log)
//! [32]    SHA-256(0x00 || leaf)  (the Merkle leaf hash, of the uncompressed leaf)
//! [L]     body: the leaf bytes (an encoded StoredLeaf), or with bit 31 one
//!         zstd frame of them that records their size
//! ```
//!
//! A leaf is compressed only when that makes its body smaller, so a frame
//! without bit 31 is the original (uncompressed) format, and segments written
//! before compression existed read as they always did. Every reader goes
//! through [`decode_body`] / [`checked_leaf`]: a body that does not
//! decompress, decompresses to more than [`MAX_LEAF_LEN`] bytes or is not
//! exactly one zstd frame is a [`FrameError`] naming the leaf, judged like a
//! hash mismatch. Only the leaf bytes are authenticated (by the leaf hash and
//! the Merkle tree); the compressed encoding of them is not.

use std::borrow::Cow;
use std::cell::RefCell;

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use crate::merkle::{Hash, leaf_hash};

/// Bytes before the leaf in a frame.
pub const HEADER_LEN: usize = 4 + 8 + 32;
/// Largest leaf accepted (a record plus metadata).
pub const MAX_LEAF_LEN: usize = 16 << 20;
/// Bit of the length word marking a compressed body.
pub const COMPRESSED: u32 = 1 << 31;
/// The magic number every zstd frame starts with (little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why a frame's body does not give its leaf.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The compressed body is not one whole zstd frame, or does not decompress.
    #[error("leaf {index}: compressed body does not decompress: {source}")]
    Decompress {
        /// Leaf index of the frame.
        index: u64,
        /// What zstd said.
        #[source]
        source: std::io::Error,
    },
    /// The compressed body claims a leaf larger than a frame may hold.
    #[error("leaf {index}: compressed body claims {size} bytes, more than the maximum of {MAX_LEAF_LEN}")]
    TooLarge {
        /// Leaf index of the frame.
        index: u64,
        /// The size it claims.
        size: u64,
    },
    /// The leaf does not hash to the hash stored in the frame.
    #[error("leaf {index}: record bytes do not match the leaf hash stored with them")]
    HashMismatch {
        /// Leaf index of the frame.
        index: u64,
    },
}

impl FrameError {
    /// Leaf index written in the frame concerned.
    pub fn index(&self) -> u64 {
        match self {
            FrameError::Decompress { index, .. } | FrameError::TooLarge { index, .. } => *index,
            FrameError::HashMismatch { index } => *index,
        }
    }
}

/// Appends the uncompressed frame of leaf `index` to `out`; returns the leaf hash.
pub fn encode(out: &mut Vec<u8>, index: u64, leaf: &[u8]) -> Hash {
    let hash = leaf_hash(leaf);
    push_frame(out, leaf.len() as u32, index, &hash, leaf);
    hash
}

fn push_frame(out: &mut Vec<u8>, word: u32, index: u64, hash: &Hash, body: &[u8]) {
    out.extend_from_slice(&word.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(body);
}

/// Writes frames, compressing each leaf with one reused zstd context when
/// that saves bytes.
pub struct Encoder {
    /// The compression context (`None`: compression off).
    cctx: Option<CCtx<'static>>,
    /// Compressed body of the leaf being encoded.
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder compressing at zstd `level` (negative: the fast levels; up to 19), or not at all with `None`.
    pub fn new(level: Option<i32>) -> Result<Encoder, std::io::Error> {
        let cctx = match level {
            None => None,
            Some(l) => {
                let mut c = CCtx::try_create()
                    .ok_or_else(|| std::io::Error::other("zstd could not allocate a compression context"))?;
                for p in [
                    CParameter::CompressionLevel(l),
                    CParameter::ContentSizeFlag(true),
                    CParameter::ChecksumFlag(false),
                    CParameter::DictIdFlag(false),
                ] {
                    c.set_parameter(p).map_err(zstd_error)?;
                }
                Some(c)
            }
        };
        Ok(Encoder { cctx, scratch: Vec::new() })
    }

    /// Appends the frame of leaf `index` to `out` (compressed when smaller);
    /// returns the leaf hash (of the uncompressed leaf).
    pub fn encode(&mut self, out: &mut Vec<u8>, index: u64, leaf: &[u8]) -> Hash {
        let Some(cctx) = &mut self.cctx else {
            return encode(out, index, leaf);
        };
        self.scratch.clear();
        self.scratch.reserve(zstd_safe::compress_bound(leaf.len()));
        match cctx.compress2(&mut self.scratch, leaf) {
            Ok(n) if n < leaf.len() => {
                let hash = leaf_hash(leaf);
                push_frame(out, n as u32 | COMPRESSED, index, &hash, &self.scratch[..n]);
                hash
            }
            // Not smaller (or zstd failed, which leaves the context usable): store it as it is.
            _ => encode(out, index, leaf),
        }
    }

    /// The hash and stored body of `leaf`, for [`push_prepared`]: the work of
    /// [`Encoder::encode`] that does not depend on the leaf's index, so the
    /// ingest tasks do it in parallel and the commit thread only copies.
    pub fn prepare(&mut self, leaf: &[u8]) -> Prepared {
        let hash = leaf_hash(leaf);
        let Some(cctx) = &mut self.cctx else {
            return Prepared { hash, compressed: None };
        };
        // Into the reused scratch, then copied at its size: a batch waiting for
        // the commit thread holds each body once, not at zstd's bound.
        self.scratch.clear();
        self.scratch.reserve(zstd_safe::compress_bound(leaf.len()));
        match cctx.compress2(&mut self.scratch, leaf) {
            Ok(n) if n < leaf.len() => Prepared { hash, compressed: Some(self.scratch[..n].to_vec()) },
            _ => Prepared { hash, compressed: None },
        }
    }
}

/// A leaf made ready for its frame by [`Encoder::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Leaf hash (of the uncompressed leaf).
    pub hash: Hash,
    /// The compressed body, when compressing saved bytes (else the leaf is stored as it is).
    pub compressed: Option<Vec<u8>>,
}

/// Appends the frame of leaf `index`, prepared as `p`, to `out`.
pub fn push_prepared(out: &mut Vec<u8>, index: u64, leaf: &[u8], p: &Prepared) {
    match &p.compressed {
        Some(body) => push_frame(out, body.len() as u32 | COMPRESSED, index, &p.hash, body),
        None => push_frame(out, leaf.len() as u32, index, &p.hash, leaf),
    }
}

thread_local! {
    /// Each thread's encoder, with the level it was made for.
    static ENCODER: std::cell::RefCell<Option<(Option<i32>, Encoder)>> = const { std::cell::RefCell::new(None) };
}

/// [`Encoder::prepare`] of each leaf with this thread's encoder at `level`
/// (`None`: compression off).
pub fn prepare_all(level: Option<i32>, leaves: &[Vec<u8>]) -> Result<Vec<Prepared>, std::io::Error> {
    ENCODER.with(|e| {
        let mut e = e.borrow_mut();
        if e.as_ref().is_none_or(|(l, _)| *l != level) {
            *e = Some((level, Encoder::new(level)?));
        }
        let (_, enc) = e.as_mut().expect("set above");
        Ok(leaves.iter().map(|l| enc.prepare(l)).collect())
    })
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Length of the stored body (the leaf, or its compressed form).
    pub len: usize,
    /// Whether the body is compressed.
    pub compressed: bool,
    /// Leaf index written in the frame.
    pub index: u64,
    /// Leaf hash written in the frame.
    pub hash: Hash,
}

impl Header {
    /// Bytes of the whole frame (header and stored body).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// Parses a frame header; `None` if the length field is out of bounds.
pub fn header(buf: &[u8; HEADER_LEN]) -> Option<Header> {
    let word = u32::from_le_bytes(buf[0..4].try_into().ok()?);
    let len = (word & !COMPRESSED) as usize;
    if len > MAX_LEAF_LEN {
        return None;
    }
    Some(Header {
        len,
        compressed: word & COMPRESSED != 0,
        index: u64::from_le_bytes(buf[4..12].try_into().ok()?),
        hash: buf[12..44].try_into().ok()?,
    })
}

thread_local! {
    /// One decompression context per reading thread.
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// The leaf held by a frame's stored body (`stored`, `header.len` bytes):
/// borrowed when uncompressed, decompressed otherwise. Does not check the hash.
pub fn decode_body<'a>(header: &Header, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, FrameError> {
    if !header.compressed {
        return Ok(Cow::Borrowed(stored));
    }
    let index = header.index;
    let bad = |what: String| FrameError::Decompress { index, source: std::io::Error::other(what) };
    if !stored.starts_with(&ZSTD_MAGIC) {
        return Err(bad("not a zstd frame".into()));
    }
    match zstd_safe::find_frame_compressed_size(stored) {
        Ok(n) if n == stored.len() => {}
        Ok(n) => return Err(bad(format!("the zstd frame ends at byte {n} of a {}-byte body", stored.len()))),
        Err(c) => return Err(FrameError::Decompress { index, source: zstd_error(c) }),
    }
    let size = match zstd_safe::get_frame_content_size(stored) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(bad("the zstd frame does not record its content size".into())),
        Err(e) => return Err(bad(format!("zstd frame header: {e:?}"))),
    };
    if size > MAX_LEAF_LEN as u64 {
        return Err(FrameError::TooLarge { index, size });
    }
    let mut leaf = Vec::with_capacity(size as usize);
    let res = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = DCtx::try_create();
        }
        match d.as_mut() {
            Some(dctx) => dctx.decompress(&mut leaf, stored).map_err(zstd_error),
            None => Err(std::io::Error::other("zstd could not allocate a decompression context")),
        }
    });
    match res {
        Ok(n) if n as u64 == size => Ok(Cow::Owned(leaf)),
        Ok(n) => Err(bad(format!("{n} bytes decompressed where the frame records {size}"))),
        Err(source) => Err(FrameError::Decompress { index, source }),
    }
}

/// [`decode_body`], then the leaf checked against the frame's hash.
pub fn checked_leaf<'a>(header: &Header, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, FrameError> {
    let leaf = decode_body(header, stored)?;
    if leaf_hash(&leaf) != header.hash {
        return Err(FrameError::HashMismatch { index: header.index });
    }
    Ok(leaf)
}

/// A zstd error code as an I/O error carrying zstd's description.
fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd_safe::get_error_name(code))
}

#[cfg(test)]
mod tests;
