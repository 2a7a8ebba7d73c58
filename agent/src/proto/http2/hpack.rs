//! HPACK header decompression (RFC 7541): integers, strings, the static and
//! dynamic tables, and size updates. One decoder per direction.

use std::collections::VecDeque;

use bytes::Bytes;

use super::huffman::{self, HuffmanError};

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead in table size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("header block truncated at offset {offset}")]
    Truncated {
        /// Where.
        offset: usize,
    },
    /// An integer longer than 32 bits.
    #[error("integer overflow at offset {offset}")]
    Integer {
        /// Where.
        offset: usize,
    },
    /// Index 0 or past the tables.
    #[error("invalid table index {index}")]
    Index {
        /// The index.
        index: usize,
    },
    /// A reference into the dynamic table after bytes of this direction were
    /// lost: the table's content is unknown, so the value would be a guess.
    #[error("dynamic table index {index} used after its state was lost in a gap")]
    StateLost {
        /// The index.
        index: usize,
    },
    /// A size update above the limit.
    #[error("dynamic table size update to {size} exceeds the limit {max}")]
    SizeUpdate {
        /// Requested size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Huffman decoding failed.
    #[error("invalid Huffman string at offset {offset}: {source}")]
    Huffman {
        /// Where.
        offset: usize,
        /// Why.
        #[source]
        source: HuffmanError,
    },
    /// The decoded header list exceeds the caps.
    #[error("header list exceeds {max_headers} headers or {max_bytes} bytes")]
    TooLarge {
        /// Header cap.
        max_headers: usize,
        /// Byte cap.
        max_bytes: usize,
    },
}

/// A decoded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name.
    pub name: Bytes,
    /// Value.
    pub value: Bytes,
}

/// HPACK decoder state of one direction.
#[derive(Debug)]
pub struct Decoder {
    dynamic: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
    limit: usize,
    max_headers: usize,
    max_bytes: usize,
    lost: bool,
}

struct Input<'a> {
    b: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn int(&mut self, prefix_bits: u8) -> Result<usize, HpackError> {
        let offset = self.at;
        let first = *self.b.get(self.at).ok_or(HpackError::Truncated { offset })?;
        self.at += 1;
        let mask = (1u16 << prefix_bits) as usize - 1;
        let mut value = usize::from(first) & mask;
        if value < mask {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let b = *self.b.get(self.at).ok_or(HpackError::Truncated { offset })?;
            self.at += 1;
            if shift > 28 {
                return Err(HpackError::Integer { offset });
            }
            value += usize::from(b & 0x7F) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if value > u32::MAX as usize {
            return Err(HpackError::Integer { offset });
        }
        Ok(value)
    }

    fn string(&mut self, max: usize) -> Result<Bytes, HpackError> {
        let offset = self.at;
        let huff = self.b.get(self.at).ok_or(HpackError::Truncated { offset })? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self.at.checked_add(len).filter(|e| *e <= self.b.len());
        let end = end.ok_or(HpackError::Truncated { offset })?;
        let raw = &self.b[self.at..end];
        self.at = end;
        if huff {
            // Huffman output is at most 8/5 of the input.
            let mut out = Vec::with_capacity((len * 8 / 5).min(max));
            huffman::decode(raw, &mut out).map_err(|source| HpackError::Huffman { offset, source })?;
            Ok(Bytes::from(out))
        } else {
            Ok(Bytes::copy_from_slice(raw))
        }
    }
}

impl Decoder {
    /// A decoder with the protocol's initial table size (4096) and a hard
    /// `limit` on any size the peer announces.
    pub fn new(limit: usize, max_headers: usize, max_bytes: usize) -> Self {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: 4096.min(limit),
            limit,
            max_headers,
            max_bytes,
            lost: false,
        }
    }

    /// Bytes of this direction were lost: dynamic-table references cannot be
    /// trusted until the encoder clears the table.
    pub fn lose_state(&mut self) {
        self.lost = true;
    }

    /// Current dynamic table size (RFC 7541 accounting).
    pub fn table_size(&self) -> usize {
        self.size
    }

    fn get(&self, index: usize) -> Result<(Bytes, Bytes), HpackError> {
        match index {
            0 => Err(HpackError::Index { index }),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes())))
            }
            _ if self.lost => Err(HpackError::StateLost { index }),
            _ => self.dynamic.get(index - 62).cloned().ok_or(HpackError::Index { index }),
        }
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.dynamic.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.dynamic.push_front((name, value));
    }

    /// Decode one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut input = Input { b: block, at: 0 };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while input.at < block.len() {
            let b = block[input.at];
            let (name, value) = if b & 0x80 != 0 {
                let index = input.int(7)?;
                self.get(index)?
            } else if b & 0xE0 == 0x20 {
                let size = input.int(5)?;
                if size > self.limit {
                    return Err(HpackError::SizeUpdate { size, max: self.limit });
                }
                self.max_size = size;
                self.evict_to(size);
                if size == 0 {
                    // The encoder cleared the table: state is known again.
                    self.lost = false;
                }
                continue;
            } else {
                let incremental = b & 0xC0 == 0x40;
                let index = input.int(if incremental { 6 } else { 4 })?;
                let name = if index == 0 { input.string(self.max_bytes)? } else { self.get(index)?.0 };
                let value = input.string(self.max_bytes)?;
                if incremental {
                    self.insert(name.clone(), value.clone());
                }
                (name, value)
            };
            bytes += name.len() + value.len();
            if out.len() >= self.max_headers || bytes > self.max_bytes {
                return Err(HpackError::TooLarge { max_headers: self.max_headers, max_bytes: self.max_bytes });
            }
            out.push(Field { name, value });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
