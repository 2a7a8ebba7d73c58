//! Decoding ring-buffer records into typed events (length checked before every read).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wiretrail_common::*;

use crate::types::{Call, Comm, Direction, GapReason, Transport};

/// Fields common to every event, decoded from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
    pub conn_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub fd: i32,
    pub cgroup_id: u64,
    pub netns: u32,
    pub comm: Comm,
    pub transport: Transport,
    /// The syscall or TLS function that produced the event.
    pub call: Call,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The remote address is this datagram's (unconnected UDP), not the socket's.
    pub peer_from_arg: bool,
    /// First sighting of the socket was a data event: it predates capture.
    pub midstream: bool,
    /// The kernel's tracking map was full; positions are not meaningful.
    pub untracked: bool,
    /// TLS plaintext taken inside a TLS library (own position space).
    pub tls: bool,
    /// Which library file (see `capture::tls::TlsRegistry`), for TLS events.
    pub tls_lib: u16,
    pub tx_total: u64,
    pub rx_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    Data {
        meta: Meta,
        direction: Direction,
        pos: u64,
        /// Shared, not copied, by the local output, reassembly and shipping.
        payload: bytes::Bytes,
    },
    Connect {
        meta: Meta,
    },
    Accept {
        meta: Meta,
    },
    Close {
        meta: Meta,
    },
    /// A process executed a new program image (for TLS library discovery).
    Exec {
        meta: Meta,
    },
    /// Bytes transferred but not captured (explicit, never silent).
    Truncated {
        meta: Meta,
        direction: Direction,
        pos: u64,
        len: u64,
        reason: GapReason,
    },
}

impl CaptureEvent {
    pub fn meta(&self) -> &Meta {
        match self {
            CaptureEvent::Data { meta, .. }
            | CaptureEvent::Connect { meta }
            | CaptureEvent::Accept { meta }
            | CaptureEvent::Close { meta }
            | CaptureEvent::Exec { meta }
            | CaptureEvent::Truncated { meta, .. } => meta,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {EVENT_HEADER_SIZE}-byte header")]
    Short { len: usize },
    #[error("data record announces {announced} payload bytes but carries {actual}")]
    PayloadLength { announced: usize, actual: usize },
    #[error("unknown event kind {kind}")]
    Kind { kind: u8 },
    #[error("unknown direction {direction}")]
    Direction { direction: u8 },
}

fn addr(family: u8, raw: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == FAMILY_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(*raw);
        // IPv4 traffic on a dual-stack socket: show the IPv4 address.
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    };
    SocketAddr::new(ip, port)
}

fn direction(d: u8) -> Result<Direction, DecodeError> {
    match d {
        DIR_EGRESS => Ok(Direction::Egress),
        DIR_INGRESS => Ok(Direction::Ingress),
        direction => Err(DecodeError::Direction { direction }),
    }
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<CaptureEvent, DecodeError> {
    if buf.len() < EVENT_HEADER_SIZE {
        return Err(DecodeError::Short { len: buf.len() });
    }
    // SAFETY: length checked above; EventHeader is plain old data of this size.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    let meta = Meta {
        ts_ns: h.ts_ns,
        conn_id: h.conn_id,
        pid: h.pid,
        tid: h.tid,
        uid: h.uid,
        fd: h.fd,
        cgroup_id: h.cgroup_id,
        netns: h.netns,
        comm: Comm::from_kernel(&h.comm),
        transport: if h.protocol == PROTO_UDP { Transport::Udp } else { Transport::Tcp },
        call: Call(h.syscall),
        local: addr(h.family, &h.laddr, h.lport),
        remote: addr(h.family, &h.raddr, h.rport),
        peer_from_arg: h.flags & FLAG_PEER_FROM_ARG != 0,
        midstream: h.flags & FLAG_MIDSTREAM != 0,
        untracked: h.flags & FLAG_UNTRACKED != 0,
        tls: h.flags & FLAG_TLS != 0,
        tls_lib: h.tls_lib,
        tx_total: h.tx_total,
        rx_total: h.rx_total,
    };
    Ok(match h.kind {
        KIND_DATA => {
            let payload = &buf[EVENT_HEADER_SIZE..];
            // The ring buffer rounds records up to 8 bytes; the header says how many are ours.
            let len = h.len as usize;
            if payload.len() < len {
                return Err(DecodeError::PayloadLength { announced: len, actual: payload.len() });
            }
            CaptureEvent::Data {
                direction: direction(h.direction)?,
                pos: h.pos,
                payload: bytes::Bytes::copy_from_slice(&payload[..len]),
                meta,
            }
        }
        KIND_CONNECT => CaptureEvent::Connect { meta },
        KIND_ACCEPT => CaptureEvent::Accept { meta },
        KIND_CLOSE => CaptureEvent::Close { meta },
        KIND_EXEC => CaptureEvent::Exec { meta },
        KIND_TRUNCATED => CaptureEvent::Truncated {
            direction: direction(h.direction)?,
            pos: h.pos,
            len: h.len as u64,
            reason: if h.flags & FLAG_NOT_KEPT != 0 {
                GapReason::CiphertextNotKept
            } else if h.flags & FLAG_UNREADABLE != 0 {
                GapReason::Unreadable
            } else {
                GapReason::Truncated
            },
            meta,
        },
        kind => return Err(DecodeError::Kind { kind }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            ts_ns: 5,
            conn_id: 7,
            pos: 100,
            cgroup_id: 9,
            tx_total: 0,
            rx_total: 0,
            pid: 1,
            tid: 2,
            uid: 0,
            fd: 3,
            netns: 4026531840,
            len: 3,
            kind,
            direction: DIR_EGRESS,
            family: FAMILY_INET,
            protocol: PROTO_TCP,
            syscall: SYS_SENDTO,
            flags: 0,
            lport: 5555,
            rport: 80,
            tls_lib: 0,
            _pad0: [0; 4],
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm,
        }
    }

    fn bytes(h: &EventHeader, payload: &[u8]) -> Vec<u8> {
        let mut v =
            unsafe { std::slice::from_raw_parts((h as *const EventHeader).cast::<u8>(), EVENT_HEADER_SIZE) }.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_data_with_padding() {
        let ev = decode(&bytes(&header(KIND_DATA), b"abc\0\0\0\0\0")).unwrap();
        let CaptureEvent::Data { meta, direction, pos, payload } = ev else { panic!() };
        assert_eq!((direction, pos, &payload[..]), (Direction::Egress, 100, &b"abc"[..]));
        assert_eq!(meta.comm.as_str(), "curl");
        assert_eq!(meta.local.to_string(), "127.0.0.1:5555");
        assert_eq!(meta.remote.to_string(), "127.0.0.2:80");
        assert_eq!(meta.call.name(), "sendto");
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short { len: 10 }));
        assert_eq!(
            decode(&bytes(&header(KIND_DATA), b"ab")),
            Err(DecodeError::PayloadLength { announced: 3, actual: 2 })
        );
        assert_eq!(decode(&bytes(&header(99), b"")), Err(DecodeError::Kind { kind: 99 }));
    }

    #[test]
    fn mapped_ipv6_shows_as_ipv4() {
        let mut h = header(KIND_CONNECT);
        h.family = FAMILY_INET6;
        h.raddr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3];
        h.laddr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let ev = decode(&bytes(&h, b"")).unwrap();
        assert_eq!(ev.meta().remote.to_string(), "10.1.2.3:80");
        assert_eq!(ev.meta().local.to_string(), "[::1]:5555");
    }

    #[test]
    fn truncated_event_carries_reason() {
        let mut h = header(KIND_TRUNCATED);
        h.flags = FLAG_UNREADABLE;
        h.len = 4096;
        let CaptureEvent::Truncated { len, reason, .. } = decode(&bytes(&h, b"")).unwrap() else { panic!() };
        assert_eq!((len, reason), (4096, GapReason::Unreadable));
        h.flags = FLAG_NOT_KEPT;
        let CaptureEvent::Truncated { len, reason, .. } = decode(&bytes(&h, b"")).unwrap() else { panic!() };
        assert_eq!((len, reason), (4096, GapReason::CiphertextNotKept));
        h.flags = 0;
        let CaptureEvent::Truncated { reason, .. } = decode(&bytes(&h, b"")).unwrap() else { panic!() };
        assert_eq!(reason, GapReason::Truncated, "over a cap");
    }
}
