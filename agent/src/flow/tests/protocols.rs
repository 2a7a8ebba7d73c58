//! Engine tests per protocol: UDP/DNS, HTTP/2 and gRPC, Redis, FIX,
//! PostgreSQL, and invalid input.

use super::*;

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
fn dns_over_udp_pairs_query_and_response_by_id() {
    let (query, response) = dns_exchange();
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
    let (query, response) = dns_exchange();
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
    let (query, _) = dns_exchange();
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
        assert_eq!(r.raw.0, query);
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
