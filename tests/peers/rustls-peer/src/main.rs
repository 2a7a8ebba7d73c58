//! A rustls client and server over std::net (sync `rustls::StreamOwned`).
//!
//! `rustls-peer server CERT KEY SENT RECEIVED`: listens on 127.0.0.1, prints
//! `port N`, serves one connection: reads one request (headers and a
//! Content-Length body), answers, and writes what it received and sent to the
//! two files.
//! `rustls-peer client PORT CA BODY SENT RECEIVED [LOGPORT [misread]]`: POSTs BODY
//! (vectored writes; with LOGPORT, one write on the connection API, then a log
//! line to 127.0.0.1:LOGPORT over plain TCP before the TLS records are
//! written) and reads the answer, writing what it sent and received to the two
//! files. The server answers with a plain write; both read with `read`. With
//! `misread`, the answer's TLS records are taken into rustls, then a line
//! ("ack 1") is read from the log socket, and only then is the plaintext read
//! out of rustls; a second log line is written and its "ack 2" read after.
use std::{
    io::{BufReader, IoSlice, Read, Write},
    net::{TcpListener, TcpStream},
    sync::Arc,
};

fn certs(path: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let mut r = BufReader::new(std::fs::File::open(path).expect("cert file"));
    rustls_pemfile::certs(&mut r).collect::<Result<_, _>>().expect("certificates")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads one request or response: headers, then Content-Length bytes.
fn read_message(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "peer closed mid-message");
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return got;
            }
        }
    }
}

fn server(args: &[String]) {
    let key = rustls_pemfile::private_key(&mut BufReader::new(std::fs::File::open(&args[1]).expect("key file")))
        .expect("key")
        .expect("a private key");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&args[0]), key)
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("port {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (sock, _) = listener.accept().unwrap();
    let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let received = read_message(&mut tls);
    let body = format!("order accepted: {} bytes\n", received.len());
    let sent = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    tls.write_all(sent.as_bytes()).unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    std::fs::write(&args[2], sent.as_bytes()).unwrap();
    std::fs::write(&args[3], &received).unwrap();
    println!("served");
}

fn client(args: &[String]) {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&args[1]) {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", args[0].parse::<u16>().expect("port"))).unwrap();
    let body = &args[2];
    let head = format!("POST /orders HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len());
    let sent = head.clone() + body;
    let mut log = None;
    if let Some(port) = args.get(5) {
        // The connection API by hand: the request is handed to rustls, a log
        // line goes out on another (plain) TCP socket, and only then are the
        // TLS records written.
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        conn.writer().write_all(sent.as_bytes()).unwrap();
        let l = log.insert(TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("log port"))).unwrap());
        l.write_all(b"log: order handed to rustls\n").unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
    }
    if let (Some(l), Some("misread")) = (log.as_mut(), args.get(6).map(String::as_str)) {
        // The answer's records into rustls; a TCP read of the log socket; then
        // the plaintext out of rustls (tokio-rustls reads buffered plaintext
        // the same way, without a read_tls right before it).
        let mut received = Vec::new();
        let mut first = true;
        while !received.ends_with(b" bytes\n") {
            while conn.process_new_packets().unwrap().plaintext_bytes_to_read() == 0 {
                conn.read_tls(&mut sock).unwrap();
            }
            if std::mem::take(&mut first) {
                let mut ack = [0u8; 6];
                l.read_exact(&mut ack).unwrap();
            }
            let mut buf = [0u8; 4096];
            let n = conn.reader().read(&mut buf).unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        l.write_all(b"log: answer read\n").unwrap();
        let mut ack = [0u8; 6];
        l.read_exact(&mut ack).unwrap();
        std::fs::write(&args[3], sent.as_bytes()).unwrap();
        std::fs::write(&args[4], &received).unwrap();
        return;
    }
    let mut tls = rustls::StreamOwned::new(conn, sock);
    if args.len() == 5 {
        // Headers and body in vectored writes (rustls's `Writer::write_vectored`),
        // as hyper writes through tokio-rustls.
        let mut slices = [IoSlice::new(head.as_bytes()), IoSlice::new(body.as_bytes())];
        let mut left: &mut [IoSlice<'_>] = &mut slices;
        while !left.is_empty() {
            let n = tls.write_vectored(left).unwrap();
            assert!(n > 0, "vectored write wrote nothing");
            IoSlice::advance_slices(&mut left, n);
        }
        tls.flush().unwrap();
    }
    let received = read_message(&mut tls);
    std::fs::write(&args[3], sent.as_bytes()).unwrap();
    std::fs::write(&args[4], &received).unwrap();
    print!("{}", String::from_utf8_lossy(&received));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Give the capture agent time to see the exec and attach (a real
    // service lives longer than the ~100 ms that takes).
    std::thread::sleep(std::time::Duration::from_millis(500));
    match args.first().map(String::as_str) {
        Some("server") if args.len() == 5 => server(&args[1..]),
        Some("client") if (6..=8).contains(&args.len()) => client(&args[1..]),
        _ => {
            eprintln!(
                "usage: rustls-peer server CERT KEY SENT RECEIVED | client PORT CA BODY SENT RECEIVED [LOGPORT [misread]]"
            );
            std::process::exit(2);
        }
    }
}
