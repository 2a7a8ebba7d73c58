use super::*;
use proptest::prelude::*;

fn parser() -> RedisParser {
    RedisParser::new(Direction::Egress, &ProtoConfig::default())
}

fn msg(p: Parse) -> (usize, RedisMessage, Option<(u64, ExchangeRole)>) {
    match p {
        Parse::Message(Parsed { len, body: Body::Redis(m), exchange, .. }) => (len, *m, exchange),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn command_and_replies_from_the_resp_spec() {
    let mut p = parser();
    // "*2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n" is the spec's LLEN example.
    let cmd = Bytes::from_static(b"*2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n");
    let (len, m, ex) = msg(p.parse(Direction::Egress, &cmd));
    assert_eq!(len, cmd.len());
    assert_eq!(m.command.unwrap(), "LLEN");
    assert_eq!(m.args, vec![Text::from_static("mylist")]);
    assert_eq!(ex, Some((0, ExchangeRole::Request)));
    let (len, m, ex) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b":48293\r\n")));
    assert_eq!((len, m.integer, m.value_type, ex), (8, Some(48293), "integer", Some((0, ExchangeRole::Response))));
    let (_, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"+OK\r\n")));
    assert_eq!(m.text.unwrap(), "OK");
    let (_, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"-ERR unknown command 'foobar'\r\n")));
    assert_eq!((m.value_type, m.text.unwrap()), ("error", Text::from_static("ERR unknown command 'foobar'")));
    let (_, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"$5\r\nhello\r\n")));
    assert_eq!(m.text.unwrap(), "hello");
    let (len, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"$-1\r\n")));
    assert_eq!((len, m.text), (5, None));
    let (len, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"$0\r\n\r\n")));
    assert_eq!((len, m.text.unwrap()), (6, Text::from_static("")));
    // Nested array from the spec.
    let nested = Bytes::from_static(b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n");
    let (len, m, _) = msg(p.parse(Direction::Ingress, &nested));
    assert_eq!((len, m.elements, m.value_type), (nested.len(), Some(2), "array"));
    let (len, m, _) = msg(p.parse(Direction::Ingress, &Bytes::from_static(b"*-1\r\n")));
    assert_eq!((len, m.value_type), (5, "array"));
}

#[test]
fn resp3_types() {
    let mut p = parser();
    let map = Bytes::from_static(b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n");
    let (len, m, _) = msg(p.parse(Direction::Ingress, &map));
    assert_eq!((len, m.value_type, m.elements), (map.len(), "map", Some(2)));
    let push = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$2\r\nhi\r\n");
    let (len, m, ex) = msg(p.parse(Direction::Ingress, &push));
    assert_eq!((len, m.kind, ex), (push.len(), RedisKind::Push, None));
    let attr = Bytes::from_static(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2039123\r\n");
    let (len, _, _) = msg(p.parse(Direction::Ingress, &attr));
    assert_eq!(len, attr.len());
    for one in [
        &b"_\r\n"[..],
        b"#t\r\n",
        b",3.14\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
    ] {
        let (len, _, _) = msg(p.parse(Direction::Ingress, &Bytes::copy_from_slice(one)));
        assert_eq!(len, one.len());
    }
}

#[test]
fn inline_commands() {
    let mut p = parser();
    let (len, m, _) = msg(p.parse(Direction::Egress, &Bytes::from_static(b"SET  key value\r\nPING\r\n")));
    assert_eq!(len, 16);
    assert!(m.inline);
    assert_eq!(m.command.unwrap(), "SET");
    assert_eq!(m.args, vec![Text::from_static("key"), Text::from_static("value")]);
}

#[test]
fn partial_values_ask_for_more_with_exact_hints() {
    let mut p = parser();
    match p.parse(Direction::Egress, &Bytes::from_static(b"*2\r\n$4\r\nLL")) {
        Parse::Need { min_len, .. } => assert_eq!(min_len, 14),
        other => panic!("{other:?}"),
    }
    let part = p.interrupted(Direction::Ingress, &Bytes::from_static(b"$10\r\nhel"));
    assert_eq!(part.total, Some(17));
}

#[test]
fn invalid_and_capped_inputs() {
    let mut p = parser();
    for (bad, want) in [
        (&b"?x\r\n"[..], "invalid RESP type byte 0x3f at offset 0"),
        (b":12a\r\n", "invalid RESP length or number at offset 1"),
        (b"$3\r\nabcd\r\n", "bulk string at offset 7 not followed by CRLF"),
        (b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "RESP nesting deeper than 3"),
    ] {
        let cfg = ProtoConfig { max_resp_depth: 3, ..ProtoConfig::default() };
        let mut q = RedisParser::new(Direction::Egress, &cfg);
        match q.parse(Direction::Ingress, &Bytes::copy_from_slice(bad)) {
            Parse::Invalid { error, len } => {
                assert_eq!(error, want);
                assert!(len >= 1);
            }
            other => panic!("{other:?}"),
        }
    }
    let cfg = ProtoConfig { max_resp_elements: 3, ..ProtoConfig::default() };
    let mut q = RedisParser::new(Direction::Egress, &cfg);
    assert!(matches!(
        q.parse(Direction::Ingress, &Bytes::from_static(b"*3\r\n:1\r\n:2\r\n:3\r\n")),
        Parse::Invalid { .. }
    ));
    assert_eq!(p.resync(Direction::Ingress, b"lo\r\n:5\r\n"), Some(4));
    assert_eq!(p.resync(Direction::Egress, b"xx\r\n*1\r\n"), Some(4));
}

/// A large reply arriving in small pieces is scanned resumably and gives
/// the same message as when it arrives whole.
#[test]
fn large_array_in_small_pieces() {
    let mut reply = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        reply.extend_from_slice(format!("${}\r\nitem{i}\r\n", 4 + i.to_string().len()).as_bytes());
    }
    let all = Bytes::from(reply);
    let whole = msg(parser().parse(Direction::Ingress, &all));
    let mut p = parser();
    let mut n = 7;
    while n < all.len() {
        match p.parse(Direction::Ingress, &all.slice(..n)) {
            Parse::Need { min_len, .. } => assert!(min_len > n),
            other => panic!("at {n}: {other:?}"),
        }
        assert!(p.resume[1].is_some() || n < 8);
        n += 7;
    }
    assert_eq!(msg(p.parse(Direction::Ingress, &all)), whole);
    assert_eq!(whole.1.elements, Some(1000));
    // Commands keep their arguments when resumed.
    let cmd = Bytes::from_static(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n");
    let mut p = parser();
    for n in 1..cmd.len() {
        assert!(matches!(p.parse(Direction::Egress, &cmd.slice(..n)), Parse::Need { .. }));
    }
    let (_, m, _) = msg(p.parse(Direction::Egress, &cmd));
    assert_eq!((m.command.unwrap(), m.args.len()), (Text::from_static("SET"), 2));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), client in any::<bool>()) {
        let mut p = parser();
        let dir = if client { Direction::Egress } else { Direction::Ingress };
        let buf = Bytes::from(data);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len()),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len()),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Any split gives Need, then the whole gives the same message.
    #[test]
    fn any_split_yields_the_same_message(split in 0usize..40) {
        let cmd = Bytes::from_static(b"*3\r\n$3\r\nSET\r\n$5\r\nmykey\r\n$7\r\nmyvalue\r\n");
        let split = split.min(cmd.len() - 1);
        let mut p = parser();
        let whole = msg(p.parse(Direction::Egress, &cmd));
        let mut q = parser();
        let need = matches!(q.parse(Direction::Egress, &cmd.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(msg(q.parse(Direction::Egress, &cmd)), whole);
    }
}

proptest! {
    /// The CRLF search (bytes scanned one by one, then memchr past
    /// `SHORT_LINE`) finds what a plain search finds, wherever it starts,
    /// with lines shorter and longer than the short scan.
    #[test]
    fn crlf_search_matches_a_plain_search(
        data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'x'), any::<u8>()], 0..80),
        at in 0usize..90,
    ) {
        let plain = data
            .get(at..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
            .map(|i| at + i);
        prop_assert_eq!(find_crlf(&data, at), plain);
    }

    /// Integers: what `str::parse` reads from an optional sign and 1-18
    /// digits (longer numbers are refused, so none overflows), and nothing
    /// else.
    #[test]
    fn integers_match_std_parse(s in "[+-]?[0-9]{0,20}|[+-]?[0-9 x]{1,6}") {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
        let expect = if (1..=18).contains(&digits.len()) { s.parse::<i64>().ok() } else { None };
        prop_assert_eq!(parse_int(s.as_bytes()), expect);
    }
}

/// `is_type` names exactly the bytes `type_name` knows.
#[test]
fn type_bytes_are_the_named_ones() {
    for b in 0..=255u8 {
        assert_eq!(is_type(b), type_name(b) != "inline", "byte 0x{b:02x}");
    }
}

/// One parser across commands: a long one (more arguments than it keeps a
/// buffer for), a malformed one, one split mid-argument, then short ones;
/// each is read with its own arguments only.
#[test]
fn one_parser_reads_each_command_with_its_own_arguments() {
    let mut p = parser();
    let resp = |args: &[&str]| {
        let mut c = format!("*{}\r\n", args.len());
        for a in args {
            c.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        Bytes::from(c)
    };
    let long: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let long_args: Vec<&str> = std::iter::once("MGET").chain(long.iter().map(String::as_str)).collect();
    let (_, m, _) = msg(p.parse(Direction::Egress, &resp(&long_args)));
    assert_eq!(m.args.len(), 40);

    let bad = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$x\r\n");
    assert!(matches!(p.parse(Direction::Egress, &bad), Parse::Invalid { .. }));

    let set = resp(&["SET", "key", "value"]);
    let cut = 14; // inside "key"'s header and data
    assert!(matches!(p.parse(Direction::Egress, &set.slice(..cut)), Parse::Need { .. }));
    let (len, m, _) = msg(p.parse(Direction::Egress, &set));
    assert_eq!(len, set.len());
    assert_eq!(m.command.as_ref().map(|t| &t.0[..]), Some(&b"SET"[..]));
    assert_eq!(m.args.iter().map(|t| &t.0[..]).collect::<Vec<_>>(), [&b"key"[..], &b"value"[..]]);

    for (cmd, args) in [(&["GET", "a"][..], vec![&b"a"[..]]), (&["PING"][..], vec![])] {
        let (_, m, _) = msg(p.parse(Direction::Egress, &resp(cmd)));
        assert_eq!(m.command.as_ref().map(|t| &t.0[..]), Some(cmd[0].as_bytes()));
        assert_eq!(m.args.iter().map(|t| &t.0[..]).collect::<Vec<_>>(), args);
    }
}
