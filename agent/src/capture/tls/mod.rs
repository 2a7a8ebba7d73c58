//! TLS plaintext capture: finds TLS libraries in running and new processes and
//! attaches uprobes to each distinct file once (see `ebpf/src/tls.rs`).
//!
//! Discovery (in [`worker`], a thread of its own): at start, the usual library
//! paths and every process's executable mappings; then the executable and
//! mappings of every new process (exec events), again shortly after the dynamic
//! loader has run; and a full rescan every few seconds, which also tells which
//! files no process uses any more so their probes are detached. Files with a TLS
//! implementation we cannot hook are reported once, by path.
pub mod closer;
pub mod discover;
pub mod elf;
pub mod rustls;
pub mod scan;
pub mod worker;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use aya::{
    Ebpf,
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use elf::{Inspection, TlsKind};
use worker::Found;

/// The uprobe programs in the eBPF object.
const PROGRAMS: &[&str] = &[
    "tls_entry",
    "tls_entry_ex",
    "ssl_write_ret",
    "ssl_read_ret",
    "gnutls_send_ret",
    "gnutls_recv_ret",
    "go_tls_entry",
    "go_tls_write_ret",
    "go_tls_read_ret",
    "rustls_write_entry",
    "rustls_writev_entry",
    "rustls_write_ret",
    "rustls_read_entry",
    "rustls_read_ret",
];

/// The tracepoint program a TCP write's enter tail-calls to emit a held rustls
/// write (slot 0 of the `TLS_FLUSH` program array; see `ebpf/src/tls.rs`).
const FLUSH_PROGRAM: &str = "rustls_flush";
const FLUSH_MAP: &str = "TLS_FLUSH";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    SelfCheck(#[from] super::selfcheck::SelfCheckError),
    #[error("eBPF object has no program `{name}`")]
    MissingProgram { name: String },
    #[error("loading uprobe program `{name}`: {source:?}")]
    Load {
        name: String,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF object has no map `{name}`")]
    MissingMap { name: String },
    #[error("setting the rustls flush program into `{FLUSH_MAP}`: {source:?}")]
    Flush {
        #[source]
        source: aya::maps::MapError,
    },
}

/// Loads [`FLUSH_PROGRAM`] and puts it in slot 0 of [`FLUSH_MAP`]: without it
/// a rustls write would never meet its socket, so failing here fails TLS capture.
fn install_flush(ebpf: &mut Ebpf) -> Result<(), TlsError> {
    let load = |source| TlsError::Load { name: FLUSH_PROGRAM.into(), source };
    let p: &mut aya::programs::TracePoint = ebpf
        .program_mut(FLUSH_PROGRAM)
        .ok_or_else(|| TlsError::MissingProgram { name: FLUSH_PROGRAM.into() })?
        .try_into()
        .map_err(load)?;
    p.load().map_err(load)?;
    let fd = p.fd().map_err(load)?.try_clone().map_err(|e| load(ProgramError::IOError(e)))?;
    let map = ebpf.map_mut(FLUSH_MAP).ok_or_else(|| TlsError::MissingMap { name: FLUSH_MAP.into() })?;
    let mut slots = aya::maps::ProgramArray::try_from(map).map_err(|source| TlsError::Flush { source })?;
    slots.set(0, &fd, 0).map_err(|source| TlsError::Flush { source })
}

/// A library file probes are attached to; its index+1 is the attach cookie.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsLib {
    /// Path as the first process we saw it in names it.
    pub path: String,
    /// `openssl`, `boringssl`, `gnutls`, `go-crypto-tls`, `rustls`.
    pub library: String,
    /// Version string found in the file.
    pub version: String,
}

/// Library table shared with the pipeline (cookie → library, and whether its
/// received plaintext is hooked), append-only.
#[derive(Debug, Default)]
pub struct TlsRegistry(RwLock<Vec<(TlsLib, bool)>>);

impl TlsRegistry {
    pub fn get(&self, cookie: u16) -> Option<TlsLib> {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v.get((cookie as usize).checked_sub(1)?).map(|(lib, _)| lib.clone())
    }

    /// Whether the library's probes see what it sends but not what it
    /// receives (rustls read through `BufRead`): its connections' received
    /// ciphertext is a blind spot they state.
    pub fn reads_unhooked(&self, cookie: u16) -> bool {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        (cookie as usize).checked_sub(1).and_then(|i| v.get(i)).is_some_and(|(_, unhooked)| *unhooked)
    }

    /// Adds a library; its cookie.
    pub(crate) fn add(&self, lib: TlsLib, reads_unhooked: bool) -> u16 {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        v.push((lib, reads_unhooked));
        v.len() as u16
    }
}

/// A file we could not hook although it carries TLS: reported once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsNotice {
    pub path: String,
    pub pid: u32,
    pub library: String,
    pub reason: String,
}

impl TlsNotice {
    /// The `tls_unsupported` notice record (named, never silent).
    pub fn record(&self) -> crate::record::Record {
        crate::record::Record::notice(
            "tls_unsupported",
            serde_json::json!({"path": self.path, "pid": self.pid, "library": self.library, "reason": self.reason}),
        )
    }
}

pub(crate) type Links = Vec<(&'static str, UProbeLinkId)>;

struct Attached {
    links: Links,
    /// Well-known library paths stay attached even when unused.
    pinned: bool,
}

/// Owns the attachments (needs `&mut Ebpf` for each change).
pub struct TlsManager {
    pub registry: Arc<TlsRegistry>,
    files: HashMap<(u64, u64), Attached>,
    closer: closer::Closer,
}

impl TlsManager {
    /// Loads the uprobe programs (attaching happens per file).
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, TlsError> {
        super::selfcheck::check_tls()?;
        for &name in PROGRAMS {
            let p: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| TlsError::MissingProgram { name: name.into() })?
                .try_into()
                .map_err(|source| TlsError::Load { name: name.into(), source })?;
            p.load().map_err(|source| TlsError::Load { name: name.into(), source })?;
        }
        install_flush(ebpf)?;
        Ok(TlsManager { registry: Arc::default(), files: HashMap::new(), closer: closer::Closer::start() })
    }

    /// Files attached now.
    pub fn attached(&self) -> usize {
        self.files.len()
    }

    /// Acts on one finding of the discovery thread (a file hooked after an exec
    /// adds its delay from the exec to `metrics`).
    pub fn apply(&mut self, ebpf: &mut Ebpf, found: Found, metrics: &crate::metrics::Metrics) -> Option<TlsNotice> {
        match found {
            Found::Live(live) => {
                self.detach_unused(ebpf, &live);
                None
            }
            Found::File { candidate: c, inspection, pinned, exec_ns } => match inspection {
                Inspection::None => None,
                Inspection::Unsupported { library, reason } => {
                    tracing::warn!(path = %c.shown_path, pid = c.pid, %library, %reason, "TLS library cannot be hooked");
                    Some(TlsNotice { path: c.shown_path, pid: c.pid, library, reason })
                }
                Inspection::Tls { kind, library, version } => {
                    let lib = TlsLib { path: c.shown_path.clone(), library: library.clone(), version: version.clone() };
                    let reads_unhooked = matches!(kind, TlsKind::Rustls(rustls::RustlsFns { read: None, .. }));
                    let cookie = self.registry.add(lib, reads_unhooked);
                    let attaching = self.closer.attaching();
                    let attached = attach(ebpf, &c.open_path, &kind, cookie);
                    drop(attaching);
                    match attached {
                        Ok(links) => {
                            let after_exec_us = (exec_ns != 0)
                                .then(|| crate::clock::now_boot_ns().saturating_sub(exec_ns) / 1000)
                                .inspect(|&us| {
                                    metrics.tls_exec_attaches.inc();
                                    metrics.tls_exec_attach_us_sum.add(us);
                                    if us > metrics.tls_exec_attach_us_max.get() {
                                        metrics.tls_exec_attach_us_max.set(us);
                                    }
                                });
                            tracing::info!(path = %c.shown_path, %library, %version, probes = links.len(), ?after_exec_us, "TLS probes attached");
                            self.files.insert(c.id, Attached { links, pinned });
                            match kind {
                                TlsKind::Rustls(rustls::RustlsFns { bufread: true, .. }) => {
                                    let reason = rustls::BUFREAD_NOT_CAPTURED.to_string();
                                    tracing::warn!(path = %c.shown_path, %reason, "TLS plaintext partly captured");
                                    Some(TlsNotice {
                                        path: c.shown_path,
                                        pid: c.pid,
                                        library: format!("{library} {version}"),
                                        reason,
                                    })
                                }
                                _ => None,
                            }
                        }
                        Err((links, e)) => {
                            detach(ebpf, links, &self.closer);
                            tracing::warn!(path = %c.shown_path, error = %e, "attaching TLS probes failed");
                            let reason = format!("attaching uprobes failed: {e}");
                            Some(TlsNotice { path: c.shown_path, pid: c.pid, library, reason })
                        }
                    }
                }
            },
        }
    }

    fn detach_unused(&mut self, ebpf: &mut Ebpf, live: &HashSet<(u64, u64)>) {
        let gone: Vec<(u64, u64)> =
            self.files.iter().filter(|(id, a)| !a.pinned && !live.contains(*id)).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some(a) = self.files.remove(&id) {
                detach(ebpf, a.links, &self.closer);
                tracing::info!(dev = id.0, inode = id.1, "TLS probes detached: no process uses the file any more");
            }
        }
    }
}

fn attach(
    ebpf: &mut Ebpf,
    path: &std::path::Path,
    kind: &TlsKind,
    cookie: u16,
) -> Result<Links, (Links, ProgramError)> {
    attach_as(ebpf, path, kind, cookie, |p| p)
}

/// The agent's probes for `kind` in `path`, each attached as the program
/// `program(name)` (the floor attaches no-op programs at the same points).
/// The programs must be loaded.
pub(crate) fn attach_as(
    ebpf: &mut Ebpf,
    path: &std::path::Path,
    kind: &TlsKind,
    cookie: u16,
    program: fn(&'static str) -> &'static str,
) -> Result<Links, (Links, ProgramError)> {
    let mut links = Vec::new();
    let mut one = |prog: &'static str, loc: UProbeAttachLocation<'_>, links: &mut Links| -> Result<(), ProgramError> {
        let prog = program(prog);
        let p: &mut UProbe = ebpf.program_mut(prog).ok_or(ProgramError::NotLoaded)?.try_into()?;
        let id = p.attach(
            UProbeAttachPoint { location: loc, cookie: Some(cookie as u64) },
            path,
            UProbeScope::AllProcesses,
        )?;
        links.push((prog, id));
        Ok(())
    };
    use UProbeAttachLocation::{AbsoluteOffset, Symbol};
    let r = (|| {
        match kind {
            TlsKind::OpenSsl { ex } => {
                one("tls_entry", Symbol("SSL_write"), &mut links)?;
                one("ssl_write_ret", Symbol("SSL_write"), &mut links)?;
                one("tls_entry", Symbol("SSL_read"), &mut links)?;
                one("ssl_read_ret", Symbol("SSL_read"), &mut links)?;
                if *ex {
                    one("tls_entry_ex", Symbol("SSL_write_ex"), &mut links)?;
                    one("ssl_write_ret", Symbol("SSL_write_ex"), &mut links)?;
                    one("tls_entry_ex", Symbol("SSL_read_ex"), &mut links)?;
                    one("ssl_read_ret", Symbol("SSL_read_ex"), &mut links)?;
                }
            }
            TlsKind::GnuTls => {
                one("tls_entry", Symbol("gnutls_record_send"), &mut links)?;
                one("gnutls_send_ret", Symbol("gnutls_record_send"), &mut links)?;
                one("tls_entry", Symbol("gnutls_record_recv"), &mut links)?;
                one("gnutls_recv_ret", Symbol("gnutls_record_recv"), &mut links)?;
            }
            TlsKind::Rustls(f) => {
                one("rustls_write_entry", AbsoluteOffset(f.write), &mut links)?;
                one("rustls_write_ret", AbsoluteOffset(f.write), &mut links)?;
                if let Some(wv) = f.write_vectored {
                    one("rustls_writev_entry", AbsoluteOffset(wv), &mut links)?;
                    one("rustls_write_ret", AbsoluteOffset(wv), &mut links)?;
                }
                if let Some(read) = f.read {
                    one("rustls_read_entry", AbsoluteOffset(read), &mut links)?;
                    one("rustls_read_ret", AbsoluteOffset(read), &mut links)?;
                }
            }
            TlsKind::Go { write, read } => {
                tracing::debug!(path = %path.display(), write_entry = write.entry, write_rets = ?write.rets, read_entry = read.entry, "Go crypto/tls offsets");
                one("go_tls_entry", AbsoluteOffset(write.entry), &mut links)?;
                for &r in &write.rets {
                    one("go_tls_write_ret", AbsoluteOffset(r), &mut links)?;
                }
                one("go_tls_entry", AbsoluteOffset(read.entry), &mut links)?;
                for &r in &read.rets {
                    one("go_tls_read_ret", AbsoluteOffset(r), &mut links)?;
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(links),
        Err(e) => Err((links, e)),
    }
}

/// Detaches `links`: takes them out of aya and hands them to `closer`
/// (closing one takes the kernel ~100 ms; see [`closer`]).
fn detach(ebpf: &mut Ebpf, links: Links, closer: &closer::Closer) {
    let mut owned = Vec::with_capacity(links.len());
    for (prog, id) in links {
        match ebpf.program_mut(prog).map(<&mut UProbe>::try_from) {
            Some(Ok(p)) => match p.take_link(id) {
                Ok(link) => owned.push(link),
                Err(e) => tracing::warn!(program = prog, error = %e, "detaching uprobe"),
            },
            Some(Err(e)) => tracing::warn!(program = prog, error = %e, "detaching uprobe"),
            None => tracing::warn!(program = prog, "detaching uprobe: no such program"),
        }
    }
    closer.close(owned);
}
