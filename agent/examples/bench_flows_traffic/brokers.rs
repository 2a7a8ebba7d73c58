//! Generated traffic of the database and broker protocols for `bench_flows`:
//! MySQL (queries with 10-row results, prepared-statement executions),
//! AMQP 0-9-1 (confirmed publishes with properties, deliveries), NATS
//! (publishes with reply subjects, deliveries, pings) and MQTT 3.1.1 (QoS 1
//! publishes and acknowledgements, deliveries).

/// One 160-byte JSON-like payload.
fn payload(i: usize) -> Vec<u8> {
    let mut p =
        format!(r#"{{"account":{i:010},"pair":"EURUSD","px":"1.0842","qty":1000000,"side":"buy","#).into_bytes();
    p.resize(160, b' ');
    p.extend_from_slice(b"}");
    p
}

// ---------------------------------------------------------------- MySQL

fn my_pkt(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let n = payload.len() as u32;
    out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
    out.extend_from_slice(payload);
}

fn lenenc(s: &[u8]) -> Vec<u8> {
    [vec![s.len() as u8], s.to_vec()].concat()
}

fn coldef(name: &str, t: u8) -> Vec<u8> {
    let mut p = [lenenc(b"def"), lenenc(b"ledger"), lenenc(b"positions"), lenenc(b"positions")].concat();
    p.extend(lenenc(name.as_bytes()));
    p.extend(lenenc(name.as_bytes()));
    p.extend_from_slice(&[0x0c, 45, 0, 20, 0, 0, 0, t, 0, 0, 0, 0, 0]);
    p
}

const EOF: &[u8] = &[0xfe, 0, 0, 2, 0];
const OK: &[u8] = &[0, 1, 0, 2, 0, 0, 0];

pub fn mysql(i: usize, first: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    if first {
        let mut g = vec![10];
        g.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0\x07\0\0\0abcdefgh\0\xfe\xf7\x2d\x02\x00\xbf\x81\x15");
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        my_pkt(&mut resp, 0, &g);
        let caps: u32 = 0x200 | 0x8000 | 0x8 | 0x8_0000;
        let mut l = caps.to_le_bytes().to_vec();
        l.extend_from_slice(&[0, 0, 0, 1, 45]);
        l.extend_from_slice(&[0; 23]);
        l.extend_from_slice(b"bench\0\x14");
        l.extend_from_slice(&[0xaa; 20]);
        l.extend_from_slice(b"ledger\0mysql_native_password\0");
        my_pkt(&mut req, 1, &l);
        my_pkt(&mut resp, 2, OK);
        my_pkt(&mut req, 0, b"\x16INSERT INTO fills (account, qty) VALUES (?, ?)");
        let mut ok = vec![0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        ok.truncate(12);
        my_pkt(&mut resp, 1, &ok);
        my_pkt(&mut resp, 2, &coldef("?", 8));
        my_pkt(&mut resp, 3, &coldef("?", 8));
        my_pkt(&mut resp, 4, EOF);
    }
    if i.is_multiple_of(2) {
        let mut e = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 8, 0];
        e.extend_from_slice(&(i as i64).to_le_bytes());
        e.extend_from_slice(&100i64.to_le_bytes());
        my_pkt(&mut req, 0, &e);
        my_pkt(&mut resp, 1, OK);
    } else {
        my_pkt(&mut req, 0, format!("\x03SELECT id, qty, px FROM positions WHERE account = {i}").as_bytes());
        my_pkt(&mut resp, 1, &[3]);
        for (n, c) in ["id", "qty", "px"].iter().enumerate() {
            my_pkt(&mut resp, 2 + n as u8, &coldef(c, 8));
        }
        my_pkt(&mut resp, 5, EOF);
        for r in 0..10u8 {
            let row = [lenenc(r.to_string().as_bytes()), lenenc(b"100"), lenenc(b"187.25")].concat();
            my_pkt(&mut resp, 6 + r, &row);
        }
        my_pkt(&mut resp, 16, EOF);
    }
    (req, resp)
}

// ---------------------------------------------------------------- AMQP

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, p: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(p.len() as u32).to_be_bytes());
    out.extend_from_slice(p);
    out.push(0xce);
}

fn method(out: &mut Vec<u8>, channel: u16, class: u16, m: u16, args: &[u8]) {
    frame(out, 1, channel, &[&class.to_be_bytes()[..], &m.to_be_bytes(), args].concat());
}

fn ss(s: &str) -> Vec<u8> {
    [vec![s.len() as u8], s.as_bytes().to_vec()].concat()
}

fn ls(s: &[u8]) -> Vec<u8> {
    [(s.len() as u32).to_be_bytes().to_vec(), s.to_vec()].concat()
}

/// A content header with content-type, headers, delivery-mode, correlation-id and message-id.
fn content(out: &mut Vec<u8>, i: usize, body: &[u8]) {
    let flags: u16 = 1 << 15 | 1 << 13 | 1 << 12 | 1 << 10 | 1 << 7;
    let mut h = [60u16.to_be_bytes(), 0u16.to_be_bytes()].concat();
    h.extend_from_slice(&(body.len() as u64).to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend(ss("application/json"));
    h.extend(ls(&[ss("desk"), b"S".to_vec(), ls(b"rates")].concat()));
    h.push(2);
    h.extend(ss(&format!("corr-{i}")));
    h.extend(ss(&format!("msg-{i}")));
    frame(out, 2, 1, &h);
    frame(out, 3, 1, body);
}

/// Exchange `i` of a connection: 0 is the protocol header and the server's
/// connection.start and tune (it asks first); 1 answers them, opens the
/// connection and a channel in confirm mode; from 1 on, a publish confirmed
/// by its number and its delivery.
pub fn amqp(i: usize, _first: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    let tune =
        [2047u16.to_be_bytes().to_vec(), 131_072u32.to_be_bytes().to_vec(), 60u16.to_be_bytes().to_vec()].concat();
    if i == 0 {
        req.extend_from_slice(b"AMQP\0\0\x09\x01");
        let props = ls(&[ss("product"), b"S".to_vec(), ls(b"RabbitMQ")].concat());
        method(&mut resp, 0, 10, 10, &[vec![0, 9], props, ls(b"PLAIN"), ls(b"en_US")].concat());
        method(&mut resp, 0, 10, 30, &tune);
        return (req, resp);
    }
    if i == 1 {
        method(&mut req, 0, 10, 11, &[ls(b""), ss("PLAIN"), ls(b"\0bench\0secret"), ss("en_US")].concat());
        method(&mut req, 0, 10, 31, &tune);
        method(&mut req, 0, 10, 40, &[ss("/"), ss(""), vec![0]].concat());
        method(&mut resp, 0, 10, 41, &ss(""));
        method(&mut req, 1, 20, 10, &ss(""));
        method(&mut resp, 1, 20, 11, &ls(b""));
        method(&mut req, 1, 85, 10, &[0]);
        method(&mut resp, 1, 85, 11, &[]);
    }
    let body = payload(i);
    method(&mut req, 1, 60, 40, &[vec![0, 0], ss("orders"), ss("fx.eur"), vec![0]].concat());
    content(&mut req, i, &body);
    // The broker confirms each publish by its number on the channel.
    method(&mut resp, 1, 60, 80, &[&(i as u64).to_be_bytes()[..], &[0]].concat());
    let deliver = [ss("ctag-1"), (i as u64).to_be_bytes().to_vec(), vec![0], ss("orders"), ss("fx.eur")].concat();
    method(&mut resp, 1, 60, 60, &deliver);
    content(&mut resp, i, &body);
    (req, resp)
}

// ---------------------------------------------------------------- NATS

pub fn nats(i: usize, first: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    if first {
        resp.extend_from_slice(b"INFO {\"server_id\":\"NBENCH\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":1048576}\r\n");
        req.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"bench\",\"lang\":\"rust\",\"headers\":true}\r\n",
        );
        req.extend_from_slice(b"SUB rates.> 1\r\n");
    }
    let body = payload(i);
    req.extend_from_slice(format!("PUB rates.eurusd _INBOX.{i:08} {}\r\n", body.len()).as_bytes());
    req.extend_from_slice(&body);
    req.extend_from_slice(b"\r\n");
    resp.extend_from_slice(format!("MSG rates.eurusd 1 _INBOX.{i:08} {}\r\n", body.len()).as_bytes());
    resp.extend_from_slice(&body);
    resp.extend_from_slice(b"\r\n");
    if i.is_multiple_of(16) {
        req.extend_from_slice(b"PING\r\n");
        resp.extend_from_slice(b"PONG\r\n");
    }
    (req, resp)
}

// ---------------------------------------------------------------- MQTT

fn mqtt_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

fn s16(s: &str) -> Vec<u8> {
    [(s.len() as u16).to_be_bytes().to_vec(), s.as_bytes().to_vec()].concat()
}

pub fn mqtt(i: usize, first: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    if first {
        let connect = [s16("MQTT"), vec![4, 0xc2, 0, 60], s16("bench-client"), s16("bench"), s16("secret")].concat();
        mqtt_packet(&mut req, 0x10, &connect);
        mqtt_packet(&mut resp, 0x20, &[0, 0]);
        mqtt_packet(&mut req, 0x82, &[vec![0, 1], s16("rates/#"), vec![1]].concat());
        mqtt_packet(&mut resp, 0x90, &[0, 1, 1]);
    }
    let id = ((i % 65_000) + 2) as u16;
    let body = payload(i);
    mqtt_packet(&mut req, 0x32, &[s16("rates/eurusd"), id.to_be_bytes().to_vec(), body.clone()].concat());
    mqtt_packet(&mut resp, 0x40, &id.to_be_bytes());
    mqtt_packet(&mut resp, 0x30, &[s16("rates/eurusd"), body].concat());
    (req, resp)
}
