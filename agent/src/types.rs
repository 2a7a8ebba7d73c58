//! The vocabulary every stage shares — capture events, connections, parsers,
//! records and their writers — defined once.
use serde::{Deserialize, Serialize};
use wiretrail_common as k;

/// Direction of bytes from the local (captured) process's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Bytes the local process wrote.
    Egress,
    /// Bytes the local process read.
    Ingress,
}

impl Direction {
    /// Both directions, in index order.
    pub const BOTH: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    /// Index for per-direction arrays (egress 0, ingress 1).
    pub fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }

    /// The other direction of the same connection.
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
}

/// Transport protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Byte stream; chunks are reassembled by position.
    Tcp,
    /// Datagrams; each chunk is one datagram.
    Udp,
}

/// Why bytes are missing from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The kernel ring buffer was full (or the event never arrived within the
    /// reorder window): the bytes were not handed over.
    Lost,
    /// Over a configured capture cap (per call or per connection).
    Truncated,
    /// The process's buffer could not be read by the kernel program.
    Unreadable,
    /// Bytes never arrived before the out-of-order window filled up.
    ReorderOverflow,
    /// Bytes below the final counts of a close event that never arrived.
    MissingAtClose,
    /// Bytes never arrived before the connection was flushed (idle, evicted
    /// or agent shutdown) while later bytes had been seen.
    MissingAtFlush,
    /// Bytes of one message beyond the per-message cap, not kept.
    MessageCap,
    /// TLS ciphertext counted and timed but not copied: the socket's
    /// plaintext of that direction is captured (`--keep-tls-ciphertext`
    /// keeps it). Not a loss: it never makes a gap record; the connection
    /// record's totals carry it as `not_kept`.
    CiphertextNotKept,
}

impl GapReason {
    /// Every reason, for counters.
    pub const ALL: [GapReason; 8] = [
        GapReason::Lost,
        GapReason::Truncated,
        GapReason::Unreadable,
        GapReason::ReorderOverflow,
        GapReason::MissingAtClose,
        GapReason::MissingAtFlush,
        GapReason::MessageCap,
        GapReason::CiphertextNotKept,
    ];

    /// The snake_case name (as in JSON and metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            GapReason::Lost => "lost",
            GapReason::Truncated => "truncated",
            GapReason::Unreadable => "unreadable",
            GapReason::ReorderOverflow => "reorder_overflow",
            GapReason::MissingAtClose => "missing_at_close",
            GapReason::MissingAtFlush => "missing_at_flush",
            GapReason::MessageCap => "message_cap",
            GapReason::CiphertextNotKept => "ciphertext_not_kept",
        }
    }
}

/// Which end of a connection the local process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It called connect(): egress carries the client's bytes.
    Client,
    /// It accepted the connection: ingress carries the client's bytes.
    Server,
    /// Seen mid-stream (the socket predates capture) or never announced.
    Unknown,
}

/// The call that handed bytes over: a syscall or a TLS library function
/// (the numbers are `wiretrail_common`'s `SYS_*`, also `wiretrail.v1.Call`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Call(pub u8);

impl Call {
    /// The function's name (`"unknown"` for numbers this build does not know).
    pub fn name(self) -> &'static str {
        match self.0 {
            k::SYS_READ => "read",
            k::SYS_WRITE => "write",
            k::SYS_READV => "readv",
            k::SYS_WRITEV => "writev",
            k::SYS_RECVFROM => "recvfrom",
            k::SYS_SENDTO => "sendto",
            k::SYS_RECVMSG => "recvmsg",
            k::SYS_SENDMSG => "sendmsg",
            k::SYS_RECVMMSG => "recvmmsg",
            k::SYS_SENDMMSG => "sendmmsg",
            k::SYS_CONNECT => "connect",
            k::SYS_ACCEPT => "accept",
            k::SYS_ACCEPT4 => "accept4",
            k::SYS_CLOSE => "close",
            k::SYS_SSL_WRITE => "SSL_write",
            k::SYS_SSL_READ => "SSL_read",
            k::SYS_GNUTLS_SEND => "gnutls_record_send",
            k::SYS_GNUTLS_RECV => "gnutls_record_recv",
            k::SYS_GO_TLS_WRITE => "crypto/tls.(*Conn).Write",
            k::SYS_GO_TLS_READ => "crypto/tls.(*Conn).Read",
            k::SYS_RUSTLS_WRITE => "rustls::Writer::write",
            k::SYS_RUSTLS_READ => "rustls::Reader::read",
            _ => "unknown",
        }
    }

    /// The call named `name` (the inverse of [`Call::name`]).
    pub fn from_name(name: &str) -> Option<Call> {
        if name == "unknown" {
            return None;
        }
        (1..=40u8).map(Call).find(|c| c.name() == name)
    }
}

impl Serialize for Call {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Call {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Call::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown call {s:?}")))
    }
}

/// A task's command name, as the kernel keeps it (at most 16 bytes, no
/// allocation per event).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded field.
    pub fn from_kernel(raw: &[u8; 16]) -> Comm {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(16);
        Comm { bytes: *raw, len: len as u8 }
    }

    /// From text (cut at 16 bytes, on a character boundary).
    pub fn new(s: &str) -> Comm {
        let mut end = s.len().min(16);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 16];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Comm { bytes, len: end as u8 }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text (invalid UTF-8 replaced).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Comm::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_round_trips_and_cuts() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"curl");
        let c = Comm::from_kernel(&raw);
        assert_eq!(c.as_str(), "curl");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"curl\"");
        let back: Comm = serde_json::from_str("\"curl\"").unwrap();
        assert_eq!(back, c);
        assert_eq!(Comm::new("a-very-long-command-name").as_str(), "a-very-long-comm");
        assert_eq!(Comm::from_kernel(&[b'x'; 16]).as_bytes().len(), 16);
    }

    #[test]
    fn calls_round_trip_by_name() {
        for n in [k::SYS_READ, k::SYS_SENDMMSG, k::SYS_SSL_READ, k::SYS_GO_TLS_WRITE] {
            let c = Call(n);
            assert_eq!(Call::from_name(c.name()), Some(c));
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Call>(&j).unwrap(), c);
        }
        assert!(serde_json::from_str::<Call>("\"nope\"").is_err());
    }
}
