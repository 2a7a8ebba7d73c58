//! Helpers shared by the parsers' unit tests.
use bytes::Bytes;

use super::{Body, ExchangeRole, Parse, Parsed, Parser};
use crate::types::Direction;

/// A message's place in an exchange, as a parser reports it.
pub type Link = Option<(u64, ExchangeRole)>;

/// A whole message parsed without error: its length, body and exchange link.
pub fn parsed(p: Parse) -> (usize, Body, Link) {
    match p {
        Parse::Message(Parsed { len, body, exchange, error: None }) => (len, body, exchange),
        other => panic!("expected a parsed message, got {other:?}"),
    }
}

/// `bytes` parse as exactly one message.
pub fn one(p: &mut impl Parser, dir: Direction, bytes: &[u8]) -> (Body, Link) {
    let (len, body, ex) = parsed(p.parse(dir, &Bytes::copy_from_slice(bytes)));
    assert_eq!(len, bytes.len(), "{body:?}");
    (body, ex)
}
