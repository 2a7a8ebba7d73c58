//! HPACK Huffman decoding (RFC 7541 §5.2, code in Appendix B).
//!
//! The code is canonical: it is fully determined by each symbol's code
//! length, so only the lengths are tabulated and the codes are derived.

use std::sync::OnceLock;

/// Code length in bits of symbols 0..=255 and EOS (256), RFC 7541 Appendix B.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];

const MAX_LEN: usize = 30;
const EOS: u16 = 256;

/// Why a Huffman string is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared inside the string.
    #[error("EOS symbol inside a Huffman-coded string")]
    Eos,
    /// Padding longer than 7 bits or not all ones.
    #[error("invalid Huffman padding")]
    Padding,
    /// Bits that match no code.
    #[error("invalid Huffman code")]
    Code,
}

struct Table {
    /// First canonical code of each length.
    first: [u32; MAX_LEN + 1],
    /// Number of codes of each length.
    count: [u32; MAX_LEN + 1],
    /// Index into `symbols` of the first code of each length.
    offset: [u32; MAX_LEN + 1],
    /// Symbols ordered by (length, symbol).
    symbols: Vec<u16>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut count = [0u32; MAX_LEN + 1];
        for &l in &CODE_LENGTHS {
            count[usize::from(l)] += 1;
        }
        let mut first = [0u32; MAX_LEN + 1];
        let mut offset = [0u32; MAX_LEN + 1];
        let mut code = 0u32;
        let mut index = 0u32;
        for len in 1..=MAX_LEN {
            code = (code + count[len - 1]) << 1;
            first[len] = code;
            offset[len] = index;
            index += count[len];
        }
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| (CODE_LENGTHS[usize::from(s)], s));
        Table { first, count, offset, symbols }
    })
}

/// The canonical code of `symbol` (for tests and encoders): (code, bits).
pub fn code_of(symbol: u16) -> (u32, u8) {
    let t = table();
    let len = CODE_LENGTHS[usize::from(symbol)];
    let pos = t.symbols.iter().position(|&s| s == symbol).unwrap_or(0) as u32;
    (t.first[usize::from(len)] + pos - t.offset[usize::from(len)], len)
}

/// Decode a Huffman-coded string, appending to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = table();
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_LEN {
                return Err(HuffmanError::Code);
            }
            let rel = code.wrapping_sub(t.first[len]);
            if code >= t.first[len] && rel < t.count[len] {
                let sym = t.symbols[(t.offset[len] + rel) as usize];
                if sym == EOS {
                    return Err(HuffmanError::Eos);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(hex: &str) -> Result<String, HuffmanError> {
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let mut out = Vec::new();
        decode(&bytes, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn canonical_codes_match_appendix_b() {
        assert_eq!(code_of(u16::from(b'0')), (0x0, 5));
        assert_eq!(code_of(u16::from(b'a')), (0x3, 5));
        assert_eq!(code_of(u16::from(b' ')), (0x14, 6));
        assert_eq!(code_of(u16::from(b':')), (0x5c, 7));
        assert_eq!(code_of(u16::from(b'&')), (0xf8, 8));
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(EOS), (0x3fffffff, 30));
    }

    /// RFC 7541 Appendix C.4 and C.6 strings.
    #[test]
    fn rfc_examples() {
        assert_eq!(dec("f1e3c2e5f23a6ba0ab90f4ff").unwrap(), "www.example.com");
        assert_eq!(dec("a8eb10649cbf").unwrap(), "no-cache");
        assert_eq!(dec("25a849e95ba97d7f").unwrap(), "custom-key");
        assert_eq!(dec("25a849e95bb8e8b4bf").unwrap(), "custom-value");
        assert_eq!(dec("6402").unwrap(), "302");
        assert_eq!(dec("aec3771a4b").unwrap(), "private");
        assert_eq!(dec("9d29ad171863c78f0b97c8e9ae82ae43d3").unwrap(), "https://www.example.com");
    }

    #[test]
    fn invalid_padding_and_eos() {
        // 8 bits of padding.
        assert_eq!(dec("f1e3c2e5f23a6ba0ab90f4ffff"), Err(HuffmanError::Padding));
        // Padding with a zero bit: '0' is 00000, then 000 padding.
        assert_eq!(dec("00"), Err(HuffmanError::Padding));
        // EOS (30 ones) followed by two more ones.
        assert_eq!(dec("ffffffff"), Err(HuffmanError::Eos));
        assert_eq!(dec("").unwrap(), "");
    }
}
