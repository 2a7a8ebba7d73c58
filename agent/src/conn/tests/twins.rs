//! Two witnesses: both ends of a conversation captured on this host make one
//! record per exchange, with both observations and the bytes once.

use super::*;
use crate::types::Role;

/// A client and the server socket it talks to, on loopback.
fn pair() -> (Synth, Synth) {
    let c = Synth::tcp(1, "127.0.0.1:40000", "127.0.0.1:8080").process(100, "client");
    let s = Synth::tcp(2, "127.0.0.1:8080", "127.0.0.1:40000").process(200, "server");
    (c, s)
}

/// The usual order of events on one clock: client writes, server reads,
/// server writes, client reads.
fn http_events(c: &mut Synth, s: &mut Synth, req: &[u8], seen_by_server: &[u8]) -> Vec<CaptureEvent> {
    let mut v = vec![c.send(req)];
    s.ts = s.ts.max(c.ts);
    v.extend([s.recv(seen_by_server), s.send(RESP)]);
    c.ts = c.ts.max(s.ts);
    v.push(c.recv(RESP));
    v
}

#[test]
fn both_ends_make_one_record_with_both_observations() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let mut evs = vec![c.connect(), s.accept()];
    evs.extend(http_events(&mut c, &mut s, REQ, REQ));
    let rs = run(&mut t, evs);
    assert_eq!(kinds(&rs), ["exchange"], "one record for both ends: {rs:#?}");
    let e = exchanges(&rs)[0];
    assert_eq!(e.who.side.conn_id, 1, "the client's end is the primary");
    let w = e.who.witness.expect("the server's side");
    assert_eq!((w.conn_id, w.pid, w.role), (2, 200, Role::Server));
    assert!(e.faults.is_empty(), "{:?}", e.faults);
    for p in &e.parts {
        let wit = p.witness.as_ref().expect("the other end's observation");
        assert!(p.witness_raw.is_none(), "same bytes: kept once");
        assert_eq!(wit.calls.len(), 1);
        assert!(wit.gaps.is_empty());
    }
    // The request was written by the client before the server read it.
    let (rq, rp) = (&e.parts[0], &e.parts[1]);
    assert!(rq.seen.first_ns < rq.witness.as_ref().unwrap().first_ns);
    assert_eq!(rq.witness.as_ref().unwrap().calls[0].call.name(), "read");
    assert!(rp.witness.as_ref().unwrap().first_ns < rp.seen.first_ns, "the server wrote before the client read");
    // Closing both: one connection record with both ends' accounting.
    let rs = run(&mut t, vec![c.close(), s.close()]);
    assert_eq!(kinds(&rs), ["connection"], "{rs:#?}");
    let Record::Connection(cr) = &rs[0] else { unreachable!() };
    assert_eq!(cr.exchanges, 1);
    assert_eq!(cr.witness_ingress.unwrap().captured, REQ.len() as u64);
    assert_eq!(cr.witness_egress.unwrap().kernel_total, Some(RESP.len() as u64));
    assert!(cr.witness_close_ns.is_some());
    assert!(t.is_empty());
    assert_eq!(t.stats.twins, 1);
}

#[test]
fn different_bytes_at_the_two_ends_are_both_kept_as_a_capture_fault() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let mut altered = REQ.to_vec();
    altered[5] = b'X';
    let mut evs = vec![c.connect(), s.accept()];
    evs.extend(http_events(&mut c, &mut s, REQ, &altered));
    let rs = run(&mut t, evs);
    let e = exchanges(&rs)[0];
    assert_eq!(e.faults.len(), 1, "{:?}", e.faults);
    assert_eq!((e.faults[0].kind.as_str(), e.faults[0].part, e.faults[0].offset), ("witness_mismatch", 0, 5));
    assert_eq!(&e.parts[0].raw.0[..], REQ);
    assert_eq!(&e.parts[0].witness_raw.as_ref().unwrap().0[..], &altered[..]);
    assert_eq!(t.stats.witness_mismatches, 1);
}

#[test]
fn the_other_end_fills_bytes_this_end_lost() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let mut evs = vec![c.connect(), s.accept(), c.send(&REQ[..10])];
    c.lose(Direction::Egress, (REQ.len() - 10) as u64);
    evs.extend([s.recv(REQ), s.send(RESP), c.recv(RESP), c.close(), s.close()]);
    let mut rs = run(&mut t, evs);
    let mut out = Vec::new();
    t.tick(c.ts + 3 * SEC, &mut out);
    rs.extend(out);
    // The client's copy of the request has a hole; the server saw it whole.
    let with_witness_bytes: Vec<&crate::record::Part> =
        rs.iter().flat_map(|r| r.parts()).filter(|p| p.witness_raw.is_some()).collect();
    assert_eq!(with_witness_bytes.len(), 1, "{rs:#?}");
    let p = with_witness_bytes[0];
    assert_eq!((p.pos, p.len), (10, REQ.len() as u64 - 10));
    assert_eq!(&p.witness_raw.as_ref().unwrap().0[..], &REQ[10..]);
    let faults: Vec<&str> = rs
        .iter()
        .flat_map(|r| match r {
            Record::Exchange(e) => e.faults.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(),
            Record::Segment(s) => s.faults.iter().map(|f| f.kind.as_str()).collect(),
            _ => vec![],
        })
        .collect();
    assert!(faults.contains(&"witness_filled_gap"), "{faults:?}");
    // Every client egress byte is in exactly one record.
    let covered: u64 =
        rs.iter().flat_map(|r| r.parts()).filter(|p| p.direction == Direction::Egress).map(|p| p.len).sum();
    assert_eq!(covered, REQ.len() as u64);
}

#[test]
fn an_end_seen_midstream_is_not_paired_but_named() {
    let (mut c, mut s) = pair();
    let mut t = table();
    // The server's socket predates the agent: no accept, positions from first sight.
    let mut evs = vec![c.connect()];
    evs.extend(http_events(&mut c, &mut s, REQ, REQ));
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 2, "each end is parsed on its own: {rs:#?}");
    assert!(ex.iter().all(|e| e.who.witness.is_none() && e.who.peer_identity.is_some()));
    assert_eq!((ex[0].who.side.conn_id, ex[1].who.side.conn_id), (2, 1));
    assert_eq!(t.stats.twins, 0);
    let rs = run(&mut t, vec![c.close(), s.close()]);
    let conns: Vec<_> = rs.iter().filter_map(|r| if let Record::Connection(c) = r { Some(c) } else { None }).collect();
    assert_eq!(conns.len(), 2);
    assert!(conns.iter().all(|c| c.who.peer_identity.is_some()), "each names the other end's identity");
}

#[test]
fn a_late_accept_still_pairs_while_the_request_waits() {
    let (mut c, mut s) = pair();
    let mut t = table();
    // The client wrote before the server accepted (the kernel queued it).
    let rs = run(&mut t, vec![c.connect(), c.send(REQ), s.accept(), s.recv(REQ), s.send(RESP), c.recv(RESP)]);
    assert_eq!(kinds(&rs), ["exchange"]);
    let e = exchanges(&rs)[0];
    assert!(e.who.witness.is_some());
    assert!(e.parts.iter().all(|p| p.witness.is_some()));
}

#[test]
fn unparsed_bytes_of_both_ends_are_one_segment() {
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "127.0.0.1:9999").process(100, "client");
    let mut s = Synth::tcp(2, "127.0.0.1:9999", "127.0.0.1:40000").process(200, "server");
    let mut t = table();
    let rs = run(&mut t, vec![c.connect(), s.accept(), c.send(&[7; 50]), s.recv(&[7; 30]), s.recv(&[7; 20])]);
    assert!(rs.is_empty());
    let mut out = Vec::new();
    t.tick(c.ts + 2 * SEC, &mut out);
    assert_eq!(kinds(&out), ["segment"], "{out:#?}");
    let Record::Segment(sg) = &out[0] else { unreachable!() };
    assert_eq!(sg.part.len, 50);
    assert_eq!(sg.part.witness.as_ref().unwrap().calls.len(), 2, "the server read it in two calls");
}

#[test]
fn the_server_closing_first_still_gives_one_connection_record() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let mut evs = vec![c.connect(), s.accept()];
    evs.extend(http_events(&mut c, &mut s, REQ, REQ));
    evs.push(s.close());
    let rs = run(&mut t, evs);
    assert_eq!(kinds(&rs), ["exchange"], "the server waits for the client");
    let rs = run(&mut t, vec![c.close()]);
    assert_eq!(kinds(&rs), ["connection"]);
}

#[test]
fn a_witness_that_outlives_the_primary_goes_on_alone() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let mut evs = vec![c.connect(), s.accept()];
    evs.extend(http_events(&mut c, &mut s, REQ, REQ));
    evs.push(c.close());
    let rs = run(&mut t, evs);
    assert_eq!(kinds(&rs), ["exchange"]);
    // The server keeps the socket (half-close) well past the window.
    let mut out = Vec::new();
    t.tick(c.ts + 3 * SEC, &mut out);
    assert_eq!(kinds(&out), ["connection"], "the client's end is recorded: {out:#?}");
    // Whatever the server says later is recorded on its own.
    let rs = run(&mut t, vec![s.send(b"late bytes"), s.close()]);
    let mut out = Vec::new();
    t.tick(s.ts + 3 * SEC, &mut out);
    let all: Vec<&Record> = rs.iter().chain(out.iter()).collect();
    let bytes: Vec<&[u8]> = all.iter().flat_map(|r| r.parts()).map(|p| &p.raw.0[..]).collect();
    assert_eq!(bytes, vec![&b"late bytes"[..]], "{all:#?}");
    assert!(all.iter().any(|r| matches!(r, Record::Connection(c) if c.who.side.conn_id == 2)));
}

#[test]
fn pairing_can_be_turned_off() {
    let (mut c, mut s) = pair();
    let mut t = table_with(ConnConfig { twins: false, ..ConnConfig::default() });
    let mut evs = vec![c.connect(), s.accept()];
    evs.extend(http_events(&mut c, &mut s, REQ, REQ));
    let rs = run(&mut t, evs);
    assert_eq!(kinds(&rs), ["exchange", "exchange"]);
    assert!(exchanges(&rs).iter().all(|e| e.who.witness.is_none() && e.who.peer_identity.is_some()));
}

const LOGON: &[u8] =
    b"8=FIX.4.4\x019=69\x0135=A\x0149=CLIENT1\x0156=BROKER1\x0134=1\x0152=20261121-12:00:00.000\x0198=0\x01108=30\x0110=205\x01";

/// The server accepts late (a busy accept loop): the client has already sent
/// a one-way message, which waits for the other end instead of being recorded alone.
#[test]
fn a_late_accept_still_makes_one_record_for_both_ends() {
    let (mut c, mut s) = pair();
    let mut t = table();
    let rs = run(&mut t, vec![c.connect(), c.send(LOGON)]);
    assert_eq!(kinds(&rs), Vec::<&str>::new(), "held for the other end: {rs:#?}");
    // 10 ms later the server accepts and reads it.
    s.ts = c.ts + 10_000_000;
    let rs = run(&mut t, vec![s.accept(), s.recv(LOGON)]);
    assert_eq!(kinds(&rs), ["exchange"], "{rs:#?}");
    let e = exchanges(&rs)[0];
    assert_eq!(e.who.side.conn_id, 1, "the client, which spoke first, is the primary");
    assert_eq!(e.who.witness.map(|w| w.conn_id), Some(2));
    assert!(e.faults.is_empty(), "{:?}", e.faults);
    assert_eq!(t.stats.twins, 1);
}

/// No other end within the reorder window (a loopback server the agent does
/// not capture): the held records are made alone, nothing waits longer.
#[test]
fn without_the_other_end_held_records_are_made_after_the_window() {
    let (mut c, _) = pair();
    let mut t = table();
    let rs = run(&mut t, vec![c.connect(), c.send(LOGON)]);
    assert!(rs.is_empty(), "{rs:#?}");
    let window = ConnConfig::default().reorder_window_ns;
    let mut out = Vec::new();
    t.tick(c.ts + window / 2, &mut out);
    assert!(out.is_empty(), "still within the window: {out:#?}");
    t.tick(c.ts + window, &mut out);
    assert_eq!(kinds(&out), ["exchange"], "{out:#?}");
    assert!(exchanges(&out)[0].who.witness.is_none());
    // Later messages are recorded at once.
    let rs = run(&mut t, vec![c.send(LOGON)]);
    assert_eq!(kinds(&rs), ["exchange"], "{rs:#?}");
}
