//! Reading the files TLS discovery inspects without holding them in memory:
//! byte searches through one reused window, and the symbols of an ELF
//! symbol table found by name without reading its string table whole.
//!
//! Discovery meets binaries of hundreds of MB (a browser, node); pages of a
//! mapping that a search touches count in the agent's RSS (a 297 MB
//! `chromium` raised the peak by 290 MB when it was mapped and searched), and
//! a string table read as one string per symbol cost a hash map entry each.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes read per window.
pub const WINDOW: usize = 1 << 20;

/// `pread` until `buf` is full or the file ends; the bytes read.
pub fn read_full(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Calls `f(offset, window)` for consecutive windows of `[start, end)` that
/// overlap by `overlap` bytes (so a match of up to `overlap + 1` bytes is
/// never cut by a border), until `f` returns `false` or the range ends.
fn windows(
    file: &File,
    start: u64,
    end: u64,
    overlap: usize,
    mut f: impl FnMut(u64, &[u8]) -> bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; WINDOW + overlap];
    let (mut pos, mut have) = (start, 0usize);
    loop {
        let want = ((end - pos) as usize).min(buf.len());
        let n = if want > have { read_full(file, &mut buf[have..want], pos + have as u64)? } else { 0 };
        have += n;
        if !f(pos, &buf[..have]) || have < buf.len() {
            return Ok(());
        }
        let keep = overlap.min(have);
        buf.copy_within(have - keep..have, 0);
        pos += (have - keep) as u64;
        have = keep;
    }
}

/// The first offset of `needle` in the file, if any.
pub fn find(file: &File, needle: &[u8]) -> std::io::Result<Option<u64>> {
    find_where(file, needle, |_| true)
}

/// Whether any of `needles` is in the file, in one pass that stops at the
/// first window holding one.
pub fn contains_any(file: &File, needles: &[&[u8]]) -> std::io::Result<bool> {
    let end = file.metadata()?.len();
    let finders: Vec<memchr::memmem::Finder<'_>> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(1) - 1;
    let mut found = false;
    windows(file, 0, end, overlap, |_, w| {
        found = finders.iter().any(|f| f.find(w).is_some());
        !found
    })?;
    Ok(found)
}

/// Bytes after a match that [`find_where`] shows its predicate.
const AFTER: usize = 16;

/// The first offset of `needle` in the file for which `accept` holds of the
/// (up to [`AFTER`]) bytes that follow it.
pub fn find_where(file: &File, needle: &[u8], accept: impl Fn(&[u8]) -> bool) -> std::io::Result<Option<u64>> {
    let end = file.metadata()?.len();
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = None;
    windows(file, 0, end, needle.len().saturating_sub(1) + AFTER, |pos, w| {
        found = finder
            .find_iter(w)
            .find(|&at| {
                let after = &w[at + needle.len()..];
                // Too close to the window's end: the next window shows it whole.
                let whole = after.len() >= AFTER || pos + w.len() as u64 == end;
                whole && accept(&after[..after.len().min(AFTER)])
            })
            .map(|at| pos + at as u64);
        found.is_none()
    })?;
    Ok(found)
}

/// The Go toolchain version (`go1.22.3`) the file names first, if any.
pub fn go_version(file: &File) -> std::io::Result<Option<String>> {
    let digits = |b: &[u8]| b.first().is_some_and(u8::is_ascii_digit);
    let Some(at) = find_where(file, b"go1.", digits)? else { return Ok(None) };
    let mut b = [0u8; 4 + AFTER];
    let n = read_full(file, &mut b, at)?;
    let end = 4 + b[4..n].iter().position(|c| !(c.is_ascii_digit() || *c == b'.')).unwrap_or(n - 4);
    Ok(Some(String::from_utf8_lossy(&b[..end]).trim_end_matches('.').to_string()))
}

/// The first printable run of at most 64 bytes at `at` (a version string).
pub fn printable_run(file: &File, at: u64) -> Option<String> {
    let mut b = [0u8; 64];
    let n = read_full(file, &mut b, at).ok()?;
    let end = b[..n].iter().position(|&c| c == 0 || !(0x20..0x7f).contains(&c)).unwrap_or(n);
    Some(String::from_utf8_lossy(&b[..end]).trim().to_string())
}

/// Every string-table offset (relative to `start`) at which one of `names`
/// starts as a whole NUL-terminated string, mapped to its position in
/// `names`. Linkers merge a string into the tail of a longer one, so any
/// occurrence of `name\0` names it.
pub fn name_offsets(file: &File, start: u64, end: u64, names: &[&str]) -> std::io::Result<HashMap<u32, usize>> {
    let needles: Vec<Vec<u8>> = names.iter().map(|n| [n.as_bytes(), b"\0"].concat()).collect();
    let finders: Vec<memchr::memmem::Finder<'_>> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let overlap = needles.iter().map(Vec::len).max().unwrap_or(1) - 1;
    let mut out = HashMap::new();
    windows(file, start, end, overlap, |pos, w| {
        for (i, f) in finders.iter().enumerate() {
            for at in f.find_iter(w) {
                if let Ok(off) = u32::try_from(pos + at as u64 - start) {
                    out.insert(off, i);
                }
            }
        }
        true
    })?;
    Ok(out)
}

/// Longest symbol name [`names_containing`] returns whole.
pub const MAX_NAME: usize = 4096;

/// Every NUL-terminated string of the string table `[start, end)` that
/// contains one of `needles`, by its offset relative to `start` (strings
/// longer than [`MAX_NAME`] are not returned).
pub fn names_containing(file: &File, start: u64, end: u64, needles: &[&[u8]]) -> std::io::Result<HashMap<u32, String>> {
    let finders: Vec<memchr::memmem::Finder<'_>> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let mut out = HashMap::new();
    windows(file, start, end, MAX_NAME, |pos, w| {
        for f in &finders {
            for at in f.find_iter(w) {
                // The whole string must be in this window: a NUL (or the table's
                // start) before it and a NUL (or the table's end) after it.
                let from = match memchr::memrchr(0, &w[..at]) {
                    Some(nul) => nul + 1,
                    None if pos == start => 0,
                    None => continue,
                };
                let to = match memchr::memchr(0, &w[at..]) {
                    Some(nul) => at + nul,
                    None if pos + w.len() as u64 == end => w.len(),
                    None => continue,
                };
                if let Ok(off) = u32::try_from(pos + from as u64 - start) {
                    out.entry(off).or_insert_with(|| String::from_utf8_lossy(&w[from..to]).into_owned());
                }
            }
        }
        true
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(parts: &[(usize, &[u8])], len: usize) -> tempfile::NamedTempFile {
        let mut data = vec![b'x'; len];
        for (at, p) in parts {
            data[*at..*at + p.len()].copy_from_slice(p);
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f
    }

    #[test]
    fn a_needle_across_a_window_border_is_found() {
        // The first window holds WINDOW + overlap bytes (overlap: the needle's length - 1);
        // "OpenSSL 3." (10 bytes, overlap 9) at WINDOW + 5 straddles its end.
        let at = WINDOW + 5;
        let f = file_with(&[(at, b"OpenSSL 3.0.1\0"), (3 * WINDOW + 7, b"BoringSSL")], 4 * WINDOW);
        let file = f.reopen().unwrap();
        assert_eq!(find(&file, b"OpenSSL 3.").unwrap(), Some(at as u64));
        assert_eq!(printable_run(&file, at as u64).as_deref(), Some("OpenSSL 3.0.1"));
        assert_eq!(find(&file, b"BoringSSL").unwrap(), Some(3 * WINDOW as u64 + 7), "in the last window");
        assert_eq!(find(&file, b"gnutls").unwrap(), None);
        assert!(contains_any(&file, &[b"gnutls", b"OpenSSL 3."]).unwrap(), "across the border");
        assert!(!contains_any(&file, &[b"gnutls", b"crypto/tls"]).unwrap());
        let small = file_with(&[(5, b"SSL_write")], 20);
        assert_eq!(find(&small.reopen().unwrap(), b"SSL_write").unwrap(), Some(5));
        // A file exactly one buffer long.
        let exact = file_with(&[(WINDOW + 8 - 9, b"SSL_write")], WINDOW + 8);
        assert_eq!(find(&exact.reopen().unwrap(), b"SSL_write").unwrap(), Some(WINDOW as u64 - 1));
    }

    #[test]
    fn the_go_version_is_the_first_go1_followed_by_digits() {
        // "go1." (overlap 3 + 16 = 19) at WINDOW + 9: its 16 bytes of lookahead
        // run past the first window, so the next window decides.
        let f = file_with(&[(10, b"go1.gogotogzip"), (WINDOW + 9, b"go1.22.3\0"), (WINDOW + 50, b"go1.9")], 2 * WINDOW);
        assert_eq!(go_version(&f.reopen().unwrap()).unwrap().as_deref(), Some("go1.22.3"));
        let none = file_with(&[(10, b"go1.x")], 100);
        assert_eq!(go_version(&none.reopen().unwrap()).unwrap(), None);
        let at_end = file_with(&[(95, b"go1.7")], 100);
        assert_eq!(go_version(&at_end.reopen().unwrap()).unwrap().as_deref(), Some("go1.7"));
    }

    #[test]
    fn names_are_found_whole_and_as_tails_of_longer_strings() {
        // A string table: "\0", "SSL_read\0", "my_SSL_write\0" (SSL_write merged
        // into its tail), "SSL_write_ex\0" (not SSL_write). The names' overlap is
        // 12 ("SSL_write_ex\0" - 1): "my_SSL_write" straddles the first window's end.
        let table = b"\0SSL_read\0my_SSL_write\0SSL_write_ex\0";
        let start = 100u64;
        let table_at = start as usize + WINDOW + 12 - 14;
        let f = file_with(&[(table_at, table)], 2 * WINDOW + 200);
        let end = (table_at + table.len()) as u64;
        let got = name_offsets(&f.reopen().unwrap(), start, end, &["SSL_write", "SSL_read", "SSL_write_ex"]).unwrap();
        let mut got: Vec<(u32, usize)> = got.into_iter().collect();
        got.sort();
        let base = (table_at as u64 - start) as u32;
        assert_eq!(got, vec![(base + 1, 1), (base + 13, 0), (base + 23, 2)]);
    }

    #[test]
    fn names_containing_a_needle_are_returned_whole_across_window_borders() {
        // "rustls" occurs twice in one name, in a name straddling the first
        // window's end, and in the table's last string (no NUL after it).
        let table = b"\0_ZN6rustls4conn6Writer5write17hE\0other\0tail_rustls";
        let start = 10u64;
        let table_at = start as usize + WINDOW + MAX_NAME - 20;
        let mut t = table.to_vec();
        t.splice(1..1, b"rustls_".iter().copied());
        let f = file_with(&[(table_at, &t)], table_at + t.len());
        let got = names_containing(&f.reopen().unwrap(), start, (table_at + t.len()) as u64, &[b"rustls"]).unwrap();
        let mut got: Vec<(u32, String)> = got.into_iter().collect();
        got.sort();
        let base = (table_at as u64 - start) as u32;
        assert_eq!(
            got,
            vec![
                (base + 1, "rustls__ZN6rustls4conn6Writer5write17hE".to_string()),
                (base + 47, "tail_rustls".to_string())
            ]
        );
    }
}
