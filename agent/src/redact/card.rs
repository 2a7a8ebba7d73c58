//! Payment card numbers: 13 to 19 digits, Luhn-valid, first digit 2 to 6
//! (the card networks' ranges: Mastercard 2/5, Amex/Diners/JCB 3, Visa 4,
//! Discover/UnionPay/Maestro 6), not touching another digit or letter,
//! written plain or in the printed groupings with one space or one `-`
//! (the same throughout): groups of four with a last group of 1 to 4,
//! 4-6-5 (Amex) and 4-6-4 (Diners). Each is replaced by a
//! keyed token of the same shape: HMAC-SHA256 under the agent's key over the
//! digits alone gives new digits in the same places (separators kept), with
//! the last digit chosen so the token fails the Luhn check (a token is never
//! taken for a card number, and masking twice changes nothing). Equal numbers
//! give equal tokens, however they were separated, so they still correlate.
use std::sync::Arc;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::mask::{Fill, Mask};

const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;

/// Whether `digits` (ASCII digits) pass the Luhn check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The token digits for card `digits` under `key`: same count, Luhn-invalid.
pub fn token_digits(key: &[u8], digits: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"wiretrail card v1\0");
    mac.update(digits);
    let tag = mac.finalize().into_bytes();
    let mut out: Vec<u8> = (0..digits.len()).map(|i| b'0' + tag[i % tag.len()] % 10).collect();
    let last = out.len() - 1;
    while luhn_valid(&out) {
        out[last] = b'0' + (out[last] - b'0' + 1) % 10;
    }
    out
}

/// Whether `text` (digits and separators) is grouped as cards are printed.
fn card_grouping(text: &[u8]) -> bool {
    let Some(sep) = text.iter().copied().find(|c| !c.is_ascii_digit()) else { return true };
    let groups: Vec<usize> = text.split(|&c| c == sep).map(<[u8]>::len).collect();
    if groups.contains(&0) || text.split(|&c| c == sep).any(|g| !g.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    let (last, init) = groups.split_last().expect("at least one group");
    matches!(&groups[..], [4, 6, 5] | [4, 6, 4]) || (init.iter().all(|&g| g == 4) && (1..=4).contains(last))
}

/// The index of the first ASCII digit at or after `i` (`buf.len()` if
/// none), eight bytes at a time: most payload text holds no digit, and a
/// byte-by-byte test was most of this rule's cost (a profile of the agent
/// under load put it at 5 % of the agent's CPU).
fn next_digit(buf: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    while let Some(word) = buf.get(i..i + 8) {
        // A byte is a digit when `b ^ b'0'` is below 10. The borrow trick
        // flags the lowest such byte exactly (only flagged bytes borrow,
        // and borrows only move toward higher bytes, so bytes above the
        // first hit may be flagged falsely).
        let y = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ (ONES * u64::from(b'0'));
        let hit = y.wrapping_sub(ONES * 10) & !y & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < buf.len() && !buf[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Candidate card numbers in `buf` and their tokens.
pub fn find(buf: &[u8], key: &[u8], rule: &Arc<str>, out: &mut Vec<Mask>) {
    scan(buf, key, rule, out, next_digit);
}

/// [`find`], with `next(buf, i)` finding the first digit at or after `i`.
fn scan(buf: &[u8], key: &[u8], rule: &Arc<str>, out: &mut Vec<Mask>, next: impl Fn(&[u8], usize) -> usize) {
    let alnum = |i: usize| buf.get(i).is_some_and(|c| c.is_ascii_alphanumeric());
    let mut i = 0;
    while i < buf.len() {
        i = next(buf, i);
        if i == buf.len() {
            break;
        }
        if i > 0 && alnum(i - 1) {
            i += 1;
            continue;
        }
        // A run of digits with single separators between them (on the
        // stack: payloads are full of short digit runs).
        let start = i;
        let (mut digits, mut n) = ([0u8; MAX_DIGITS + 1], 0);
        let mut end = i;
        let mut j = i;
        while j < buf.len() && n <= MAX_DIGITS {
            if buf[j].is_ascii_digit() {
                digits[n] = buf[j];
                n += 1;
                j += 1;
                end = j;
            } else if (buf[j] == b' ' || buf[j] == b'-') && buf.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
            } else {
                break;
            }
        }
        let digits = &digits[..n];
        let ok = (MIN_DIGITS..=MAX_DIGITS).contains(&n)
            && card_grouping(&buf[start..end])
            && !alnum(end)
            && (b'2'..=b'6').contains(&digits[0])
            && luhn_valid(digits);
        if ok {
            let token = token_digits(key, digits);
            let mut fill = buf[start..end].to_vec();
            let mut t = token.iter();
            for b in fill.iter_mut().filter(|b| b.is_ascii_digit()) {
                *b = *t.next().expect("as many token digits as digits");
            }
            out.push(Mask { start, end, rule: rule.clone(), fill: Fill::Bytes(fill) });
        }
        // Continue after this run's digits (a run never restarts mid-number).
        i = end.max(start + 1);
        while i < buf.len() && buf[i].is_ascii_digit() {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn next_digit_finds_the_first_digit_among_any_bytes() {
        // Every byte value at each offset of a word and past it, among
        // filler bytes at the digit range's edges and the high bit (so the
        // borrows from the bytes below are exercised), from every start.
        for b in 0..=255u8 {
            for filler in [0u8, b'/', b':', b'9', 0x7f, 0x80, 0xff] {
                for at in 0..20 {
                    let mut buf = vec![filler; 24];
                    buf[at] = b;
                    for from in 0..=at {
                        let want = next_digit_bytewise(&buf, from);
                        assert_eq!(next_digit(&buf, from), want, "byte {b:#x} at {at} among {filler:#x}, from {from}");
                    }
                }
            }
        }
    }

    /// The digit search as it was before `next_digit`: one byte at a time.
    fn next_digit_bytewise(buf: &[u8], i: usize) -> usize {
        buf[i..].iter().position(u8::is_ascii_digit).map_or(buf.len(), |p| p + i)
    }

    /// Text made of card numbers (valid and not), digit runs, separators,
    /// letters and other bytes.
    fn texty() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"4111111111111111".to_vec()),
            Just(b"4111 1111 1111 1111".to_vec()),
            Just(b"3782-822463-10005".to_vec()),
            Just(b"5555555555554444".to_vec()),
            proptest::collection::vec(b'0'..=b'9', 1..24),
            proptest::collection::vec(prop_oneof![Just(b' '), Just(b'-'), Just(b'x'), Just(b'/'), Just(b':')], 1..3),
            proptest::collection::vec(any::<u8>(), 1..12),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn word_scan_finds_what_the_bytewise_scan_found(buf in texty()) {
            let rule: Arc<str> = Arc::from("card_number");
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            find(&buf, b"key", &rule, &mut fast);
            scan(&buf, b"key", &rule, &mut slow, next_digit_bytewise);
            prop_assert_eq!(fast, slow);
        }
    }
}
