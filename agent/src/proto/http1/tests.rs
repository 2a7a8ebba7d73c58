use super::*;
use proptest::prelude::*;

fn parser() -> Http1Parser {
    Http1Parser::new(Direction::Egress, &ProtoConfig::default())
}

fn msg(p: Parse) -> (usize, Http1Message, Option<(u64, ExchangeRole)>, Option<String>) {
    match p {
        Parse::Message(Parsed { len, body: Body::Http1(m), exchange, error }) => (len, *m, exchange, error),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// RFC 9112 §3 / RFC 9110 examples.
#[test]
fn get_request_and_content_length_response() {
    let mut p = parser();
    let req = Bytes::from_static(b"GET /hello.txt HTTP/1.1\r\nUser-Agent: curl/7.64.1\r\nHost: www.example.com\r\nAccept-Language: en, mi\r\n\r\n");
    let (len, m, ex, err) = msg(p.parse(Direction::Egress, &req));
    assert_eq!(len, req.len());
    assert_eq!(m.method(), Some(&b"GET"[..]));
    assert_eq!(m.target(), Some(&b"/hello.txt"[..]));
    assert_eq!(m.version, Some(1));
    assert_eq!(m.headers.len(), 3);
    let pairs: Vec<(&[u8], &[u8])> = m.header_pairs().collect();
    assert_eq!(pairs[1], (&b"Host"[..], &b"www.example.com"[..]));
    assert_eq!(m.header("accept-language"), Some(&b"en, mi"[..]));
    assert_eq!(&m.head[..], &req[..]);
    assert_eq!(ex, Some((0, ExchangeRole::Request)));
    assert_eq!(err, None);

    let resp = Bytes::from_static(b"HTTP/1.1 200 OK\r\nDate: Mon, 27 Jul 2009 12:28:53 GMT\r\nContent-Length: 51\r\nContent-Type: text/plain\r\n\r\nHello World! My content includes a trailing CRLF.\r\nGET /next");
    let (len, m, ex, _) = msg(p.parse(Direction::Ingress, &resp));
    assert_eq!(len, resp.len() - b"GET /next".len());
    assert_eq!(m.status, Some(200));
    assert_eq!(m.reason(), Some(&b"OK"[..]));
    assert_eq!(m.framing, BodyFraming::Length);
    assert_eq!(m.body_len, 51);
    assert_eq!(m.request_method.unwrap(), "GET");
    assert_eq!(ex, Some((0, ExchangeRole::Response)));
}

#[test]
fn chunked_body_with_trailers() {
    let mut p = parser();
    msg(p.parse(Direction::Egress, &Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")));
    // RFC 9112 §7.1 style chunked message with extension and trailer.
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
    let all = Bytes::from_static(resp);
    let (len, m, _, err) = msg(p.parse(Direction::Ingress, &all));
    assert_eq!((len, err), (resp.len(), None));
    assert_eq!(m.framing, BodyFraming::Chunked);
    assert_eq!(m.body_len, 4 + 5 + 14);
    // Fed in two halves: Need, then the same message.
    let mut p = parser();
    msg(p.parse(Direction::Egress, &Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")));
    match p.parse(Direction::Ingress, &all.slice(..60)) {
        Parse::Need { min_len, total: None } => assert!(min_len > 60),
        other => panic!("{other:?}"),
    }
    let (len, m, _, _) = msg(p.parse(Direction::Ingress, &all));
    assert_eq!((len, m.body_len), (resp.len(), 23));
}

#[test]
fn head_response_has_no_body_and_pipelining_pairs_in_order() {
    let mut p = parser();
    let reqs = Bytes::from_static(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    let (n1, m1, ex1, _) = msg(p.parse(Direction::Egress, &reqs));
    let (_, m2, ex2, _) = msg(p.parse(Direction::Egress, &reqs.slice(n1..)));
    assert_eq!((m1.method(), m2.method()), (Some(&b"HEAD"[..]), Some(&b"GET"[..])));
    assert_eq!((ex1.unwrap().0, ex2.unwrap().0), (0, 1));
    let resps = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnah",
    );
    let (n1, r1, ex1, _) = msg(p.parse(Direction::Ingress, &resps));
    assert_eq!((r1.framing, r1.body_len, ex1.unwrap().0), (BodyFraming::None, 0, 0));
    let (n2, r2, ex2, _) = msg(p.parse(Direction::Ingress, &resps.slice(n1..)));
    assert_eq!((r2.status, ex2.unwrap().0, n1 + n2), (Some(404), 1, resps.len()));
}

#[test]
fn interim_and_no_content_responses() {
    let mut p = parser();
    msg(p.parse(
        Direction::Egress,
        &Bytes::from_static(b"POST /u HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"),
    ));
    let (_, m, ex, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n")));
    assert!(m.interim);
    // Part of the response to request 0; the final response follows.
    assert_eq!(ex, Some((0, ExchangeRole::Response)));
    assert!(p.more_to_come(Direction::Ingress, 0));
    let (_, m, ex, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"HTTP/1.1 204 No Content\r\n\r\n")));
    assert!(!p.more_to_come(Direction::Ingress, 0));
    assert_eq!((m.framing, ex), (BodyFraming::None, Some((0, ExchangeRole::Response))));
}

#[test]
fn close_delimited_response_is_complete_at_end() {
    let mut p = parser();
    let r = Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\nbody until close");
    assert!(matches!(p.parse(Direction::Ingress, &r), Parse::Need { total: None, .. }));
    let part = p.interrupted(Direction::Ingress, &r);
    assert!(part.complete_at_end);
    match part.body {
        Body::Http1(m) => assert_eq!((m.framing, m.body_len), (BodyFraming::Close, 16)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_inputs_are_reported() {
    let mut p = parser();
    match p.parse(Direction::Egress, &Bytes::from_static(b"GET / HTTP/1.1\r\nContent-Length: x1\r\n\r\n")) {
        Parse::Invalid { len, error } => {
            assert_eq!(len, 38);
            assert!(error.contains("Content-Length"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    match p.parse(Direction::Egress, &Bytes::from_static(b"\x16\x03\x01garbage\r\n\r\n")) {
        Parse::Invalid { error, .. } => assert!(error.contains("invalid HTTP/1 head"), "{error}"),
        other => panic!("{other:?}"),
    }
    let cfg = ProtoConfig { max_headers: 2, max_header_bytes: 64, ..ProtoConfig::default() };
    let mut p = Http1Parser::new(Direction::Egress, &cfg);
    match p.parse(Direction::Egress, &Bytes::from_static(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n")) {
        Parse::Invalid { error, .. } => assert_eq!(error, "more than 2 headers"),
        other => panic!("{other:?}"),
    }
    let long = Bytes::from(format!("GET /{} HTTP/1.1\r\n", "a".repeat(100)));
    match p.parse(Direction::Egress, &long) {
        Parse::Invalid { error, .. } => assert_eq!(error, "header block exceeds 64 bytes"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_chunk_is_flagged_and_message_framed_so_far() {
    let mut p = parser();
    msg(p.parse(Direction::Egress, &Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n")));
    let r = Bytes::from_static(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX");
    let (len, _, _, err) = msg(p.parse(Direction::Ingress, &r));
    assert!(err.unwrap().contains("not followed by CRLF"));
    assert_eq!(len, 47);
}

#[test]
fn resync_finds_the_next_message_start() {
    let mut p = parser();
    assert_eq!(p.resync(Direction::Egress, b"xx\r\nyy\r\nPOST / HTTP/1.1\r\n"), Some(8));
    assert_eq!(p.resync(Direction::Ingress, b"body\nHTTP/1.1 200 OK"), Some(5));
    assert_eq!(p.resync(Direction::Ingress, b"body\nHT"), Some(5));
    assert_eq!(p.resync(Direction::Egress, b"no start here"), None);
}

proptest! {
    /// Any split point gives Need (with a correct hint) then the same message.
    #[test]
    fn any_split_yields_the_same_message(split in 1usize..120) {
        let full = Bytes::from_static(b"POST /api/v1/orders HTTP/1.1\r\nHost: ex\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"qty\":100,\"x\":1}");
        let split = split.min(full.len() - 1);
        let mut whole = parser();
        let expected = msg(whole.parse(Direction::Egress, &full));
        let mut p = parser();
        match p.parse(Direction::Egress, &full.slice(..split)) {
            Parse::Need { min_len, .. } => prop_assert!(min_len > split && min_len <= full.len().max(split + 1)),
            other => prop_assert!(false, "{other:?}"),
        }
        prop_assert_eq!(msg(p.parse(Direction::Egress, &full)), expected);
    }

    /// Arbitrary bytes never panic and always make progress or ask for more.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), dir in any::<bool>()) {
        let mut p = parser();
        let dir = if dir { Direction::Egress } else { Direction::Ingress };
        let buf = Bytes::from(data);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len()),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len()),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(off) = p.resync(dir, &buf) { prop_assert!(off <= buf.len()); }
    }
}

/// A head arriving a byte at a time is searched once, and still parses.
#[test]
fn head_in_tiny_pieces_parses_once_complete() {
    let full = Bytes::from_static(b"GET /a HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    let mut p = parser();
    for n in 1..full.len() {
        match p.parse(Direction::Egress, &full.slice(..n)) {
            Parse::Need { min_len, .. } => assert_eq!(min_len, n + 1),
            other => panic!("at {n}: {other:?}"),
        }
    }
    let (len, m, _, _) = msg(p.parse(Direction::Egress, &full));
    assert_eq!((len, m.method()), (full.len(), Some(&b"GET"[..])));
    // Bare LF line endings are found too.
    let lf = Bytes::from_static(b"GET /b HTTP/1.1\nHost: y\n\n");
    for n in 1..lf.len() {
        assert!(matches!(p.parse(Direction::Egress, &lf.slice(..n)), Parse::Need { .. }));
    }
    let (len, _, _, _) = msg(p.parse(Direction::Egress, &lf));
    assert_eq!(len, lf.len());
}
