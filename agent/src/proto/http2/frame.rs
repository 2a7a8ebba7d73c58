//! HTTP/2 frame layout (RFC 9113 §4 and §6): header, types, flags, padding.

/// Frame header length.
pub const HEADER_LEN: usize = 9;

/// DATA.
pub const DATA: u8 = 0;
/// HEADERS.
pub const HEADERS: u8 = 1;
/// PRIORITY.
pub const PRIORITY: u8 = 2;
/// RST_STREAM.
pub const RST_STREAM: u8 = 3;
/// SETTINGS.
pub const SETTINGS: u8 = 4;
/// PUSH_PROMISE.
pub const PUSH_PROMISE: u8 = 5;
/// PING.
pub const PING: u8 = 6;
/// GOAWAY.
pub const GOAWAY: u8 = 7;
/// WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 8;
/// CONTINUATION.
pub const CONTINUATION: u8 = 9;

/// END_STREAM (DATA, HEADERS).
pub const FLAG_END_STREAM: u8 = 0x1;
/// ACK (SETTINGS, PING).
pub const FLAG_ACK: u8 = 0x1;
/// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const FLAG_END_HEADERS: u8 = 0x4;
/// PADDED (DATA, HEADERS, PUSH_PROMISE).
pub const FLAG_PADDED: u8 = 0x8;
/// PRIORITY (HEADERS).
pub const FLAG_PRIORITY: u8 = 0x20;

/// Why a frame is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Padding longer than the payload.
    #[error("padding of {pad} bytes exceeds the {len}-byte payload")]
    Padding {
        /// Pad Length field.
        pad: usize,
        /// Payload length.
        len: usize,
    },
    /// A fixed-size payload of the wrong size.
    #[error("{name} payload of {len} bytes, expected {expected}")]
    Size {
        /// Frame type name.
        name: &'static str,
        /// Actual.
        len: usize,
        /// Expected (or multiple of, for SETTINGS).
        expected: usize,
    },
    /// CONTINUATION without a HEADERS/PUSH_PROMISE in progress, or another
    /// frame in the middle of a header block.
    #[error("CONTINUATION sequence broken on stream {stream}")]
    Continuation {
        /// Stream of the offending frame.
        stream: u32,
    },
    /// Header block fragments exceed the cap.
    #[error("header block exceeds {max} bytes")]
    HeaderBlock {
        /// The cap.
        max: usize,
    },
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Parse the 9-byte header at the start of `b` (caller checked length).
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7FFF_FFFF,
        }
    }
}

/// Name of a frame type.
pub fn type_name(kind: u8) -> &'static str {
    match kind {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

/// Strip padding from a payload of a frame with the PADDED flag.
pub fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], FrameError> {
    if flags & FLAG_PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(FrameError::Padding { pad: 0, len: 0 });
    };
    let pad = usize::from(pad);
    if pad > rest.len() {
        return Err(FrameError::Padding { pad, len: payload.len() });
    }
    Ok(&rest[..rest.len() - pad])
}

/// Read a big-endian u32 at `at` (caller checked length).
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A frame header that looks real: known type, stream id rules, sane length.
pub fn plausible(h: &FrameHeader, max_len: usize) -> bool {
    let stream_ok = match h.kind {
        DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION => h.stream != 0,
        SETTINGS | PING | GOAWAY => h.stream == 0,
        WINDOW_UPDATE => true,
        _ => false,
    };
    stream_ok && h.len <= max_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_padding() {
        let h = FrameHeader::parse(&[0, 0, 12, 1, 0x25, 0x80, 0, 0, 3]);
        assert_eq!(h, FrameHeader { len: 12, kind: HEADERS, flags: 0x25, stream: 3 });
        assert_eq!(unpad(FLAG_PADDED, &[2, b'a', b'b', 0, 0]).unwrap(), b"ab");
        assert_eq!(unpad(FLAG_PADDED, &[5, b'a']), Err(FrameError::Padding { pad: 5, len: 2 }));
        assert_eq!(unpad(0, b"xy").unwrap(), b"xy");
        assert!(plausible(&h, 16384));
        assert!(!plausible(&FrameHeader { len: 8, kind: SETTINGS, flags: 0, stream: 1 }, 16384));
    }
}
