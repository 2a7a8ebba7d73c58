//! Masks found in a buffer, and applying them in place (same length).
use std::sync::Arc;

/// The byte a text mask is made of.
pub const MASK_BYTE: u8 = b'*';

/// What replaces the masked bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fill {
    /// `*` for every byte.
    Star,
    /// These bytes (same length as the range): card tokens, HPACK
    /// Huffman-valid filler.
    Bytes(Vec<u8>),
}

/// One range of a buffer to mask, and the rule that asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Byte range in the buffer.
    pub start: usize,
    pub end: usize,
    /// Rule name (built-in, or `custom.<name>`).
    pub rule: Arc<str>,
    pub fill: Fill,
}

impl Mask {
    /// A `*` mask of `start..end`.
    pub fn star(start: usize, end: usize, rule: &Arc<str>) -> Mask {
        Mask { start, end, rule: rule.clone(), fill: Fill::Star }
    }
}

/// Drops empty masks and masks wholly inside an earlier (longer) one; sorts by start.
pub fn normalize(mut masks: Vec<Mask>) -> Vec<Mask> {
    masks.retain(|m| m.end > m.start);
    masks.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Mask> = Vec::with_capacity(masks.len());
    for m in masks {
        if out.iter().any(|k| k.start <= m.start && m.end <= k.end) {
            continue;
        }
        out.push(m);
    }
    out
}

/// `buf` with every mask applied; the length never changes.
pub fn apply(buf: &[u8], masks: &[Mask]) -> Vec<u8> {
    let mut out = buf.to_vec();
    for m in masks {
        let end = m.end.min(out.len());
        match &m.fill {
            Fill::Star => out[m.start..end].fill(MASK_BYTE),
            Fill::Bytes(b) => out[m.start..end].copy_from_slice(&b[..end - m.start]),
        }
    }
    out
}
