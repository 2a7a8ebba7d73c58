//! Shared drivers for the fuzz targets: they push arbitrary bytes through a
//! parser or the flow engine the way the engine itself does, and check the
//! contracts (progress, bounds) on every step.

use std::net::SocketAddr;

use bytes::Bytes;
use wiretrail_agent::flow::input::{
    ConnClose, ConnOpen, DataChunk, Direction, FlowEvent, GapEvent, GapReason, ProcessIdentity,
    Role, Transport,
};
use wiretrail_agent::flow::{FlowConfig, FlowEngine};
use wiretrail_agent::proto::{Parse, ProtoConfig, Protocol, make_parser};

/// Small caps so that fuzzing reaches them.
pub fn small_proto_config() -> ProtoConfig {
    ProtoConfig {
        max_message_bytes: 4096,
        max_headers: 16,
        max_header_bytes: 2048,
        max_hpack_table_bytes: 4096,
        max_h2_streams: 8,
        max_resp_elements: 256,
        max_resp_depth: 8,
        max_pg_messages_listed: 8,
        max_dns_records: 16,
        max_fix_fields: 32,
    }
}

/// Drive one parser with bytes arriving in both directions, with gaps and
/// an end, checking the parser contract at every call.
///
/// Input layout: a sequence of control bytes, each followed by its operand:
/// bit 0 is the direction; bits 1-2 the action (0/1: append the next
/// `((c >> 3) + 1) * 4` bytes, 2: a gap, 3: the stream ends).
pub fn drive_parser(protocol: Protocol, transport: Transport, data: &[u8]) {
    let cfg = small_proto_config();
    let mut p = make_parser(protocol, Direction::Egress, transport, &cfg);
    let mut buf: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut desync = [false, false];
    let mut rest = data;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        let dir = if c & 1 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let i = dir.index();
        match (c >> 1) & 3 {
            0 | 1 => {
                let n = ((usize::from(c >> 3) + 1) * 4).min(rest.len());
                if transport == Transport::Udp {
                    // One datagram per append.
                    let d = Bytes::copy_from_slice(&rest[..n]);
                    check(p.parse(dir, &d), d.len());
                } else {
                    buf[i].extend_from_slice(&rest[..n]);
                }
                rest = &rest[n..];
            }
            2 => {
                if !buf[i].is_empty() {
                    let _ = p.interrupted(dir, &Bytes::from(std::mem::take(&mut buf[i])));
                }
                p.gap(dir);
                desync[i] = true;
            }
            _ => {
                if !buf[i].is_empty() {
                    let _ = p.interrupted(dir, &Bytes::from(std::mem::take(&mut buf[i])));
                }
            }
        }
        // Consume what can be consumed, like the engine does.
        loop {
            if buf[i].is_empty() {
                break;
            }
            if desync[i] {
                match p.resync(dir, &buf[i]) {
                    Some(off) => {
                        assert!(off <= buf[i].len(), "resync past the buffer");
                        buf[i].drain(..off);
                        desync[i] = false;
                    }
                    None => {
                        buf[i].clear();
                        break;
                    }
                }
                continue;
            }
            let b = Bytes::copy_from_slice(&buf[i]);
            match p.parse(dir, &b) {
                Parse::Message(m) => {
                    assert!(
                        m.len >= 1 && m.len <= b.len(),
                        "message length out of bounds"
                    );
                    buf[i].drain(..m.len);
                }
                Parse::Invalid { len, .. } => {
                    assert!(len >= 1 && len <= b.len(), "invalid length out of bounds");
                    buf[i].drain(..len);
                    desync[i] = true;
                }
                Parse::Need { min_len, .. } => {
                    assert!(min_len > b.len(), "Need without asking for more bytes");
                    if b.len() >= cfg.max_message_bytes {
                        let _ = p.interrupted(dir, &b);
                        buf[i].clear();
                        desync[i] = true;
                    }
                    break;
                }
            }
        }
    }
}

fn check(r: Parse, len: usize) {
    match r {
        Parse::Message(m) => assert!(m.len >= 1 && m.len <= len.max(1)),
        Parse::Invalid { len: n, .. } => assert!(n >= 1 && n <= len.max(1)),
        Parse::Need { min_len, .. } => assert!(min_len > len),
    }
}

/// Drive the flow engine with arbitrary events and check that nothing is
/// lost or left buffered.
///
/// Input layout: events of `[op, conn, pos_hi, pos_lo, len]` followed by
/// `len` data bytes for data events.
pub fn drive_engine(data: &[u8]) {
    let mut proto = small_proto_config();
    proto.max_message_bytes = 512;
    let cfg = FlowConfig {
        max_connections: 4,
        max_buffered_bytes: 4096,
        max_reorder_bytes: 1024,
        idle_timeout_ns: 1_000_000,
        close_linger_ns: 10_000,
        detect_max_bytes: 16,
        max_pending_exchanges: 8,
        proto,
    };
    let mut e = FlowEngine::new(cfg);
    let mut out = Vec::new();
    let mut ts = 0u64;
    let mut rest = data;
    while rest.len() >= 5 {
        let (h, tail) = rest.split_at(5);
        rest = tail;
        ts += 100;
        let conn = u64::from(h[1] % 5);
        let dir = if h[0] & 1 == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let pos = u64::from(u16::from_be_bytes([h[2], h[3]]));
        let len = usize::from(h[4]);
        let ev = match (h[0] >> 1) % 8 {
            0 => {
                let ports = [80u16, 443, 5432, 6379, 53, 8080, 9876, 1];
                let remote = ports[usize::from(h[2] % 8)];
                FlowEvent::Open(ConnOpen {
                    conn_id: conn,
                    ts_ns: ts,
                    local: Some(SocketAddr::from(([127, 0, 0, 1], 40_000))),
                    remote: Some(SocketAddr::from(([127, 0, 0, 1], remote))),
                    transport: if h[3] & 1 == 0 {
                        Transport::Tcp
                    } else {
                        Transport::Udp
                    },
                    role: [Role::Client, Role::Server, Role::Unknown][usize::from(h[3] >> 1) % 3],
                    identity: ProcessIdentity::default(),
                })
            }
            1 => FlowEvent::Gap(GapEvent {
                conn_id: conn,
                direction: dir,
                pos,
                len: len as u64,
                ts_ns: ts,
                reason: GapReason::Lost,
            }),
            2 => FlowEvent::Close(ConnClose {
                conn_id: conn,
                ts_ns: ts,
                tx_total: pos,
                rx_total: u64::from(h[4]) * 8,
            }),
            3 => {
                out.extend(e.flush_idle(ts + u64::from(h[4]) * 10_000));
                continue;
            }
            _ => {
                let n = len.min(rest.len());
                let d = Bytes::copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                FlowEvent::Data(DataChunk {
                    conn_id: conn,
                    direction: dir,
                    pos,
                    ts_ns: ts,
                    data: d,
                })
            }
        };
        e.push_into(ev, &mut out);
        assert!(e.connections() <= 4, "connection cap exceeded");
    }
    out.extend(e.shutdown());
    assert_eq!(e.buffered_bytes(), 0, "bytes left buffered after shutdown");
    let raw: u64 = out.iter().map(|r| r.raw.0.len() as u64).sum();
    let st = e.stats();
    assert_eq!(
        raw + st.overlap_bytes + st.message_cap_bytes,
        st.data_bytes,
        "data bytes unaccounted for"
    );
}
