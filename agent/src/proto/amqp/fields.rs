//! AMQP 0-9-1 data types: short and long strings, field tables (with
//! RabbitMQ's extra type codes) rendered to text, and basic content
//! properties (message id, correlation id, headers, ...).

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::Text;
use crate::proto::wire::{Reader, cut_string, hex, push_capped, slice};

/// Deepest nesting of tables and arrays rendered.
const MAX_DEPTH: usize = 4;

/// Caps applied while decoding.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub(super) listed: usize,
    pub(super) value: usize,
}

/// One entry of a field table, its value rendered as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AmqpField {
    /// Field name.
    pub name: Text,
    /// The value as text (strings as sent; numbers formatted; nested tables
    /// and arrays in braces and brackets; byte arrays in hex).
    pub value: Text,
    /// Type code (`S` long string, `I` int32, `F` table, ...).
    pub r#type: char,
    /// The value was cut at the configured length.
    pub truncated: bool,
}

/// Basic content properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AmqpProperties {
    /// content-type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Text>,
    /// content-encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<Text>,
    /// Application headers (capped).
    pub headers: Vec<AmqpField>,
    /// delivery-mode (1 transient, 2 persistent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_mode: Option<u8>,
    /// priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// correlation-id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Text>,
    /// reply-to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Text>,
    /// expiration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Text>,
    /// message-id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Text>,
    /// timestamp (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<Text>,
    /// user-id (the broker checks it against the connection's user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Text>,
    /// app-id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<Text>,
    /// cluster-id (deprecated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Text>,
}

pub(super) fn shortstr(buf: &Bytes, r: &mut Reader<'_>) -> Option<Text> {
    let n = r.u8()?;
    Some(Text(slice(buf, r.bytes(usize::from(n))?)))
}

pub(super) fn longstr<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = r.be32()?;
    r.bytes(usize::try_from(n).ok()?)
}

/// A field table; entries beyond the cap are skipped (all stay in `raw`).
pub(super) fn table(buf: &Bytes, r: &mut Reader<'_>, caps: Caps) -> Option<Vec<AmqpField>> {
    let body = longstr(r)?;
    let mut t = Reader::new(body);
    let mut out = Vec::new();
    while t.remaining() > 0 {
        let name = shortstr(buf, &mut t)?;
        let code = t.u8()?;
        let mut s = String::new();
        value(buf, &mut t, code, caps, 0, &mut s)?;
        let (v, truncated) = cut_string(s, caps.value);
        push_capped(&mut out, AmqpField { name, value: v, r#type: char::from(code), truncated }, caps.listed);
    }
    Some(out)
}

/// Render one field value of type `code` into `out` (bounded by `caps.value`).
fn value(buf: &Bytes, r: &mut Reader<'_>, code: u8, caps: Caps, depth: usize, out: &mut String) -> Option<()> {
    use std::fmt::Write as _;
    let room = |out: &String| out.len() <= caps.value;
    match code {
        b't' => out.push_str(if r.u8()? != 0 { "true" } else { "false" }),
        b'b' => write!(out, "{}", r.u8()? as i8).ok()?,
        b'B' => write!(out, "{}", r.u8()?).ok()?,
        b's' | b'U' => write!(out, "{}", r.be16()? as i16).ok()?,
        b'u' => write!(out, "{}", r.be16()?).ok()?,
        b'I' => write!(out, "{}", r.be32()? as i32).ok()?,
        b'i' => write!(out, "{}", r.be32()?).ok()?,
        b'l' | b'L' => write!(out, "{}", r.be64()? as i64).ok()?,
        b'T' => write!(out, "{}", r.be64()?).ok()?,
        b'f' => write!(out, "{}", f32::from_bits(r.be32()?)).ok()?,
        b'd' => write!(out, "{}", f64::from_bits(r.be64()?)).ok()?,
        b'D' => {
            let scale = r.u8()?;
            let v = r.be32()?;
            write!(out, "{v}e-{scale}").ok()?
        }
        b'S' => {
            let s = longstr(r)?;
            let n = s.len().min(caps.value.saturating_sub(out.len()) + 1);
            out.push_str(&String::from_utf8_lossy(&s[..n]));
        }
        b'x' => {
            let s = longstr(r)?;
            out.push_str(&hex(s, caps.value / 2));
        }
        b'V' => out.push_str("void"),
        b'F' | b'A' => {
            let body = longstr(r)?;
            let mut t = Reader::new(body);
            out.push(if code == b'F' { '{' } else { '[' });
            let mut first = true;
            while t.remaining() > 0 {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                if depth >= MAX_DEPTH || !room(out) {
                    out.push_str("...");
                    break;
                }
                if code == b'F' {
                    let name = shortstr(buf, &mut t)?;
                    out.push_str(&name.to_string_lossy());
                    out.push_str(": ");
                }
                let c = t.u8()?;
                value(buf, &mut t, c, caps, depth + 1, out)?;
            }
            out.push(if code == b'F' { '}' } else { ']' });
        }
        _ => return None,
    }
    Some(())
}

/// The property list of a content header (flags already read).
pub(super) fn properties(buf: &Bytes, r: &mut Reader<'_>, flags: u16, caps: Caps) -> Option<AmqpProperties> {
    let mut p = AmqpProperties::default();
    let has = |bit: u16| flags & (1 << bit) != 0;
    if has(15) {
        p.content_type = Some(shortstr(buf, r)?);
    }
    if has(14) {
        p.content_encoding = Some(shortstr(buf, r)?);
    }
    if has(13) {
        p.headers = table(buf, r, caps)?;
    }
    if has(12) {
        p.delivery_mode = Some(r.u8()?);
    }
    if has(11) {
        p.priority = Some(r.u8()?);
    }
    let s = |bit: u16, r: &mut Reader<'_>| if has(bit) { shortstr(buf, r).map(Some) } else { Some(None) };
    p.correlation_id = s(10, r)?;
    p.reply_to = s(9, r)?;
    p.expiration = s(8, r)?;
    p.message_id = s(7, r)?;
    if has(6) {
        p.timestamp = Some(r.be64()?);
    }
    p.r#type = s(5, r)?;
    p.user_id = s(4, r)?;
    p.app_id = s(3, r)?;
    p.cluster_id = s(2, r)?;
    Some(p)
}
