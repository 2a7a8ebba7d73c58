//! PostgreSQL parameter values in binary format, decoded by type OID for the
//! common types (bool, int2/4/8, oid, float4/8, numeric, text-like types,
//! json/jsonb, bytea, uuid, date, time, timestamp, timestamptz) into their
//! text form as PostgreSQL itself would print it; other types are shown in
//! hex by the caller.

/// Name of a built-in type OID.
pub fn type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        705 => "unknown",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;

fn date(days: i64) -> String {
    let (y, m, d) = civil(days + PG_EPOCH_DAYS);
    if y <= 0 { format!("{:04}-{m:02}-{d:02} BC", 1 - y) } else { format!("{y:04}-{m:02}-{d:02}") }
}

fn time_of_day(us: i64) -> String {
    let (s, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let mut t = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    if frac != 0 {
        let f = format!(".{frac:06}");
        t.push_str(f.trim_end_matches('0'));
    }
    t
}

fn timestamp(us: i64) -> String {
    match us {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let days = us.div_euclid(86_400_000_000);
            format!("{} {}", date(days), time_of_day(us.rem_euclid(86_400_000_000)))
        }
    }
}

/// NUMERIC binary form: ndigits, weight, sign, dscale, base-10000 digits.
fn numeric(b: &[u8]) -> Option<String> {
    let h = |i: usize| b.get(i..i + 2).map(|v| u16::from_be_bytes([v[0], v[1]]));
    let (n, weight, sign, dscale) = (h(0)?, h(2)? as i16, h(4)?, h(6)?);
    match sign {
        0xc000 => return Some("NaN".into()),
        0xd000 => return Some("Infinity".into()),
        0xf000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    if n > 1000 || dscale > 1000 {
        return None;
    }
    let digits: Vec<u16> = (0..usize::from(n)).map(|i| h(8 + 2 * i)).collect::<Option<_>>()?;
    if digits.iter().any(|d| *d > 9999) || b.len() != 8 + 2 * usize::from(n) {
        return None;
    }
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    // Integer part: digit groups with weight >= 0.
    if weight < 0 {
        s.push('0');
    } else {
        for w in 0..=i32::from(weight) {
            let d = digits.get(w as usize).copied().unwrap_or(0);
            if w == 0 {
                s.push_str(&d.to_string());
            } else {
                s.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut w = i32::from(weight) + 1;
        while frac.len() < usize::from(dscale) {
            let d = if w < 0 { 0 } else { digits.get(w as usize).copied().unwrap_or(0) };
            frac.push_str(&format!("{d:04}"));
            w += 1;
        }
        frac.truncate(usize::from(dscale));
        s.push_str(&frac);
    }
    Some(s)
}

/// The text form of a binary value of type `oid`, when the type is one of
/// the common ones and the bytes are well-formed.
pub fn decode_binary(oid: u32, b: &[u8]) -> Option<String> {
    Some(match oid {
        16 => match b {
            [0] => "false".into(),
            [1] => "true".into(),
            _ => return None,
        },
        18 => char::from(*b.first()?).to_string(),
        21 => i16::from_be_bytes(be(b)?).to_string(),
        23 => i32::from_be_bytes(be(b)?).to_string(),
        26 => u32::from_be_bytes(be(b)?).to_string(),
        20 => i64::from_be_bytes(be(b)?).to_string(),
        700 => f32::from_be_bytes(be(b)?).to_string(),
        701 => f64::from_be_bytes(be(b)?).to_string(),
        1700 => numeric(b)?,
        19 | 25 | 114 | 705 | 1042 | 1043 => std::str::from_utf8(b).ok()?.to_string(),
        3802 => match b.split_first() {
            Some((1, json)) => std::str::from_utf8(json).ok()?.to_string(),
            _ => return None,
        },
        17 => format!("\\x{}", crate::proto::wire::hex(b, b.len())),
        2950 => {
            let h = crate::proto::wire::hex(be::<16>(b)?.as_slice(), 16);
            format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }
        1082 => match i32::from_be_bytes(be(b)?) {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            d => date(i64::from(d)),
        },
        1083 => time_of_day(i64::from_be_bytes(be(b)?)),
        1114 => timestamp(i64::from_be_bytes(be(b)?)),
        1184 => {
            let us = i64::from_be_bytes(be(b)?);
            let t = timestamp(us);
            if us == i64::MAX || us == i64::MIN { t } else { t + "+00" }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_by_oid() {
        assert_eq!(decode_binary(23, &42i32.to_be_bytes()).as_deref(), Some("42"));
        assert_eq!(decode_binary(20, &(-9i64).to_be_bytes()).as_deref(), Some("-9"));
        assert_eq!(decode_binary(21, &7i16.to_be_bytes()).as_deref(), Some("7"));
        assert_eq!(decode_binary(701, &2.5f64.to_be_bytes()).as_deref(), Some("2.5"));
        assert_eq!(decode_binary(16, &[1]).as_deref(), Some("true"));
        assert_eq!(decode_binary(17, &[0xde, 0xad]).as_deref(), Some("\\xdead"));
        let uuid = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(decode_binary(2950, &uuid).as_deref(), Some("12345678-9abc-def0-0001-020304050607"));
        // 2026-11-21 is 9821 days after 2000-01-01.
        assert_eq!(decode_binary(1082, &9821i32.to_be_bytes()).as_deref(), Some("2026-11-21"));
        assert_eq!(decode_binary(1082, &(-1i32).to_be_bytes()).as_deref(), Some("1999-12-31"));
        let us = 9821i64 * 86_400_000_000 + ((13 * 3600 + 5 * 60 + 9) * 1_000_000 + 123_400);
        assert_eq!(decode_binary(1114, &us.to_be_bytes()).as_deref(), Some("2026-11-21 13:05:09.1234"));
        assert_eq!(decode_binary(1184, &us.to_be_bytes()).as_deref(), Some("2026-11-21 13:05:09.1234+00"));
        assert_eq!(decode_binary(1184, &i64::MAX.to_be_bytes()).as_deref(), Some("infinity"));
        assert_eq!(decode_binary(3802, b"\x01{\"a\":1}").as_deref(), Some("{\"a\":1}"));
        assert_eq!(decode_binary(23, &[1, 2]), None);
        assert_eq!(decode_binary(600, &[0; 16]), None);
    }

    #[test]
    fn numerics() {
        let num = |weight: i16, sign: u16, dscale: u16, digits: &[u16]| {
            let mut b = (digits.len() as u16).to_be_bytes().to_vec();
            for v in [weight as u16, sign, dscale].into_iter().chain(digits.iter().copied()) {
                b.extend_from_slice(&v.to_be_bytes());
            }
            decode_binary(1700, &b)
        };
        assert_eq!(num(0, 0, 2, &[187, 2500]).as_deref(), Some("187.25"));
        assert_eq!(num(1, 0x4000, 0, &[12, 3456]).as_deref(), Some("-123456"));
        assert_eq!(num(-1, 0, 4, &[5]).as_deref(), Some("0.0005"));
        assert_eq!(num(-2, 0, 8, &[12]).as_deref(), Some("0.00000012"));
        assert_eq!(num(2, 0, 0, &[1]).as_deref(), Some("100000000"));
        assert_eq!(num(0, 0, 0, &[]).as_deref(), Some("0"));
        assert_eq!(num(0, 0xc000, 0, &[]).as_deref(), Some("NaN"));
        assert_eq!(num(0, 0, 0, &[10_000]), None);
    }
}
