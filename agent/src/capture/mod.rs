//! Kernel capture: self-check, BTF offsets, loading and attaching the programs,
//! and reading their ring buffer.
pub mod btf;
pub mod drain_floor;
pub mod event;
pub mod execs;
pub mod floor;
pub mod loader;
pub mod offsets;
pub mod reader;
pub mod selfcheck;
pub mod synthetic;
pub mod tls;
pub mod tracefs;

use wiretrail_common::CaptureConfig;

pub use loader::{KernelStats, Loaded};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    SelfCheck(#[from] selfcheck::SelfCheckError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("computing kernel struct offsets from BTF")]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error("ring buffer size {bytes} must be a power of two and at least 4096")]
    RingSize { bytes: u32 },
}

/// What the capture needs from the command line.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Ring buffer size in bytes (power of two).
    pub ring_bytes: u32,
    /// Per-connection, per-direction cap in bytes (0 = unlimited).
    pub conn_cap_bytes: u64,
    /// Copy TLS ciphertext even once its plaintext is captured.
    pub keep_tls_ciphertext: bool,
    /// Attach the syscall tracepoints (off: enforcement only, no socket capture).
    pub syscalls: bool,
    /// TLS uprobes may be attached later (`--no-tls` off).
    pub tls: bool,
}

/// Checks the host, loads and attaches the programs.
pub fn start(opts: &CaptureOptions) -> Result<(Loaded, aya::maps::RingBuf<aya::maps::MapData>), CaptureError> {
    if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < 4096 {
        return Err(CaptureError::RingSize { bytes: opts.ring_bytes });
    }
    selfcheck::run()?;
    selfcheck::raise_memlock_on_old_kernels();
    tracefs::ensure_mounted()?;
    // The parsed BTF goes before loading: the loader parses the kernel's BTF
    // again, and both at once were the agent's peak memory.
    let offsets = offsets::compute(&btf::Btf::from_sys_fs()?)?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    let mut enabled = wiretrail_common::CONFIG_ON;
    if opts.tls {
        enabled |= wiretrail_common::CONFIG_TLS;
    }
    if opts.keep_tls_ciphertext {
        enabled |= wiretrail_common::CONFIG_KEEP_CIPHERTEXT;
    }
    let config = CaptureConfig { agent_tgid: std::process::id(), enabled, conn_cap_bytes: opts.conn_cap_bytes };
    Ok(loader::load_and_attach(&offsets, &config, opts.ring_bytes, opts.syscalls)?)
}
