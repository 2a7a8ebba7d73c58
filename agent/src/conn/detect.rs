//! Protocol detection from the first bytes of each direction, with
//! well-known ports as a fallback.

use crate::proto::{Protocol, http2::H2_PREFACE};
use crate::types::{Direction, Role, Transport};

const HTTP_METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

/// PostgreSQL startup codes: protocol 3.0, SSLRequest, GSSENCRequest, CancelRequest.
const PG_CODES: [u32; 4] = [196_608, 80_877_103, 80_877_104, 80_877_102];

/// What detection concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detect {
    /// The protocol and the direction that carries requests.
    Found(Protocol, Direction),
    /// Not enough bytes yet to tell.
    NeedMore,
}

/// Facts about the connection detection uses besides bytes.
#[derive(Clone, Copy, Debug)]
pub struct ConnHints {
    /// TCP or UDP.
    pub transport: Transport,
    /// Who connected.
    pub role: Role,
    /// Local port, if known.
    pub local_port: Option<u16>,
    /// Remote port, if known.
    pub remote_port: Option<u16>,
}

enum Sig {
    Match(Protocol, bool),
    Maybe,
    No,
}

/// `a` is a prefix of `b` or `b` of `a`, compared on the shorter length.
fn prefix_compatible(data: &[u8], sig: &[u8]) -> Option<bool> {
    let n = data.len().min(sig.len());
    if data[..n] != sig[..n] { None } else { Some(data.len() >= sig.len()) }
}

/// Signature of one direction's first bytes. The bool says whether the bytes
/// are the client side.
fn signature(b: &[u8]) -> Sig {
    if b.is_empty() {
        return Sig::Maybe;
    }
    let mut maybe = false;
    let mut check = |sig: &[u8], proto: Protocol, client: bool| -> Option<Sig> {
        match prefix_compatible(b, sig) {
            Some(true) => Some(Sig::Match(proto, client)),
            Some(false) => {
                maybe = true;
                None
            }
            None => None,
        }
    };
    if let Some(s) = check(&H2_PREFACE[..14], Protocol::Http2, true) {
        return s;
    }
    // The server's connection preface: a SETTINGS frame (type 4, no flags)
    // on stream 0 with a length that is a multiple of 6 (RFC 9113 §3.4,
    // §6.5). A server may send it before the client's preface arrives.
    if b.len() >= 9 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        if b[3] == 4 && b[4] == 0 && b[5..9] == [0, 0, 0, 0] && len.is_multiple_of(6) && len <= 6 * 64 {
            return Sig::Match(Protocol::Http2, false);
        }
    }
    let short_zero = b.len() < 9 && b[0] == 0;
    // NATS: the server's INFO, the client's CONNECT (before HTTP's CONNECT method).
    if let Some(s) = check(b"INFO {", Protocol::Nats, false) {
        return s;
    }
    if let Some(s) = check(b"CONNECT {", Protocol::Nats, true) {
        return s;
    }
    for m in HTTP_METHODS {
        if let Some(s) = check(m, Protocol::Http1, true) {
            return s;
        }
    }
    if let Some(s) = check(b"HTTP/1.", Protocol::Http1, false) {
        return s;
    }
    if let Some(s) = check(b"8=FIX", Protocol::Fix, true) {
        return s;
    }
    // AMQP 0-9-1 protocol header (a server answers a mismatch with its own),
    // or on the server's socket its connection.start frame (method frame on
    // channel 0, class 10, method 10).
    if let Some(s) = check(b"AMQP\x00", Protocol::Amqp, true) {
        return s;
    }
    if b.len() >= 11 && b[..3] == [1, 0, 0] && b[7..11] == [0, 10, 0, 10] {
        return Sig::Match(Protocol::Amqp, false);
    }
    // RESP command: array of bulk strings.
    if b[0] == b'*' {
        let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let rest = &b[1 + digits..];
        if digits > 0 && rest.len() >= 3 {
            if rest.starts_with(b"\r\n$") {
                return Sig::Match(Protocol::Redis, true);
            }
        } else if digits < b.len() {
            maybe = true;
        }
    }
    // PostgreSQL startup-family message: length then a known code.
    if b.len() >= 8 {
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let code = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        if (8..=10_000).contains(&len) && PG_CODES.contains(&code) {
            return Sig::Match(Protocol::Postgres, true);
        }
    } else if b[0] == 0 {
        maybe = true;
    }
    if let Some(s) = mysql_greeting(b) {
        return s;
    }
    if let Some(s) = mqtt_connect(b) {
        return s;
    }
    if maybe || short_zero { Sig::Maybe } else { Sig::No }
}

/// MQTT CONNECT: packet type 1, a remaining length, then the protocol name
/// `MQTT` (3.1.1, 5) or `MQIsdp` (3.1). On the server's socket the CONNACK
/// may be seen first: a whole packet of type 2 with acknowledge flags 0 or 1.
fn mqtt_connect(b: &[u8]) -> Option<Sig> {
    if b[0] == 0x20 && b.len() >= 4 && b.len() <= 258 {
        let n = b[1..].iter().take(2).position(|c| c & 0x80 == 0)? + 2;
        let rem = b[1..n].iter().enumerate().fold(0usize, |v, (i, c)| v | usize::from(c & 0x7f) << (7 * i));
        let whole = n + rem == b.len() && rem >= 2;
        return (whole && b[n] <= 1).then_some(Sig::Match(Protocol::Mqtt, false));
    }
    if b[0] != 0x10 {
        return None;
    }
    // Brokers may read the fixed header a byte at a time: wait for the name.
    let Some(n) = b[1..].iter().take(4).position(|c| c & 0x80 == 0).map(|p| p + 2) else {
        return (b.len() < 5).then_some(Sig::Maybe);
    };
    let rest = &b[n..];
    for name in [&b"\x00\x04MQTT"[..], b"\x00\x06MQIsdp"] {
        match prefix_compatible(rest, name) {
            Some(true) => return Some(Sig::Match(Protocol::Mqtt, true)),
            Some(false) => return Some(Sig::Maybe),
            None => {}
        }
    }
    None
}

/// MySQL/MariaDB server greeting: a packet with sequence id 0 holding
/// protocol version 10 and a NUL-terminated printable server version.
fn mysql_greeting(b: &[u8]) -> Option<Sig> {
    // The greeting is one write of 40 bytes or more: never a short prefix.
    if b.len() < 6 {
        return None;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], 0]);
    if b[3] != 0 || b[4] != 10 || !(40..=1024).contains(&len) {
        return None;
    }
    let version = &b[5..b.len().min(5 + 64)];
    match version.iter().position(|c| *c == 0) {
        Some(n) if n >= 3 && version[..n].iter().all(|c| c.is_ascii_graphic()) => {
            Some(Sig::Match(Protocol::Mysql, false))
        }
        None if version.iter().all(|c| c.is_ascii_graphic()) && version.len() < 64 => Some(Sig::Maybe),
        _ => None,
    }
}

fn port_protocol(port: u16, transport: Transport) -> Option<Protocol> {
    match (port, transport) {
        (53, _) => Some(Protocol::Dns),
        (5432, Transport::Tcp) => Some(Protocol::Postgres),
        (6379, Transport::Tcp) => Some(Protocol::Redis),
        (80 | 8080, Transport::Tcp) => Some(Protocol::Http1),
        (3306, Transport::Tcp) => Some(Protocol::Mysql),
        (5672, Transport::Tcp) => Some(Protocol::Amqp),
        (4222, Transport::Tcp) => Some(Protocol::Nats),
        // 8883 (MQTT over TLS) is left out: those sockets carry ciphertext;
        // their plaintext is detected by the CONNECT signature.
        (1883, Transport::Tcp) => Some(Protocol::Mqtt),
        _ => None,
    }
}

fn default_client_dir(role: Role) -> Direction {
    match role {
        Role::Server => Direction::Ingress,
        Role::Client | Role::Unknown => Direction::Egress,
    }
}

/// Whether `b` starts like a TLS connection: a handshake record (type 22,
/// version 3.x) holding a ClientHello or a ServerHello. Such a connection's
/// socket bytes are ciphertext; its plaintext is in the TLS library.
pub fn looks_like_tls(b: &[u8]) -> bool {
    b.len() >= 6 && b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04 && matches!(b[5], 0x01 | 0x02)
}

/// Detect from the first bytes of egress and ingress. `final_` means no more
/// bytes will come before a decision is required (cap reached, gap, close).
pub fn detect(hints: ConnHints, egress: &[u8], ingress: &[u8], final_: bool) -> Detect {
    if hints.transport == Transport::Udp {
        // Datagram protocols are told by port, else by the first datagram
        // (see `detect_datagram`): DNS is the only one parsed.
        return detect_datagram(hints, None);
    }
    // An empty direction says nothing; both empty means wait.
    let mut undecided = egress.is_empty() && ingress.is_empty();
    for (dir, bytes) in [(Direction::Egress, egress), (Direction::Ingress, ingress)] {
        if bytes.is_empty() {
            continue;
        }
        match signature(bytes) {
            Sig::Match(p, client) => {
                let client_dir = if client { dir } else { dir.opposite() };
                return Detect::Found(p, client_dir);
            }
            Sig::Maybe => undecided = true,
            Sig::No => {}
        }
    }
    if undecided && !final_ {
        return Detect::NeedMore;
    }
    // Fall back to the well-known port of the server side.
    let server_port = match hints.role {
        Role::Client => hints.remote_port.map(|p| (p, Direction::Egress)),
        Role::Server => hints.local_port.map(|p| (p, Direction::Ingress)),
        Role::Unknown => None,
    };
    if let Some((port, client_dir)) = server_port
        && let Some(p) = port_protocol(port, hints.transport)
    {
        return Detect::Found(p, client_dir);
    }
    if hints.role == Role::Unknown {
        for (port, client_dir) in [(hints.remote_port, Direction::Egress), (hints.local_port, Direction::Ingress)] {
            if let Some(p) = port.and_then(|p| port_protocol(p, hints.transport)) {
                return Detect::Found(p, client_dir);
            }
        }
    }
    Detect::Found(Protocol::Unknown, default_client_dir(hints.role))
}

/// Detection for UDP from the connection's port and, when the port says
/// nothing, the content of its first datagram (`dir`, bytes): a datagram with
/// the exact shape of a DNS query or response makes the flow DNS on any port
/// (a resolver on a private port, a test server), the client direction being
/// the one that carries queries.
pub fn detect_datagram(hints: ConnHints, first: Option<(Direction, &[u8])>) -> Detect {
    match (hints.remote_port, hints.local_port) {
        (Some(53), _) => return Detect::Found(Protocol::Dns, Direction::Egress),
        (_, Some(53)) => return Detect::Found(Protocol::Dns, Direction::Ingress),
        _ => {}
    }
    if let Some((dir, data)) = first
        && let Some(response) = crate::proto::dns::udp_message_shape(data)
    {
        return Detect::Found(Protocol::Dns, if response { dir.opposite() } else { dir });
    }
    Detect::Found(Protocol::Unknown, default_client_dir(hints.role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(role: Role, local: u16, remote: u16) -> ConnHints {
        ConnHints { transport: Transport::Tcp, role, local_port: Some(local), remote_port: Some(remote) }
    }

    #[test]
    fn tls_hellos_are_recognised() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0xea, 0x01, 0x00];
        assert!(looks_like_tls(&hello));
        assert!(looks_like_tls(&[0x16, 0x03, 0x03, 0x00, 0x59, 0x02]));
        assert!(!looks_like_tls(&hello[..5]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x03, 0x00, 0x59, 0x0b]), "a certificate is not a first message");
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03, 0x00, 0x59, 0x01]), "application data is not a first message");
    }

    #[test]
    fn signatures() {
        let h = tcp(Role::Unknown, 40000, 40001);
        let cases: [(&[u8], &[u8], Detect); 7] = [
            (b"GET / HTTP/1.1\r\n", b"", Detect::Found(Protocol::Http1, Direction::Egress)),
            (b"", b"HTTP/1.1 200 OK\r\n", Detect::Found(Protocol::Http1, Direction::Egress)),
            (b"", b"POST /x HTTP/1.1\r\n", Detect::Found(Protocol::Http1, Direction::Ingress)),
            (H2_PREFACE, b"", Detect::Found(Protocol::Http2, Direction::Egress)),
            (b"8=FIX.4.4\x019=5\x01", b"", Detect::Found(Protocol::Fix, Direction::Egress)),
            (b"*1\r\n$4\r\nPING\r\n", b"", Detect::Found(Protocol::Redis, Direction::Egress)),
            (&[0, 0, 0, 8, 4, 210, 22, 47], b"", Detect::Found(Protocol::Postgres, Direction::Egress)),
        ];
        for (e, i, want) in cases {
            assert_eq!(detect(h, e, i, false), want, "{:?}", String::from_utf8_lossy(e));
        }
    }

    #[test]
    fn broker_and_database_signatures() {
        let h = tcp(Role::Client, 40000, 40001);
        let mut greeting = vec![70, 0, 0, 0, 10];
        greeting.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
        greeting.extend_from_slice(&[0; 40]);
        assert_eq!(detect(h, b"", &greeting, false), Detect::Found(Protocol::Mysql, Direction::Egress));
        let mut not_greeting = greeting.clone();
        not_greeting[3] = 1;
        assert_eq!(detect(h, b"", &not_greeting, true), Detect::Found(Protocol::Unknown, Direction::Egress));
        assert_eq!(detect(h, b"AMQP\x00\x00\x09\x01", b"", false), Detect::Found(Protocol::Amqp, Direction::Egress));
        assert_eq!(detect(h, b"AMQ", b"", false), Detect::NeedMore);
        let connect = b"\x10\x1a\x00\x04MQTT\x04\x02\x00\x3c\x00\x0epaho-client-id";
        assert_eq!(detect(h, connect, b"", false), Detect::Found(Protocol::Mqtt, Direction::Egress));
        assert_eq!(detect(h, &connect[..5], b"", false), Detect::NeedMore);
        assert_eq!(detect(h, b"", b"\x10", false), Detect::NeedMore);
        assert_eq!(detect(h, b"", b"\x10\x1a", false), Detect::NeedMore);
        assert_eq!(
            detect(h, b"\x10\x0c\x00\x06MQIsdp\x03", b"", false),
            Detect::Found(Protocol::Mqtt, Direction::Egress)
        );
        assert_eq!(
            detect(h, b"", b"INFO {\"server_id\":\"x\"}\r\n", false),
            Detect::Found(Protocol::Nats, Direction::Egress)
        );
        assert_eq!(
            detect(h, b"CONNECT {\"verbose\":false}\r\n", b"", false),
            Detect::Found(Protocol::Nats, Direction::Egress)
        );
        assert_eq!(
            detect(h, b"CONNECT example.com:443 HTTP/1.1\r\n", b"", false),
            Detect::Found(Protocol::Http1, Direction::Egress)
        );
        assert_eq!(
            detect(tcp(Role::Client, 40000, 3306), b"", b"\x01\x02", true),
            Detect::Found(Protocol::Mysql, Direction::Egress)
        );
    }

    #[test]
    fn waits_for_more_bytes_on_a_possible_prefix() {
        let h = tcp(Role::Client, 40000, 9999);
        assert_eq!(detect(h, b"GE", b"", false), Detect::NeedMore);
        assert_eq!(detect(h, b"PRI * HT", b"", false), Detect::NeedMore);
        assert_eq!(detect(h, b"GE", b"", true), Detect::Found(Protocol::Unknown, Direction::Egress));
        assert_eq!(detect(h, b"\x16\x03\x01\x02\x00", b"", false), Detect::Found(Protocol::Unknown, Direction::Egress));
    }

    #[test]
    fn ports_are_the_fallback() {
        assert_eq!(
            detect(tcp(Role::Server, 6379, 50000), b"", b"PING\r\n", true),
            Detect::Found(Protocol::Redis, Direction::Ingress)
        );
        let udp =
            ConnHints { transport: Transport::Udp, role: Role::Client, local_port: Some(5353), remote_port: Some(53) };
        assert_eq!(detect(udp, b"", b"", false), Detect::Found(Protocol::Dns, Direction::Egress));
    }
}
