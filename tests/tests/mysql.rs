//! End to end, as root: Debian's mariadb-server (started once for this test
//! binary) and three real clients, PyMySQL (COM_QUERY, SQL-level PREPARE /
//! EXECUTE, errors, COM_INIT_DB), the `mariadb` command-line client, and
//! libmariadb's server-side prepared statements over the binary protocol
//! (Perl DBD::MariaDB): the agent's MySQL records checked field by field and
//! byte for byte, on the client's and the server's socket.
use std::process::{Command, Stdio};

mod support;

use support::brokers::{fields, *};
use support::*;
use wiretrail_tests::{
    agent::Agent,
    broker_scripts::{DBD_MARIADB, PYMYSQL},
    peers::venv_python,
    require_root, serial,
    servers::{PASSWORD, mariadb},
};

/// Runs `cmd` under a fresh agent; returns the records, the client's pid and stdout.
fn capture(mut cmd: Command) -> (Records, u32, String) {
    let agent = Agent::start(&[]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn client");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(SETTLE);
    let recs = Records::parse(&agent.stop().0);
    (recs, pid, stdout)
}

/// Greeting, login (password withheld), authentication OK; returns the login record.
fn check_connection_phase<'a>(c: &'a Conversation, client_name: &str) -> &'a Msg {
    let greeting = &c.received[0];
    let g = &fields(greeting)["greeting"];
    assert_eq!(g["protocol_version"], 10, "{greeting}");
    assert!(g["server_version"].as_str().unwrap().contains("MariaDB"), "{greeting}");
    assert!(g["connection_id"].is_u64());
    assert_one_way(greeting);
    let login = &c.sent[0];
    let l = &fields(login)["login"];
    assert_eq!((l["user"].as_str(), l["database"].as_str()), (Some("trader"), Some("ledger")), "{login}");
    assert_eq!(l["password"], "<withheld>");
    assert_eq!(l["auth_response_len"], 20, "mysql_native_password scramble: {login}");
    assert_eq!(l["auth_plugin"], "mysql_native_password");
    let attrs = l["attributes"].as_array().unwrap();
    assert!(attrs.iter().any(|a| a[0] == "_client_name" && a[1] == client_name), "{login}");
    let ok = answer_to(&c.received, login);
    assert!(fields(ok)["response"]["ok"].is_object(), "{ok}");
    login
}

#[test]
fn pymysql_queries_sql_prepared_statements_and_errors() {
    require_root();
    let _g = serial();
    let db = mariadb();
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "client.py", PYMYSQL);
    let mut cmd = Command::new(venv_python());
    cmd.arg(&script).arg(db.port.to_string()).arg(PASSWORD);
    let (recs, pid, stdout) = capture(cmd);
    recs.dump("pymysql_queries_sql_prepared_statements_and_errors");
    assert!(stdout.contains("('ORD-PY-1', 100, Decimal('187.2500'))") && stdout.contains("error 1146"), "{stdout}");
    let remote = format!("127.0.0.1:{}", db.port);
    let c = client_side(&recs, pid, &remote, "mysql");
    server_side(&recs, &c, &remote, "mysql");
    let login = check_connection_phase(&c, "pymysql");
    let attrs = fields(login)["login"]["attributes"].as_array().unwrap();
    assert!(attrs.iter().any(|a| a[0] == "program_name" && a[1] == "wt-pymysql"), "{login}");
    assert_secret_not_parsed(&recs, PASSWORD);

    // INSERT: the SQL as sent, raw bytes exactly one COM_QUERY packet, OK with one row.
    let sql = "INSERT INTO orders (clordid, qty, px) VALUES ('ORD-PY-1', 100, '187.25')";
    let ins = mysql_query(&c.sent, sql);
    assert_eq!(bytes(ins), mysql_packet(0, &[b"\x03", sql.as_bytes()].concat()));
    let ok = answer_to(&c.received, ins);
    let r = &fields(ok)["response"];
    assert_eq!((r["command"].as_str(), r["ok"]["affected_rows"].as_u64()), (Some("COM_QUERY"), Some(1)), "{ok}");
    assert_eq!(bytes(ok)[4], 0x00, "an OK packet");
    // SELECT: result set summary, the row inside the raw bytes.
    let sel = mysql_query(&c.sent, "SELECT clordid, qty, px FROM orders WHERE clordid = 'ORD-PY-1'");
    let rs = answer_to(&c.received, sel);
    let r = &fields(rs)["response"];
    assert_eq!(
        (r["columns"].as_u64(), r["rows"].as_u64(), r["result_sets"].as_u64()),
        (Some(3), Some(1), Some(1)),
        "{rs}"
    );
    assert_eq!(r["column_names"], serde_json::json!(["clordid", "qty", "px"]));
    let raw = bytes(rs);
    assert!(raw.windows(8).any(|w| w == b"ORD-PY-1") && raw.windows(8).any(|w| w == b"187.2500"));
    // SQL-level server-side prepared statement.
    let prep = mysql_query(&c.sent, "PREPARE wt_sel FROM 'SELECT qty FROM orders WHERE clordid = ?'");
    assert!(fields(answer_to(&c.received, prep))["response"]["ok"].is_object());
    let exec = mysql_query(&c.sent, "EXECUTE wt_sel USING @c");
    let r = &fields(answer_to(&c.received, exec))["response"];
    assert_eq!((r["columns"].as_u64(), r["rows"].as_u64()), (Some(1), Some(1)));
    // A failing query: ERR with code, SQLSTATE and message.
    let bad = mysql_query(&c.sent, "SELECT * FROM wiretrail_missing");
    let err = answer_to(&c.received, bad);
    let e = &fields(err)["response"]["error"];
    assert_eq!((e["code"].as_u64(), e["sql_state"].as_str()), (Some(1146), Some("42S02")), "{err}");
    assert_eq!(e["message"], "Table 'ledger.wiretrail_missing' doesn't exist");
    // COM_INIT_DB, then COM_QUIT (one-way, the last packet).
    let init = the(&c.sent, "COM_INIT_DB", |b| b["command"]["name"] == "COM_INIT_DB");
    assert_eq!(fields(init)["command"]["schema"], "ledger");
    assert_eq!(bytes(init), mysql_packet(0, b"\x02ledger"));
    assert!(fields(answer_to(&c.received, init))["response"]["ok"].is_object());
    let quit = c.sent.last().unwrap();
    assert_eq!(fields(quit)["command"]["name"], "COM_QUIT");
    assert_one_way(quit);
    assert_eq!(bytes(quit), mysql_packet(0, b"\x01"));
}

#[test]
fn mariadb_client_init_db_and_queries() {
    require_root();
    let _g = serial();
    let db = mariadb();
    let mut cmd = Command::new("mariadb");
    cmd.args(["--no-defaults", "--skip-ssl", "-h", "127.0.0.1", "-P", &db.port.to_string(), "-u", "trader"])
        .arg(format!("-p{PASSWORD}"))
        .args(["-D", "ledger", "-e", "USE ledger; SELECT 'wt-cli' AS tag, 6 * 7 AS answer"]);
    let (recs, pid, stdout) = capture(cmd);
    recs.dump("mariadb_client_init_db_and_queries");
    assert!(stdout.contains("wt-cli\t42"), "{stdout}");
    let remote = format!("127.0.0.1:{}", db.port);
    let c = client_side(&recs, pid, &remote, "mysql");
    server_side(&recs, &c, &remote, "mysql");
    let login = check_connection_phase(&c, "libmariadb");
    let attrs = fields(login)["login"]["attributes"].as_array().unwrap();
    // The client still names itself `mysql` for compatibility.
    assert!(attrs.iter().any(|a| a[0] == "program_name" && a[1] == "mysql"), "{login}");
    assert_secret_not_parsed(&recs, PASSWORD);
    let init = the(&c.sent, "COM_INIT_DB", |b| b["command"]["name"] == "COM_INIT_DB");
    assert_eq!(bytes(init), mysql_packet(0, b"\x02ledger"));
    answer_to(&c.received, init);
    let sql = "SELECT 'wt-cli' AS tag, 6 * 7 AS answer";
    let q = mysql_query(&c.sent, sql);
    assert_eq!(bytes(q), mysql_packet(0, &[b"\x03", sql.as_bytes()].concat()));
    let r = &fields(answer_to(&c.received, q))["response"];
    assert_eq!((r["column_names"].clone(), r["rows"].as_u64()), (serde_json::json!(["tag", "answer"]), Some(1)));
}

#[test]
fn server_side_prepared_statements_over_the_binary_protocol() {
    require_root();
    let _g = serial();
    let db = mariadb();
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "client.pl", DBD_MARIADB);
    let mut cmd = Command::new("perl");
    cmd.arg(&script).arg(db.port.to_string()).arg(PASSWORD);
    let (recs, pid, stdout) = capture(cmd);
    recs.dump("server_side_prepared_statements_over_the_binary_protocol");
    assert!(stdout.lines().any(|l| l == "ORD-PS-1,250"), "{stdout}");
    let remote = format!("127.0.0.1:{}", db.port);
    let c = client_side(&recs, pid, &remote, "mysql");
    server_side(&recs, &c, &remote, "mysql");
    check_connection_phase(&c, "libmariadb");
    assert_secret_not_parsed(&recs, PASSWORD);

    let insert = "INSERT INTO orders (clordid, qty, px) VALUES (?, ?, ?)";
    let prep =
        the(&c.sent, "prepare", |b| b["command"]["name"] == "COM_STMT_PREPARE" && b["command"]["query"] == insert);
    assert_eq!(bytes(prep), mysql_packet(0, &[b"\x16", insert.as_bytes()].concat()));
    let prepared = &fields(answer_to(&c.received, prep))["response"]["prepared"];
    assert_eq!((prepared["params"].as_u64(), prepared["columns"].as_u64()), (Some(3), Some(0)), "{prepared}");
    let id = prepared["statement_id"].as_u64().unwrap();
    // The execution names the SQL it runs and the values it binds.
    let exec = the(&c.sent, "insert execution", |b| {
        b["command"]["name"] == "COM_STMT_EXECUTE" && b["command"]["statement_id"] == id
    });
    let cmd = &fields(exec)["command"];
    assert_eq!((cmd["statement_known"].as_bool(), cmd["query"].as_str()), (Some(true), Some(insert)), "{exec}");
    let values: Vec<(&str, &str)> = cmd["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["value"].as_str().unwrap(), p["type"].as_str().unwrap()))
        .collect();
    assert_eq!(values.iter().map(|v| v.0).collect::<Vec<_>>(), ["ORD-PS-1", "250", "187.25"], "{exec}");
    assert!(["LONG", "LONGLONG"].contains(&values[1].1), "SQL_INTEGER bound as an integer type: {exec}");
    let raw = bytes(exec);
    assert_eq!((raw[3], raw[4]), (0, 0x17));
    assert_eq!(u32::from_le_bytes([raw[5], raw[6], raw[7], raw[8]]) as u64, id);
    let ok = &fields(answer_to(&c.received, exec))["response"]["ok"];
    assert_eq!(ok["affected_rows"], 1, "{ok}");
    // The SELECT: prepared, executed with 200, binary rows counted.
    let select = "SELECT clordid, qty FROM orders WHERE qty >= ? ORDER BY clordid";
    let prep = the(&c.sent, "select prepare", |b| {
        b["command"]["query"] == select && b["command"]["name"] == "COM_STMT_PREPARE"
    });
    let sid = fields(answer_to(&c.received, prep))["response"]["prepared"]["statement_id"].as_u64().unwrap();
    let exec = the(&c.sent, "select execution", |b| {
        b["command"]["name"] == "COM_STMT_EXECUTE" && b["command"]["statement_id"] == sid
    });
    assert_eq!(fields(exec)["command"]["query"], select);
    assert_eq!(fields(exec)["command"]["params"][0]["value"], "200");
    let rs = &fields(answer_to(&c.received, exec))["response"];
    assert_eq!(rs["column_names"], serde_json::json!(["clordid", "qty"]), "{rs}");
    assert!(rs["rows"].as_u64().unwrap() >= 1, "{rs}");
    // Statements closed: one-way.
    for close in mysql_commands(&c.sent, "COM_STMT_CLOSE") {
        assert_one_way(close);
    }
}
