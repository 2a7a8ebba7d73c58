//! Record payloads of `bench collector`: the trivially compressible
//! alphabet, or varied HTTP/1.1 requests (an honest figure for compression).

/// Payload size.
pub const PAYLOAD: usize = 512;

/// Kinds of record payload.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Payload {
    /// The alphabet repeated, after "rec NNNNNNNNNNNN ".
    Alphabet,
    /// HTTP/1.1 requests (see [`http_payload`]).
    Http,
}

/// The payload of record `i`.
pub fn payload(kind: Payload, i: u64) -> Vec<u8> {
    match kind {
        Payload::Alphabet => {
            let mut p: Vec<u8> = (0..PAYLOAD).map(|i| b'a' + (i % 26) as u8).collect();
            let tag = format!("rec {i:012} ");
            p[..tag.len()].copy_from_slice(tag.as_bytes());
            p
        }
        Payload::Http => http_payload(i),
    }
}

/// A PAYLOAD-byte HTTP/1.1 request, different for each `i`: method, path
/// with numeric ids, host and user agent from small sets; a random trace id,
/// bearer token, request id and session cookie; a JSON body with random
/// numbers (cut at PAYLOAD bytes, as a capture chunk would be).
pub fn http_payload(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let hex = |r: &mut dyn FnMut() -> u64, n: usize| -> String {
        (0..n).map(|_| char::from(b"0123456789abcdef"[(r() % 16) as usize])).collect()
    };
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let token: String = (0..43).map(|_| char::from(B64[(rnd() % 64) as usize])).collect();
    let (method, resource) = [
        ("GET", "orders"),
        ("POST", "payments"),
        ("GET", "customers"),
        ("PUT", "carts"),
        ("POST", "checkout"),
        ("GET", "inventory"),
    ][(rnd() % 6) as usize];
    let svc = ["api-gateway", "orders", "billing", "catalog"][(rnd() % 4) as usize];
    let ua = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "okhttp/4.12.0",
        "python-requests/2.32.3",
        "Go-http-client/1.1",
    ][(rnd() % 4) as usize];
    let trace = hex(&mut rnd, 16);
    let uuid = format!(
        "{}-{}-4{}-{}-{}",
        hex(&mut rnd, 8),
        hex(&mut rnd, 4),
        hex(&mut rnd, 3),
        hex(&mut rnd, 4),
        hex(&mut rnd, 12)
    );
    let session = hex(&mut rnd, 32);
    let mut body = format!(
        r#"{{"customer_id":{},"amount":{}.{:02},"currency":"{}","items":["#,
        rnd() % 10_000_000,
        rnd() % 5000,
        rnd() % 100,
        ["EUR", "USD", "GBP"][(rnd() % 3) as usize]
    );
    for k in 0..(1 + rnd() % 6) {
        if k > 0 {
            body.push(',');
        }
        body += &format!(r#"{{"sku":"SKU-{:06}","qty":{}}}"#, rnd() % 1_000_000, 1 + rnd() % 9);
    }
    body += "]}";
    let text = format!(
        "{method} /api/v{}/{resource}/{}?page={}&trace={trace} HTTP/1.1\r\n\
         Host: {svc}.prod.svc.cluster.local\r\nUser-Agent: {ua}\r\nAccept: application/json\r\n\
         Authorization: Bearer {token}\r\nX-Request-Id: {uuid}\r\nCookie: session={session}; region=eu-{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        1 + rnd() % 3,
        rnd() % 100_000_000,
        rnd() % 50,
        rnd() % 3,
        body.len(),
    );
    let mut p = text.into_bytes();
    p.resize(PAYLOAD, b' ');
    p
}
