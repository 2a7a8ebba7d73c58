//! rustls in a Rust program: its plaintext calls, found by symbol.
//!
//! rustls is linked into each Rust program (there is no shared library to
//! hook once), and Rust has no stable ABI, so only functions whose arguments
//! the probes can rely on are used (as Coroot does): rustls's
//! `<Writer as std::io::Write>::write` (and `write_vectored` when linked) and
//! `<Reader as std::io::Read>::read` (see [`RustlsFns::bufread`] for reads
//! through `BufRead`). They are not generic, so they are
//! compiled once, in the rustls crate, and called (not inlined) by the generic
//! code of other crates (`rustls::Stream`, tokio-rustls, hyper-rustls); they
//! take `(self, ptr, len)` in the C registers and return `io::Result<usize>`
//! in RAX (0 = Ok) and RDX. How the plaintext finds its socket is in
//! `ebpf/src/tls.rs`.
//!
//! Names are matched in rustc's default (legacy) mangling, e.g.
//! `_ZN67_$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5write17h…E`
//! (rustls 0.23; 0.21 and 0.22 have `rustls..conn..Writer`). A program that
//! carries rustls but none of these symbols (stripped, or built with the v0
//! mangling) is reported as unsupported, never skipped in silence.
use std::collections::HashMap;

use object::read::elf::{SectionHeader, Sym};

use super::{elf::Elf64, scan};

/// What a rustls `Reader`/`Writer` impl name contains after its path.
const WRITE: &str = "Writer$u20$as$u20$std..io..Write$GT$5write17h";
const WRITE_VECTORED: &str = "Writer$u20$as$u20$std..io..Write$GT$14write_vectored17h";
const READ: &str = "Reader$u20$as$u20$std..io..Read$GT$4read17h";
/// `<Reader as BufRead>::consume`: its presence says the program reads through `BufRead`.
const CONSUME: &str = "Reader$u20$as$u20$std..io..BufRead$GT$7consume17h";

/// File offsets of rustls's plaintext functions in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustlsFns {
    pub write: u64,
    pub write_vectored: Option<u64>,
    /// `Reader::read`; absent when the program reads only through `BufRead`
    /// (`fill_buf`/`consume`, as tokio-rustls 0.26 does), which leaves no
    /// function whose arguments show the bytes: then only writes are captured.
    pub read: Option<u64>,
    /// The program reads through `BufRead` (its `consume` is linked): those
    /// reads are not captured, and that is reported ([`BUFREAD_NOT_CAPTURED`]).
    pub bufread: bool,
}

/// The notice when [`RustlsFns::bufread`] is set.
pub const BUFREAD_NOT_CAPTURED: &str = "program reads rustls plaintext through BufRead (fill_buf/consume, as tokio-rustls 0.26 does): what it receives that way is not captured (what it sends is)";

/// Which of the three functions `name` is, if it is rustls's own
/// (`_ZN<len>_$LT$rustls..` followed by `conn..[connection..]Writer…`).
fn which(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("_ZN")?.trim_start_matches(|c: char| c.is_ascii_digit());
    let path = rest.strip_prefix("_$LT$rustls..conn..")?;
    let path = path.strip_prefix("connection..").unwrap_or(path);
    [WRITE, WRITE_VECTORED, READ, CONSUME].iter().position(|f| path.starts_with(f))
}

/// rustls's plaintext functions in `elf`, if it defines `Writer::write`.
pub fn find(elf: &Elf64<'_>, file: &std::fs::File) -> std::io::Result<Option<RustlsFns>> {
    let endian = elf.endian();
    let mut found: [Option<u64>; 4] = [None; 4];
    for table in [elf.elf_symbol_table(), elf.elf_dynamic_symbol_table()] {
        if table.is_empty() {
            continue;
        }
        let Ok(strings) = elf.elf_section_table().section(table.string_section()) else { continue };
        let Some((start, size)) = strings.file_range(endian) else { continue };
        let names: HashMap<u32, usize> = scan::names_containing(file, start, start + size, &[b"$LT$rustls..conn.."])?
            .into_iter()
            .filter_map(|(off, name)| Some((off, which(&name)?)))
            .collect();
        if names.is_empty() {
            continue;
        }
        for sym in table.symbols().iter() {
            let Some(&i) = names.get(&sym.st_name(endian)) else { continue };
            let shndx = sym.st_shndx(endian);
            if sym.st_type() != object::elf::STT_FUNC
                || shndx == object::elf::SHN_UNDEF
                || shndx >= object::elf::SHN_LORESERVE
            {
                continue;
            }
            let Ok(section) = elf.elf_section_table().section(object::SectionIndex(shndx as usize)) else { continue };
            let (addr, base) = (sym.st_value(endian), section.sh_addr(endian));
            let Some((sec_off, _)) = section.file_range(endian) else { continue };
            if let Some(delta) = addr.checked_sub(base) {
                found[i].get_or_insert(sec_off + delta);
            }
        }
    }
    Ok(match found {
        [Some(write), write_vectored, read, consume] => {
            Some(RustlsFns { write, write_vectored, read, bufread: consume.is_some() })
        }
        _ => None,
    })
}

/// The rustls version in the file's source paths (`rustls-0.23.46/src/…`), if any.
pub fn version(file: &std::fs::File) -> std::io::Result<Option<String>> {
    let digit = |b: &[u8]| b.first().is_some_and(u8::is_ascii_digit);
    let Some(at) = scan::find_where(file, b"/rustls-", digit)? else { return Ok(None) };
    let run = scan::printable_run(file, at + 8).unwrap_or_default();
    let v: String = run.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    Ok((!v.is_empty()).then(|| v.trim_end_matches('.').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rustls_own_reader_and_writer_impls_match() {
        let w = "_ZN67_$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5write17he47cf78947ffb01cE";
        let wv = "_ZN76_$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$14write_vectored17h0123456789abcdefE";
        let r = "_ZN66_$LT$rustls..conn..connection..Reader$u20$as$u20$std..io..Read$GT$4read17h34f08ec6cb7f09d9E";
        let old = "_ZN55_$LT$rustls..conn..Reader$u20$as$u20$std..io..Read$GT$4read17h34f08ec6cb7f09d9E";
        assert_eq!((which(w), which(wv), which(r), which(old)), (Some(0), Some(1), Some(2), Some(2)));
        let consume =
            "_ZN69_$LT$rustls..conn..connection..Reader$u20$as$u20$std..io..BufRead$GT$7consume17h09a58693ca1fc640E";
        assert_eq!(which(consume), Some(3));
        for other in [
            "_ZN67_$LT$rustls..conn..connection..Writer$u20$as$u20$std..io..Write$GT$5flush17hf65ebb0c53cc11e3E",
            "_ZN6rustls4conn10connection6Reader4read17h0000000000000000E",
            "_ZN70_$LT$my_rustls..conn..connection..Reader$u20$as$u20$std..io..Read$GT$4read17h0000000000000000E",
            "_ZN60_$LT$ring..io..writer..Writer$u20$as$u20$std..io..Write$GT$5write17h0000000000000000E",
        ] {
            assert_eq!(which(other), None, "{other}");
        }
    }
}
