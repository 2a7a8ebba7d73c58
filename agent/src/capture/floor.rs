//! `wiretrail-agent floor`: the capture hooks with programs that return at
//! once (`ebpf/src/floor.rs`), so a benchmark can measure what the hooks
//! cost before the agent does any work in them — the floor the agent is
//! compared with (`cargo xtask bench capture`).
//!
//! - [`FloorHooks::Syscalls`]: one no-op program on every tracepoint the
//!   agent attaches (the syscall data path and exec notifications).
//! - [`FloorHooks::Sockets`]: no-op fentry/fexit on `tcp_sendmsg`,
//!   `tcp_recvmsg`, `udp_sendmsg`, `udp_recvmsg`, `udpv6_sendmsg` and
//!   `udpv6_recvmsg`: the socket layer as a candidate data path (it fires only
//!   for sockets, not for every read and write of every file).
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, TracePoint},
};

use super::loader::{EBPF_OBJECT, LoadError, OTHER_TRACEPOINTS, TRACEPOINTS};

/// Which hook set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorHooks {
    /// The agent's tracepoints.
    Syscalls,
    /// fentry/fexit on the TCP and UDP send and receive functions.
    Sockets,
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

/// Loads and attaches the no-op programs of `hooks`; they stay attached
/// while the returned object lives. Returns it and the number of attachments.
pub fn attach(hooks: FloorHooks) -> Result<(Ebpf, usize), LoadError> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(|source| LoadError::Load { source })?;
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
    }
    tracing::info!(?hooks, attachments = n, "floor programs attached (they return at once)");
    Ok((ebpf, n))
}
