//! The JSON line written for each captured event or gap.
use base64::Engine as _;
use serde::Serialize;

use crate::{
    capture::event::{CaptureEvent, Direction, GapReason, Meta, Transport},
    capture::tls::TlsLib,
    clock::{ClockSync, KERNEL_CLOCK, rfc3339},
    conn::Gap,
};

/// One output line. Optional fields are omitted when they do not apply.
#[derive(Debug, Serialize)]
pub struct JsonRecord {
    /// `data`, `connect`, `accept`, `close` or `gap`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// UTC time of the kernel event (RFC 3339, ns).
    pub ts: String,
    /// The raw kernel timestamp, ns of `clock`.
    pub ts_kernel_ns: u64,
    /// The kernel clock `ts_kernel_ns` is in.
    pub clock: &'static str,
    /// Error bound of the kernel→UTC conversion, ns.
    pub clock_error_ns: u64,
    pub conn_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub netns: u32,
    pub fd: i32,
    pub syscall: &'static str,
    pub transport: Transport,
    pub local: String,
    pub remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Position of the first byte in the direction's stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<u64>,
    /// Bytes of payload (data) or missing bytes (gap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// Payload, base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_reason: Option<GapReason>,
    /// Bytes sent/received on the connection so far (final on `close`).
    pub tx_total: u64,
    pub rx_total: u64,
    /// The remote address is the datagram's own (unconnected UDP).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub peer_from_arg: bool,
    /// The connection predates capture; positions count from first sight.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub midstream: bool,
    /// The kernel could not track this socket; `pos` is not meaningful.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// TLS plaintext: the library it was taken from. Positions of TLS records
    /// count plaintext bytes, separately from the socket's (ciphertext) stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsLib>,
    /// Workload identity of the process (cgroup path, container, executable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<std::sync::Arc<crate::identity::Identity>>,
    /// Identity of the process at the other end, when it is on this host too
    /// (see `identity::peers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<std::sync::Arc<crate::identity::Identity>>,
}

impl JsonRecord {
    fn base(kind: &'static str, m: &Meta, clock: &ClockSync) -> Self {
        JsonRecord {
            kind,
            ts: rfc3339(clock.to_utc_ns(m.ts_ns)),
            ts_kernel_ns: m.ts_ns,
            clock: KERNEL_CLOCK,
            clock_error_ns: clock.error_ns,
            conn_id: m.conn_id,
            pid: m.pid,
            tid: m.tid,
            uid: m.uid,
            comm: m.comm.clone(),
            cgroup_id: m.cgroup_id,
            netns: m.netns,
            fd: m.fd,
            syscall: m.syscall,
            transport: m.transport,
            local: m.local.to_string(),
            remote: m.remote.to_string(),
            direction: None,
            pos: None,
            len: None,
            payload_b64: None,
            gap_reason: None,
            tx_total: m.tx_total,
            rx_total: m.rx_total,
            peer_from_arg: m.peer_from_arg,
            midstream: m.midstream,
            untracked: m.untracked,
            tls: None,
            identity: None,
            peer_identity: None,
        }
    }

    /// The record for a captured event. Truncations are reported as gaps.
    pub fn from_event(ev: &CaptureEvent, clock: &ClockSync) -> Self {
        match ev {
            CaptureEvent::Data { meta, direction, pos, payload } => JsonRecord {
                direction: Some(*direction),
                pos: Some(*pos),
                len: Some(payload.len() as u64),
                payload_b64: Some(base64::engine::general_purpose::STANDARD.encode(payload)),
                ..Self::base("data", meta, clock)
            },
            CaptureEvent::Connect { meta } => Self::base("connect", meta, clock),
            CaptureEvent::Accept { meta } => Self::base("accept", meta, clock),
            CaptureEvent::Close { meta } => Self::base("close", meta, clock),
            CaptureEvent::Exec { meta } => Self::base("exec", meta, clock),
            CaptureEvent::Truncated { meta, direction, pos, len, reason } => JsonRecord {
                direction: Some(*direction),
                pos: Some(*pos),
                len: Some(*len),
                gap_reason: Some(*reason),
                ..Self::base("gap", meta, clock)
            },
        }
    }

    /// The record for a gap found by the tracker (lost bytes).
    pub fn from_gap(g: &Gap, clock: &ClockSync) -> Self {
        JsonRecord {
            direction: Some(g.direction),
            pos: Some(g.pos),
            len: Some(g.len),
            gap_reason: Some(g.reason),
            ..Self::base("gap", &g.meta, clock)
        }
    }
}
