//! The table's bounds: connections, bytes, message size, exchange size and age.

use super::*;

#[test]
fn the_connection_bound_finishes_the_least_recently_active() {
    let mut t = table_with(ConnConfig { max_conns: 2, ..ConnConfig::default() });
    let mut a = Synth::tcp(1, "127.0.0.1:40001", "10.0.0.2:80").at(1_000);
    let mut b = Synth::tcp(2, "127.0.0.1:40002", "10.0.0.2:80").at(5_000);
    let mut c = Synth::tcp(3, "127.0.0.1:40003", "10.0.0.2:80").at(9_000);
    let (ca, cb) = (a.connect(), b.connect());
    a.ts = 7_000;
    let mut rs = run(&mut t, vec![ca, cb, a.send(REQ)]);
    assert!(rs.is_empty());
    rs = run(&mut t, vec![c.connect()]);
    // b (last active at ~5 µs) goes, not a (active later, with a request in flight).
    assert_eq!(kinds(&rs), ["connection"]);
    let Record::Connection(cr) = &rs[0] else { unreachable!() };
    assert_eq!((cr.who.side.conn_id, cr.end), (2, ConnEnd::Evicted));
    assert_eq!(t.len(), 2);
    assert_eq!(t.stats.conns_evicted, 1);
}

#[test]
fn the_memory_bound_finishes_connections_and_keeps_their_bytes() {
    let mut t = table_with(ConnConfig { max_buffered_bytes: 1000, ..ConnConfig::default() });
    let mut a = Synth::tcp(1, "127.0.0.1:40001", "10.0.0.2:80");
    // A request whose body never ends holds its bytes...
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    let mut evs = vec![a.connect(), a.send(head)];
    for _ in 0..3 {
        evs.push(a.send(&[b'x'; 400]));
    }
    let rs = run(&mut t, evs);
    // ...until the bound: the connection is finished and nothing is dropped.
    assert!(kinds(&rs).contains(&"connection"), "{rs:#?}");
    let bytes: usize = rs.iter().flat_map(|r| r.parts()).map(|p| p.raw.0.len()).sum();
    assert_eq!(bytes, head.len() + 1200);
    assert_eq!(t.buffered(), 0);
    assert!(t.stats.evicted_buffered_bytes > 0);
}

#[test]
fn a_message_over_the_parse_limit_keeps_every_byte_in_bounded_pieces() {
    let mut cfg = ConnConfig::default();
    cfg.proto.max_message_bytes = 100;
    let mut t = table_with(cfg);
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let resp_head = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n";
    let body: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut evs = vec![c.connect(), c.send(REQ), c.recv(resp_head)];
    for piece in body.chunks(100) {
        evs.push(c.recv(piece));
    }
    evs.push(c.send(REQ));
    evs.push(c.recv(RESP));
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 2, "{rs:#?}");
    let p = &ex[0].parts[1];
    assert_eq!(p.len, (resp_head.len() + 300) as u64, "the whole message");
    assert_eq!(&p.raw.0[..], &[&resp_head[..], &body[..]].concat()[..], "every byte kept");
    assert!(p.seen.gaps.is_empty());
    assert_eq!(ex[0].messages.len(), 2, "request and the response's head");
    assert_eq!(ex[0].messages[1].len, p.len, "the message covers all its bytes");
    assert!(ex[0].messages[1].error.as_deref().is_some_and(|e| e.contains("parse limit")));
    assert_eq!(field(ex[0], 1, "status"), 200);
    assert_eq!(ex[1].incomplete, None, "in step again after it");
    assert!(t.stats.message_cap_hits >= 1);
}

#[test]
fn a_long_exchange_is_recorded_as_it_goes() {
    let mut t = table_with(ConnConfig { exchange_max_age_ns: 10 * SEC, ..ConnConfig::default() });
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let rs = run(&mut t, vec![c.connect(), c.send(REQ)]);
    assert!(rs.is_empty());
    let mut out = Vec::new();
    t.tick(c.ts + 11 * SEC, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].exchange_id, ex[0].incomplete), (Some(0), Some(Incomplete::Continues)));
    // The response, much later, continues the same exchange id.
    c.ts += 20 * SEC;
    let rs = run(&mut t, vec![c.recv(RESP)]);
    let ex = exchanges(&rs);
    assert_eq!((ex[0].exchange_id, ex[0].incomplete), (Some(0), None), "{rs:#?}");
    assert_eq!(ex[0].parts.len(), 1);
    assert_eq!(ex[0].parts[0].role, PartRole::Response);
}

#[test]
fn too_many_exchanges_in_flight_records_the_oldest() {
    let mut t = table_with(ConnConfig { max_pending_exchanges: 2, ..ConnConfig::default() });
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let rs = run(&mut t, vec![c.connect(), c.send(&[REQ, REQ, REQ].concat())]);
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].exchange_id, ex[0].incomplete), (Some(0), Some(Incomplete::NoResponse)));
    assert_eq!(t.stats.exchanges_unanswered_bound, 1);
}

#[test]
fn a_huge_upload_is_recorded_in_bounded_records_with_every_byte() {
    let mut cfg = ConnConfig { exchange_max_bytes: 250, ..ConnConfig::default() };
    cfg.proto.max_message_bytes = 100;
    let mut t = table_with(cfg);
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
    let body = vec![b'z'; 1000];
    let mut evs = vec![c.connect(), c.send(head)];
    for piece in body.chunks(64) {
        evs.push(c.send(piece));
    }
    evs.push(c.recv(RESP));
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    assert!(ex.len() >= 4, "several bounded records: {}", ex.len());
    assert!(ex[..ex.len() - 1].iter().all(|e| e.incomplete == Some(Incomplete::Continues) && e.exchange_id == Some(0)));
    assert_eq!(ex.last().unwrap().incomplete, None);
    let sent: Vec<u8> = ex
        .iter()
        .flat_map(|e| e.parts.iter())
        .filter(|p| p.role == PartRole::Request)
        .flat_map(|p| p.raw.0.to_vec())
        .collect();
    assert_eq!(sent, [&head[..], &body[..]].concat(), "every byte, once, in order");
    let held: usize = ex.iter().map(|e| e.parts.iter().map(|p| p.raw.0.len()).sum::<usize>()).max().unwrap();
    assert!(held <= 250 + 100 + RESP.len(), "records stay near the bound: {held}");
}
