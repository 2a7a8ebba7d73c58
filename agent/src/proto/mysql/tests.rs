use super::*;
use crate::proto::fields::Text;
use crate::proto::testing::{self, Link};
use proptest::prelude::*;

const C: Direction = Direction::Egress;
const S: Direction = Direction::Ingress;

/// A packet: 3-byte length, sequence id, payload.
fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

fn lenenc_str(s: &[u8]) -> Vec<u8> {
    [vec![s.len() as u8], s.to_vec()].concat()
}

/// MariaDB 10.11's greeting (capabilities with CLIENT_MYSQL unset, so the
/// MariaDB extended capabilities are in the reserved bytes).
fn greeting() -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
    p.extend_from_slice(&77u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    let caps: u32 = 0xf7fe | (0x81bf << 16);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&0x1du32.to_le_bytes());
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    pkt(0, &p)
}

const LOGIN_CAPS: u32 = 0x0000_0200 | 0x8000 | 0x8 | 0x8_0000 | 0x10_0000 | 0x1;

/// A PyMySQL-like HandshakeResponse41 with a 20-byte scramble.
fn login(caps: u32) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"trader\0");
    p.push(20);
    p.extend_from_slice(&[0xAA; 20]);
    p.extend_from_slice(b"ledger\0");
    p.extend_from_slice(b"mysql_native_password\0");
    let attrs = [lenenc_str(b"_client_name"), lenenc_str(b"pymysql")].concat();
    p.extend(lenenc_str(&attrs));
    pkt(1, &p)
}

fn ok(seq: u8, affected: u8, insert_id: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, affected, insert_id];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    pkt(seq, &p)
}

/// An OK packet with the 0xFE header (ends rows under CLIENT_DEPRECATE_EOF).
fn ok_fe(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

fn coldef(seq: u8, name: &str, t: u8) -> Vec<u8> {
    let mut p = [lenenc_str(b"def"), lenenc_str(b"ledger"), lenenc_str(b"orders"), lenenc_str(b"orders")].concat();
    p.extend(lenenc_str(name.as_bytes()));
    p.extend(lenenc_str(name.as_bytes()));
    p.push(0x0c);
    p.extend_from_slice(&[45, 0, 0, 1, 0, 0, t, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

fn body(b: Body) -> MysqlMessage {
    match b {
        Body::Mysql(x) => *x,
        other => panic!("expected a MySQL record, got {other:?}"),
    }
}

fn parsed(p: Parse) -> (usize, MysqlMessage, Link) {
    let (len, b, ex) = testing::parsed(p);
    (len, body(b), ex)
}

fn one(p: &mut MysqlParser, dir: Direction, bytes: &[u8]) -> (MysqlMessage, Link) {
    let (b, ex) = testing::one(p, dir, bytes);
    (body(b), ex)
}

fn connected() -> MysqlParser {
    let mut p = MysqlParser::new(C, &ProtoConfig::default());
    one(&mut p, S, &greeting());
    one(&mut p, C, &login(LOGIN_CAPS));
    one(&mut p, S, &ok(2, 0, 0, 2));
    p
}

#[test]
fn greeting_login_without_the_password_and_ok() {
    let mut p = MysqlParser::new(C, &ProtoConfig::default());
    let (m, ex) = one(&mut p, S, &greeting());
    let g = m.greeting.unwrap();
    assert_eq!((g.protocol_version, g.connection_id, ex), (10, 77, None));
    assert_eq!(g.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
    assert_eq!(
        (g.auth_plugin.unwrap(), g.mariadb_capabilities),
        (Text::from_static("mysql_native_password"), Some(0x1d))
    );
    let bytes = login(LOGIN_CAPS);
    let (m, ex) = one(&mut p, C, &bytes);
    let l = m.login.unwrap();
    assert_eq!(
        (l.user.clone().unwrap(), l.database.clone().unwrap()),
        (Text::from_static("trader"), Text::from_static("ledger"))
    );
    assert_eq!((l.password, l.auth_response_len, l.ssl_request), (Some(WITHHELD), 20, false));
    assert_eq!(l.attributes, vec![(Text::from_static("_client_name"), Text::from_static("pymysql"))]);
    assert_eq!(ex, Some((0, ExchangeRole::Request)));
    // The scramble is nowhere in the parsed fields: only its length.
    let json = serde_json::to_string(&l).unwrap();
    assert!(json.contains(r#""password":"<withheld>","auth_response_len":20"#), "{json}");
    assert!(!json.contains("\\u00aa") && !json.contains('\u{aa}') && !json.contains('\u{fffd}'), "{json}");
    let (m, ex) = one(&mut p, S, &ok(2, 0, 0, 2));
    assert_eq!((m.response.unwrap().ok.unwrap().status_flags, ex), (2, Some((0, ExchangeRole::Response))));
    assert_eq!(
        *p.sender_attributes(C),
        [("mysql.user", "trader"), ("mysql.database", "ledger"), ("mysql.client_name", "pymysql")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(
        *p.sender_attributes(S),
        [("mysql.server_version", "5.5.5-10.11.19-MariaDB-0+deb12u1")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn auth_switch_and_withheld_client_data() {
    let mut p = MysqlParser::new(C, &ProtoConfig::default());
    one(&mut p, S, &greeting());
    one(&mut p, C, &login(LOGIN_CAPS));
    let switch = pkt(2, b"\xfeclient_ed25519\0nonce-nonce-nonce-nonce-12\0");
    let (m, ex) = one(&mut p, S, &switch);
    let a = m.auth.unwrap();
    assert_eq!(
        (a.step, a.plugin.unwrap(), a.data, ex),
        ("auth_switch_request", Text::from_static("client_ed25519"), WITHHELD, Some((0, ExchangeRole::Response)))
    );
    let (m, ex) = one(&mut p, C, &pkt(3, &[0x55; 64]));
    assert_eq!((m.auth.unwrap().data_len, ex), (64, Some((1, ExchangeRole::Request))));
    let (_, ex) = one(&mut p, S, &ok(4, 0, 0, 2));
    assert_eq!(ex, Some((1, ExchangeRole::Response)));
}

#[test]
fn query_result_set_with_eof_packets_and_errors() {
    let mut p = connected();
    let (m, ex) = one(&mut p, C, &pkt(0, b"\x03SELECT id, qty FROM orders"));
    let c = m.command.unwrap();
    assert_eq!(
        (c.name, c.query.unwrap(), ex),
        ("COM_QUERY", Text::from_static("SELECT id, qty FROM orders"), Some((1, ExchangeRole::Request)))
    );
    let resp = [
        pkt(1, &[2]),
        coldef(2, "id", 3),
        coldef(3, "qty", 3),
        eof(4, 2),
        pkt(5, b"\x011\x03100"),
        pkt(6, b"\x012\x03250"),
        eof(7, 2),
    ]
    .concat();
    let (m, ex) = one(&mut p, S, &resp);
    let r = m.response.unwrap();
    assert_eq!((r.command, r.columns, r.rows, r.result_sets), (Some("COM_QUERY"), Some(2), 2, 1));
    assert_eq!(r.column_names, vec![Text::from_static("id"), Text::from_static("qty")]);
    assert_eq!((m.packets, ex), (7, Some((1, ExchangeRole::Response))));
    one(&mut p, C, &pkt(0, b"\x03SELECT * FROM missing"));
    let (m, _) = one(&mut p, S, &pkt(1, b"\xff\x7a\x04#42S02Table 'ledger.missing' doesn't exist"));
    let e = m.response.unwrap().error.unwrap();
    assert_eq!((e.code, e.sql_state.unwrap()), (1146, Text::from_static("42S02")));
    assert_eq!(e.message, "Table 'ledger.missing' doesn't exist");
}

#[test]
fn deprecate_eof_multiple_result_sets_init_db_and_insert() {
    let mut p = MysqlParser::new(C, &ProtoConfig::default());
    one(&mut p, S, &greeting());
    one(&mut p, C, &login(LOGIN_CAPS | messages::CLIENT_DEPRECATE_EOF));
    one(&mut p, S, &ok(2, 0, 0, 2));
    let (m, _) = one(&mut p, C, &pkt(0, b"\x02ledger"));
    assert_eq!(m.command.unwrap().schema.unwrap(), "ledger");
    one(&mut p, S, &ok(1, 0, 0, 2));
    one(&mut p, C, &pkt(0, b"\x03CALL two_sets()"));
    let more = 2u16 | messages::SERVER_MORE_RESULTS_EXISTS;
    let resp = [
        pkt(1, &[1]),
        coldef(2, "a", 3),
        pkt(3, b"\x011"),
        ok_fe(4, more),
        pkt(5, &[1]),
        coldef(6, "b", 3),
        pkt(7, b"\x012"),
        pkt(8, b"\x012"),
        ok_fe(9, 2),
    ]
    .concat();
    let (m, ex) = one(&mut p, S, &resp);
    let r = m.response.unwrap();
    assert_eq!((r.result_sets, r.rows, r.columns, ex.unwrap().0), (2, 3, Some(1), 2));
    one(&mut p, C, &pkt(0, b"\x03INSERT INTO orders VALUES (1, 100)"));
    let (m, _) = one(&mut p, S, &ok(1, 1, 42, 2));
    let o = m.response.unwrap().ok.unwrap();
    assert_eq!((o.affected_rows, o.last_insert_id), (1, 42));
}

#[test]
fn prepared_statement_resolved_and_parameters_decoded() {
    let mut p = connected();
    let sql = b"INSERT INTO orders (clordid, qty, px) VALUES (?, ?, ?)";
    let (_, ex) = one(&mut p, C, &pkt(0, &[&[0x16][..], sql].concat()));
    assert_eq!(ex, Some((1, ExchangeRole::Request)));
    let mut prep = vec![0];
    prep.extend_from_slice(&9u32.to_le_bytes());
    prep.extend_from_slice(&0u16.to_le_bytes());
    prep.extend_from_slice(&3u16.to_le_bytes());
    prep.extend_from_slice(&[0, 0, 0]);
    let resp = [pkt(1, &prep), coldef(2, "?", 0xfd), coldef(3, "?", 8), coldef(4, "?", 5), eof(5, 2)].concat();
    let (m, ex) = one(&mut p, S, &resp);
    let pr = m.response.unwrap().prepared.unwrap();
    assert_eq!((pr.statement_id, pr.params, pr.columns, ex.unwrap().0), (9, 3, 0, 1));
    // Execute: id 9, no cursor, 1 iteration, null bitmap (third is NULL), types bound.
    let mut ex_p = vec![0x17];
    ex_p.extend_from_slice(&9u32.to_le_bytes());
    ex_p.extend_from_slice(&[0, 1, 0, 0, 0, 0b100, 1, 0xfd, 0, 0x08, 0, 0x05, 0]);
    ex_p.extend(lenenc_str(b"ORD-7"));
    ex_p.extend_from_slice(&100i64.to_le_bytes());
    let (m, ex) = one(&mut p, C, &pkt(0, &ex_p));
    let c = m.command.unwrap();
    assert_eq!(
        (c.name, c.statement_id, c.statement_known, ex),
        ("COM_STMT_EXECUTE", Some(9), Some(true), Some((2, ExchangeRole::Request)))
    );
    assert_eq!(c.query.unwrap().0, &sql[..]);
    let vals: Vec<(&str, Option<String>, bool)> =
        c.params.iter().map(|v| (v.r#type, v.value.as_ref().map(Text::to_string_lossy), v.null)).collect();
    assert_eq!(
        vals,
        [("VAR_STRING", Some("ORD-7".into()), false), ("LONGLONG", Some("100".into()), false), ("DOUBLE", None, true)]
    );
    one(&mut p, S, &ok(1, 1, 0, 2));
    // Re-execution without types: the types of the last binding are used.
    let mut again = vec![0x17];
    again.extend_from_slice(&9u32.to_le_bytes());
    again.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0]);
    again.extend(lenenc_str(b"ORD-8"));
    again.extend_from_slice(&5i64.to_le_bytes());
    again.extend_from_slice(&1.5f64.to_le_bytes());
    let (m, _) = one(&mut p, C, &pkt(0, &again));
    let c = m.command.unwrap();
    assert_eq!(
        c.params.iter().map(|v| v.value.clone().unwrap().to_string_lossy()).collect::<Vec<_>>(),
        ["ORD-8", "5", "1.5"]
    );
    one(&mut p, S, &ok(1, 1, 0, 2));
    // Close: no answer, one-way; the statement is forgotten.
    let (m, ex) = one(&mut p, C, &pkt(0, &[0x19, 9, 0, 0, 0]));
    assert_eq!((m.command.unwrap().name, ex), ("COM_STMT_CLOSE", None));
    let (m, _) = one(&mut p, C, &pkt(0, &again));
    assert_eq!(m.command.unwrap().statement_known, Some(false));
}

/// MariaDB metadata caching: an execution's result set skips the column
/// definitions (a 0 after the column count); the EOF and rows still come,
/// and the names are those the PREPARE_OK listed.
#[test]
fn skipped_metadata_uses_the_prepared_column_names() {
    let mut p = connected();
    one(&mut p, C, &pkt(0, b"\x16SELECT clordid, qty FROM orders WHERE qty >= ?"));
    let mut prep = vec![0];
    prep.extend_from_slice(&3u32.to_le_bytes());
    prep.extend_from_slice(&2u16.to_le_bytes());
    prep.extend_from_slice(&1u16.to_le_bytes());
    prep.extend_from_slice(&[0, 0, 0]);
    let resp =
        [pkt(1, &prep), coldef(2, "?", 8), eof(3, 2), coldef(4, "clordid", 0xfd), coldef(5, "qty", 3), eof(6, 2)]
            .concat();
    let (m, _) = one(&mut p, S, &resp);
    assert_eq!(m.response.unwrap().column_names, vec![Text::from_static("clordid"), Text::from_static("qty")]);
    let mut ex = vec![0x17, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0xfe, 0];
    ex.extend(lenenc_str(b"200"));
    one(&mut p, C, &pkt(0, &ex));
    let rows = [pkt(1, &[2, 0]), eof(2, 0x22), pkt(3, b"\x00\x00\x08ORD-PS-1\xfa\x00\x00\x00"), eof(4, 0x22)].concat();
    let (m, ex) = one(&mut p, S, &rows);
    let r = m.response.unwrap();
    assert_eq!((r.columns, r.rows, ex.unwrap().0), (Some(2), 1, 2));
    assert_eq!(r.column_names, vec![Text::from_static("clordid"), Text::from_static("qty")]);
}

#[test]
fn statement_memory_is_bounded() {
    let cfg = ProtoConfig { max_prepared_statements: 2, ..ProtoConfig::default() };
    let mut p = MysqlParser::new(C, &cfg);
    for id in 1..=3u32 {
        p.remember(id, Bytes::from(format!("SELECT {id}")), 0);
    }
    assert_eq!((p.stmts.len(), p.stmts.contains_key(&1), p.sql_bytes), (2, false, 16));
    let cfg = ProtoConfig { max_prepared_sql_bytes: 10, ..ProtoConfig::default() };
    let mut p = MysqlParser::new(C, &cfg);
    p.remember(1, Bytes::from_static(b"SELECT 1"), 0);
    p.remember(2, Bytes::from_static(b"SELECT 22"), 0);
    assert_eq!((p.stmts.len(), p.sql_bytes), (1, 9));
    p.remember(3, Bytes::from(vec![b'x'; 100]), 0);
    assert_eq!(p.sql_bytes, 10);
}

#[test]
fn ssl_request_makes_the_rest_opaque_and_quit_is_one_way() {
    let mut p = MysqlParser::new(C, &ProtoConfig::default());
    one(&mut p, S, &greeting());
    let mut ssl = (LOGIN_CAPS | messages::CLIENT_SSL).to_le_bytes().to_vec();
    ssl.extend_from_slice(&[0, 0, 0, 1, 45]);
    ssl.extend_from_slice(&[0; 23]);
    let (m, ex) = one(&mut p, C, &pkt(1, &ssl));
    assert_eq!((m.login.unwrap().ssl_request, ex), (true, None));
    match p.parse(S, &Bytes::from_static(b"\x16\x03\x03\x00\x10tls")) {
        Parse::Message(Parsed { body: Body::Unparsed { .. }, len: 8, .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut p = connected();
    let (m, ex) = one(&mut p, C, &pkt(0, &[1]));
    assert_eq!((m.command.unwrap().name, ex), ("COM_QUIT", None));
}

#[test]
fn large_result_sets_are_cut_and_continued_and_partials_keep_state() {
    let cfg = ProtoConfig { max_message_bytes: 256, ..ProtoConfig::default() };
    let mut p = MysqlParser::new(C, &cfg);
    p.greeted = true;
    one(&mut p, C, &pkt(0, b"\x03SELECT v FROM t"));
    let mut resp = [pkt(1, &[1]), coldef(2, "v", 0xfd), eof(3, 2)].concat();
    for i in 0..30u8 {
        resp.extend(pkt(4 + i, &lenenc_str(format!("{i:020}").as_bytes())));
    }
    resp.extend(eof(34, 2));
    let all = Bytes::from(resp);
    let (mut at, mut rows, mut records) = (0, 0, 0);
    while at < all.len() {
        let (n, m, ex) = parsed(p.parse(S, &all.slice(at..)));
        assert_eq!(m.continued, records > 0, "{m:?}");
        assert!(m.response.is_some(), "{records} {at} {m:?}");
        assert_eq!(ex, Some((0, ExchangeRole::Response)));
        rows += m.response.unwrap().rows;
        at += n;
        records += 1;
    }
    assert_eq!((at, rows), (all.len(), 30));
    assert!(records > 2);
    // A cut in the middle: the record says what it had, the rest continues.
    one(&mut p, C, &pkt(0, b"\x03SELECT v FROM t"));
    let head = all.slice(..70);
    assert!(matches!(p.parse(S, &head), Parse::Need { .. }));
    let part = p.interrupted(S, &head);
    assert_eq!(part.exchange, Some((1, ExchangeRole::Response)));
    let total = part.total.unwrap() as usize;
    let (n, m, _) = parsed(p.parse(S, &all.slice(total..)));
    assert!(m.continued && n > 0);
}

#[test]
fn resync_finds_packet_boundaries() {
    let mut p = connected();
    let cmd = pkt(0, b"\x03SELECT 1");
    let stream = [b"garbage!".to_vec(), cmd.clone()].concat();
    assert_eq!(p.resync(C, &stream), Some(8));
    let resp = [pkt(1, &[1]), coldef(2, "1", 8), eof(3, 2), pkt(4, b"\x011"), eof(5, 2)].concat();
    let stream = [vec![0xff, 0x13, 0x37], resp.clone()].concat();
    assert_eq!(p.resync(S, &stream), Some(3));
    // After a gap the answer is unplaceable: recorded alone, unpaired.
    p.gap(S);
    let (n, m, ex) = parsed(p.parse(S, &Bytes::from(resp.clone())));
    assert_eq!((n, ex, m.packets), (resp.len(), None, 5));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), client in any::<bool>(), state in 0u8..3) {
        let mut p = match state { 0 => MysqlParser::new(C, &ProtoConfig::default()), 1 => connected(), _ => { let mut p = connected(); one(&mut p, C, &pkt(0, b"\x16SELECT ?")); p } };
        let dir = if client { C } else { S };
        let buf = Bytes::from(data);
        match p.parse(dir, &buf) {
            Parse::Message(m) => prop_assert!(m.len >= 1 && m.len <= buf.len().max(1)),
            Parse::Invalid { len, .. } => prop_assert!(len >= 1 && len <= buf.len().max(1)),
            Parse::Need { min_len, .. } => prop_assert!(min_len > buf.len()),
        }
        let _ = p.interrupted(dir, &buf);
        if let Some(o) = p.resync(dir, &buf) { prop_assert!(o <= buf.len()); }
    }

    /// Any split of a response yields the same record.
    #[test]
    fn any_split_yields_the_same_record(split in 1usize..60) {
        let resp = Bytes::from([pkt(1, &[1]), coldef(2, "v", 3), eof(3, 2), pkt(4, b"\x011"), eof(5, 2)].concat());
        let split = split.min(resp.len() - 1);
        let mut whole = connected();
        one(&mut whole, C, &pkt(0, b"\x03SELECT v"));
        let expected = whole.parse(S, &resp);
        let mut p = connected();
        one(&mut p, C, &pkt(0, b"\x03SELECT v"));
        let need = matches!(p.parse(S, &resp.slice(..split)), Parse::Need { .. });
        prop_assert!(need);
        prop_assert_eq!(p.parse(S, &resp), expected);
    }
}
