//! Shared drivers for the fuzz targets: they push arbitrary bytes through a
//! parser or the connection table the way the agent itself does, and check
//! the contracts (progress, bounds) on every step.

use std::sync::Arc;

use bytes::Bytes;
use wiretrail_agent::capture::event::CaptureEvent;
use wiretrail_agent::capture::synthetic::Synth;
use wiretrail_agent::capture::tls::TlsRegistry;
use wiretrail_agent::conn::{ConnConfig, ConnTable};
use wiretrail_agent::identity::{IdentityResolver, Sources};
use wiretrail_agent::proto::{Parse, ProtoConfig, Protocol, make_parser};
use wiretrail_agent::types::{Direction, GapReason, Transport};

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
        max_prepared_statements: 4,
        max_prepared_sql_bytes: 256,
        max_values_listed: 8,
        max_value_bytes: 32,
        max_payload_preview_bytes: 64,
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

/// Drive the connection table with arbitrary events on four sockets (two
/// loopback pairs, so both ends of a conversation are exercised) and check
/// that the bounds hold and nothing is lost or left buffered.
///
/// Input layout: a flags byte (bit 0: pair both ends), then events of
/// `[op, conn, pos_hi, pos_lo, len]` followed by `len` data bytes for data events.
pub fn drive_engine(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut proto = small_proto_config();
    proto.max_message_bytes = 512;
    let twins = flags & 1 == 1;
    let cfg = ConnConfig {
        max_conns: 3,
        max_buffered_bytes: 4096,
        max_reorder_bytes: 1024,
        reorder_window_ns: 10_000,
        idle_timeout_ns: 1_000_000,
        open_record_delay_ns: 50_000,
        segment_max_bytes: 256,
        segment_max_age_ns: 5_000,
        exchange_max_age_ns: 100_000,
        exchange_max_bytes: 2048,
        max_pending_exchanges: 8,
        detect_max_bytes: 16,
        twins,
        proto,
    };
    let mut t = ConnTable::new(cfg, IdentityResolver::new(Sources::default()), Arc::new(TlsRegistry::default()));
    let ports = [80u16, 443, 5432, 6379, 53, 8080, 9876, 1, 3306, 5672, 4222, 1883];
    let port = ports[usize::from(flags >> 1) % ports.len()];
    let (a, b) = ("127.0.0.1:40000".to_string(), format!("127.0.0.1:{port}"));
    let (c, d) = ("127.0.0.1:40001".to_string(), format!("127.0.0.1:{port}"));
    let mut socks = [
        Synth::tcp(1, &a, &b),
        Synth::tcp(2, &b, &a),
        if flags & 0x20 == 0 { Synth::tcp(3, &c, &d) } else { Synth::udp(3, &c, &d) },
        Synth::tcp(4, &d, &c),
    ];
    let mut out = Vec::new();
    let mut data_bytes = 0u64;
    let mut ts = 1_000u64;
    while rest.len() >= 5 {
        let (h, tail) = rest.split_at(5);
        rest = tail;
        ts += 100;
        let i = usize::from(h[1] % 4);
        let s = &mut socks[i];
        s.ts = ts;
        let dir = if h[0] & 1 == 0 { Direction::Egress } else { Direction::Ingress };
        let pos = u64::from(u16::from_be_bytes([h[2], h[3]]));
        let len = usize::from(h[4]);
        let ev = match (h[0] >> 1) % 8 {
            0 => if i % 2 == 0 { s.connect() } else { s.accept() },
            1 => {
                let mut ev = s.truncated(dir, len as u64, GapReason::Lost);
                if let CaptureEvent::Truncated { pos: p, .. } = &mut ev {
                    *p = pos;
                }
                ev
            }
            2 => {
                let mut ev = s.close();
                if let CaptureEvent::Close { meta } = &mut ev {
                    meta.tx_total = pos;
                    meta.rx_total = u64::from(h[4]) * 8;
                }
                ev
            }
            3 => {
                t.tick(ts + u64::from(h[4]) * 1_000, &mut out);
                continue;
            }
            _ => {
                let n = len.min(rest.len());
                data_bytes += n as u64;
                let ev = s.data_at(dir, pos, &rest[..n]);
                rest = &rest[n..];
                ev
            }
        };
        t.on_event(ev, &mut out);
        assert!(t.len() <= 3, "connection bound exceeded");
    }
    t.finish_all(&mut out);
    assert!(t.is_empty(), "connections left after finish_all");
    assert_eq!(t.buffered(), 0, "bytes left buffered after finish_all");
    if !twins {
        // Alone, every data byte is in a record, or counted as overlap or over the cap.
        let raw: u64 = out.iter().flat_map(|r| r.parts()).map(|p| p.raw.0.len() as u64).sum();
        let st = &t.stats;
        assert_eq!(raw + st.overlap_bytes + st.message_cap_bytes, data_bytes, "data bytes unaccounted for: {st:?}");
    }
    for r in &out {
        // Every record renders in every form.
        let _ = serde_json::to_vec(r).expect("JSON");
        let _ = wiretrail_agent::record::text::line(r);
        let _ = wiretrail_agent::record::wire::to_wire(r, "fuzz");
    }
}

