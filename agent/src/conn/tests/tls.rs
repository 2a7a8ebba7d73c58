//! TLS on a connection: what its record says of the plaintext it did not see.
use std::sync::Arc;

use super::*;
use crate::capture::tls::{TlsLib, TlsRegistry};
use crate::record::TlsUnseen;

/// The (one) connection record among `rs`.
fn conn_record(rs: &[Record]) -> crate::record::ConnRecord {
    let mut it = rs.iter().filter_map(|r| match r {
        Record::Connection(c) => Some((**c).clone()),
        _ => None,
    });
    let c = it.next().expect("a connection record");
    assert!(it.next().is_none(), "one connection record: {rs:#?}");
    c
}

/// A ClientHello's first bytes, then a ServerHello's: the socket carries TLS.
const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xea, 0x01, 0x00, 0x00, 0xe6, 0x03, 0x03];
const SERVER_HELLO: &[u8] = &[0x16, 0x03, 0x03, 0x00, 0x59, 0x02, 0x00, 0x00, 0x55, 0x03, 0x03];
const APP_DATA: &[u8] = &[0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8];

/// The `tls_unseen` of one client connection whose library (a rustls with or
/// without its reads hooked) captured the request's plaintext; the response
/// came as ciphertext only when `reads_unhooked`.
fn unseen_with(reads_unhooked: bool) -> Option<TlsUnseen> {
    let registry = Arc::new(TlsRegistry::default());
    let lib = TlsLib { path: "/srv/app".into(), library: "rustls".into(), version: "0.23.46".into() };
    let cookie = registry.add(lib, reads_unhooked);
    let mut t = ConnTable::new(ConnConfig::default(), IdentityResolver::new(Sources::default()), registry);
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:443").tls_lib(cookie);
    let mut evs = vec![c.connect(), c.send(CLIENT_HELLO), c.recv(SERVER_HELLO)];
    evs.push(c.send(APP_DATA));
    evs.push(c.data(Direction::Egress, REQ, true));
    evs.push(c.recv(APP_DATA));
    if !reads_unhooked {
        evs.push(c.data(Direction::Ingress, RESP, true));
    }
    evs.push(c.close());
    let mut rs = run(&mut t, evs);
    rs.extend(finish(&mut t));
    let conn = conn_record(&rs);
    assert!(conn.tls_egress.is_some(), "the request's plaintext is on the connection: {conn:?}");
    conn.tls_unseen
}

#[test]
fn a_library_hooked_for_what_it_sends_only_states_the_received_ciphertext() {
    let u = unseen_with(true).expect("the received ciphertext is stated as not seen in plaintext");
    assert_eq!((u.egress_bytes, u.ingress_bytes), (0, (SERVER_HELLO.len() + APP_DATA.len()) as u64), "{u:?}");
    assert!(u.reason.contains("received") && u.reason.contains("BufRead"), "{u:?}");
    assert_eq!(unseen_with(false), None, "both directions' plaintext captured: nothing unseen");
}

/// Every record of one client connection whose ciphertext after the
/// handshake was counted, not copied (`FLAG_NOT_KEPT`), while its plaintext
/// was captured both ways.
fn not_kept_records() -> Vec<Record> {
    let registry = Arc::new(TlsRegistry::default());
    let lib = TlsLib { path: "/usr/lib/libssl.so.3".into(), library: "openssl".into(), version: "3.0".into() };
    let cookie = registry.add(lib, false);
    let mut t = ConnTable::new(ConnConfig::default(), IdentityResolver::new(Sources::default()), registry);
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:443").tls_lib(cookie);
    let mut evs = vec![c.connect(), c.send(CLIENT_HELLO), c.recv(SERVER_HELLO)];
    evs.push(c.data(Direction::Egress, REQ, true));
    evs.push(c.truncated(Direction::Egress, 500, GapReason::CiphertextNotKept));
    evs.push(c.truncated(Direction::Ingress, 700, GapReason::CiphertextNotKept));
    evs.push(c.data(Direction::Ingress, RESP, true));
    evs.push(c.truncated(Direction::Ingress, 300, GapReason::CiphertextNotKept));
    evs.push(c.close());
    let mut rs = run(&mut t, evs);
    rs.extend(finish(&mut t));
    assert_eq!(t.stats.not_kept_bytes, 1500, "{:?}", t.stats);
    assert_eq!((t.stats.gap_bytes, t.stats.lost_bytes), (0, 0), "not kept is not missing: {:?}", t.stats);
    rs
}

#[test]
fn ciphertext_not_kept_is_stated_in_the_totals_and_is_never_a_gap() {
    let rs = not_kept_records();
    assert!(!rs.iter().any(|r| matches!(r, Record::Gap(_))), "no gap record: {rs:?}");
    let conn = conn_record(&rs);
    let (eg, ing) = (conn.egress, conn.ingress);
    assert_eq!((eg.captured, eg.gap), (CLIENT_HELLO.len() as u64, 0), "{eg:?}");
    assert_eq!((ing.captured, ing.gap), (SERVER_HELLO.len() as u64, 0), "{ing:?}");
    let (ne, ni) = (eg.not_kept.expect("egress not kept"), ing.not_kept.expect("ingress not kept"));
    assert_eq!((ne.bytes, ne.calls, ni.bytes, ni.calls), (500, 1, 1000, 2), "{ne:?} {ni:?}");
    assert!(ni.first_ns < ni.last_ns && ne.first_ns > 0, "the calls' kernel times: {ne:?} {ni:?}");
    // The totals add up to the kernel's: nothing is unaccounted for.
    assert_eq!(eg.captured + eg.gap + ne.bytes, eg.kernel_total.expect("closed"), "{eg:?}");
    assert_eq!(ing.captured + ing.gap + ni.bytes, ing.kernel_total.expect("closed"), "{ing:?}");
    assert_eq!(conn.tls_unseen, None, "the plaintext was captured both ways");
    // The handshake stays in the records, byte for byte; the plaintext is an exchange.
    let raw: Vec<u8> = rs
        .iter()
        .filter_map(|r| match r {
            Record::Segment(s) if !s.part.tls => Some(s.part.raw.0.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(raw.len(), CLIENT_HELLO.len() + SERVER_HELLO.len(), "only the handshake's ciphertext is kept");
    assert!(rs.iter().any(|r| matches!(r, Record::Exchange(e) if e.parts.iter().all(|p| p.tls))), "{rs:?}");
}

#[test]
fn ciphertext_not_kept_ends_up_in_the_connection_wire_record() {
    let rs = not_kept_records();
    let conn = rs.iter().find(|r| matches!(r, Record::Connection(_))).expect("a connection record");
    let w = crate::record::wire::to_wire(conn, "host");
    let c = w.connection.expect("connection fields");
    let n = c.ingress.and_then(|t| t.not_kept).expect("ingress not kept on the wire");
    assert_eq!((n.bytes, n.calls), (1000, 2), "{n:?}");
    assert!(n.first_kernel_ns > 0 && n.last_kernel_ns > n.first_kernel_ns, "{n:?}");
    let line = crate::record::text::line(conn);
    assert!(line.contains(" tls_ciphertext_not_kept=500/1000") && !line.contains("missing="), "{line}");
}

/// A client whose TLS is not hooked (its ciphertext is kept) talking to a
/// server on this host whose plaintext is captured (its ciphertext after the
/// handshake is counted, not kept): one pair of witnesses.
#[test]
fn a_witness_that_did_not_keep_its_ciphertext_is_not_missing_it() {
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "127.0.0.1:8443").process(100, "client");
    let mut s = Synth::tcp(2, "127.0.0.1:8443", "127.0.0.1:40000").process(200, "server");
    let mut t = table();
    let mut evs = vec![c.connect(), s.accept(), c.send(CLIENT_HELLO)];
    s.ts = s.ts.max(c.ts);
    evs.extend([s.recv(CLIENT_HELLO), s.send(SERVER_HELLO)]);
    c.ts = c.ts.max(s.ts);
    evs.extend([c.recv(SERVER_HELLO), c.send(APP_DATA)]);
    s.ts = s.ts.max(c.ts);
    let n = APP_DATA.len() as u64;
    evs.extend([
        s.truncated(Direction::Ingress, n, GapReason::CiphertextNotKept),
        s.data(Direction::Ingress, REQ, true),
        s.data(Direction::Egress, RESP, true),
        s.truncated(Direction::Egress, n, GapReason::CiphertextNotKept),
    ]);
    c.ts = c.ts.max(s.ts);
    evs.extend([c.recv(APP_DATA), c.close(), s.close()]);
    let mut rs = run(&mut t, evs);
    rs.extend(finish(&mut t));
    assert!(!rs.iter().any(|r| matches!(r, Record::Gap(_))), "no gap record: {rs:#?}");
    let faults: Vec<&crate::record::Fault> = rs
        .iter()
        .flat_map(|r| match r {
            Record::Exchange(e) => e.faults.iter().collect::<Vec<_>>(),
            Record::Segment(s) => s.faults.iter().collect(),
            _ => vec![],
        })
        .collect();
    assert!(faults.is_empty(), "not kept is not missing: {faults:?}");
    // The client's ciphertext is in its records whole, both ways.
    let mut cipher = [Vec::new(), Vec::new()];
    for r in &rs {
        if let Record::Segment(sg) = r
            && sg.who.side.conn_id == 1
            && !sg.part.tls
        {
            cipher[sg.part.direction.index()].extend_from_slice(&sg.part.raw.0);
        }
    }
    assert_eq!(cipher[Direction::Egress.index()], [CLIENT_HELLO, APP_DATA].concat(), "{rs:#?}");
    assert_eq!(cipher[Direction::Ingress.index()], [SERVER_HELLO, APP_DATA].concat(), "{rs:#?}");
    let conn = conn_record(&rs);
    assert_eq!((conn.egress.not_kept, conn.ingress.not_kept), (None, None), "{conn:?}");
    let (wi, we) = (conn.witness_ingress.expect("server ingress"), conn.witness_egress.expect("server egress"));
    assert_eq!((wi.not_kept.map(|n| n.bytes), we.not_kept.map(|n| n.bytes)), (Some(n), Some(n)), "{conn:?}");
    assert_eq!((wi.gap, we.gap), (0, 0), "{conn:?}");
}

/// A parser inside a message when the ciphertext stops being kept (a
/// protocol told by port parsing TLS bytes): the message ends with the kept
/// bytes and says why; nothing is counted missing.
#[test]
fn a_message_cut_by_ciphertext_not_kept_ends_there_without_a_gap() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:8080");
    let head = b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n0123456789";
    let evs =
        vec![c.connect(), c.send(head), c.truncated(Direction::Egress, 90, GapReason::CiphertextNotKept), c.close()];
    let mut rs = run(&mut t, evs);
    rs.extend(finish(&mut t));
    assert_eq!((t.stats.gap_bytes, t.stats.not_kept_bytes), (0, 90), "{:?}", t.stats);
    let e = exchanges(&rs)[0];
    let p = &e.parts[0];
    assert_eq!((&p.raw.0[..], p.len), (&head[..], head.len() as u64), "{e:#?}");
    assert!(p.seen.gaps.is_empty(), "no gap mark: {:?}", p.seen.gaps);
    let err = e.messages[0].error.as_deref().unwrap_or_default();
    assert!(err.contains("counted, not kept"), "{err}");
    assert!(!rs.iter().any(|r| matches!(r, Record::Gap(_))), "{rs:#?}");
}
