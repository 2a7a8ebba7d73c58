//! The NATS record model, and the JSON of CONNECT (credentials withheld) and
//! INFO, and the header block of HPUB/HMSG.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::proto::fields::Text;
use crate::proto::wire::{Payload, capped, push_capped, slice};

/// Where a secret was on the wire: never its value.
pub const WITHHELD: &str = "<withheld>";

/// CONNECT options; `pass`, `auth_token`, `jwt` and `sig` are withheld.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct NatsConnect {
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: Option<i64>,
    pub user: Option<String>,
    /// Public NKey of the client (not a secret).
    pub nkey: Option<String>,
    /// `<withheld>` when a password was sent.
    pub password: Option<&'static str>,
    /// `<withheld>` when a token was sent.
    pub auth_token: Option<&'static str>,
    /// `<withheld>` when a user JWT was sent.
    pub jwt: Option<&'static str>,
    /// `<withheld>` when a nonce signature was sent.
    pub sig: Option<&'static str>,
    pub verbose: bool,
    pub pedantic: bool,
    pub tls_required: bool,
    pub echo: Option<bool>,
    pub headers: Option<bool>,
    pub no_responders: Option<bool>,
}

/// INFO fields a reviewer uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct NatsInfo {
    pub server_id: Option<String>,
    pub server_name: Option<String>,
    pub version: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub proto: Option<i64>,
    pub client_id: Option<i64>,
    pub max_payload: Option<i64>,
    pub headers: Option<bool>,
    pub auth_required: bool,
    pub tls_required: bool,
    pub jetstream: Option<bool>,
}

/// One NATS protocol message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NatsMessage {
    /// Operation in upper case: CONNECT, INFO, PUB, HPUB, MSG, HMSG, SUB,
    /// UNSUB, PING, PONG, +OK, -ERR.
    pub op: &'static str,
    /// Subject of PUB/HPUB/MSG/HMSG/SUB.
    pub subject: Option<Text>,
    /// Reply subject.
    pub reply_to: Option<Text>,
    /// Subscription id (SUB, UNSUB, MSG, HMSG).
    pub sid: Option<Text>,
    /// Queue group of SUB.
    pub queue_group: Option<Text>,
    /// UNSUB: messages after which the subscription ends.
    pub max_msgs: Option<u64>,
    /// Header block status (`NATS/1.0 503` → 503), e.g. no responders.
    pub status: Option<u16>,
    /// Header block status description.
    pub status_text: Option<Text>,
    /// Headers of HPUB/HMSG (capped), name and value.
    pub headers: Vec<(Text, Text)>,
    /// Bytes of the header block.
    pub header_len: Option<u64>,
    /// The payload (without the header block).
    pub payload: Option<Payload>,
    /// CONNECT options.
    pub connect: Option<NatsConnect>,
    /// INFO.
    pub info: Option<NatsInfo>,
    /// -ERR text.
    pub error: Option<Text>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(|s| s.chars().take(256).collect())
}

fn b(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn secret(v: &Value, k: &str) -> Option<&'static str> {
    v.get(k).filter(|x| !x.is_null()).map(|_| WITHHELD)
}

pub(super) fn connect(json: &[u8]) -> Option<NatsConnect> {
    let v: Value = serde_json::from_slice(json).ok()?;
    Some(NatsConnect {
        name: s(&v, "name"),
        lang: s(&v, "lang"),
        version: s(&v, "version"),
        protocol: i(&v, "protocol"),
        user: s(&v, "user"),
        nkey: s(&v, "nkey"),
        password: secret(&v, "pass"),
        auth_token: secret(&v, "auth_token"),
        jwt: secret(&v, "jwt"),
        sig: secret(&v, "sig"),
        verbose: b(&v, "verbose").unwrap_or(false),
        pedantic: b(&v, "pedantic").unwrap_or(false),
        tls_required: b(&v, "tls_required").unwrap_or(false),
        echo: b(&v, "echo"),
        headers: b(&v, "headers"),
        no_responders: b(&v, "no_responders"),
    })
}

pub(super) fn info(json: &[u8]) -> Option<NatsInfo> {
    let v: Value = serde_json::from_slice(json).ok()?;
    Some(NatsInfo {
        server_id: s(&v, "server_id"),
        server_name: s(&v, "server_name"),
        version: s(&v, "version"),
        host: s(&v, "host"),
        port: i(&v, "port"),
        proto: i(&v, "proto"),
        client_id: i(&v, "client_id"),
        max_payload: i(&v, "max_payload"),
        headers: b(&v, "headers"),
        auth_required: b(&v, "auth_required").unwrap_or(false),
        tls_required: b(&v, "tls_required").unwrap_or(false),
        jetstream: b(&v, "jetstream"),
    })
}

/// The header block `NATS/1.0[ status[ text]]\r\n(Name: value\r\n)*\r\n`.
pub(super) fn header_block(buf: &Bytes, block: &[u8], m: &mut NatsMessage, max: usize, cap: usize) -> bool {
    let mut lines = block.split(|c| *c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(first) = lines.next() else { return false };
    let Some(rest) = first.strip_prefix(b"NATS/1.0") else { return false };
    let rest = rest.trim_ascii();
    if !rest.is_empty() {
        let (code, text) = rest.split_at(rest.iter().position(|c| *c == b' ').unwrap_or(rest.len()));
        m.status = std::str::from_utf8(code).ok().and_then(|c| c.parse().ok());
        let text = text.trim_ascii();
        m.status_text = (!text.is_empty()).then(|| Text(slice(buf, text)));
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|c| *c == b':') else { return false };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        push_capped(&mut m.headers, (capped(buf, name, cap).0, capped(buf, value, cap).0), max);
    }
    true
}
