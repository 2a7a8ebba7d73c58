use super::*;
use proptest::prelude::*;

/// A typed message: type byte, Int32 length (self-inclusive), body.
fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![t];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn startup_msg() -> Vec<u8> {
    let params = b"user\0alice\0database\0ledger\0application_name\0psql\0\0";
    let mut m = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&196_608u32.to_be_bytes());
    m.extend_from_slice(params);
    m
}

fn backend_startup() -> Vec<u8> {
    [
        msg(b'R', &0u32.to_be_bytes()),
        msg(b'S', b"server_version\x0016.2\0"),
        msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]),
        msg(b'Z', b"I"),
    ]
    .concat()
}

fn row_description(cols: &[&str]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for c in cols {
        b.extend_from_slice(c.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0; 18]);
    }
    msg(b'T', &b)
}

fn data_row(vals: &[&str]) -> Vec<u8> {
    let mut b = (vals.len() as u16).to_be_bytes().to_vec();
    for v in vals {
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    msg(b'D', &b)
}

fn parser() -> PgParser {
    PgParser::new(Direction::Egress, &ProtoConfig::default())
}

fn group(p: Parse) -> (usize, PgMessages, Option<(u64, ExchangeRole)>) {
    match p {
        Parse::Message(Parsed { len, body: Body::Postgres(g), exchange, error: None }) => (len, *g, exchange),
        other => panic!("expected a group, got {other:?}"),
    }
}

#[test]
fn startup_and_simple_query() {
    let mut p = parser();
    let s = startup_msg();
    let (len, g, ex) = group(p.parse(Direction::Egress, &Bytes::from(s.clone())));
    assert_eq!(len, s.len());
    let st = g.startup.unwrap();
    assert_eq!(
        (st.protocol, st.user.unwrap(), st.database.unwrap()),
        (196_608, Text::from_static("alice"), Text::from_static("ledger"))
    );
    assert_eq!(st.params.len(), 3);
    assert_eq!(ex, Some((0, ExchangeRole::Request)));
    let b = backend_startup();
    let (len, g, ex) = group(p.parse(Direction::Ingress, &Bytes::from(b.clone())));
    assert_eq!((len, g.auth.clone(), g.backend_pid, g.ready_status), (b.len(), vec![0], Some(12345), Some('I')));
    assert_eq!(g.parameters[0].1, "16.2");
    assert_eq!(
        *p.sender_attributes(Direction::Egress),
        [("pg.user", "alice"), ("pg.database", "ledger"), ("pg.application_name", "psql")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        *p.sender_attributes(Direction::Ingress),
        [("pg.server_version", "16.2")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(g.message_count, 4);
    assert_eq!(ex, Some((0, ExchangeRole::Response)));

    let q = msg(b'Q', b"SELECT id, qty FROM orders\0");
    let (_, g, ex) = group(p.parse(Direction::Egress, &Bytes::from(q)));
    assert_eq!(g.queries, vec![Text::from_static("SELECT id, qty FROM orders")]);
    assert_eq!(ex, Some((1, ExchangeRole::Request)));
    let result = [
        row_description(&["id", "qty"]),
        data_row(&["1", "100"]),
        data_row(&["2", "250"]),
        msg(b'C', b"SELECT 2\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    let (len, g, ex) = group(p.parse(Direction::Ingress, &Bytes::from(result.clone())));
    assert_eq!(len, result.len());
    assert_eq!(g.columns, vec![Text::from_static("id"), Text::from_static("qty")]);
    assert_eq!((g.rows, g.command_tags[0].clone()), (2, Text::from_static("SELECT 2")));
    assert_eq!(
        g.messages.iter().map(|m| m.name).collect::<Vec<_>>(),
        ["RowDescription", "DataRow", "DataRow", "CommandComplete", "ReadyForQuery"]
    );
    assert_eq!(ex, Some((1, ExchangeRole::Response)));
}

#[test]
fn extended_query_and_error() {
    let mut p = parser();
    group(p.parse(Direction::Egress, &Bytes::from(startup_msg())));
    group(p.parse(Direction::Ingress, &Bytes::from(backend_startup())));
    let ext = [
        msg(b'P', b"s1\0SELECT * FROM t WHERE id = $1\0\x00\x00"),
        msg(b'B', b"\0s1\0\x00\x00\x00\x01\x00\x00\x00\x017\x00\x00"),
        msg(b'D', b"P\0"),
        msg(b'E', b"\0\x00\x00\x00\x00"),
        msg(b'S', b""),
    ]
    .concat();
    let (len, g, _) = group(p.parse(Direction::Egress, &Bytes::from(ext.clone())));
    assert_eq!(len, ext.len());
    assert_eq!(g.queries, vec![Text::from_static("SELECT * FROM t WHERE id = $1")]);
    assert_eq!(g.statements, vec![Text::from_static("s1"), Text::from_static("s1")]);
    assert_eq!(g.bind_params, vec![1]);
    let err =
        [msg(b'1', b""), msg(b'E', b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0\0"), msg(b'Z', b"I")]
            .concat();
    let (_, g, _) = group(p.parse(Direction::Ingress, &Bytes::from(err)));
    assert_eq!(g.errors[0].code.clone().unwrap(), "42P01");
    assert_eq!(g.errors[0].message.clone().unwrap(), "relation \"t\" does not exist");
    assert_eq!(g.errors[0].severity.clone().unwrap(), "ERROR");
}

#[test]
fn ssl_request_refused_then_startup_and_md5_auth() {
    let mut p = parser();
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let (_, g, _) = group(p.parse(Direction::Egress, &Bytes::copy_from_slice(&ssl)));
    assert_eq!(g.request, Some("SSLRequest"));
    let (len, g, _) = group(p.parse(Direction::Ingress, &Bytes::from_static(b"N")));
    assert_eq!((len, g.encryption_response), (1, Some('N')));
    group(p.parse(Direction::Egress, &Bytes::from(startup_msg())));
    // AuthenticationMD5Password (5) ends the backend group: the client answers.
    let md5 = msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
    let (_, g, ex) = group(p.parse(Direction::Ingress, &Bytes::from(md5)));
    assert_eq!((g.auth.clone(), ex.unwrap().0), (vec![5], 2 - 1));
    let (_, _, ex) = group(p.parse(Direction::Egress, &Bytes::from(msg(b'p', b"md5abcdef\0"))));
    assert_eq!(ex.unwrap().0, 2);
    let (_, _, ex) = group(p.parse(Direction::Ingress, &Bytes::from(backend_startup())));
    assert_eq!(ex.unwrap().0, 2);
}

#[test]
fn ssl_accepted_makes_the_rest_opaque() {
    let mut p = parser();
    group(p.parse(Direction::Egress, &Bytes::from_static(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])));
    group(p.parse(Direction::Ingress, &Bytes::from_static(b"S")));
    match p.parse(Direction::Egress, &Bytes::from_static(b"\x16\x03\x01\x00\x10tls")) {
        Parse::Message(Parsed { body: Body::Unparsed { .. }, len, .. }) => assert_eq!(len, 8),
        other => panic!("{other:?}"),
    }
}

#[test]
fn large_results_are_cut_into_continued_records() {
    let cfg = ProtoConfig { max_message_bytes: 256, ..ProtoConfig::default() };
    let mut p = PgParser::new(Direction::Egress, &cfg);
    p.expect_startup = false;
    let rows: Vec<u8> = (0..20).flat_map(|i| data_row(&[&format!("{i:020}")])).collect();
    let all = Bytes::from([rows, msg(b'C', b"SELECT 20\0"), msg(b'Z', b"I")].concat());
    let (n1, g1, ex1) = group(p.parse(Direction::Ingress, &all));
    assert!((128..200).contains(&n1), "{n1}");
    assert!(!g1.continued);
    let (mut at, mut rows, mut records) = (n1, g1.rows, 1);
    while at < all.len() {
        let (n, g, ex) = group(p.parse(Direction::Ingress, &all.slice(at..)));
        assert!(g.continued);
        assert_eq!(ex, ex1);
        at += n;
        rows += g.rows;
        records += 1;
    }
    assert_eq!((at, rows, records), (all.len(), 20, 5));
}

#[test]
fn partial_messages_and_invalid_bytes() {
    let mut p = parser();
    p.expect_startup = false;
    let q = Bytes::from(msg(b'Q', b"SELECT 1\0"));
    match p.parse(Direction::Egress, &q.slice(..7)) {
        Parse::Need { min_len, total } => {
            assert_eq!((min_len, total), (q.len(), Some(q.len() as u64)))
        }
        other => panic!("{other:?}"),
    }
    let part = p.interrupted(Direction::Egress, &q.slice(..7));
    assert_eq!(part.total, Some(q.len() as u64));
    match p.parse(Direction::Egress, &Bytes::from_static(b"\x00\x00\x00\x00\x05")) {
        Parse::Invalid { error, .. } => {
            assert_eq!(error, "unknown frontend message type 0x00 at offset 0")
        }
        other => panic!("{other:?}"),
    }
    match p.parse(Direction::Ingress, &Bytes::from_static(b"Z\x00\x00\x00\x02")) {
        Parse::Invalid { error, .. } => assert_eq!(error, "invalid message length 2 at offset 0"),
        other => panic!("{other:?}"),
    }
    let tail = [b"xxxx".to_vec(), msg(b'D', b"\x00\x00"), msg(b'Z', b"I")].concat();
    assert_eq!(p.resync(Direction::Ingress, &tail), Some(4));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), client in any::<bool>(), started in any::<bool>()) {
        let mut p = parser();
        p.expect_startup = !started;
        let dir = if client { Direction::Egress } else { Direction::Ingress };
        let buf = Bytes::from(data);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len().max(1)),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Any split of a backend response yields the same group.
    #[test]
    fn any_split_yields_the_same_group(split in 1usize..80) {
        let all = Bytes::from([row_description(&["a"]), data_row(&["x"]), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
        let split = split.min(all.len() - 1);
        let mut whole = parser();
        let expected = group(whole.parse(Direction::Ingress, &all));
        let mut p = parser();
        let need = matches!(p.parse(Direction::Ingress, &all.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(group(p.parse(Direction::Ingress, &all)), expected);
    }
}

/// Reproduces a forked backend's socket (first seen on its first read, so the
/// flow starts desynced) losing its startup message: resync skipped into the
/// middle of it and the rest was parsed as garbage.
#[test]
fn resync_at_the_start_of_a_frontend_stream_keeps_the_startup_message() {
    let mut p = parser();
    let query = msg(b'Q', b"SELECT 1\0");
    let stream = [startup_msg(), query.clone()].concat();
    assert_eq!(p.resync(Direction::Egress, &stream), Some(0));
    let (len, g, _) = group(p.parse(Direction::Egress, &Bytes::from(stream.clone())));
    assert_eq!(len, startup_msg().len());
    let st = g.startup.expect("startup parsed");
    assert_eq!((st.user.unwrap(), st.database.unwrap()), (Text::from_static("alice"), Text::from_static("ledger")));
    let (len, g, _) = group(p.parse(Direction::Egress, &Bytes::from(stream[len..].to_vec())));
    assert_eq!((len, g.queries), (query.len(), vec![Text::from_static("SELECT 1")]));
    // Once past startup, only typed messages are boundaries.
    let mut p = parser();
    assert_eq!(p.resync(Direction::Egress, &query), Some(0));
    assert_eq!(p.resync(Direction::Egress, &startup_msg()[..4]), None);
}

fn parse_msg(name: &str, sql: &str, oids: &[u32]) -> Vec<u8> {
    let mut b = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0"].concat();
    b.extend_from_slice(&(oids.len() as u16).to_be_bytes());
    for o in oids {
        b.extend_from_slice(&o.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind with per-parameter formats (0 text, 1 binary); `None` is NULL.
fn bind_msg(portal: &str, stmt: &str, params: &[(u16, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = [portal.as_bytes(), b"\0", stmt.as_bytes(), b"\0"].concat();
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for (f, _) in params {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for (_, v) in params {
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &b)
}

fn execute_msg(portal: &str) -> Vec<u8> {
    msg(b'E', &[portal.as_bytes(), b"\0\0\0\0\0"].concat())
}

fn values(b: &PgBind) -> Vec<(Option<&'static str>, &'static str, Option<String>, bool)> {
    b.params.iter().map(|p| (p.r#type, p.format, p.value.as_ref().map(Text::to_string_lossy), p.null)).collect()
}

#[test]
fn bind_values_text_and_binary_and_named_statement_resolved_at_execute() {
    let mut p = parser();
    p.expect_startup = false;
    let sql = "INSERT INTO orders (clordid, qty, px, at, id) VALUES ($1, $2, $3, $4, $5)";
    // Prepare once (named), with types for all but the first parameter.
    let prep = [parse_msg("_pg3_0", sql, &[0, 20, 1700, 1184, 2950]), msg(b'S', b"")].concat();
    group(p.parse(Direction::Egress, &Bytes::from(prep)));
    group(p.parse(Direction::Ingress, &Bytes::from([msg(b'1', b""), msg(b'Z', b"I")].concat())));
    let px: &[u8] = &[0, 2, 0, 0, 0, 0, 0, 2, 0, 187, 9, 196];
    let at = (9821i64 * 86_400_000_000).to_be_bytes();
    let uuid = [0x12u8; 16];
    let exec = [
        bind_msg(
            "",
            "_pg3_0",
            &[(0, Some(b"ORD-7")), (1, Some(&100i64.to_be_bytes())), (1, Some(px)), (1, Some(&at)), (1, Some(&uuid))],
        ),
        msg(b'D', b"P\0"),
        execute_msg(""),
        msg(b'S', b""),
    ]
    .concat();
    let (_, g, ex) = group(p.parse(Direction::Egress, &Bytes::from(exec)));
    assert_eq!(g.queries, Vec::<Text>::new(), "the SQL is not re-sent");
    let b = &g.binds[0];
    assert_eq!(
        (b.statement.clone(), b.query.clone().unwrap().to_string_lossy()),
        (Text::from_static("_pg3_0"), sql.to_string())
    );
    assert_eq!(
        values(b),
        [
            (None, "text", Some("ORD-7".to_string()), false),
            (Some("int8"), "binary", Some("100".into()), false),
            (Some("numeric"), "binary", Some("187.25".into()), false),
            (Some("timestamptz"), "binary", Some("2026-11-21 00:00:00+00".into()), false),
            (Some("uuid"), "binary", Some("12121212-1212-1212-1212-121212121212".into()), false),
        ]
    );
    let e = &g.executes[0];
    assert_eq!(
        (e.statement.clone().unwrap(), e.query.clone().unwrap().to_string_lossy()),
        (Text::from_static("_pg3_0"), sql.to_string())
    );
    // Results summary: command, rows affected, DataRows.
    let resp = [msg(b'2', b""), msg(b'n', b""), msg(b'C', b"INSERT 0 1\0"), msg(b'Z', b"I")].concat();
    let (_, g, ex2) = group(p.parse(Direction::Ingress, &Bytes::from(resp)));
    assert_eq!(ex.unwrap().0, ex2.unwrap().0);
    let r = &g.results[0];
    assert_eq!((r.command.clone(), r.rows, r.data_rows), (Text::from_static("INSERT"), Some(1), 0));
    // Closing the statement forgets it: a later Execute names no SQL.
    let close = [msg(b'C', b"S_pg3_0\0"), bind_msg("", "_pg3_0", &[]), execute_msg(""), msg(b'S', b"")].concat();
    let (_, g, _) = group(p.parse(Direction::Egress, &Bytes::from(close)));
    assert_eq!((g.binds[0].query.clone(), g.executes[0].query.clone()), (None, None));
}

#[test]
fn parameter_description_types_unspecified_parameters_and_nulls() {
    let mut p = parser();
    p.expect_startup = false;
    let f = [parse_msg("s1", "SELECT $1::int4 + $2", &[0, 0]), msg(b'D', b"Ss1\0"), msg(b'S', b"")].concat();
    group(p.parse(Direction::Egress, &Bytes::from(f)));
    let mut t = 2u16.to_be_bytes().to_vec();
    t.extend_from_slice(&23u32.to_be_bytes());
    t.extend_from_slice(&16u32.to_be_bytes());
    group(p.parse(
        Direction::Ingress,
        &Bytes::from([msg(b'1', b""), msg(b't', &t), msg(b'n', b""), msg(b'Z', b"I")].concat()),
    ));
    let f = [bind_msg("p1", "s1", &[(1, Some(&7i32.to_be_bytes())), (1, None)]), execute_msg("p1"), msg(b'S', b"")]
        .concat();
    let (_, g, _) = group(p.parse(Direction::Egress, &Bytes::from(f)));
    assert_eq!(
        values(&g.binds[0]),
        [(Some("int4"), "binary", Some("7".into()), false), (Some("bool"), "binary", None, true)]
    );
    assert_eq!(g.executes[0].portal, "p1");
    let rows = [row_description(&["n"]), data_row(&["1"]), data_row(&["2"]), msg(b'C', b"SELECT 2\0")].concat();
    let (_, g, _) = group(p.parse(Direction::Ingress, &Bytes::from([rows.clone(), rows, msg(b'Z', b"I")].concat())));
    assert_eq!(g.results.iter().map(|r| (r.rows, r.data_rows)).collect::<Vec<_>>(), [(Some(2), 2), (Some(2), 2)]);
    // A binary value of a type not decoded is shown in hex.
    let f = [parse_msg("", "SELECT $1", &[600]), bind_msg("", "", &[(1, Some(&[1, 2, 3]))]), msg(b'S', b"")].concat();
    let (_, g, _) = group(p.parse(Direction::Egress, &Bytes::from(f)));
    assert_eq!((g.binds[0].params[0].hex.as_deref(), g.binds[0].params[0].value.clone()), (Some("010203"), None));
}

#[test]
fn prepared_statement_memory_is_bounded() {
    let cfg = ProtoConfig { max_prepared_statements: 2, max_value_bytes: 4, ..ProtoConfig::default() };
    let mut p = PgParser::new(Direction::Egress, &cfg);
    p.expect_startup = false;
    for i in 0..3 {
        group(p.parse(
            Direction::Egress,
            &Bytes::from([parse_msg(&format!("s{i}"), "SELECT 1", &[]), msg(b'S', b"")].concat()),
        ));
    }
    let f = [bind_msg("", "s0", &[]), bind_msg("", "s2", &[(0, Some(b"long value"))]), msg(b'S', b"")].concat();
    let (_, g, _) = group(p.parse(Direction::Egress, &Bytes::from(f)));
    assert_eq!((g.binds[0].query.clone(), g.binds[1].query.clone().unwrap()), (None, Text::from_static("SELECT 1")));
    let v = &g.binds[1].params[0];
    assert_eq!((v.value.clone().unwrap(), v.truncated), (Text::from_static("long"), true));
}
