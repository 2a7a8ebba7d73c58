use super::*;
use proptest::prelude::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Header block of literals without indexing, new names (RFC 7541 §6.2.2).
fn block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in headers {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn grpc_msg(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn parser() -> Http2Parser {
    Http2Parser::new(Direction::Egress, &ProtoConfig::default())
}

fn one(
    p: &mut Http2Parser,
    dir: Direction,
    bytes: &[u8],
) -> (usize, H2Frame, Option<(u64, ExchangeRole)>, Option<String>) {
    match p.parse(dir, &Bytes::copy_from_slice(bytes)) {
        Parse::Message(Parsed { len, body: Body::Http2(f), exchange, error }) => (len, *f, exchange, error),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn grpc_unary_call() {
    let mut p = parser();
    let (len, f, _, _) = one(&mut p, Direction::Egress, H2_PREFACE);
    assert_eq!((len, f.preface), (24, true));
    let settings = frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0]);
    let (_, f, _, err) = one(&mut p, Direction::Egress, &settings);
    assert_eq!((f.settings.clone(), err), (vec![(3, 100), (4, 65536)], None));
    let req = block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/helloworld.Greeter/SayHello"),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("grpc-timeout", "1S"),
        ("te", "trailers"),
    ]);
    let (_, f, ex, err) = one(&mut p, Direction::Egress, &frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &req));
    assert_eq!(err, None);
    assert_eq!(ex, Some((1, ExchangeRole::Request)));
    assert_eq!(f.method.clone().unwrap(), "POST");
    assert_eq!(f.headers.len(), 7);
    let g = f.grpc.unwrap();
    assert_eq!(
        (g.service.unwrap(), g.method.unwrap()),
        (Text::from_static("helloworld.Greeter"), Text::from_static("SayHello"))
    );
    assert_eq!(g.timeout.unwrap(), "1S");
    let (_, f, _, _) =
        one(&mut p, Direction::Egress, &frame(frame::DATA, frame::FLAG_END_STREAM, 1, &grpc_msg(b"\x0a\x05world")));
    assert_eq!(f.grpc.unwrap().messages, vec![grpc::GrpcMessage { compressed: false, len: 7, complete: true }]);
    assert!(f.end_stream);

    let resp = block(&[(":status", "200"), ("content-type", "application/grpc")]);
    let (_, f, ex, _) = one(&mut p, Direction::Ingress, &frame(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &resp));
    assert_eq!((f.status, ex), (Some(200), Some((1, ExchangeRole::Response))));
    let (_, f, _, _) = one(&mut p, Direction::Ingress, &frame(frame::DATA, 0, 1, &grpc_msg(b"\x0a\x0bHello world")));
    assert_eq!(f.grpc.unwrap().messages[0].len, 13);
    let trailers = block(&[("grpc-status", "0"), ("grpc-message", "OK")]);
    let (_, f, ex, _) = one(
        &mut p,
        Direction::Ingress,
        &frame(frame::HEADERS, frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM, 1, &trailers),
    );
    assert!(f.trailers);
    // Every frame of the stream belongs to its exchange; the stream is over.
    assert_eq!(ex, Some((1, ExchangeRole::Response)));
    assert!(!p.more_to_come(Direction::Ingress, 1) && !p.more_to_come(Direction::Egress, 1));
    let g = f.grpc.unwrap();
    assert_eq!((g.status, g.message.unwrap()), (Some(0), Text::from_static("OK")));
    assert!(p.streams.is_empty());
}

/// RFC 7541 C.4 request blocks carried in HEADERS frames on streams 1, 3, 5,
/// the first split by a CONTINUATION.
#[test]
fn hpack_state_spans_frames_and_continuation() {
    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
    let b1 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
    let b2 = hex("8286 84be 5886 a8eb 1064 9cbf");
    let mut p = parser();
    let (_, f, ex, _) = one(&mut p, Direction::Egress, &frame(frame::HEADERS, frame::FLAG_END_STREAM, 1, &b1[..5]));
    assert!(f.headers_continued && f.headers.is_empty());
    assert_eq!(ex, Some((1, ExchangeRole::Request)));
    let (_, f, ex, err) =
        one(&mut p, Direction::Egress, &frame(frame::CONTINUATION, frame::FLAG_END_HEADERS, 1, &b1[5..]));
    assert_eq!(err, None);
    assert_eq!(f.authority.unwrap(), "www.example.com");
    assert!(f.end_stream);
    assert_eq!(ex, Some((1, ExchangeRole::Request)));
    let (_, f, _, _) = one(&mut p, Direction::Egress, &frame(frame::HEADERS, frame::FLAG_END_HEADERS, 3, &b2));
    assert_eq!(f.headers.last().unwrap().value, "no-cache");
    assert_eq!(f.authority.unwrap(), "www.example.com");
    // Padding and priority are stripped before HPACK.
    let mut padded = vec![2, 0, 0, 0, 0, 16];
    padded.extend_from_slice(&hex("82 86 84"));
    padded.extend_from_slice(&[0, 0]);
    let (_, f, _, err) = one(
        &mut p,
        Direction::Egress,
        &frame(frame::HEADERS, frame::FLAG_END_HEADERS | frame::FLAG_PADDED | frame::FLAG_PRIORITY, 5, &padded),
    );
    assert_eq!((f.headers.len(), err), (3, None));
}

#[test]
fn control_frames_and_errors() {
    let mut p = parser();
    p.preface_pending = false;
    let (_, f, _, err) = one(&mut p, Direction::Egress, &frame(frame::PING, frame::FLAG_ACK, 0, &[1; 8]));
    assert!(f.ack && err.is_none());
    let (_, _, _, err) = one(&mut p, Direction::Egress, &frame(frame::PING, 0, 0, &[1; 7]));
    assert_eq!(err.as_deref(), Some("PING payload of 7 bytes, expected 8"));
    let (_, f, _, _) = one(&mut p, Direction::Ingress, &frame(frame::GOAWAY, 0, 0, &[0, 0, 0, 7, 0, 0, 0, 2, b'x']));
    assert_eq!((f.last_stream_id, f.error_code), (Some(7), Some(2)));
    let (_, f, _, _) = one(&mut p, Direction::Ingress, &frame(frame::WINDOW_UPDATE, 0, 0, &[0x80, 0, 0x10, 0]));
    assert_eq!(f.window_increment, Some(4096));
    let (_, f, _, _) = one(&mut p, Direction::Ingress, &frame(frame::RST_STREAM, 0, 3, &[0, 0, 0, 8]));
    assert_eq!(f.error_code, Some(8));
    let (_, _, _, err) =
        one(&mut p, Direction::Egress, &frame(frame::CONTINUATION, frame::FLAG_END_HEADERS, 1, b"\x82"));
    assert_eq!(err.as_deref(), Some("CONTINUATION sequence broken on stream 1"));
    // A frame in the middle of a header block breaks it and HPACK state.
    one(&mut p, Direction::Egress, &frame(frame::HEADERS, 0, 9, b"\x82"));
    let (_, _, _, err) = one(&mut p, Direction::Egress, &frame(frame::DATA, 0, 9, b"x"));
    assert_eq!(err.as_deref(), Some("CONTINUATION sequence broken on stream 9"));
    let (_, _, _, err) = one(&mut p, Direction::Egress, &frame(frame::HEADERS, frame::FLAG_END_HEADERS, 11, b"\xbe"));
    assert!(err.unwrap().contains("state was lost"));
    let (_, f, _, _) = one(&mut p, Direction::Egress, &frame(0xfa, 0, 0, b"ext"));
    assert_eq!(f.type_name, "UNKNOWN");
    let (_, _, _, err) = one(&mut p, Direction::Egress, &frame(frame::DATA, frame::FLAG_PADDED, 1, &[9, 1]));
    assert_eq!(err.as_deref(), Some("padding of 9 bytes exceeds the 2-byte payload"));
}

#[test]
fn partial_frames_gaps_and_resync() {
    let mut p = parser();
    let data = frame(frame::DATA, 0, 1, &[7; 100]);
    match p.parse(Direction::Ingress, &Bytes::copy_from_slice(&data[..20])) {
        Parse::Need { min_len, total } => assert_eq!((min_len, total), (109, Some(109))),
        other => panic!("{other:?}"),
    }
    let part = p.interrupted(Direction::Ingress, &Bytes::copy_from_slice(&data[..20]));
    assert_eq!(part.total, Some(109));
    let mut stream = b"garbage".to_vec();
    stream.extend_from_slice(&frame(frame::SETTINGS, 1, 0, &[]));
    stream.extend_from_slice(&frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    assert_eq!(p.resync(Direction::Ingress, &stream), Some(7));
    assert_eq!(p.resync(Direction::Ingress, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), client in any::<bool>()) {
        let mut p = parser();
        let dir = if client { Direction::Egress } else { Direction::Ingress };
        let buf = Bytes::from(data);
        let mut at = 0;
        // Parse as many frames as the bytes hold.
        while at < buf.len() {
            match p.parse(dir, &buf.slice(at..)) {
                Parse::Message(m) => { prop_assert!(m.len >= 1 && m.len <= buf.len() - at); at += m.len; }
                Parse::Invalid { len, .. } => { prop_assert!(len >= 1); at += len; }
                Parse::Need { min_len, .. } => { prop_assert!(min_len > buf.len() - at); break; }
            }
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Valid frame sequences with arbitrary HPACK payloads never panic either.
    #[test]
    fn arbitrary_header_blocks_never_panic(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6)) {
        let mut p = parser();
        p.preface_pending = false;
        for (i, b) in blocks.iter().enumerate() {
            let f = frame(frame::HEADERS, frame::FLAG_END_HEADERS, 2 * i as u32 + 1, b);
            let parsed = matches!(p.parse(Direction::Egress, &Bytes::from(f)), Parse::Message(_));
            prop_assert!(parsed);
        }
    }
}
