//! What a binary or shared library offers for TLS capture: OpenSSL/BoringSSL or
//! GnuTLS entry points, Go crypto/tls functions (with the offsets of their RET
//! instructions), or a TLS implementation we cannot hook (reported, not ignored).
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

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

/// First printable run after `needle` (e.g. a version string).
fn find_version(data: &[u8], needle: &[u8]) -> Option<String> {
    let at = memfind(data, needle)?;
    let rest = &data[at..];
    let end = rest.iter().take(64).position(|&b| b == 0 || !(0x20..0x7f).contains(&b)).unwrap_or(rest.len().min(64));
    Some(String::from_utf8_lossy(&rest[..end]).trim().to_string())
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Symbols whose presence decides what a file offers.
const INTERESTING: &[&str] =
    &["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex", "gnutls_record_send", "gnutls_record_recv"];

/// Inspects an ELF file.
pub fn inspect(path: &Path) -> Result<Inspection, ElfError> {
    let file =
        std::fs::File::open(path).map_err(|source| ElfError::Open { path: path.display().to_string(), source })?;
    // SAFETY: read-only mapping; a concurrent truncation by another process
    // could fault, which is the usual and accepted risk of mapping executables.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|source| ElfError::Open { path: path.display().to_string(), source })?;
    inspect_bytes(&map, path)
}

pub fn inspect_bytes(data: &[u8], path: &Path) -> Result<Inspection, ElfError> {
    // Cheap pre-check (SIMD substring search): most files carry no TLS at all
    // and are not worth parsing their symbol tables.
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf { path: path.display().to_string() });
    }
    let maybe = [&b"SSL_write"[..], b"gnutls_record_send", b"crypto/tls", b"OpenSSL"];
    if !maybe.iter().any(|n| memfind(data, n).is_some()) {
        return Ok(Inspection::None);
    }
    let elf =
        object::File::parse(data).map_err(|source| ElfError::Parse { path: path.display().to_string(), source })?;
    // One pass over the symbol tables (large binaries have 100k+ symbols).
    let mut found = std::collections::HashSet::new();
    for s in elf.dynamic_symbols().chain(elf.symbols()) {
        if s.is_definition()
            && let Ok(n) = s.name()
            && INTERESTING.contains(&n)
        {
            found.insert(n);
        }
    }
    let has = |name: &str| found.contains(name);
    if has("SSL_write") && has("SSL_read") {
        let version = find_version(data, b"OpenSSL 3.")
            .or_else(|| find_version(data, b"OpenSSL 1."))
            .or_else(|| memfind(data, b"BoringSSL").map(|_| "BoringSSL".to_string()))
            .or_else(|| libcrypto_version(path))
            .unwrap_or_else(|| "unknown".into());
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
    let is_go = elf.section_by_name(".go.buildinfo").is_some() || elf.section_by_name(".gopclntab").is_some();
    if is_go {
        let version = find_version(data, b"go1.").unwrap_or_else(|| "unknown".into());
        let write = go_func(&elf, data, GO_WRITE);
        let read = go_func(&elf, data, GO_READ);
        return Ok(match (write, read) {
            (Some(write), Some(read)) => Inspection::Tls { kind: TlsKind::Go { write, read }, library: "go-crypto-tls".into(), version },
            _ if memfind(data, b"crypto/tls").is_some() => Inspection::Unsupported {
                library: format!("go-crypto-tls {version}"),
                reason: "Go binary uses crypto/tls but has no symbol table (stripped with -ldflags=-s); its TLS plaintext cannot be captured".into(),
            },
            _ => Inspection::None,
        });
    }
    // Statically linked OpenSSL without exported symbols.
    if !has("SSL_write")
        && (memfind(data, b"SSL_write").is_some() || find_version(data, b"OpenSSL 3.").is_some())
        && elf.symbols().next().is_none()
        && memfind(data, b"ssl3_write_bytes").is_some()
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
    let crypto = libssl.with_file_name(format!("libcrypto.so.{soversion}"));
    let data = std::fs::read(crypto).ok()?;
    find_version(&data, b"OpenSSL 3.").or_else(|| find_version(&data, b"OpenSSL 1."))
}

/// Entry and RET file offsets of a Go function from the symbol table.
fn go_func(elf: &object::File<'_>, data: &[u8], name: &str) -> Option<GoFunc> {
    let sym = elf.symbols().find(|s| s.name() == Ok(name))?;
    let addr = sym.address();
    let size = sym.size();
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (sec_off, _) = section.file_range()?;
    let file_off = addr - section.address() + sec_off;
    let code = data.get(file_off as usize..(file_off + size) as usize)?;
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
