//! Table-level tests: capture events in, records out.

mod bounds;
mod protocols;
mod tiling;
mod tls;
mod twins;

use std::sync::Arc;

use super::{ConnConfig, ConnTable};
use crate::capture::event::CaptureEvent;
use crate::capture::synthetic::Synth;
use crate::capture::tls::TlsRegistry;
use crate::identity::{IdentityResolver, Sources};
use crate::proto::Protocol;
use crate::record::{ConnEnd, Exchange, Incomplete, PartRole, Record};
use crate::types::{Direction, GapReason};

const SEC: u64 = 1_000_000_000;

pub(super) fn table_with(cfg: ConnConfig) -> ConnTable {
    ConnTable::new(cfg, IdentityResolver::new(Sources::default()), Arc::new(TlsRegistry::default()))
}

pub(super) fn table() -> ConnTable {
    table_with(ConnConfig::default())
}

/// Feeds `events`, then finishes every connection; all records made.
pub(super) fn run(t: &mut ConnTable, events: Vec<CaptureEvent>) -> Vec<Record> {
    let mut out = Vec::new();
    for e in events {
        t.on_event(e, &mut out);
    }
    out
}

pub(super) fn finish(t: &mut ConnTable) -> Vec<Record> {
    let mut out = Vec::new();
    t.finish_all(&mut out);
    out
}

pub(super) fn exchanges(rs: &[Record]) -> Vec<&Exchange> {
    rs.iter()
        .filter_map(|r| match r {
            Record::Exchange(e) => Some(&**e),
            _ => None,
        })
        .collect()
}

pub(super) fn kinds(rs: &[Record]) -> Vec<&'static str> {
    rs.iter().map(Record::kind).collect()
}

pub(super) fn field(e: &Exchange, msg: usize, key: &str) -> serde_json::Value {
    e.messages[msg].fields.json()[key].clone()
}

const REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn an_http_exchange_is_one_record_with_both_directions() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let mut evs = vec![c.connect()];
    evs.push(c.send(&REQ[..10]));
    evs.push(c.send(&REQ[10..]));
    evs.push(c.recv(RESP));
    let rs = run(&mut t, evs);
    assert_eq!(kinds(&rs), ["exchange"], "the exchange is done when the response is");
    let e = exchanges(&rs)[0];
    assert_eq!(e.protocol, Protocol::Http1);
    assert_eq!(e.exchange_id, Some(0));
    assert_eq!(e.incomplete, None);
    assert_eq!(e.parts.len(), 2);
    let (rq, rp) = (&e.parts[0], &e.parts[1]);
    assert_eq!((rq.role, rq.direction, rq.pos, rq.len), (PartRole::Request, Direction::Egress, 0, REQ.len() as u64));
    assert_eq!(&rq.raw.0[..], REQ);
    assert_eq!(rq.seen.calls.len(), 2, "two writes: {:?}", rq.seen.calls);
    assert_eq!((rq.seen.calls[0].offset, rq.seen.calls[1].offset), (0, 10));
    assert_eq!(rq.seen.calls[0].call.name(), "write");
    assert_eq!((rp.role, rp.direction, rp.pos, &rp.raw.0[..]), (PartRole::Response, Direction::Ingress, 0, RESP));
    assert_eq!(rp.seen.calls[0].call.name(), "read");
    assert_eq!(field(e, 0, "method"), "GET");
    assert_eq!(field(e, 1, "status"), 200);
    assert_eq!(e.latency_ns, Some(rp.seen.first_ns - rq.seen.last_ns));
    assert_eq!(e.stamp.kernel_ns, Some(rq.seen.first_ns));
    assert_eq!(e.who.side.role, crate::types::Role::Client);
    // Close: one connection record with the totals.
    let rs = run(&mut t, vec![c.close()]);
    assert_eq!(kinds(&rs), ["connection"]);
    let Record::Connection(cr) = &rs[0] else { unreachable!() };
    assert_eq!((cr.end, cr.exchanges, cr.segments), (ConnEnd::Closed, 1, 0));
    assert_eq!((cr.egress.captured, cr.egress.kernel_total), (REQ.len() as u64, Some(REQ.len() as u64)));
    assert_eq!((cr.ingress.captured, cr.ingress.gap), (RESP.len() as u64, 0));
    assert!(t.is_empty());
}

#[test]
fn the_json_line_reads_back_as_the_same_record() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let rs = run(&mut t, vec![c.connect(), c.send(REQ), c.recv(RESP), c.close()]);
    for r in &rs {
        let line = serde_json::to_string(r).unwrap();
        let back: Record = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(r).unwrap());
        assert_eq!(back.kind(), r.kind());
    }
    let v = serde_json::to_value(&rs[0]).unwrap();
    assert_eq!(v["type"], "exchange");
    assert_eq!(v["parts"][0]["raw"], "R0VUIC9hIEhUVFAvMS4xDQpIb3N0OiB4DQoNCg==");
    assert_eq!(v["messages"][0]["fields"]["type"], "http1");
    assert_eq!(v["clock"], "CLOCK_BOOTTIME");
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let two = [REQ, REQ].concat();
    let rs = run(&mut t, vec![c.connect(), c.send(&two), c.recv(&[RESP, RESP].concat()), c.close()]);
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].exchange_id, ex[1].exchange_id), (Some(0), Some(1)));
    assert_eq!(ex[1].parts[0].pos, REQ.len() as u64);
    assert_eq!(ex[1].parts[1].pos, RESP.len() as u64);
}

#[test]
fn a_request_without_response_is_recorded_at_the_end() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let rs = run(&mut t, vec![c.connect(), c.send(REQ), c.close()]);
    assert_eq!(kinds(&rs), ["exchange", "connection"]);
    assert_eq!(exchanges(&rs)[0].incomplete, Some(Incomplete::NoResponse));
}

#[test]
fn a_gap_inside_a_known_length_body_stays_inside_the_exchange() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    let head = resp.len() - 10;
    let mut evs = vec![c.connect(), c.send(REQ), c.recv(&resp[..head + 3])];
    evs.push(c.truncated(Direction::Ingress, 4, GapReason::Truncated));
    evs.push(c.recv(&resp[head + 7..]));
    evs.push(c.send(REQ));
    evs.push(c.recv(RESP));
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    assert_eq!(kinds(&rs), ["exchange", "exchange"], "no separate gap record: it is inside the message");
    let p = &ex[0].parts[1];
    assert_eq!(p.len, resp.len() as u64);
    assert_eq!(p.raw.0.len(), resp.len() - 4);
    assert_eq!(p.seen.gaps.len(), 1);
    assert_eq!((p.seen.gaps[0].offset, p.seen.gaps[0].len), (head as u64 + 3, 4));
    assert_eq!(p.seen.gaps[0].reason, GapReason::Truncated);
    assert!(ex[0].messages[1].error.is_some(), "the message says it is not whole");
    // Still in sync: the next exchange parses and pairs.
    assert_eq!(ex[1].incomplete, None);
    assert_eq!(field(ex[1], 1, "status"), 200);
}

#[test]
fn a_gap_inside_headers_gives_a_partial_message_then_resync_bytes_then_the_next() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let mut evs = vec![c.connect(), c.send(&REQ[..8])];
    evs.push(c.truncated(Direction::Egress, 6, GapReason::Unreadable));
    evs.push(c.send(&REQ[14..]));
    evs.push(c.send(REQ));
    evs.push(c.recv(RESP));
    evs.push(c.close());
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    // The cut request (with its gap), the tail of it as unparsed bytes, the
    // whole second request paired with the response.
    let seg = rs.iter().find_map(|r| if let Record::Segment(s) = r { Some(s) } else { None }).expect("a segment");
    assert_eq!(seg.part.pos, 8, "{rs:#?}");
    assert_eq!(seg.part.len, REQ.len() as u64 - 8);
    assert_eq!(seg.part.seen.gaps[0].len, 6);
    assert_eq!(seg.part.seen.gaps[0].reason, GapReason::Unreadable);
    assert_eq!(ex[0].parts[0].role, PartRole::Message, "the cut request cannot pair: {rs:#?}");
    assert!(ex[0].messages[0].error.is_some());
    let paired = ex.iter().find(|e| e.exchange_id.is_some()).expect("the second request pairs");
    assert_eq!(paired.incomplete, None);
    assert_eq!(paired.parts[0].pos, REQ.len() as u64);
    // Every egress byte is in exactly one record.
    let covered: u64 =
        rs.iter().flat_map(|r| r.parts()).filter(|p| p.direction == Direction::Egress).map(|p| p.len).sum();
    assert_eq!(covered, 2 * REQ.len() as u64);
}

#[test]
fn unknown_bytes_are_coalesced_into_segments_bounded_by_size_and_time() {
    let cfg = ConnConfig { segment_max_bytes: 100, ..ConnConfig::default() };
    let mut t = table_with(cfg);
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:9999");
    let mut evs = vec![c.connect()];
    for _ in 0..30 {
        evs.push(c.send(&[0xEE; 10]));
    }
    let rs = run(&mut t, evs);
    let segs: Vec<_> =
        rs.iter().filter_map(|r| if let Record::Segment(s) = r { Some(&s.part) } else { None }).collect();
    assert_eq!(segs.len(), 2, "300 bytes in 30 calls: segments of at most 100 bytes, the last still open");
    assert_eq!((segs[0].pos, segs[0].len, segs[0].seen.calls.len()), (0, 100, 10));
    assert_eq!((segs[1].pos, segs[1].len), (100, 100));
    // Time: the open segment goes out once it is older than the bound.
    let mut out = Vec::new();
    t.tick(c.ts + SEC, &mut out);
    assert_eq!(kinds(&out), ["segment"]);
    let Record::Segment(s) = &out[0] else { unreachable!() };
    assert_eq!((s.part.pos, s.part.len), (200, 100));
    assert_eq!(s.protocol, Protocol::Unknown);
}

#[test]
fn out_of_order_events_wait_and_holes_expire_into_lost_gaps() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:9999");
    let mut evs = vec![c.connect()];
    evs.push(c.data_at(Direction::Egress, 10, b"later"));
    evs.push(c.data_at(Direction::Egress, 0, b"first"));
    let rs = run(&mut t, evs);
    assert!(rs.is_empty(), "bytes 5..10 may still come from another CPU");
    let mut out = Vec::new();
    t.tick(c.ts + SEC, &mut out);
    assert!(out.iter().all(|r| !matches!(r, Record::Gap(_))), "within the window: {out:?}");
    let mut out2 = Vec::new();
    t.tick(c.ts + 3 * SEC, &mut out2);
    out.extend(out2);
    let parts: Vec<_> = out.iter().flat_map(|r| r.parts()).collect();
    let gaps: Vec<_> =
        parts.iter().flat_map(|p| p.seen.gaps.iter().map(move |g| (p.pos + g.offset, g.len, g.reason))).collect();
    assert_eq!(gaps, vec![(5, 5, GapReason::Lost)], "{out:#?}");
    assert_eq!(t.stats.lost_bytes, 5);
}

#[test]
fn close_waits_for_late_events_then_missing_bytes_become_gaps() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let mut evs = vec![c.connect(), c.send(REQ)];
    c.lose(Direction::Ingress, RESP.len() as u64);
    evs.push(c.close());
    let rs = run(&mut t, evs);
    assert!(rs.is_empty(), "the response may still be on its way");
    let mut out = Vec::new();
    t.tick(c.ts + 3 * SEC, &mut out);
    assert_eq!(kinds(&out), ["exchange", "gap", "connection"], "{out:#?}");
    assert_eq!(exchanges(&out)[0].incomplete, Some(Incomplete::NoResponse));
    let Record::Gap(g) = &out[1] else { unreachable!() };
    assert_eq!(
        (g.direction, g.pos, g.len, g.reason),
        (Direction::Ingress, 0, RESP.len() as u64, GapReason::MissingAtClose)
    );
    let Record::Connection(cr) = &out[2] else { unreachable!() };
    assert_eq!(cr.ingress.gap, RESP.len() as u64);
}

#[test]
fn idle_connections_are_finished_with_what_they_hold() {
    let mut t = table_with(ConnConfig { idle_timeout_ns: 10 * SEC, ..ConnConfig::default() });
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    run(&mut t, vec![c.connect(), c.send(REQ)]);
    let mut out = Vec::new();
    t.tick(c.ts + 11 * SEC, &mut out);
    assert!(kinds(&out).contains(&"connection"), "{out:#?}");
    let ex = exchanges(&out);
    assert_eq!(ex[0].incomplete, Some(Incomplete::NoResponse));
    let Some(Record::Connection(cr)) = out.last() else { unreachable!() };
    assert_eq!(cr.end, ConnEnd::Idle);
}

#[test]
fn long_lived_connections_get_an_open_record_once() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    run(&mut t, vec![c.connect()]);
    let mut out = Vec::new();
    t.tick(c.ts + SEC, &mut out);
    assert!(out.is_empty());
    t.tick(c.ts + 6 * SEC, &mut out);
    t.tick(c.ts + 7 * SEC, &mut out);
    assert_eq!(kinds(&out), ["connection_open"]);
    let Record::ConnectionOpen(o) = &out[0] else { unreachable!() };
    assert_eq!((o.end, o.open_seen, o.who.side.role), (ConnEnd::Open, true, crate::types::Role::Client));
    // A short connection gets only its end record.
    let mut d = Synth::tcp(2, "127.0.0.1:40001", "10.0.0.2:80");
    let rs = run(&mut t, vec![d.connect(), d.close()]);
    assert_eq!(kinds(&rs), ["connection"]);
}

#[test]
fn untracked_events_are_recorded_as_they_are() {
    let mut t = table();
    let mut c = Synth::tcp(0, "127.0.0.1:40000", "10.0.0.2:80");
    let rs = run(&mut t, vec![c.connect(), c.send(b"abc"), c.close()]);
    assert_eq!(kinds(&rs), ["connection_open", "segment", "connection"]);
    let Record::Segment(s) = &rs[1] else { unreachable!() };
    assert_eq!(s.reason, crate::proto::fields::UnparsedReason::Orphan);
    assert_eq!(&s.part.raw.0[..], b"abc");
    assert_eq!(t.stats.untracked_events, 3);
}

#[test]
fn a_connection_seen_midstream_resyncs_at_a_message_boundary() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    // No connect: the socket predates the agent; the first bytes are a message tail.
    let rs = run(&mut t, vec![c.send(b"tail of something\r\n"), c.send(REQ), c.recv(RESP), c.close()]);
    let seg = rs.iter().find_map(|r| if let Record::Segment(s) = r { Some(s) } else { None }).expect("tail kept");
    assert_eq!(&seg.part.raw.0[..], b"tail of something\r\n");
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].incomplete, None, "{ex:#?}");
    let Some(Record::Connection(cr)) = rs.last() else { unreachable!() };
    assert!(!cr.open_seen);
}
