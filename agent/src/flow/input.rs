//! The input contract between kernel capture and flow reassembly.
//!
//! Capture turns ring-buffer events into [`FlowEvent`]s. Per connection
//! (`conn_id`, unique per agent boot) and per [`Direction`], every byte has a
//! position in that direction's stream; chunks may arrive out of order (events
//! from different CPUs) but never duplicated. Bytes that capture knows it could
//! not deliver are announced with a [`GapEvent`]. For UDP every chunk is one
//! datagram.
//!
//! Mapping from the kernel's `wiretrail_common::event` records:
//!
//! | kernel event | flow event |
//! | --- | --- |
//! | `KIND_CONNECT` / `KIND_ACCEPT` | [`FlowEvent::Open`], role `Client` / `Server` |
//! | first event of a connection not opened under capture (`FLAG_MIDSTREAM`) | `FlowEngine::adopt` with role `Unknown` and the transport, endpoints and identity of that event (`open_seen` false); bare data without it is adopted as TCP |
//! | `KIND_DATA` | [`FlowEvent::Data`] (`DIR_EGRESS` → `Egress`, `DIR_INGRESS` → `Ingress`) |
//! | `KIND_TRUNCATED` | [`FlowEvent::Gap`], reason `Truncated`, or `Unreadable` with `FLAG_UNREADABLE` |
//! | ring buffer loss (`STAT_LOST_*`) with known positions | [`FlowEvent::Gap`], reason `Lost` |
//! | `KIND_CLOSE` | [`FlowEvent::Close`] with the final `tx_total` / `rx_total` |
//! | `FLAG_UNTRACKED` (`conn_id` 0) | any event with `conn_id` 0: recorded raw, not reassembled |

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;

/// Highest stream position accepted: keeps all position arithmetic far from
/// overflow (2^62 bytes is ~4.6 EB per direction).
pub const MAX_STREAM_POS: u64 = 1 << 62;

/// Why an event cannot be used as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// A data or gap event ends past [`MAX_STREAM_POS`].
    #[error("conn {conn_id}: position {pos} + length {len} is past the stream limit 2^62")]
    Position {
        /// Connection.
        conn_id: u64,
        /// Position of the event.
        pos: u64,
        /// Length of the event.
        len: u64,
    },
    /// A close event whose final counts are past [`MAX_STREAM_POS`].
    #[error("conn {conn_id}: close totals tx {tx_total} / rx {rx_total} are past the stream limit 2^62")]
    Totals {
        /// Connection.
        conn_id: u64,
        /// Egress total.
        tx_total: u64,
        /// Ingress total.
        rx_total: u64,
    },
}

/// Direction of bytes from the point of view of the local (traced) process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
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

/// Why bytes are missing from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Capture lost the event (ring buffer full). Reported by capture.
    Lost,
    /// Capture deliberately did not copy the bytes (per-call or per-connection cap).
    Truncated,
    /// The bytes could not be read from the process's memory.
    Unreadable,
    /// Bytes never arrived before the out-of-order window filled up; the
    /// reassembler gave up waiting for them.
    ReorderOverflow,
    /// Bytes below the final counts of a close event that never arrived.
    MissingAtClose,
    /// Bytes never arrived before the connection was flushed (idle, evicted or
    /// engine shutdown) while later bytes had been seen.
    MissingAtFlush,
    /// Bytes of a message beyond the configured message cap, not kept.
    MessageCap,
}

/// Transport protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Byte stream; chunks are reassembled by position.
    Tcp,
    /// Datagrams; each chunk is one message.
    Udp,
}

/// How the connection was first seen by capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The local process called connect(): egress carries the client's bytes.
    Client,
    /// The local process accepted it: ingress carries the client's bytes.
    Server,
    /// Seen mid-stream (predates capture) or never announced.
    Unknown,
}

/// Bytes of one direction of one connection at a stream position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    /// Connection the bytes belong to.
    pub conn_id: u64,
    /// Which of the two streams of the connection.
    pub direction: Direction,
    /// Stream position of `data[0]`; orders chunks from different CPUs.
    pub pos: u64,
    /// Kernel CLOCK_BOOTTIME of the syscall, in ns.
    pub ts_ns: u64,
    /// The captured bytes (zero-copy handle; `Vec<u8>` converts for free).
    pub data: Bytes,
}

/// Bytes capture knows it did not deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapEvent {
    /// Connection the missing bytes belong to.
    pub conn_id: u64,
    /// Which stream is missing bytes.
    pub direction: Direction,
    /// Stream position of the first missing byte.
    pub pos: u64,
    /// Number of missing bytes.
    pub len: u64,
    /// Kernel CLOCK_BOOTTIME of the event, in ns.
    pub ts_ns: u64,
    /// Why the bytes are missing.
    pub reason: GapReason,
}

/// Identity of the process owning a connection, as captured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessIdentity {
    /// Process id (tgid) that opened or first used the socket.
    pub pid: u32,
    /// Real uid of that process.
    pub uid: u32,
    /// Task command name (`comm`).
    pub comm: String,
    /// cgroup v2 id, later resolved to container and pod.
    pub cgroup_id: u64,
}

/// A connection was opened (connect/accept) or first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOpen {
    /// Connection id, unique per agent boot.
    pub conn_id: u64,
    /// Kernel CLOCK_BOOTTIME of the connect/accept, in ns.
    pub ts_ns: u64,
    /// Local endpoint, if capture could read it.
    pub local: Option<SocketAddr>,
    /// Remote endpoint, if capture could read it.
    pub remote: Option<SocketAddr>,
    /// TCP stream or UDP datagrams.
    pub transport: Transport,
    /// Who initiated the connection, which tells the request direction.
    pub role: Role,
    /// Process identity carried into the connection record.
    pub identity: ProcessIdentity,
}

/// The connection's last tracked fd was closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnClose {
    /// Connection id.
    pub conn_id: u64,
    /// Kernel CLOCK_BOOTTIME of the close, in ns.
    pub ts_ns: u64,
    /// Final egress byte count: egress bytes below it never seen are a gap.
    pub tx_total: u64,
    /// Final ingress byte count: ingress bytes below it never seen are a gap.
    pub rx_total: u64,
}

/// One input event for the flow engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A connection opened.
    Open(ConnOpen),
    /// Payload bytes.
    Data(DataChunk),
    /// Known-missing bytes.
    Gap(GapEvent),
    /// A connection closed.
    Close(ConnClose),
}

impl FlowEvent {
    /// The connection the event belongs to.
    pub fn conn_id(&self) -> u64 {
        match self {
            FlowEvent::Open(e) => e.conn_id,
            FlowEvent::Data(e) => e.conn_id,
            FlowEvent::Gap(e) => e.conn_id,
            FlowEvent::Close(e) => e.conn_id,
        }
    }

    /// Check positions and totals are in range.
    pub fn validate(&self) -> Result<(), InputError> {
        let end = |pos: u64, len: u64| pos.checked_add(len).is_some_and(|e| e <= MAX_STREAM_POS);
        match self {
            FlowEvent::Data(d) if !end(d.pos, d.data.len() as u64) => {
                Err(InputError::Position { conn_id: d.conn_id, pos: d.pos, len: d.data.len() as u64 })
            }
            FlowEvent::Gap(g) if !end(g.pos, g.len) => {
                Err(InputError::Position { conn_id: g.conn_id, pos: g.pos, len: g.len })
            }
            FlowEvent::Close(c) if c.tx_total > MAX_STREAM_POS || c.rx_total > MAX_STREAM_POS => {
                Err(InputError::Totals { conn_id: c.conn_id, tx_total: c.tx_total, rx_total: c.rx_total })
            }
            _ => Ok(()),
        }
    }

    /// The kernel timestamp of the event.
    pub fn ts_ns(&self) -> u64 {
        match self {
            FlowEvent::Open(e) => e.ts_ns,
            FlowEvent::Data(e) => e.ts_ns,
            FlowEvent::Gap(e) => e.ts_ns,
            FlowEvent::Close(e) => e.ts_ns,
        }
    }
}
