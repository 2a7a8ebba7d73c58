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

#[test]
fn dns_over_udp_pairs_query_and_response_by_id() {
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut response = b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
    response.extend_from_slice(&query[12..]);
    response.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22");
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            udp_open(1, 53),
            data(1, Direction::Egress, 0, 100, query),
            data(1, Direction::Ingress, 0, 350, &response),
            data(1, Direction::Ingress, response.len() as u64, 400, b"\x00"),
            close(1, query.len() as u64, response.len() as u64 + 1),
        ],
    );
    assert_eq!(recs.len(), 4, "{recs:#?}");
    assert_eq!(recs[0].protocol, Protocol::Dns);
    let Body::Dns(q) = &recs[0].body else { panic!() };
    assert_eq!(q.questions[0].name, "example.com.");
    assert_eq!(recs[1].exchange.unwrap().latency_ns, Some(250));
    assert_eq!(recs[1].raw.0, response);
    // A one-byte datagram is recorded raw as malformed.
    assert!(matches!(recs[2].body, Body::Unparsed { reason: UnparsedReason::Malformed }));
    assert!(recs[2].error.is_some());
    let Body::Connection(c) = &recs[3].body else { panic!() };
    assert_eq!((c.transport, c.ingress.captured), (Transport::Udp, response.len() as u64 + 1));
}

/// Reproduces DNS on a private port (a test resolver on 127.0.0.1:PORT) being
/// recorded as `unknown`: UDP detection only looked at port 53.
#[test]
fn dns_over_udp_on_any_port_is_detected_by_content() {
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut response = b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
    response.extend_from_slice(&query[12..]);
    response.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22");
    // Client side: query out, response in.
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            udp_open(1, 40_053),
            data(1, Direction::Egress, 0, 100, query),
            data(1, Direction::Ingress, 0, 350, &response),
            close(1, query.len() as u64, response.len() as u64),
        ],
    );
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert!(recs.iter().all(|r| r.protocol == Protocol::Dns), "{recs:#?}");
    assert_eq!(recs[0].exchange.map(|x| (x.id, x.role)), Some((0x1234, ExchangeRole::Request)));
    assert_eq!(recs[1].exchange.map(|x| (x.id, x.role)), Some((0x1234, ExchangeRole::Response)));
    assert_eq!(recs[1].exchange.unwrap().latency_ns, Some(250));
    // Server side, seen first as a response on egress (query missed): the
    // client direction is still the one carrying queries.
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            udp_open(2, 40_054),
            data(2, Direction::Ingress, 0, 100, &response),
            data(2, Direction::Egress, 0, 200, query),
            close(2, query.len() as u64, response.len() as u64),
        ],
    );
    assert!(recs.iter().all(|r| r.protocol == Protocol::Dns), "{recs:#?}");
    assert_eq!(recs[1].exchange.map(|x| x.role), Some(ExchangeRole::Request));
    // Anything else on a non-DNS port stays unknown.
    let other = b"\x12\x34 hello there, not DNS";
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![udp_open(3, 40_055), data(3, Direction::Egress, 0, 100, other), close(3, other.len() as u64, 0)],
    );
    assert_eq!(recs[0].protocol, Protocol::Unknown, "{recs:#?}");
}

/// Reproduces a grpcio server's side recorded as `unknown`: the server sends
/// its SETTINGS frame before the client's preface arrives, and detection
/// decided on those bytes alone.
#[test]
fn http2_server_speaking_first_is_detected() {
    let settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64";
    let ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";
    let mut client = crate::flow::detect::H2_PREFACE.to_vec();
    client.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Server, 50_000),
            data(1, Direction::Egress, 0, 100, settings),
            data(1, Direction::Ingress, 0, 200, &client),
            data(1, Direction::Egress, settings.len() as u64, 300, ack),
            close(1, (settings.len() + ack.len()) as u64, client.len() as u64),
        ],
    );
    let msgs: Vec<&Record> = recs.iter().filter(|r| r.direction.is_some()).collect();
    assert_eq!(msgs.len(), 4, "{recs:#?}");
    assert!(recs.iter().all(|r| r.protocol == Protocol::Http2), "{recs:#?}");
    let Body::Http2(f) = &msgs[0].body else { panic!("{:?}", msgs[0]) };
    assert_eq!((f.type_name, f.settings.clone()), ("SETTINGS", vec![(3, 100)]));
    let preface = msgs.iter().find(|r| r.direction == Some(Direction::Ingress)).unwrap();
    let Body::Http2(p) = &preface.body else { panic!() };
    assert!(p.preface, "{preface:?}");
    assert!(msgs.iter().all(|r| r.error.is_none()), "{msgs:#?}");
}

/// Reproduces a DNS server's UDP socket (bound before the agent started, so
/// no open event) being reassembled as a TCP stream and recorded `unknown`.
#[test]
fn adopted_udp_socket_keeps_datagrams() {
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut e = FlowEngine::new(FlowConfig::default());
    let FlowEvent::Open(o) = udp_open(7, 40_053) else { unreachable!() };
    let mut adopted = ConnOpen { remote: None, role: Role::Unknown, ..o };
    adopted.local = Some(SocketAddr::from(([127, 0, 0, 1], 40_053)));
    let mut recs = Vec::new();
    e.adopt(&adopted, &mut recs);
    assert!(e.tracks(7));
    e.adopt(&adopted, &mut recs);
    assert_eq!(e.stats().connections_opened, 1);
    let more =
        run(&mut e, vec![data(7, Direction::Ingress, 0, 100, query), data(7, Direction::Ingress, 29, 200, query)]);
    recs.extend(more);
    recs.extend(e.shutdown());
    assert_eq!(recs.len(), 3, "{recs:#?}");
    for r in &recs[..2] {
        assert_eq!(r.protocol, Protocol::Dns);
        assert_eq!(r.raw.0, &query[..]);
        assert_eq!(r.exchange.map(|x| x.role), Some(ExchangeRole::Request));
    }
    let Body::Connection(c) = &recs[2].body else { panic!() };
    assert_eq!((c.transport, c.open_seen, c.ingress.captured), (Transport::Udp, false, 2 * query.len() as u64));
}

#[test]
fn redis_pipeline_pairs_in_order() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let cmds = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 6379),
            data(1, Direction::Egress, 0, 10, cmds),
            data(1, Direction::Ingress, 0, 30, b"+OK\r\n$1\r"),
            data(1, Direction::Ingress, 8, 45, b"\nv\r\n"),
        ],
    );
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r.protocol == Protocol::Redis));
    let ex: Vec<(u64, ExchangeRole, Option<u64>)> =
        recs.iter().map(|r| r.exchange.map(|x| (x.id, x.role, x.latency_ns)).unwrap()).collect();
    assert_eq!(
        ex,
        vec![
            (0, ExchangeRole::Request, None),
            (1, ExchangeRole::Request, None),
            (0, ExchangeRole::Response, Some(20)),
            (1, ExchangeRole::Response, Some(20))
        ]
    );
    assert_eq!((recs[3].first_ts_ns, recs[3].last_ts_ns), (30, 45));
}

#[test]
fn fix_session_with_a_gap_resyncs_on_the_next_message() {
    let logon = "8=FIX.4.4\x019=69\x0135=A\x0149=CLIENT1\x0156=BROKER1\x0134=1\x0152=20261121-12:00:00.000\x0198=0\x01108=30\x0110=205\x01";
    let hb = "8=FIX.4.2\x019=57\x0135=0\x0149=CLIENT1\x0156=BROKER1\x0134=3\x0152=20261121-12:00:31.000\x0110=164\x01";
    let stream = [logon, logon, hb].concat().into_bytes();
    let l = logon.len() as u64;
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 9876),
            data(1, Direction::Egress, 0, 1, &stream[..l as usize + 20]),
            gap(1, Direction::Egress, l + 20, 20),
            data(1, Direction::Egress, l + 40, 2, &stream[l as usize + 40..]),
        ],
    );
    let kinds: Vec<String> = recs
        .iter()
        .map(|r| match &r.body {
            Body::Fix(m) => {
                format!("fix:{}:{}", m.msg_type.as_ref().map(|t| t.to_string_lossy()).unwrap_or_default(), r.gaps.len())
            }
            Body::Gap(_) => "gap".into(),
            other => format!("{other:?}"),
        })
        .collect();
    // The second logon spans the gap (BodyLength known): one record with a
    // gap marker, with the fields before the gap; its checksum cannot be
    // verified and it says so.
    assert_eq!(kinds, vec!["fix:A:0", "gap", "fix:A:1", "fix:0:0"]);
    assert_eq!(recs[2].stream_len, l);
    assert!(recs[2].error.is_some());
    assert!(recs[3].error.is_none());
}

#[test]
fn postgres_and_http2_are_detected_and_parsed_through_the_engine() {
    let startup = {
        let params = b"user\0alice\0\0";
        let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&196_608u32.to_be_bytes());
        m.extend_from_slice(params);
        m
    };
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            open(1, Role::Client, 15432),
            data(1, Direction::Egress, 0, 1, &startup),
            data(1, Direction::Ingress, 0, 2, b"R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I"),
        ],
    );
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].protocol, Protocol::Postgres);
    assert_eq!(recs[1].exchange.unwrap().latency_ns, Some(1));

    let mut h2 = crate::flow::detect::H2_PREFACE.to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let recs = run(&mut e, vec![open(2, Role::Client, 443), data(2, Direction::Egress, 0, 1, &h2)]);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.protocol == Protocol::Http2 && r.error.is_none()));
}

/// Found by the reassembly fuzz target: an open event that turns a
/// connection with out-of-order TCP bytes into UDP must not strand them.
#[test]
fn late_udp_open_does_not_strand_buffered_bytes() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let mut recs = run(&mut e, vec![data(3, Direction::Egress, 2573, 400, b"0123456789"), udp_open(3, 80)]);
    recs.extend(e.shutdown());
    let raw: usize = recs.iter().map(|r| r.raw.0.len()).sum();
    assert_eq!(raw, 10);
    assert_eq!(e.buffered_bytes(), 0);
}

#[test]
fn out_of_range_positions_are_recorded_with_the_reason() {
    let mut e = FlowEngine::new(FlowConfig::default());
    let recs = run(
        &mut e,
        vec![
            data(1, Direction::Egress, u64::MAX - 2, 1, b"abcd"),
            gap(1, Direction::Ingress, crate::flow::input::MAX_STREAM_POS, 1),
            close(1, u64::MAX, 0),
        ],
    );
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].raw.0, &b"abcd"[..]);
    assert!(recs[0].error.as_deref().unwrap().contains("past the stream limit"));
    assert!(recs.iter().all(|r| r.conn_id == 1 && r.error.is_some()));
    assert_eq!(e.stats().invalid_events, 3);
    assert_eq!(e.connections(), 0);
}
