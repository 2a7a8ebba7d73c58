//! HTTP/2: the values of `authorization`, `proxy-authorization`, `cookie`
//! and `set-cookie` in HPACK literals of HEADERS frames whose header block
//! is whole in one frame (END_HEADERS set), the name given literally or from
//! the static table. A plain literal is masked with `*`; a Huffman-coded one
//! with `0xF9` bytes, the 8-bit Huffman code of `*`, so the block still
//! decodes (to `*`s). Values indexed from the dynamic table are the literal
//! that inserted them, masked where it appeared; names from the dynamic
//! table, and blocks continued in CONTINUATION frames, are not walked (the
//! parsed fields are masked by header name regardless: `super::fields`).
use std::sync::Arc;

use crate::proto::http2::{
    frame::{FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY, HEADERS},
    huffman,
};

use super::mask::{Fill, Mask};

/// Static-table indexes (RFC 7541 appendix A) of the masked names.
const STATIC_SECRET: [usize; 4] = [23, 32, 49, 55];
const SECRET_NAMES: [&[u8]; 4] = [b"authorization", b"cookie", b"proxy-authorization", b"set-cookie"];
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The Huffman code of `*` is 8 bits: 0xF9.
pub const HUFFMAN_STAR: u8 = 0xF9;

fn int(b: &[u8], at: &mut usize, prefix_bits: u8) -> Option<usize> {
    let mask = (1usize << prefix_bits) - 1;
    let mut v = usize::from(*b.get(*at)?) & mask;
    *at += 1;
    if v < mask {
        return Some(v);
    }
    let mut shift = 0u32;
    loop {
        let c = *b.get(*at)?;
        *at += 1;
        if shift > 28 {
            return None;
        }
        v += usize::from(c & 0x7F) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// A string literal at `at`: (huffman, start, end) of its bytes.
fn string(b: &[u8], at: &mut usize) -> Option<(bool, usize, usize)> {
    let huff = *b.get(*at)? & 0x80 != 0;
    let len = int(b, at, 7)?;
    let start = *at;
    let end = start.checked_add(len).filter(|e| *e <= b.len())?;
    *at = end;
    Some((huff, start, end))
}

/// Walks one header block (`block` is `buf[base..]`), pushing masks.
fn block(buf: &[u8], base: usize, len: usize, rule: &Arc<str>, out: &mut Vec<Mask>) -> Option<()> {
    let b = &buf[base..base + len];
    let mut at = 0;
    while at < b.len() {
        let first = b[at];
        if first & 0x80 != 0 {
            int(b, &mut at, 7)?;
            continue;
        }
        if first & 0xE0 == 0x20 {
            int(b, &mut at, 5)?;
            continue;
        }
        let bits = if first & 0x40 != 0 { 6 } else { 4 };
        let index = int(b, &mut at, bits)?;
        let secret = if index == 0 {
            let (huff, s, e) = string(b, &mut at)?;
            let mut name = Vec::new();
            if huff {
                huffman::decode(&b[s..e], &mut name).ok()?;
            } else {
                name.extend_from_slice(&b[s..e]);
            }
            SECRET_NAMES.iter().any(|n| n.eq_ignore_ascii_case(&name))
        } else {
            STATIC_SECRET.contains(&index)
        };
        let (huff, s, e) = string(b, &mut at)?;
        if secret && s < e {
            let fill = if huff { Fill::Bytes(vec![HUFFMAN_STAR; e - s]) } else { Fill::Star };
            out.push(Mask { start: base + s, end: base + e, rule: rule.clone(), fill });
        }
    }
    Some(())
}

/// Masks secret header values in the HEADERS frames of `buf` (HTTP/2
/// frames from a frame boundary, or the client preface).
pub fn find(buf: &[u8], rule: &Arc<str>, out: &mut Vec<Mask>) {
    let mut at = if buf.starts_with(PREFACE) { PREFACE.len() } else { 0 };
    while at + 9 <= buf.len() {
        let len = (usize::from(buf[at]) << 16) | (usize::from(buf[at + 1]) << 8) | usize::from(buf[at + 2]);
        let (kind, flags) = (buf[at + 3], buf[at + 4]);
        let body = at + 9;
        let end = body + len;
        if end > buf.len() {
            return;
        }
        if kind == HEADERS && flags & FLAG_END_HEADERS != 0 {
            let mut s = body;
            let mut e = end;
            if flags & FLAG_PADDED != 0 && s < e {
                let pad = usize::from(buf[s]);
                s += 1;
                e = e.saturating_sub(pad);
            }
            if flags & FLAG_PRIORITY != 0 {
                s += 5;
            }
            if s <= e {
                let _ = block(buf, s, e - s, rule, out);
            }
        }
        at = end;
    }
}

/// Whether `HUFFMAN_STAR` is the 8-bit code of `*` (checked by a test).
pub fn huffman_star_is_code_of_star() -> bool {
    huffman::code_of(u16::from(b'*')) == (u32::from(HUFFMAN_STAR), 8)
}
