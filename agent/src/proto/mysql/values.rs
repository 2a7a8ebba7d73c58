//! Values of the MySQL binary protocol (COM_STMT_EXECUTE parameters): type
//! codes, and each value decoded to text (integers, floats, dates and times,
//! strings); values that are not text are shown in hex. Values longer than
//! the configured length are cut and marked.

use bytes::Bytes;
use serde::Serialize;

use super::messages::lenenc_str;
use crate::proto::fields::Text;
use crate::proto::wire::{Reader, capped, hex};

/// One bound parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MyValue {
    /// Type name, e.g. `LONGLONG`, `VAR_STRING`.
    pub r#type: &'static str,
    /// The unsigned flag was set.
    pub unsigned: bool,
    /// SQL NULL.
    pub null: bool,
    /// The value as text (strings as sent; numbers, dates and times formatted).
    pub value: Option<Text>,
    /// Bytes that are not UTF-8, in hex.
    pub hex: Option<String>,
    /// The value was cut at the configured length.
    pub truncated: bool,
}

/// Name of a column/parameter type code.
pub(super) fn type_name(t: u8) -> &'static str {
    match t {
        0x00 => "DECIMAL",
        0x01 => "TINY",
        0x02 => "SHORT",
        0x03 => "LONG",
        0x04 => "FLOAT",
        0x05 => "DOUBLE",
        0x06 => "NULL",
        0x07 => "TIMESTAMP",
        0x08 => "LONGLONG",
        0x09 => "INT24",
        0x0a => "DATE",
        0x0b => "TIME",
        0x0c => "DATETIME",
        0x0d => "YEAR",
        0x0e => "NEWDATE",
        0x0f => "VARCHAR",
        0x10 => "BIT",
        0x11 => "TIMESTAMP2",
        0x12 => "DATETIME2",
        0x13 => "TIME2",
        0xf5 => "JSON",
        0xf6 => "NEWDECIMAL",
        0xf7 => "ENUM",
        0xf8 => "SET",
        0xf9 => "TINY_BLOB",
        0xfa => "MEDIUM_BLOB",
        0xfb => "LONG_BLOB",
        0xfc => "BLOB",
        0xfd => "VAR_STRING",
        0xfe => "STRING",
        0xff => "GEOMETRY",
        _ => "UNKNOWN",
    }
}

fn text(s: String) -> Option<Text> {
    Some(Text(Bytes::from(s)))
}

/// Decode one binary value of type `t` from `r`; `None` if the bytes end early
/// or the type has no known binary form.
pub(super) fn decode(buf: &Bytes, r: &mut Reader<'_>, t: u8, unsigned: bool, cap: usize) -> Option<MyValue> {
    let mut v = MyValue { r#type: type_name(t), unsigned, ..MyValue::default() };
    v.value = match t {
        0x01 => {
            let b = r.u8()?;
            text(if unsigned { b.to_string() } else { (b as i8).to_string() })
        }
        0x02 | 0x0d => {
            let n = r.le16()?;
            text(if unsigned || t == 0x0d { n.to_string() } else { (n as i16).to_string() })
        }
        0x03 | 0x09 => {
            let n = r.le32()?;
            text(if unsigned { n.to_string() } else { (n as i32).to_string() })
        }
        0x08 => {
            let n = r.le64()?;
            text(if unsigned { n.to_string() } else { (n as i64).to_string() })
        }
        0x04 => text(f32::from_bits(r.le32()?).to_string()),
        0x05 => text(f64::from_bits(r.le64()?).to_string()),
        0x06 => {
            v.null = true;
            None
        }
        0x07 | 0x0a | 0x0c => text(datetime(r, t == 0x0a)?),
        0x0b => text(time(r)?),
        0x00 | 0x0f..=0x10 | 0xf5..=0xff => {
            let s = lenenc_str(r)?;
            if std::str::from_utf8(s).is_ok() || t == 0x00 || t == 0xf6 {
                let (s, cut) = capped(buf, s, cap);
                v.truncated = cut;
                Some(s)
            } else {
                v.hex = Some(hex(s, cap));
                v.truncated = s.len() > cap;
                None
            }
        }
        _ => return None,
    };
    Some(v)
}

/// DATE / DATETIME / TIMESTAMP: length 0, 4, 7 or 11.
fn datetime(r: &mut Reader<'_>, date_only: bool) -> Option<String> {
    let n = r.u8()?;
    let b = r.bytes(usize::from(n))?;
    let (y, mo, d) = match n {
        0 => (0, 0, 0),
        4 | 7 | 11 => (u16::from_le_bytes([b[0], b[1]]), b[2], b[3]),
        _ => return None,
    };
    let mut s = format!("{y:04}-{mo:02}-{d:02}");
    if !date_only || n > 4 {
        let (h, mi, se) = if n >= 7 { (b[4], b[5], b[6]) } else { (0, 0, 0) };
        s.push_str(&format!(" {h:02}:{mi:02}:{se:02}"));
        if n == 11 {
            s.push_str(&format!(".{:06}", u32::from_le_bytes([b[7], b[8], b[9], b[10]])));
        }
    }
    Some(s)
}

/// TIME: length 0, 8 or 12; days are folded into hours.
fn time(r: &mut Reader<'_>) -> Option<String> {
    let n = r.u8()?;
    let b = r.bytes(usize::from(n))?;
    if n == 0 {
        return Some("00:00:00".into());
    }
    if n != 8 && n != 12 {
        return None;
    }
    let neg = if b[0] == 1 { "-" } else { "" };
    let days = u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]]));
    let h = days * 24 + u64::from(b[5]);
    let mut s = format!("{neg}{h:02}:{:02}:{:02}", b[6], b[7]);
    if n == 12 {
        s.push_str(&format!(".{:06}", u32::from_le_bytes([b[8], b[9], b[10], b[11]])));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8], t: u8, unsigned: bool) -> MyValue {
        let buf = Bytes::copy_from_slice(bytes);
        decode(&buf, &mut Reader::new(&buf), t, unsigned, 8).expect("decodes")
    }

    #[test]
    fn binary_values() {
        assert_eq!(one(&[0xff], 0x01, false).value.unwrap(), "-1");
        assert_eq!(one(&[0xff], 0x01, true).value.unwrap(), "255");
        assert_eq!(one(&(-7i64).to_le_bytes(), 0x08, false).value.unwrap(), "-7");
        assert_eq!(one(&2.5f64.to_le_bytes(), 0x05, false).value.unwrap(), "2.5");
        assert_eq!(one(&[4, 0xea, 0x07, 11, 21], 0x0a, false).value.unwrap(), "2026-11-21");
        let dt = [11, 0xea, 0x07, 11, 21, 13, 5, 9, 0x40, 0xe2, 0x01, 0];
        assert_eq!(one(&dt, 0x0c, false).value.unwrap(), "2026-11-21 13:05:09.123456");
        assert_eq!(one(&[8, 1, 1, 0, 0, 0, 2, 3, 4], 0x0b, false).value.unwrap(), "-26:03:04");
        let s = one(b"\x0bORD-0000042", 0xfd, false);
        assert_eq!((s.value.unwrap(), s.truncated), (Text::from_static("ORD-0000"), true));
        let b = one(b"\x02\xff\x00", 0xfc, false);
        assert_eq!((b.value, b.hex.as_deref()), (None, Some("ff00")));
        assert!(one(b"", 0x06, false).null);
        let buf = Bytes::from_static(&[1, 2]);
        assert_eq!(decode(&buf, &mut Reader::new(&buf), 0x08, false, 8), None);
    }
}
