//! `wiretrail-agent floor`: the capture hooks with programs that return at
//! once (`ebpf/src/floor.rs`), so a benchmark can measure what the hooks
//! cost before the agent does any work in them — the floor the agent is
//! compared with (`cargo xtask bench capture`); and, with `--hooks capture`,
//! the capture programs themselves with their events dropped
//! (`drain_floor`).
//!
//! - [`FloorHooks::Syscalls`]: one no-op program on every tracepoint the
//!   agent attaches (the syscall data path and exec notifications).
//! - [`FloorHooks::Tls`]: a no-op uprobe or uretprobe at every point where
//!   the agent probes the TLS library files given (`--library`), found the
//!   way the agent finds them (`tls::elf`).
//! - [`FloorHooks::Sockets`]: no-op fentry/fexit on `tcp_sendmsg`,
//!   `tcp_recvmsg`, `udp_sendmsg`, `udp_recvmsg`, `udpv6_sendmsg` and
//!   `udpv6_recvmsg`: the socket layer as a candidate data path (it fires only
//!   for sockets, not for every read and write of every file).
//! - [`FloorHooks::Capture`]: not no-op: the capture programs themselves,
//!   with nothing done in user space but reading the ring (`drain_floor`).
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, TracePoint, UProbe},
};

use super::loader::{EBPF_OBJECT, LoadError, OTHER_TRACEPOINTS, TRACEPOINTS};

/// Why the floor could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tracefs(#[from] super::tracefs::TracefsError),
    #[error("--hooks tls needs at least one --library FILE (e.g. the libssl.so.3 a server maps)")]
    NoLibrary,
    #[error("{path}: no TLS library the agent can probe ({found})")]
    NotTls { path: std::path::PathBuf, found: String },
    #[error("--hooks capture is the capture programs themselves, not no-op ones: it has no no-op set to attach")]
    NotNoOp,
    #[error("inspecting a TLS library")]
    Elf {
        #[source]
        source: super::tls::elf::ElfError,
    },
}

/// Which hook set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorHooks {
    /// The agent's tracepoints.
    Syscalls,
    /// fentry/fexit on the TCP and UDP send and receive functions.
    Sockets,
    /// The agent's TLS uprobes on the given library files.
    Tls,
    /// The agent's own capture programs, their events read and dropped
    /// (`drain_floor`): the kernel side of capture without the agent's
    /// user space.
    Capture,
}

/// The no-op program standing for capture program `name` at a TLS probe point.
fn floor_program(name: &'static str) -> &'static str {
    match name {
        "ssl_write_ret" | "ssl_read_ret" | "gnutls_send_ret" | "gnutls_recv_ret" | "rustls_write_ret"
        | "rustls_read_ret" => "floor_uretprobe",
        // Entry probes, and Go's RET probes (plain uprobes at the RET instructions).
        _ => "floor_uprobe",
    }
}

/// The socket-layer functions (fentry and fexit programs are named
/// `floor_<function>` and `floor_<function>_exit`).
pub const SOCKET_FUNCTIONS: &[&str] =
    &["tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "udp_recvmsg", "udpv6_sendmsg", "udpv6_recvmsg"];

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?
        .try_into()
        .map_err(|source| LoadError::Program { name: name.into(), source })
}

/// Loads and attaches the no-op programs of `hooks` (`libraries`: the TLS
/// library files, for [`FloorHooks::Tls`]); they stay attached while the
/// returned object lives. Returns it and the number of attachments.
pub fn attach(hooks: FloorHooks, libraries: &[std::path::PathBuf]) -> Result<(Ebpf, usize), FloorError> {
    if hooks == FloorHooks::Capture {
        return Err(FloorError::NotNoOp);
    }
    // Like capture: tracepoints and uprobes attach through tracefs, which a
    // fresh host may not have mounted.
    super::tracefs::ensure_mounted()?;
    // allow_unsupported_maps: the task storage map (PENDING), see loader.rs.
    let mut ebpf =
        EbpfLoader::new().allow_unsupported_maps().load(EBPF_OBJECT).map_err(|source| LoadError::Load { source })?;
    let err = |name: &str| {
        let name = name.to_string();
        move |source| LoadError::Program { name, source }
    };
    let mut n = 0;
    match hooks {
        FloorHooks::Syscalls => {
            let prog: &mut TracePoint = program(&mut ebpf, "floor_tracepoint")?;
            prog.load().map_err(err("floor_tracepoint"))?;
            let all = TRACEPOINTS.iter().map(|&t| ("syscalls", t)).chain(OTHER_TRACEPOINTS.iter().copied());
            for (category, name) in all {
                prog.attach(category, name).map_err(err(name))?;
                n += 1;
            }
        }
        FloorHooks::Sockets => {
            let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf { source: e })?;
            for f in SOCKET_FUNCTIONS {
                let entry = format!("floor_{f}");
                let p: &mut FEntry = program(&mut ebpf, &entry)?;
                p.load(f, &btf).map_err(err(&entry))?;
                p.attach().map_err(err(&entry))?;
                let exit = format!("floor_{f}_exit");
                let p: &mut FExit = program(&mut ebpf, &exit)?;
                p.load(f, &btf).map_err(err(&exit))?;
                p.attach().map_err(err(&exit))?;
                n += 2;
            }
        }
        FloorHooks::Capture => unreachable!("refused above"),
        FloorHooks::Tls => {
            if libraries.is_empty() {
                return Err(FloorError::NoLibrary);
            }
            for name in ["floor_uprobe", "floor_uretprobe"] {
                let p: &mut UProbe = program(&mut ebpf, name)?;
                p.load().map_err(err(name))?;
            }
            for lib in libraries {
                let kind = match super::tls::elf::inspect(lib) {
                    Ok(super::tls::elf::Inspection::Tls { kind, .. }) => kind,
                    Ok(other) => return Err(FloorError::NotTls { path: lib.clone(), found: format!("{other:?}") }),
                    Err(source) => return Err(FloorError::Elf { source }),
                };
                let links = super::tls::attach_as(&mut ebpf, lib, &kind, 0, floor_program)
                    .map_err(|(_, source)| LoadError::Program { name: lib.display().to_string(), source })?;
                n += links.len();
            }
        }
    }
    tracing::info!(?hooks, attachments = n, "floor programs attached (they return at once)");
    Ok((ebpf, n))
}
