//! gRPC over HTTP/2: service and method from `:path`, status from trailers,
//! and the length-prefixed message framing inside DATA frames.

use serde::Serialize;

use crate::proto::fields::Text;

/// One gRPC message whose 5-byte prefix was seen in a DATA frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GrpcMessage {
    /// Compressed-Flag of the prefix.
    pub compressed: bool,
    /// Message length from the prefix.
    pub len: u32,
    /// The whole message is inside this frame.
    pub complete: bool,
}

/// gRPC fields of an HTTP/2 frame on a gRPC stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GrpcInfo {
    /// Service from `:path` (`/package.Service/Method`).
    pub service: Option<Text>,
    /// Method from `:path`.
    pub method: Option<Text>,
    /// `grpc-encoding`.
    pub encoding: Option<Text>,
    /// `grpc-timeout`.
    pub timeout: Option<Text>,
    /// `grpc-status` (trailers, or trailers-only response).
    pub status: Option<u32>,
    /// `grpc-message`.
    pub message: Option<Text>,
    /// Messages starting in this DATA frame.
    pub messages: Vec<GrpcMessage>,
    /// Bytes in this DATA frame continuing a message started earlier.
    pub continuation_bytes: u32,
}

/// Splits `/package.Service/Method` into service and method.
pub fn split_path(path: &Text) -> (Option<Text>, Option<Text>) {
    let p = &path.0;
    if p.first() != Some(&b'/') {
        return (None, None);
    }
    match memchr::memrchr(b'/', p) {
        Some(i) if i > 0 => (Some(Text(p.slice(1..i))), Some(Text(p.slice(i + 1..)))),
        _ => (None, None),
    }
}

/// Most messages listed per DATA frame (all are counted in the bytes).
const MAX_LISTED: usize = 256;

/// Message framing state of one direction of one stream.
#[derive(Clone, Debug, Default)]
pub struct Framer {
    prefix: [u8; 5],
    prefix_len: usize,
    remaining: u64,
}

impl Framer {
    /// Feed a DATA frame's payload; returns messages that start in it and the
    /// bytes that continued an earlier message.
    pub fn feed(&mut self, mut data: &[u8]) -> (Vec<GrpcMessage>, u32) {
        let mut out = Vec::new();
        let mut continued = 0u32;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                if out.is_empty() {
                    continued += n as u32;
                }
                data = &data[n..];
                continue;
            }
            let need = 5 - self.prefix_len;
            let n = need.min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len < 5 {
                break;
            }
            self.prefix_len = 0;
            let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
            let complete = (len as usize) <= data.len();
            if out.len() < MAX_LISTED {
                out.push(GrpcMessage { compressed: self.prefix[0] & 1 == 1, len, complete });
            }
            self.remaining = u64::from(len);
        }
        (out, continued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_split() {
        let (s, m) = split_path(&Text::from_static("/helloworld.Greeter/SayHello"));
        assert_eq!((s.unwrap(), m.unwrap()), (Text::from_static("helloworld.Greeter"), Text::from_static("SayHello")));
        assert_eq!(split_path(&Text::from_static("/")), (None, None));
        assert_eq!(split_path(&Text::from_static("x/y")), (None, None));
    }

    #[test]
    fn messages_across_frames() {
        let mut f = Framer::default();
        // Two messages, the second split across frames, prefix split too.
        let mut a = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 1, 0, 0];
        let b = [0, 4, b'w', b'x', b'y', b'z'];
        let (m, c) = f.feed(&a);
        assert_eq!(c, 0);
        assert_eq!(m, vec![GrpcMessage { compressed: false, len: 3, complete: true }]);
        let (m, c) = f.feed(&b);
        assert_eq!((m.len(), c), (1, 0));
        assert_eq!(m[0], GrpcMessage { compressed: true, len: 4, complete: true });
        a.truncate(7);
        let mut f = Framer::default();
        f.feed(&a);
        let (m, c) = f.feed(b"c");
        assert_eq!((m.len(), c), (0, 1));
    }
}
