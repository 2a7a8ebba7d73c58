//! Loads the embedded eBPF object, fills in its globals and attaches the programs.
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use wiretrail_common::{CaptureConfig, KernelOffsets};

/// The eBPF object built by `build.rs`.
pub(super) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wiretrail-ebpf.o"));

/// Other tracepoint programs: (category, name).
pub const OTHER_TRACEPOINTS: &[(&str, &str)] = &[("sched", "sched_process_exec")];

/// Every syscall tracepoint program, named after its tracepoint.
pub const TRACEPOINTS: &[&str] = &[
    "sys_enter_read",
    "sys_exit_read",
    "sys_enter_write",
    "sys_exit_write",
    "sys_enter_readv",
    "sys_exit_readv",
    "sys_enter_writev",
    "sys_exit_writev",
    "sys_enter_recvfrom",
    "sys_exit_recvfrom",
    "sys_enter_sendto",
    "sys_exit_sendto",
    "sys_enter_recvmsg",
    "sys_exit_recvmsg",
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_enter_recvmmsg",
    "sys_exit_recvmmsg",
    "sys_enter_sendmmsg",
    "sys_exit_sendmmsg",
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_accept",
    "sys_exit_accept",
    "sys_enter_accept4",
    "sys_exit_accept4",
    "sys_enter_close",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object: {source:?}")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error("reading the possible CPUs from {path}")]
    Cpus {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the kernel's BTF: {source}")]
    Btf {
        #[source]
        source: aya::BtfError,
    },
    #[error("eBPF object has no program `{name}`")]
    MissingProgram { name: String },
    #[error("eBPF object has no map `{name}`")]
    MissingMap { name: String },
    #[error("program `{name}`: {source:?}")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source:?}")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Loaded {
    /// Keeps programs, links and maps alive for the agent's lifetime.
    pub ebpf: Ebpf,
    /// The kernel's per-CPU counters (`STAT_*`).
    pub stats: PerCpuArray<MapData, u64>,
    /// Exec notifications (their own ring, see `capture::execs`).
    pub execs: Option<RingBuf<MapData>>,
}

/// Loads with `offsets`/`config` as globals and a ring buffer of `ring_bytes`
/// (a power-of-two multiple of the page size), then attaches every tracepoint.
pub fn load_and_attach(
    offsets: &KernelOffsets,
    config: &CaptureConfig,
    ring_bytes: u32,
    syscalls: bool,
) -> Result<(Loaded, RingBuf<MapData>), LoadError> {
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("CONFIG", config, true)
        .map_max_entries("EVENTS", ring_bytes)
        .map_max_entries("SCRATCH", nr_cpus()?)
        // PENDING is task storage, which aya creates but cannot open from
        // user space (nothing here needs to).
        .allow_unsupported_maps()
        .load(EBPF_OBJECT)
        .map_err(|source| LoadError::Load { source })?;
    let syscall_tps: &[&str] = if syscalls { TRACEPOINTS } else { &[] };
    let all = syscall_tps.iter().map(|&n| ("syscalls", n)).chain(OTHER_TRACEPOINTS.iter().copied());
    for (category, name) in all {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?
            .try_into()
            .map_err(|source| LoadError::Program { name: name.into(), source })?;
        prog.load().map_err(|source| LoadError::Program { name: name.into(), source })?;
        prog.attach(category, name).map_err(|source| LoadError::Program { name: name.into(), source })?;
        tracing::debug!(tracepoint = name, category, "attached");
    }
    let ring = take_map(&mut ebpf, "EVENTS")?;
    let ring = RingBuf::try_from(ring).map_err(|source| LoadError::Map { name: "EVENTS".into(), source })?;
    let execs = take_map(&mut ebpf, "EXECS")?;
    let execs = RingBuf::try_from(execs).map_err(|source| LoadError::Map { name: "EXECS".into(), source })?;
    let stats = take_map(&mut ebpf, "STATS")?;
    let stats = PerCpuArray::try_from(stats).map_err(|source| LoadError::Map { name: "STATS".into(), source })?;
    tracing::info!(
        programs = syscall_tps.len() + OTHER_TRACEPOINTS.len(),
        ring_bytes,
        syscalls,
        "eBPF programs attached"
    );
    Ok((Loaded { ebpf, stats, execs: Some(execs) }, ring))
}

/// Possible CPUs (scratch slots are indexed by CPU id).
fn nr_cpus() -> Result<u32, LoadError> {
    aya::util::nr_cpus().map(|n| n as u32).map_err(|(path, source)| LoadError::Cpus { path: path.to_string(), source })
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| LoadError::MissingMap { name: name.into() })
}

/// Kernel counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    pub events: u64,
    pub lost_events: u64,
    pub lost_bytes: u64,
    pub track_full: u64,
    pub truncated_bytes: u64,
    pub not_kept_bytes: u64,
    pub internal_errors: u64,
    pub pending_full: u64,
    pub self_peer: u64,
}

impl KernelStats {
    /// Publishes the counters as the agent's `kernel_*` metrics.
    pub fn publish(&self, m: &crate::metrics::Metrics) {
        m.kernel_events.set(self.events);
        m.kernel_lost_events.set(self.lost_events);
        m.kernel_lost_bytes.set(self.lost_bytes);
        m.kernel_track_full.set(self.track_full);
        m.kernel_truncated_bytes.set(self.truncated_bytes);
        m.kernel_tls_ciphertext_not_kept_bytes.set(self.not_kept_bytes);
        m.kernel_internal_errors.set(self.internal_errors);
        m.kernel_pending_full.set(self.pending_full);
        m.kernel_self_peer.set(self.self_peer);
    }
}

impl Loaded {
    /// Detaches every capture program (syscall tracepoints, TLS uprobes) so no
    /// event is made after this: what is in the ring then is all there is,
    /// and the kernel's counters are final. Cgroup (segmentation) programs
    /// stay attached until the agent exits. Errors are logged: the agent is
    /// stopping either way.
    pub fn stop_capture(&mut self) {
        for (name, prog) in self.ebpf.programs_mut() {
            let res = match prog {
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::UProbe(p) => p.unload(),
                _ => continue,
            };
            match res {
                // Never loaded (e.g. segmentation's hooks when no policy is in force).
                Ok(()) | Err(aya::programs::ProgramError::NotLoaded) => {}
                Err(e) => tracing::warn!(program = name, error = %e, "detaching a capture program"),
            }
        }
    }

    /// Reads and sums the per-CPU counters.
    pub fn kernel_stats(&self) -> Result<KernelStats, LoadError> {
        let mut sums = [0u64; STAT_COUNT as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            let v = self.stats.get(&(i as u32), 0).map_err(|source| LoadError::Map { name: "STATS".into(), source })?;
            *sum = v.iter().sum();
        }
        use wiretrail_common::*;
        Ok(KernelStats {
            events: sums[STAT_EVENTS as usize],
            lost_events: sums[STAT_LOST_EVENTS as usize],
            lost_bytes: sums[STAT_LOST_BYTES as usize],
            track_full: sums[STAT_TRACK_FULL as usize],
            truncated_bytes: sums[STAT_TRUNCATED_BYTES as usize],
            not_kept_bytes: sums[STAT_NOT_KEPT_BYTES as usize],
            internal_errors: sums[STAT_INTERNAL_ERRORS as usize],
            pending_full: sums[STAT_PENDING_FULL as usize],
            self_peer: sums[STAT_SELF_PEER as usize],
        })
    }
}
