//! One exchange per record, per protocol: DNS over UDP, HTTP/2 streams,
//! Redis pipelines, PostgreSQL groups, FIX one-way messages.

use super::*;
use crate::types::Transport;

/// A DNS query for example.com (id 0x1234) and its one-answer response.
fn dns_exchange() -> (&'static [u8], Vec<u8>) {
    let query: &'static [u8] =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut response = b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
    response.extend_from_slice(&query[12..]);
    response.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22");
    (query, response)
}

#[test]
fn a_dns_query_and_its_answer_are_one_record() {
    let (query, response) = dns_exchange();
    let mut t = table();
    let mut c = Synth::udp(1, "127.0.0.1:40000", "127.0.0.53:53");
    let rs = run(&mut t, vec![c.connect(), c.send(query), c.recv(&response), c.recv(b"\x00")]);
    assert_eq!(kinds(&rs), ["exchange", "segment"], "{rs:#?}");
    let e = exchanges(&rs)[0];
    assert_eq!((e.protocol, e.exchange_id, e.incomplete), (Protocol::Dns, Some(0x1234), None));
    assert_eq!(e.who.side.transport, Transport::Udp);
    assert_eq!(&e.parts[1].raw.0[..], &response[..]);
    assert_eq!(field(e, 0, "questions")[0]["name"], "example.com.");
    assert_eq!(e.latency_ns, Some(e.parts[1].seen.first_ns - e.parts[0].seen.last_ns));
    // A one-byte datagram is recorded raw, with the parser's complaint.
    let Record::Segment(s) = &rs[1] else { unreachable!() };
    assert_eq!(s.reason, crate::proto::fields::UnparsedReason::Malformed);
    assert!(s.error.is_some());
    let rs = run(&mut t, vec![c.close()]);
    let Record::Connection(cr) = &rs[0] else { panic!("{rs:#?}") };
    assert_eq!(cr.ingress.captured, response.len() as u64 + 1);
}

#[test]
fn dns_on_any_port_is_detected_by_content_and_peers_are_kept_per_datagram() {
    let (query, response) = dns_exchange();
    let mut t = table();
    // An unconnected socket: every datagram names its own peer.
    let mut c = Synth::udp(1, "127.0.0.1:40000", "0.0.0.0:0");
    let mut q = c.send(query);
    let mut r = c.recv(&response);
    for ev in [&mut q, &mut r] {
        if let CaptureEvent::Data { meta, .. } = ev {
            meta.peer_from_arg = true;
            meta.remote = "127.0.0.1:40053".parse().unwrap();
        }
    }
    let rs = run(&mut t, vec![q, r]);
    let e = exchanges(&rs)[0];
    assert_eq!(e.protocol, Protocol::Dns);
    assert_eq!(e.parts[0].peer, Some("127.0.0.1:40053".parse().unwrap()));
    assert_eq!(e.who.side.remote, None);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn an_http2_stream_is_one_record_and_connection_frames_are_gathered() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:50051");
    let mut client = crate::proto::http2::H2_PREFACE.to_vec();
    client.extend(frame(4, 0, 0, &[])); // SETTINGS
    let req = frame(1, 0x05, 1, &[0x82, 0x86, 0x84]); // HEADERS GET / http, END_STREAM|END_HEADERS
    let server_settings = frame(4, 0, 0, &[]);
    let resp = [frame(1, 0x04, 1, &[0x88]), frame(0, 0x01, 1, b"ok")].concat(); // :status 200, DATA END_STREAM
    let rs = run(&mut t, vec![c.connect(), c.send(&client), c.recv(&server_settings), c.send(&req), c.recv(&resp)]);
    let ex = exchanges(&rs);
    let stream = ex.iter().find(|e| e.exchange_id == Some(1)).expect("stream 1 recorded when both sides ended");
    assert_eq!(stream.protocol, Protocol::Http2);
    assert_eq!(stream.incomplete, None);
    assert_eq!(stream.parts.len(), 2, "{stream:#?}");
    assert_eq!((stream.parts[0].role, &stream.parts[0].raw.0[..]), (PartRole::Request, &req[..]));
    assert_eq!((stream.parts[1].role, &stream.parts[1].raw.0[..]), (PartRole::Response, &resp[..]));
    assert_eq!(stream.messages.len(), 3, "HEADERS, HEADERS, DATA");
    assert_eq!(field(stream, 0, "method"), "GET");
    assert_eq!(field(stream, 1, "status"), 200);
    // Preface and SETTINGS: gathered per direction, out by the time bound.
    let mut out = Vec::new();
    t.tick(c.ts + 2 * SEC, &mut out);
    let gathered = exchanges(&out);
    assert_eq!(gathered.len(), 2, "{out:#?}");
    assert!(gathered.iter().all(|e| e.exchange_id.is_none() && e.parts.iter().all(|p| p.role == PartRole::Message)));
    assert_eq!(gathered[0].messages.len(), 2, "preface and SETTINGS in one record");
}

#[test]
fn a_redis_pipeline_pairs_in_order() {
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:6379");
    let cmds = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let rs = run(&mut t, vec![c.connect(), c.send(cmds), c.recv(b"+OK\r\n$1\r"), c.recv(b"\nv\r\n")]);
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 2);
    assert_eq!(field(ex[0], 0, "command"), "SET");
    assert_eq!(field(ex[1], 1, "text"), "v");
    assert_eq!(ex[1].parts[1].seen.calls.len(), 2, "the reply came in two reads");
}

#[test]
fn fix_messages_are_one_record_each_and_a_gap_stays_inside_the_message() {
    let logon = "8=FIX.4.4\x019=69\x0135=A\x0149=CLIENT1\x0156=BROKER1\x0134=1\x0152=20261121-12:00:00.000\x0198=0\x01108=30\x0110=205\x01";
    let hb = "8=FIX.4.2\x019=57\x0135=0\x0149=CLIENT1\x0156=BROKER1\x0134=3\x0152=20261121-12:00:31.000\x0110=164\x01";
    let stream = [logon, logon, hb].concat().into_bytes();
    let l = logon.len();
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:9876");
    let mut evs = vec![c.connect(), c.send(&stream[..l + 20])];
    evs.push(c.truncated(Direction::Egress, 20, GapReason::Lost));
    evs.push(c.send(&stream[l + 40..]));
    let rs = run(&mut t, evs);
    let ex = exchanges(&rs);
    assert_eq!(kinds(&rs), ["exchange", "exchange", "exchange"], "{rs:#?}");
    assert!(ex.iter().all(|e| e.exchange_id.is_none() && e.parts[0].role == PartRole::Message));
    assert_eq!(ex[1].parts[0].len, l as u64, "the second logon spans the gap");
    assert_eq!(ex[1].parts[0].seen.gaps.len(), 1);
    assert!(ex[1].messages[0].error.is_some());
    assert_eq!(field(ex[2], 0, "msg_type"), "0");
    // The session ids the sender revealed are attributes of its identity,
    // on the record and in the wire's identity map.
    let app = &ex[0].who.app;
    assert!(app.contains(&("fix.sender_comp_id".into(), "CLIENT1".into())), "{app:?}");
    assert!(app.contains(&("fix.target_comp_id".into(), "BROKER1".into())), "{app:?}");
    assert!(ex[0].who.peer_app.is_empty(), "the broker said nothing yet");
    let wire = crate::record::wire::to_wire(&rs[0], "host");
    assert_eq!(wire.identity.get("fix.sender_comp_id").map(String::as_str), Some("CLIENT1"));
}

#[test]
fn a_postgres_startup_and_query_pair_with_their_responses() {
    let startup = {
        let params = b"user\0alice\0\0";
        let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&196_608u32.to_be_bytes());
        m.extend_from_slice(params);
        m
    };
    let query = b"Q\x00\x00\x00\x0eSELECT 1;\x00";
    let result = b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I";
    let mut t = table();
    let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:15432");
    let rs = run(
        &mut t,
        vec![
            c.connect(),
            c.send(&startup),
            c.recv(b"R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I"),
            c.send(query),
            c.recv(result),
        ],
    );
    let ex = exchanges(&rs);
    assert_eq!(ex.len(), 2, "{rs:#?}");
    assert!(ex.iter().all(|e| e.protocol == Protocol::Postgres && e.incomplete.is_none()));
    assert_eq!(field(ex[1], 0, "queries")[0], "SELECT 1;");
}
