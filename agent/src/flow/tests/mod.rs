//! Engine-level tests: events in, records out.

use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::flow::input::{
    ConnClose, ConnOpen, DataChunk, Direction, GapEvent, GapReason, ProcessIdentity, Role, Transport,
};
use crate::proto::Protocol;
use crate::proto::record::{Body, ConnEnd, ExchangeRole, GapMarker, Record, UnparsedReason};

const REQ: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

fn open(id: u64, role: Role, remote_port: u16) -> FlowEvent {
    FlowEvent::Open(ConnOpen {
        conn_id: id,
        ts_ns: 1_000,
        local: Some(SocketAddr::from(([10, 0, 0, 1], 40_000))),
        remote: Some(SocketAddr::from(([10, 0, 0, 2], remote_port))),
        transport: Transport::Tcp,
        role,
        identity: ProcessIdentity { pid: 42, uid: 1000, comm: "curl".into(), cgroup_id: 7 },
    })
}

fn data(id: u64, dir: Direction, pos: u64, ts: u64, bytes: &[u8]) -> FlowEvent {
    FlowEvent::Data(DataChunk { conn_id: id, direction: dir, pos, ts_ns: ts, data: Bytes::copy_from_slice(bytes) })
}

fn gap(id: u64, dir: Direction, pos: u64, len: u64) -> FlowEvent {
    FlowEvent::Gap(GapEvent { conn_id: id, direction: dir, pos, len, ts_ns: 5_000, reason: GapReason::Lost })
}

fn close(id: u64, tx: u64, rx: u64) -> FlowEvent {
    FlowEvent::Close(ConnClose { conn_id: id, ts_ns: 9_000, tx_total: tx, rx_total: rx })
}

fn run(engine: &mut FlowEngine, events: Vec<FlowEvent>) -> Vec<Record> {
    let mut out = Vec::new();
    for e in events {
        engine.push_into(e, &mut out);
    }
    out
}

fn http_messages(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| matches!(r.body, Body::Http1(_))).collect()
}

#[test]
fn http_exchange_with_latency_and_connection_record() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 0, 2_000, REQ),
            data(1, Direction::Ingress, 0, 3_500, RESP),
            close(1, REQ.len() as u64, RESP.len() as u64),
        ],
    );
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let (req, resp, conn) = (&recs[0], &recs[1], &recs[2]);
    assert_eq!(req.raw.0, REQ);
    assert_eq!(req.protocol, Protocol::Http1);
    assert_eq!(req.exchange.unwrap().role, ExchangeRole::Request);
    assert_eq!(resp.raw.0, RESP);
    assert_eq!(resp.exchange.unwrap().latency_ns, Some(1_500));
    assert_eq!((resp.first_ts_ns, resp.last_ts_ns), (3_500, 3_500));
    let Body::Connection(c) = &conn.body else { panic!("{conn:?}") };
    assert_eq!(c.end, ConnEnd::Closed);
    assert_eq!((c.egress.captured, c.ingress.captured), (REQ.len() as u64, RESP.len() as u64));
    assert_eq!((c.egress.gap, c.ingress.gap), (0, 0));
    assert_eq!(c.identity.comm, "curl");
    assert_eq!(c.messages, 2);
    assert_eq!(conn.protocol, Protocol::Http1);
    assert_eq!(e.connections(), 0);
    assert_eq!(e.buffered_bytes(), 0);
    assert_eq!(e.stats().records, 3);
}

#[test]
fn record_serializes_raw_as_base64() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(&mut e, vec![open(1, Role::Client, 80), data(1, Direction::Egress, 0, 2, REQ)]);
    let json = recs[0].to_json();
    use base64::Engine as _;
    assert_eq!(json["raw"], base64::engine::general_purpose::STANDARD.encode(REQ));
    assert_eq!(json["body"]["type"], "http1");
    assert_eq!(json["body"]["method"], "GET");
    assert_eq!(json["body"]["headers"][0]["name"], "Host");
    assert_eq!(json["direction"], "egress");
}

#[test]
fn gap_inside_a_known_length_body_is_absorbed_into_one_record() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    let hl = head.len() as u64;
    let next = b"HTTP/1.1 204 No Content\r\n\r\n";
    let mut ev = vec![
        open(1, Role::Client, 80),
        data(1, Direction::Egress, 0, 10, REQ),
        data(1, Direction::Egress, REQ.len() as u64, 10, REQ),
        data(1, Direction::Ingress, 0, 20, head),
        data(1, Direction::Ingress, hl, 20, b"abc"),
        gap(1, Direction::Ingress, hl + 3, 4),
        data(1, Direction::Ingress, hl + 7, 30, b"hij"),
    ];
    ev.push(data(1, Direction::Ingress, hl + 10, 40, next));
    let recs = run(&mut e, ev);
    let gaps: Vec<&Record> = recs.iter().filter(|r| matches!(r.body, Body::Gap(_))).collect();
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0].stream_pos, gaps[0].stream_len), (hl + 3, 4));
    let msgs = http_messages(&recs);
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    let spanned = msgs[2];
    assert_eq!(&spanned.raw.0[..], [&head[..], b"abchij"].concat());
    assert_eq!(spanned.gaps, vec![GapMarker { offset: hl + 3, len: 4, reason: GapReason::Lost }]);
    assert_eq!(spanned.stream_len, hl + 10);
    assert!(spanned.error.as_deref().unwrap().contains("gap"));
    // Still in sync: the next response parses and pairs with the 2nd request.
    let Body::Http1(m) = &msgs[3].body else { panic!() };
    assert_eq!(m.status, Some(204));
    assert_eq!(msgs[3].exchange.unwrap().id, 1);
    assert!(msgs[3].error.is_none());
    assert_eq!(e.stats().incomplete_messages, 1);
}

#[test]
fn gap_inside_headers_gives_partial_record_then_resync() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 0, 10, &REQ[..10]),
            gap(1, Direction::Egress, 10, 20),
            data(1, Direction::Egress, 30, 11, &REQ[30..]),
            data(1, Direction::Egress, REQ.len() as u64, 12, REQ),
        ],
    );
    // partial, gap, unparsed tail, then the next request in sync.
    assert!(matches!(recs[0].body, Body::Http1(_)));
    assert_eq!(recs[0].raw.0, &REQ[..10]);
    assert!(recs[0].error.as_deref().unwrap().contains("gap"));
    assert!(matches!(recs[1].body, Body::Gap(_)));
    assert!(matches!(recs[2].body, Body::Unparsed { reason: UnparsedReason::Resync }));
    assert_eq!(recs[2].raw.0, &REQ[30..]);
    assert_eq!(recs[3].raw.0, REQ);
    assert!(recs[3].error.is_none());
    // Every byte is in exactly one record or gap.
    let covered: u64 = recs.iter().map(|r| r.stream_len).sum();
    assert_eq!(covered, 2 * REQ.len() as u64);
}

#[test]
fn out_of_order_chunks_give_the_same_records() {
    let both = [REQ, REQ].concat();
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 20, 11, &both[20..60]),
            data(1, Direction::Egress, 60, 12, &both[60..]),
            data(1, Direction::Egress, 0, 10, &both[..20]),
        ],
    );
    let msgs = http_messages(&recs);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].raw.0, REQ);
    assert_eq!(msgs[1].raw.0, REQ);
    assert_eq!((msgs[0].first_ts_ns, msgs[0].last_ts_ns), (10, 11));
    assert_eq!((msgs[1].first_ts_ns, msgs[1].last_ts_ns), (11, 12));
}

#[test]
fn close_waits_for_late_chunks_then_missing_bytes_become_gaps() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![open(1, Role::Client, 80), data(1, Direction::Egress, 0, 10, &REQ[..20]), close(1, REQ.len() as u64, 0)],
    );
    assert!(recs.is_empty(), "must wait for chunks in flight: {recs:?}");
    // The late chunk completes the stream: finished at once.
    let recs = run(&mut e, vec![data(1, Direction::Egress, 20, 11, &REQ[20..])]);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].raw.0, REQ);
    assert!(matches!(recs[1].body, Body::Connection(_)));

    // Another connection whose tail never arrives: linger expiry.
    let recs = run(
        &mut e,
        vec![open(2, Role::Client, 80), data(2, Direction::Egress, 0, 10, &REQ[..20]), close(2, REQ.len() as u64, 5)],
    );
    assert!(recs.is_empty());
    assert!(e.flush_idle(9_000 + 1).is_empty());
    let recs = e.flush_idle(9_000 + FlowConfig::default().close_linger_ns);
    let gaps: Vec<(Direction, u64, u64, GapReason)> = recs
        .iter()
        .filter_map(|r| match &r.body {
            Body::Gap(g) => Some((r.direction.unwrap(), r.stream_pos, g.len, g.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        gaps,
        vec![
            (Direction::Egress, 20, REQ.len() as u64 - 20, GapReason::MissingAtClose),
            (Direction::Ingress, 0, 5, GapReason::MissingAtClose),
        ]
    );
    let partial = http_messages(&recs)[0];
    assert_eq!(partial.raw.0, &REQ[..20]);
    assert_eq!(partial.gaps.len(), 0);
    assert!(partial.error.is_some());
    let Body::Connection(c) = &recs.last().unwrap().body else { panic!() };
    assert_eq!((c.egress.gap, c.ingress.gap, c.end), (REQ.len() as u64 - 20, 5, ConnEnd::Closed));
}

#[test]
fn idle_connections_are_flushed_with_partial_messages() {
    let cfg = FlowConfig { idle_timeout_ns: 1_000, ..FlowConfig::default() };
    let mut e = FlowEngine::new(cfg);
    run(&mut e, vec![open(1, Role::Client, 80), data(1, Direction::Egress, 0, 1_500, &REQ[..7])]);
    assert!(e.flush_idle(2_499).is_empty());
    let recs = e.flush_idle(2_500);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].raw.0, &REQ[..7]);
    assert_eq!(recs[0].error.as_deref(), Some("stream ended inside the message"));
    let Body::Connection(c) = &recs[1].body else { panic!() };
    assert_eq!(c.end, ConnEnd::Idle);
    assert_eq!(e.stats().connections_idle, 1);
    assert_eq!(e.connections(), 0);
}

#[test]
fn connection_cap_evicts_the_least_recently_active() {
    let cfg = FlowConfig { max_connections: 2, ..FlowConfig::default() };
    let mut e = FlowEngine::new(cfg);
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 0, 5_000, &REQ[..5]),
            open(2, Role::Client, 80),
            open(3, Role::Client, 80),
        ],
    );
    // conn 2 (last active at 1_000) goes, not conn 1 (active at 5_000).
    assert_eq!(recs.len(), 1);
    let Body::Connection(c) = &recs[0].body else { panic!() };
    assert_eq!((recs[0].conn_id, c.end), (2, ConnEnd::Evicted));
    assert_eq!(e.stats().connections_evicted, 1);
    assert_eq!(e.connections(), 2);
}

#[test]
fn memory_cap_evicts_and_keeps_the_bytes_as_records() {
    let cfg = FlowConfig { max_buffered_bytes: 100, ..FlowConfig::default() };
    let mut e = FlowEngine::new(cfg);
    let body = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 0, 5, REQ),
            data(1, Direction::Ingress, 0, 6, body),
            data(1, Direction::Ingress, body.len() as u64, 7, &[b'x'; 80]),
        ],
    );
    assert_eq!(e.stats().connections_evicted, 1);
    assert_eq!(e.buffered_bytes(), 0);
    let partial = http_messages(&recs)[1];
    assert_eq!(partial.raw.0.len(), body.len() + 80);
    assert!(partial.error.is_some());
    assert!(matches!(recs.last().unwrap().body, Body::Connection(_)));
}

#[test]
fn message_cap_keeps_the_head_and_marks_the_rest() {
    let mut cfg = FlowConfig::default();
    cfg.proto.max_message_bytes = 64;
    let mut e = FlowEngine::new(cfg);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n";
    let mut stream = head.to_vec();
    stream.extend_from_slice(&[b'z'; 200]);
    stream.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    let mut ev = vec![
        open(1, Role::Client, 80),
        data(1, Direction::Egress, 0, 1, REQ),
        data(1, Direction::Egress, REQ.len() as u64, 1, REQ),
    ];
    for (i, c) in stream.chunks(30).enumerate() {
        ev.push(data(1, Direction::Ingress, (i * 30) as u64, 2, c));
    }
    let recs = run(&mut e, ev);
    let msgs = http_messages(&recs);
    assert_eq!(msgs.len(), 4);
    let capped = msgs[2];
    let kept = capped.raw.0.len() as u64;
    assert!((64..64 + 30).contains(&kept), "{kept}");
    assert_eq!(
        capped.gaps,
        vec![GapMarker { offset: kept, len: head.len() as u64 + 200 - kept, reason: GapReason::MessageCap }]
    );
    assert_eq!(e.stats().message_cap_bytes, head.len() as u64 + 200 - kept);
    assert_eq!(msgs[3].raw.0, &b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
    assert!(msgs[3].error.is_none());
}

#[test]
fn unknown_protocol_and_untracked_events_still_produce_raw_records() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let tls = b"\x16\x03\x01\x00\x05hello";
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 443),
            data(1, Direction::Egress, 0, 1, tls),
            data(0, Direction::Ingress, 0, 1, b"orphan"),
        ],
    );
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].protocol, Protocol::Unknown);
    assert_eq!(recs[0].raw.0, &tls[..]);
    assert!(matches!(recs[1].body, Body::Unparsed { reason: UnparsedReason::Orphan }));
    assert_eq!(e.stats().untracked_events, 1);
}

#[test]
fn data_before_open_is_adopted_by_the_open() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            data(1, Direction::Egress, 0, 900, &REQ[..3]),
            open(1, Role::Client, 80),
            data(1, Direction::Egress, 3, 1_100, &REQ[3..]),
        ],
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].raw.0, REQ);
    let recs = e.shutdown();
    let Body::Connection(c) = &recs[0].body else { panic!() };
    assert!(c.open_seen);
    assert_eq!((c.open_ts_ns, c.role, c.end), (900, Role::Client, ConnEnd::Shutdown));
}

#[test]
fn midstream_connection_resyncs_to_the_first_message_boundary() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let mut stream = b"tail of an earlier body\r\n".to_vec();
    stream.extend_from_slice(REQ);
    let recs = run(&mut e, vec![data(7, Direction::Egress, 0, 1, &stream)]);
    // Not detected from "tail..." without ports: unknown until final.
    let recs = [recs, e.shutdown()].concat();
    assert!(recs.iter().all(|r| r.conn_id == 7));
    assert_eq!(e.stats().connections_without_open, 1);
    let covered: u64 = recs.iter().map(|r| r.raw.0.len() as u64).sum();
    assert_eq!(covered, stream.len() as u64);
}

/// Split a stream into chunks at the given cut points.
fn cut(stream: &[u8], cuts: &[usize]) -> Vec<(u64, Vec<u8>)> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| (w[0] as u64, stream[w[0]..w[1]].to_vec())).collect()
}

proptest! {
    /// Any chunking and any arrival order of an HTTP/1 conversation yields the
    /// same message records (raw bytes and fields).
    #[test]
    fn any_chunking_and_order_yields_the_same_records(
        egress_cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ingress_cuts in proptest::collection::vec(any::<usize>(), 0..12),
        seed in any::<u64>(),
    ) {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let egress = [REQ, b"POST /o HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde", REQ].concat();
        let ingress = [RESP, &chunked[..], RESP].concat();
        let reference = {
            let mut e = FlowEngine::new(FlowConfig::default());
            let mut recs = run(&mut e, vec![open(1, Role::Client, 80), data(1, Direction::Egress, 0, 1, &egress), data(1, Direction::Ingress, 0, 1, &ingress)]);
            recs.extend(e.shutdown());
            recs
        };
        // Chunks of one direction arrive in any order; requests are pushed
        // before their responses (causality, which pairing relies on).
        let mut events = vec![open(1, Role::Client, 80)];
        let mut x = seed | 1;
        for (dir, stream, cuts) in [(Direction::Egress, &egress, &egress_cuts), (Direction::Ingress, &ingress, &ingress_cuts)] {
            let mut evs: Vec<FlowEvent> = cut(stream, cuts).into_iter().map(|(pos, d)| data(1, dir, pos, 1, &d)).collect();
            for i in (1..evs.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                evs.swap(i, (x % (i as u64 + 1)) as usize);
            }
            events.extend(evs);
        }
        let mut e = FlowEngine::new(FlowConfig::default());
        let mut recs = run(&mut e, events);
        recs.extend(e.shutdown());
        let key = |r: &Record| (r.direction, r.stream_pos, r.raw.0.clone(), r.body.clone(), r.error.clone(), r.exchange.map(|x| (x.id, x.role)));
        let mut a: Vec<_> = reference.iter().filter(|r| r.direction.is_some()).map(key).collect();
        let mut b: Vec<_> = recs.iter().filter(|r| r.direction.is_some()).map(key).collect();
        a.sort_by_key(|k| (k.0.map(|d| d.index()), k.1));
        b.sort_by_key(|k| (k.0.map(|d| d.index()), k.1));
        prop_assert_eq!(a.len(), 6);
        prop_assert_eq!(a, b);
    }

    /// Arbitrary events never panic, and every data byte ends up in a record.
    #[test]
    fn arbitrary_events_never_panic_and_lose_nothing(
        ops in proptest::collection::vec((0u8..4, 1u64..4, any::<bool>(), 0u64..300, proptest::collection::vec(any::<u8>(), 0..64)), 0..40),
    ) {
        let cfg = FlowConfig { max_connections: 2, max_reorder_bytes: 128, max_buffered_bytes: 400, ..FlowConfig::default() };
        let mut e = FlowEngine::new(cfg);
        let mut recs = Vec::new();
        for (kind, id, eg, pos, bytes) in ops {
            let dir = if eg { Direction::Egress } else { Direction::Ingress };
            let ev = match kind {
                0 if pos % 2 == 0 => open(id, Role::Client, 80),
                0 => udp_open(id, 53),
                1 => gap(id, dir, pos, bytes.len() as u64),
                2 => close(id, pos, pos / 2),
                _ => data(id, dir, pos, pos, &bytes),
            };
            e.push_into(ev, &mut recs);
        }
        recs.extend(e.flush_idle(u64::MAX));
        recs.extend(e.shutdown());
        prop_assert_eq!(e.buffered_bytes(), 0);
        let raw: u64 = recs.iter().map(|r| r.raw.0.len() as u64).sum();
        let st = e.stats();
        prop_assert_eq!(raw + st.overlap_bytes + st.message_cap_bytes, st.data_bytes);
    }
}

fn udp_open(id: u64, remote_port: u16) -> FlowEvent {
    FlowEvent::Open(ConnOpen {
        conn_id: id,
        ts_ns: 1_000,
        local: Some(SocketAddr::from(([10, 0, 0, 1], 5353))),
        remote: Some(SocketAddr::from(([10, 0, 0, 53], remote_port))),
        transport: Transport::Udp,
        role: Role::Client,
        identity: ProcessIdentity::default(),
    })
}

mod protocols;
