//! Helpers shared by the binary protocol parsers (MySQL, AMQP, MQTT, NATS,
//! PostgreSQL values): a bounds-checked reader that never panics, and the
//! capped previews of values and payloads shown in parsed fields (the exact
//! bytes always stay in the record's `raw`).

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;

use crate::proto::{AppAttrs, fields::Text};

/// A bounds-checked cursor over a message body; every read returns `None`
/// past the end instead of panicking.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b.get(self.at..).unwrap_or_default()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let v = self.b.get(self.at..end)?;
        self.at = end;
        Some(v)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|v| v[0])
    }

    pub(crate) fn be16(&mut self) -> Option<u16> {
        self.bytes(2).map(|v| u16::from_be_bytes([v[0], v[1]]))
    }

    pub(crate) fn be32(&mut self) -> Option<u32> {
        self.bytes(4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    pub(crate) fn be64(&mut self) -> Option<u64> {
        self.bytes(8).map(|v| u64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]))
    }

    pub(crate) fn le16(&mut self) -> Option<u16> {
        self.bytes(2).map(|v| u16::from_le_bytes([v[0], v[1]]))
    }

    pub(crate) fn le24(&mut self) -> Option<u32> {
        self.bytes(3).map(|v| u32::from_le_bytes([v[0], v[1], v[2], 0]))
    }

    pub(crate) fn le32(&mut self) -> Option<u32> {
        self.bytes(4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }

    pub(crate) fn le64(&mut self) -> Option<u64> {
        self.bytes(8).map(|v| u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]))
    }

    /// Bytes up to a NUL (the NUL is consumed, not returned).
    pub(crate) fn cstr(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let n = memchr::memchr(0, rest)?;
        self.at += n + 1;
        Some(&rest[..n])
    }
}

/// A value shown in parsed fields, cut at the configured length.
pub(crate) fn capped(buf: &Bytes, v: &[u8], cap: usize) -> (Text, bool) {
    if v.len() <= cap {
        return (Text(slice(buf, v)), false);
    }
    // Cut at a UTF-8 boundary when the value is text.
    let mut n = cap;
    while n > 0 && n < v.len() && (v[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    (Text(slice(buf, &v[..n])), true)
}

/// An owned string as a text value cut at a char boundary at most `cap` bytes long.
pub(crate) fn cut_string(mut s: String, cap: usize) -> (Text, bool) {
    let truncated = s.len() > cap;
    if truncated {
        let mut n = cap;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    (Text(Bytes::from(s)), truncated)
}

/// `v` as a slice of `buf` when it lies inside it (no copy), else a copy.
pub(crate) fn slice(buf: &Bytes, v: &[u8]) -> Bytes {
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let p = v.as_ptr() as usize;
    if v.is_empty() {
        Bytes::new()
    } else if p >= start && p + v.len() <= end {
        buf.slice_ref(v)
    } else {
        Bytes::copy_from_slice(v)
    }
}

/// Lowercase hex of `v`, at most `cap` input bytes.
pub(crate) fn hex(v: &[u8], cap: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * v.len().min(cap));
    for b in &v[..v.len().min(cap)] {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A message payload or body: its length, where it starts in the record's
/// raw bytes, and a preview: the text when it is UTF-8, else base64; cut at
/// the configured length (`truncated`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Payload {
    /// Payload bytes (all of them, whether or not the preview is cut).
    pub len: u64,
    /// Offset of the payload's first byte within the record's raw bytes.
    pub offset: usize,
    /// The payload as text, when its previewed bytes are UTF-8.
    pub text: Option<Text>,
    /// The payload's previewed bytes in base64, when they are not UTF-8.
    pub base64: Option<String>,
    /// The preview holds fewer bytes than the payload.
    pub truncated: bool,
}

impl Payload {
    /// Preview of `v` (a slice of `buf`, `offset` bytes from the record start).
    pub(crate) fn of(buf: &Bytes, v: &[u8], offset: usize, cap: usize) -> Payload {
        let (text, truncated) = capped(buf, v, cap);
        let mut p = Payload { len: v.len() as u64, offset, text: None, base64: None, truncated };
        if std::str::from_utf8(&text.0).is_ok() {
            p.text = Some(text);
        } else {
            let n = v.len().min(cap);
            p.base64 = Some(base64::engine::general_purpose::STANDARD.encode(&v[..n]));
            p.truncated = n < v.len();
        }
        p
    }
}

/// Longest attribute value kept for `sender_attributes`.
const MAX_ATTR_BYTES: usize = 128;
/// Most attributes kept per direction.
const MAX_ATTRS: usize = 16;

/// Attributes of the application identity sending in each direction (index:
/// direction), as learned from login and greeting messages; bounded. Each
/// direction's list is rebuilt when a value changes (rare: logins) and shared
/// by every record after that.
#[derive(Clone, Debug, Default)]
pub(crate) struct SenderAttrs([AppAttrs; 2]);

impl SenderAttrs {
    /// Set `key` for the sender of direction index `i` (replacing an older value).
    pub(crate) fn set(&mut self, i: usize, key: &'static str, v: &[u8]) {
        if v.is_empty() || v.len() > MAX_ATTR_BYTES {
            return;
        }
        let v = String::from_utf8_lossy(v);
        let list = &mut self.0[i & 1];
        match list.iter().position(|(k, _)| k == key) {
            Some(at) if list[at].1 == v => {}
            Some(at) => {
                let mut l = list.to_vec();
                l[at].1 = v.into_owned();
                *list = l.into();
            }
            None if list.len() < MAX_ATTRS => {
                let mut l = list.to_vec();
                l.push((key.to_string(), v.into_owned()));
                *list = l.into();
            }
            None => {}
        }
    }

    /// The attributes of the sender of direction index `i`.
    pub(crate) fn get(&self, i: usize) -> AppAttrs {
        self.0[i & 1].clone()
    }
}

/// Push `x` unless `v` already holds `max` items; returns whether it was kept.
pub(crate) fn push_capped<T>(v: &mut Vec<T>, x: T, max: usize) -> bool {
    if v.len() < max {
        v.push(x);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.be16(), Some(0x0102));
        assert_eq!(r.be16(), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!((r.u8(), r.bytes(usize::MAX), r.cstr()), (None, None, None));
        assert_eq!(Reader::new(b"ab\0c").cstr(), Some(&b"ab"[..]));
    }

    #[test]
    fn previews_cut_at_char_boundaries_and_fall_back_to_base64() {
        let buf = Bytes::from_static("héllo".as_bytes());
        let p = Payload::of(&buf, &buf, 3, 2);
        assert_eq!((p.text.unwrap(), p.truncated, p.len, p.offset), (Text::from_static("h"), true, 6, 3));
        let bin = Bytes::from_static(&[0xff, 0x00, 0x01]);
        let p = Payload::of(&bin, &bin, 0, 16);
        assert_eq!((p.text, p.base64.as_deref(), p.truncated), (None, Some("/wAB"), false));
        assert_eq!(hex(&[0xde, 0xad, 0xbe], 2), "dead");
    }
}
