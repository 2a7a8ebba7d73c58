//! TLS on a connection: what its record says of the plaintext it did not see.
use std::sync::Arc;

use super::*;
use crate::capture::tls::{TlsLib, TlsRegistry};
use crate::record::TlsUnseen;

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
    let conn = rs
        .iter()
        .find_map(|r| match r {
            Record::Connection(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a connection record");
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
