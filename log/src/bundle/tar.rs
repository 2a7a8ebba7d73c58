//! A minimal ustar writer and a strict reader for single-file bundles.
//!
//! The reader checks every header checksum and requires zero padding and the
//! two zero end blocks, so every byte of the archive is covered by a check.

use std::collections::BTreeMap;

const BLOCK: usize = 512;

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn checksum(h: &[u8; BLOCK]) -> u64 {
    h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u64 }).sum()
}

/// Archives `files` (name → bytes, names shorter than 100 bytes).
pub fn write(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        assert!(name.len() < 100, "bundle file names are short");
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], 0o444);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let c = checksum(&h);
        let s = format!("{c:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).ok()
}

/// Reads an archive made by [`write`]; any deviation is an error naming the offset.
pub fn read(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut off = 0;
    loop {
        if off + BLOCK > bytes.len() {
            return Err(format!("archive truncated at byte {off}"));
        }
        let h: &[u8; BLOCK] = bytes[off..off + BLOCK].try_into().expect("block");
        if h.iter().all(|b| *b == 0) {
            let rest = &bytes[off..];
            if rest.len() != 2 * BLOCK || rest.iter().any(|b| *b != 0) {
                return Err(format!("archive end at byte {off} is not exactly two zero blocks"));
            }
            return Ok(files);
        }
        let stored = parse_octal(&h[148..156]).ok_or_else(|| format!("header at byte {off}: bad checksum field"))?;
        if stored != checksum(h) || &h[148 + 6..156] != b"\0 " {
            return Err(format!("header at byte {off}: checksum mismatch"));
        }
        if h[156] != b'0' || &h[257..265] != b"ustar\x0000" {
            return Err(format!("header at byte {off}: not a regular ustar file"));
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end])
            .map_err(|_| format!("header at byte {off}: name is not UTF-8"))?
            .to_string();
        let size = parse_octal(&h[124..136]).ok_or_else(|| format!("header at byte {off}: bad size"))? as usize;
        let start = off + BLOCK;
        let end = start
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| format!("{name}: archive truncated"))?;
        let padded = start + size.div_ceil(BLOCK) * BLOCK;
        if padded > bytes.len() || bytes[end..padded].iter().any(|b| *b != 0) {
            return Err(format!("{name}: padding after the file is not zero"));
        }
        if files.insert(name.clone(), bytes[start..end].to_vec()).is_some() {
            return Err(format!("{name}: appears twice in the archive"));
        }
        off = padded;
    }
}
