//! Unknown protocols: every delivered run of bytes becomes a raw record.

use bytes::Bytes;

use crate::proto::fields::{Body, UnparsedReason};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::Direction;

/// Records bytes as they come, in pieces of at most the message cap.
#[derive(Debug)]
pub struct UnknownParser {
    max: usize,
}

impl UnknownParser {
    /// A parser cutting records at `cfg.max_message_bytes`.
    pub fn new(cfg: &ProtoConfig) -> Self {
        UnknownParser { max: cfg.max_message_bytes.max(1) }
    }
}

impl Parser for UnknownParser {
    fn protocol(&self) -> Protocol {
        Protocol::Unknown
    }

    fn parse(&mut self, _dir: Direction, buf: &Bytes) -> Parse {
        if buf.is_empty() {
            return Parse::Need { min_len: 1, total: None };
        }
        Parse::Message(Parsed {
            len: buf.len().min(self.max),
            body: Body::Unparsed { reason: UnparsedReason::UnknownProtocol },
            exchange: None,
            error: None,
        })
    }

    fn interrupted(&mut self, _dir: Direction, _buf: &Bytes) -> Partial {
        Partial {
            body: Body::Unparsed { reason: UnparsedReason::UnknownProtocol },
            exchange: None,
            total: None,
            complete_at_end: true,
        }
    }

    fn resync(&mut self, _dir: Direction, _buf: &[u8]) -> Option<usize> {
        Some(0)
    }

    fn gap(&mut self, _dir: Direction) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_buffer_is_one_record_up_to_cap() {
        let cfg = ProtoConfig { max_message_bytes: 4, ..ProtoConfig::default() };
        let mut p = UnknownParser::new(&cfg);
        match p.parse(Direction::Egress, &Bytes::from_static(b"abcdefg")) {
            Parse::Message(m) => assert_eq!(m.len, 4),
            other => panic!("unexpected {other:?}"),
        }
        match p.parse(Direction::Egress, &Bytes::from_static(b"ab")) {
            Parse::Message(m) => assert_eq!(m.len, 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
