//! What a binary or shared library offers for TLS capture: OpenSSL/BoringSSL or
//! GnuTLS entry points, Go crypto/tls functions (with the offsets of their RET
//! instructions), rustls's plaintext functions ([`super::rustls`]), or a TLS
//! implementation we cannot hook (reported, not ignored).
use std::path::Path;

use std::collections::HashMap;

use object::{Object, ObjectSection};

use super::scan;

/// A TLS implementation found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsKind {
    /// OpenSSL or BoringSSL, shared or linked in; `ex` if the `_ex` calls exist.
    OpenSsl {
        ex: bool,
    },
    GnuTls,
    /// Go crypto/tls: file offsets of `(*Conn).Write`/`Read` and of their RETs.
    Go {
        write: GoFunc,
        read: GoFunc,
    },
    /// rustls linked into a Rust program.
    Rustls(super::rustls::RustlsFns),
}

/// One Go function: where it starts and where it returns (virtual addresses
/// converted to file offsets, as uprobes want).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    pub entry: u64,
    pub rets: Vec<u64>,
}

/// Result of inspecting one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    Tls {
        kind: TlsKind,
        library: String,
        version: String,
    },
    /// Contains a TLS implementation whose functions cannot be located.
    Unsupported {
        library: String,
        reason: String,
    },
    /// No TLS implementation.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file")]
    NotElf { path: String },
    #[error("parsing ELF {path}")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
}

const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
const GO_READ: &str = "crypto/tls.(*Conn).Read";

/// Symbols whose presence decides what a file offers (the Go ones give its functions).
const INTERESTING: [&str; 8] = [
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    "gnutls_record_send",
    "gnutls_record_recv",
    GO_WRITE,
    GO_READ,
];

pub(super) type Elf64<'d> =
    object::read::elf::ElfFile64<'d, object::Endianness, &'d object::ReadCache<&'d std::fs::File>>;

/// A file being inspected: searched through [`scan`]'s window and its ELF
/// structures read through [`object::ReadCache`] (headers, section headers,
/// the symbol arrays and the code of the Go functions looked at), never
/// mapped or read whole.
struct Source {
    file: std::fs::File,
    path: String,
}

impl Source {
    fn has(&self, needle: &[u8]) -> Result<bool, ElfError> {
        Ok(self.find(needle)?.is_some())
    }

    fn find(&self, needle: &[u8]) -> Result<Option<u64>, ElfError> {
        scan::find(&self.file, needle).map_err(|source| ElfError::Open { path: self.path.clone(), source })
    }

    /// The printable run at the first occurrence of `needle` (e.g. a version string).
    fn version(&self, needle: &[u8]) -> Result<Option<String>, ElfError> {
        Ok(self.find(needle)?.and_then(|at| scan::printable_run(&self.file, at)))
    }
}

/// The defined symbols among [`INTERESTING`] in the file's symbol tables,
/// by name: (address, size, section index), defined as object's
/// `is_definition` defines them. Each table's names are matched
/// by string-table offset ([`scan::name_offsets`]), so the 100k+ names of a
/// large binary are never read one by one.
fn interesting_symbols(
    elf: &Elf64<'_>,
    file: &std::fs::File,
) -> std::io::Result<HashMap<&'static str, (u64, u64, usize)>> {
    use object::read::elf::{SectionHeader, Sym};
    let endian = elf.endian();
    let mut out = HashMap::new();
    for table in [elf.elf_dynamic_symbol_table(), elf.elf_symbol_table()] {
        if table.is_empty() {
            continue;
        }
        let Ok(strings) = elf.elf_section_table().section(table.string_section()) else { continue };
        let Some((start, size)) = strings.file_range(endian) else { continue };
        let offsets = scan::name_offsets(file, start, start + size, &INTERESTING)?;
        if offsets.is_empty() {
            continue;
        }
        for (index, sym) in table.symbols().iter().enumerate() {
            let Some(&i) = offsets.get(&sym.st_name(endian)) else { continue };
            // As object's `is_definition` (the names looked for never start with `$`).
            let section = match sym.st_shndx(endian) {
                object::elf::SHN_UNDEF => continue,
                object::elf::SHN_XINDEX => match table.shndx(endian, object::SymbolIndex(index)) {
                    Some(s) => s as usize,
                    None => continue,
                },
                s if s >= object::elf::SHN_LORESERVE => continue,
                s => s as usize,
            };
            if matches!(sym.st_type(), object::elf::STT_FUNC | object::elf::STT_OBJECT | object::elf::STT_NOTYPE) {
                out.entry(INTERESTING[i]).or_insert((sym.st_value(endian), sym.st_size(endian), section));
            }
        }
    }
    Ok(out)
}

/// Inspects an ELF file.
pub fn inspect(path: &Path) -> Result<Inspection, ElfError> {
    let shown = path.display().to_string();
    let open = |source| ElfError::Open { path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(open)?;
    let mut magic = [0u8; 5];
    if scan::read_full(&file, &mut magic, 0).map_err(open)? < 5 || &magic[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf { path: shown });
    }
    let src = Source { file, path: shown.clone() };
    // Most files carry no TLS at all and are not worth parsing their symbol tables.
    let worth = [&b"SSL_write"[..], b"gnutls_record_send", b"crypto/tls", b"OpenSSL", b"rustls"];
    if !scan::contains_any(&src.file, &worth).map_err(open)? {
        return Ok(Inspection::None);
    }
    if magic[4] != object::elf::ELFCLASS64 {
        return Ok(Inspection::Unsupported {
            library: "tls (32-bit)".into(),
            reason: "32-bit ELF file with TLS code: only 64-bit processes are captured".into(),
        });
    }
    let cache = object::ReadCache::new(&src.file);
    let elf = Elf64::parse(&cache).map_err(|source| ElfError::Parse { path: shown.clone(), source })?;
    let syms = interesting_symbols(&elf, &src.file).map_err(open)?;
    let has = |name: &str| syms.contains_key(name);
    if has("SSL_write") && has("SSL_read") {
        let mut version = src.version(b"OpenSSL 3.")?;
        if version.is_none() {
            version = src.version(b"OpenSSL 1.")?;
        }
        if version.is_none() && src.has(b"BoringSSL")? {
            version = Some("BoringSSL".into());
        }
        let version = version.or_else(|| libcrypto_version(path)).unwrap_or_else(|| "unknown".into());
        let library = if version.starts_with("BoringSSL") { "boringssl" } else { "openssl" };
        return Ok(Inspection::Tls {
            kind: TlsKind::OpenSsl { ex: has("SSL_write_ex") && has("SSL_read_ex") },
            library: library.into(),
            version,
        });
    }
    if has("gnutls_record_send") && has("gnutls_record_recv") {
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".so.").nth(1))
            .map(|v| format!("libgnutls.so.{v}"))
            .unwrap_or_else(|| "unknown".into());
        return Ok(Inspection::Tls { kind: TlsKind::GnuTls, library: "gnutls".into(), version });
    }
    if let Some(fns) = super::rustls::find(&elf, &src.file).map_err(open)? {
        let version = super::rustls::version(&src.file).map_err(open)?.unwrap_or_else(|| "unknown".into());
        return Ok(Inspection::Tls { kind: TlsKind::Rustls(fns), library: "rustls".into(), version });
    }
    let is_go = elf.section_by_name(".go.buildinfo").is_some() || elf.section_by_name(".gopclntab").is_some();
    if is_go {
        let version = scan::go_version(&src.file).map_err(open)?.unwrap_or_else(|| "unknown".into());
        let write = syms.get(GO_WRITE).and_then(|s| go_func(&elf, &cache, *s));
        let read = syms.get(GO_READ).and_then(|s| go_func(&elf, &cache, *s));
        return Ok(match (write, read) {
            (Some(write), Some(read)) => Inspection::Tls { kind: TlsKind::Go { write, read }, library: "go-crypto-tls".into(), version },
            _ if src.has(b"crypto/tls")? => Inspection::Unsupported {
                library: format!("go-crypto-tls {version}"),
                reason: "Go binary uses crypto/tls but has no symbol table (stripped with -ldflags=-s); its TLS plaintext cannot be captured".into(),
            },
            _ => Inspection::None,
        });
    }
    // rustls source paths (its panic locations) but not its plaintext functions.
    if let Some(version) = super::rustls::version(&src.file).map_err(open)? {
        return Ok(Inspection::Unsupported {
            library: format!("rustls {version}"),
            reason: "program contains rustls but not its Writer::write symbol (stripped, or not the legacy symbol mangling); its TLS plaintext cannot be captured".into(),
        });
    }
    // Statically linked OpenSSL without exported symbols.
    if !has("SSL_write")
        && (src.has(b"SSL_write")? || src.has(b"OpenSSL 3.")?)
        && elf.elf_symbol_table().len() <= 1
        && src.has(b"ssl3_write_bytes")?
    {
        return Ok(Inspection::Unsupported {
            library: "openssl (static)".into(),
            reason: "binary contains OpenSSL but exports no SSL_write/SSL_read symbols (stripped); its TLS plaintext cannot be captured".into(),
        });
    }
    Ok(Inspection::None)
}

/// A shared libssl keeps its version string in the libcrypto beside it.
fn libcrypto_version(libssl: &Path) -> Option<String> {
    let name = libssl.file_name()?.to_str()?;
    let soversion = name.strip_prefix("libssl.so.")?;
    let crypto = std::fs::File::open(libssl.with_file_name(format!("libcrypto.so.{soversion}"))).ok()?;
    let at = match scan::find(&crypto, b"OpenSSL 3.").ok()? {
        Some(at) => at,
        None => scan::find(&crypto, b"OpenSSL 1.").ok()??,
    };
    scan::printable_run(&crypto, at)
}

/// Entry and RET file offsets of a Go function, from its symbol (address, size, section).
fn go_func<'d>(
    elf: &Elf64<'d>,
    data: &'d object::ReadCache<&'d std::fs::File>,
    sym: (u64, u64, usize),
) -> Option<GoFunc> {
    use object::ReadRef;
    let (addr, size, shndx) = sym;
    let section = elf.section_by_index(object::SectionIndex(shndx)).ok()?;
    let (sec_off, _) = section.file_range()?;
    let file_off = addr.checked_sub(section.address())? + sec_off;
    let code = data.read_bytes_at(file_off, size).ok()?;
    let mut dec = iced_x86::Decoder::with_ip(64, code, addr, iced_x86::DecoderOptions::NONE);
    let mut rets = Vec::new();
    let mut ins = iced_x86::Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.mnemonic() == iced_x86::Mnemonic::Ret {
            rets.push(ins.ip() - section.address() + sec_off);
        }
    }
    (!rets.is_empty()).then_some(GoFunc { entry: file_off, rets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_libssl_is_openssl_with_ex() {
        let p = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(p.exists(), "libssl3 is a test prerequisite (cargo xtask setup)");
        match inspect(p).unwrap() {
            Inspection::Tls { kind: TlsKind::OpenSsl { ex: true }, library, version } => {
                assert_eq!(library, "openssl");
                assert!(version.starts_with("OpenSSL 3."), "{version}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn system_gnutls_is_found() {
        let p = Path::new("/usr/lib/x86_64-linux-gnu/libgnutls.so.30");
        assert!(p.exists(), "libgnutls30 is a test prerequisite");
        assert!(matches!(inspect(p).unwrap(), Inspection::Tls { kind: TlsKind::GnuTls, .. }));
    }

    #[test]
    fn binaries_without_tls_are_none() {
        assert_eq!(inspect(Path::new("/bin/ls")).unwrap(), Inspection::None);
    }

    #[test]
    fn non_elf_is_a_clear_error() {
        let e = inspect(Path::new("/etc/hostname")).unwrap_err().to_string();
        assert!(e.contains("/etc/hostname"), "{e}");
    }
}
