//! Start-up self-check: kernel version, kernel BTF, capabilities, cgroup v2,
//! tracefs. Every missing item is named together with why it is needed and
//! its fix, all at once.
//!
//! [`Host::gather`] reads the facts; [`problems`] is pure logic over them (unit
//! tested with made-up hosts).
use std::{fmt, path::PathBuf};

/// Linux capability numbers (include/uapi/linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Oldest kernel the agent runs on, and why: `bpf_loop` (5.17) copies large
/// buffers; task storage from tracing programs (5.11) holds the stashed
/// syscall arguments; the BPF ring buffer and CAP_BPF/CAP_PERFMON (5.8).
pub const MIN_KERNEL: (u32, u32) = (5, 17);
/// Kernels before this charge eBPF memory to RLIMIT_MEMLOCK instead of the memory cgroup.
pub const MEMCG_BPF_KERNEL: (u32, u32) = (5, 11);

const TRACEFS: &str = "/sys/kernel/tracing";
/// include/uapi/linux/perf_event.h
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// When a capability is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (CAP_SYS_ADMIN also grants it, as on kernels before 5.8).
    Always,
    /// With TLS plaintext capture on (the default; `--no-tls` turns it off).
    Tls,
    /// With TLS capture on, where the kernel's uprobe PMU demands CAP_SYS_ADMIN
    /// (probed at start: see [`uprobe_access`]).
    TlsUprobes,
    /// On kernels older than 5.11 (RLIMIT_MEMLOCK accounting).
    OldKernel,
}

/// One capability the agent needs, and why.
#[derive(Debug, Clone, Copy)]
pub struct CapNeed {
    pub name: &'static str,
    pub bit: u32,
    pub when: When,
    pub why: &'static str,
}

/// Every capability the agent may need; the Kubernetes manifests and the
/// systemd unit grant exactly the `Always` and `Tls` ones.
pub const CAPABILITIES: &[CapNeed] = &[
    CapNeed {
        name: "CAP_BPF",
        bit: CAP_BPF,
        when: When::Always,
        why: "to load the eBPF programs and create their maps and ring buffers",
    },
    CapNeed {
        name: "CAP_PERFMON",
        bit: CAP_PERFMON,
        when: When::Always,
        why: "to attach tracepoints and uprobes (perf_event_open) and let the programs read socket and TLS buffers (bpf_probe_read_*)",
    },
    CapNeed {
        name: "CAP_SYS_PTRACE",
        bit: CAP_SYS_PTRACE,
        when: When::Tls,
        why: "for TLS discovery to resolve /proc/PID/exe and open programs and libraries through /proc/PID/root of processes that run as other users or with capabilities the agent lacks",
    },
    CapNeed {
        name: "CAP_DAC_READ_SEARCH",
        bit: CAP_DAC_READ_SEARCH,
        when: When::Tls,
        why: "for TLS discovery to open programs and libraries in directories or files root cannot read by permission bits alone (e.g. a Go binary in a 0700 home or data directory of another user)",
    },
    CapNeed {
        name: "CAP_SYS_ADMIN",
        bit: CAP_SYS_ADMIN,
        when: When::TlsUprobes,
        why: "to attach the TLS uprobes: this kernel's uprobe perf PMU refuses CAP_PERFMON alone (perf_event_open returns EACCES); also mounts tracefs when the host has not",
    },
    CapNeed {
        name: "CAP_SYS_RESOURCE",
        bit: CAP_SYS_RESOURCE,
        when: When::OldKernel,
        why: "to raise RLIMIT_MEMLOCK: kernels before 5.11 charge eBPF maps to it",
    },
];

/// What the agent will do, which decides what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// TLS plaintext capture (uprobes on TLS libraries).
    pub tls: bool,
}

/// State of tracefs at `/sys/kernel/tracing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted, with the syscall tracepoints.
    Mounted,
    /// Mounted, but the kernel has no syscall tracepoints.
    NoSyscallEvents,
    /// Not mounted (the agent mounts it when it has CAP_SYS_ADMIN).
    NotMounted,
}

/// The facts the self-check decides on.
#[derive(Debug, Clone)]
pub struct Host {
    /// `uname -r`.
    pub kernel_release: String,
    /// Effective capability set, or why it could not be read.
    pub caps: Result<u64, String>,
    pub btf: bool,
    pub cgroup2: Option<PathBuf>,
    pub tracefs: Tracefs,
    /// Soft RLIMIT_MEMLOCK in bytes (`u64::MAX` = unlimited).
    pub memlock: u64,
    /// Whether this process may open uprobe perf events.
    pub uprobes: UprobeAccess,
}

/// Result of probing the uprobe perf PMU with the current credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UprobeAccess {
    Allowed,
    /// perf_event_open on the uprobe PMU returned EACCES/EPERM.
    Denied,
    /// No uprobe PMU (or the probe could not run); attach errors will say more.
    Unknown,
}

/// One problem found by the self-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is missing.
    pub what: String,
    /// Why it is needed and how to fix it.
    pub fix: String,
}

/// Everything the self-check found missing.
#[derive(Debug, thiserror::Error)]
pub struct SelfCheckError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SelfCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wiretrail-agent cannot capture on this host:")?;
        for p in &self.problems {
            writeln!(f, "  - missing {}: {}", p.what, p.fix)?;
        }
        Ok(())
    }
}

/// `major.minor` of a kernel release such as `6.1.0-18-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))?;
    u64::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)
}

fn grant(name: &str) -> String {
    let short = name.trim_start_matches("CAP_");
    format!(
        "grant {name} (Kubernetes: securityContext.capabilities.add: [{short}]; systemd: AmbientCapabilities={name}; shell: setpriv --inh-caps=+{} --ambient-caps=+{} ...)",
        short.to_lowercase(),
        short.to_lowercase()
    )
}

/// Capability problems for an effective set `eff` on kernel `kernel`.
pub fn cap_problems(eff: u64, kernel: (u32, u32), memlock: u64, uprobes: UprobeAccess, needs: Needs) -> Vec<Problem> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut out = Vec::new();
    for c in CAPABILITIES {
        let needed = match c.when {
            When::Always => !(has(c.bit) || admin),
            When::Tls => needs.tls && !has(c.bit),
            When::TlsUprobes => needs.tls && uprobes == UprobeAccess::Denied && !has(c.bit),
            When::OldKernel => kernel < MEMCG_BPF_KERNEL && memlock != u64::MAX && !has(c.bit),
        };
        if !needed {
            continue;
        }
        let mut fix = format!("needed {}; {}", c.why, grant(c.name));
        if matches!(c.when, When::Tls | When::TlsUprobes) {
            fix.push_str("; or turn TLS plaintext capture off (--no-tls, config `no_tls: true`)");
        }
        if c.when == When::OldKernel {
            fix.push_str("; or start the agent with RLIMIT_MEMLOCK unlimited (systemd: LimitMEMLOCK=infinity)");
        }
        out.push(Problem { what: c.name.into(), fix });
    }
    out
}

/// Every problem on `host` for what the agent will do.
pub fn problems(host: &Host, needs: Needs) -> Vec<Problem> {
    let mut out = Vec::new();
    let kernel = kernel_version(&host.kernel_release);
    match kernel {
        Some(v) if v >= MIN_KERNEL => {}
        Some((major, minor)) => out.push(Problem {
            what: format!("kernel 5.17 or newer (this is {major}.{minor}, {})", host.kernel_release),
            fix: "the capture programs use bpf_loop (5.17), task storage from tracing programs (5.11) and the BPF ring buffer with CAP_BPF/CAP_PERFMON (5.8); upgrade the kernel (Debian 12+, Ubuntu 22.04 HWE or 24.04+)".into(),
        }),
        None => out.push(Problem {
            what: format!("a readable kernel version (got `{}`)", host.kernel_release),
            fix: "/proc/sys/kernel/osrelease must read like 6.1.0-18-amd64; mount /proc".into(),
        }),
    }
    match &host.caps {
        Ok(eff) => out.extend(cap_problems(*eff, kernel.unwrap_or(MIN_KERNEL), host.memlock, host.uprobes, needs)),
        Err(e) => out.push(Problem {
            what: "capability information".into(),
            fix: format!("cannot read /proc/self/status: {e}"),
        }),
    }
    if !host.btf {
        out.push(Problem {
            what: "kernel BTF (/sys/kernel/btf/vmlinux)".into(),
            fix: "kernel struct offsets are computed from it; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution since 2021); in a container, do not hide /sys".into(),
        });
    }
    if host.cgroup2.is_none() {
        out.push(Problem {
            what: "a cgroup v2 mount".into(),
            fix: "cgroup ids on records come from cgroup v2; mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1; in Kubernetes, hostPath-mount /sys/fs/cgroup".into(),
        });
    }
    let admin = host.caps.as_ref().is_ok_and(|e| e & (1u64 << CAP_SYS_ADMIN) != 0);
    match host.tracefs {
        Tracefs::Mounted => {}
        Tracefs::NotMounted if admin => {} // mounted by the agent at start
        Tracefs::NotMounted => out.push(Problem {
            what: format!("tracefs at {TRACEFS}"),
            fix: format!(
                "the syscall tracepoints are attached through it; mount it on the host (`mount -t tracefs tracefs {TRACEFS}`, systemd: sys-kernel-tracing.mount) and, in Kubernetes, hostPath-mount {TRACEFS}; or grant CAP_SYS_ADMIN so the agent mounts it itself"
            ),
        }),
        Tracefs::NoSyscallEvents => out.push(Problem {
            what: format!("syscall tracepoints ({TRACEFS}/events/syscalls)"),
            fix: "capture hooks sys_enter_*/sys_exit_* tracepoints; use a kernel built with CONFIG_FTRACE_SYSCALLS=y".into(),
        }),
    }
    out
}

use crate::host::cgroup2_root;

fn tracefs_state() -> Tracefs {
    let root = std::path::Path::new(TRACEFS);
    if !root.join("events").is_dir() {
        Tracefs::NotMounted
    } else if root.join("events/syscalls/sys_enter_read").is_dir() {
        Tracefs::Mounted
    } else {
        Tracefs::NoSyscallEvents
    }
}

fn memlock() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur == libc::RLIM_INFINITY { u64::MAX } else { r.rlim_cur }
}

/// Opens (disabled) and closes a uprobe perf event on this program's own
/// file, to learn whether the kernel lets these credentials attach uprobes.
pub fn uprobe_access() -> UprobeAccess {
    let Ok(t) = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type") else {
        return UprobeAccess::Unknown;
    };
    let Ok(pmu_type) = t.trim().parse::<u64>() else { return UprobeAccess::Unknown };
    let path = c"/proc/self/exe";
    // struct perf_event_attr (PERF_ATTR_SIZE_VER7, 136 bytes) as u64 words:
    // type|size, config, sample_period, sample_type, read_format, flags
    // (bit 0: disabled), wakeup|bp_type, config1 (uprobe path), config2 (offset).
    let mut attr = [0u64; 17];
    attr[0] = pmu_type | (136u64 << 32);
    attr[5] = 1;
    attr[7] = path.as_ptr() as u64;
    // SAFETY: perf_event_open reads `attr` (136 bytes) and the NUL-terminated
    // path it points to, both alive for the call; the fd is closed below.
    let fd =
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1i32, 0i32, -1i32, PERF_FLAG_FD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: closing the fd we just opened.
        unsafe { libc::close(fd as i32) };
        return UprobeAccess::Allowed;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => UprobeAccess::Denied,
        // e.g. EINVAL for offset 0: past the permission check.
        _ => UprobeAccess::Allowed,
    }
}

impl Host {
    /// Reads the facts from this host.
    pub fn gather() -> Host {
        Host {
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            caps: effective_caps().map_err(|e| e.to_string()),
            btf: std::fs::metadata("/sys/kernel/btf/vmlinux").is_ok(),
            cgroup2: cgroup2_root(),
            tracefs: tracefs_state(),
            memlock: memlock(),
            uprobes: uprobe_access(),
        }
    }
}

/// On kernels before 5.11, raises RLIMIT_MEMLOCK to unlimited (needs
/// CAP_SYS_RESOURCE unless the hard limit already allows it). Newer kernels
/// account eBPF memory to the memory cgroup and need nothing.
pub fn raise_memlock_on_old_kernels() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if kernel_version(release.trim()).is_none_or(|v| v >= MEMCG_BPF_KERNEL) {
        return;
    }
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "raising RLIMIT_MEMLOCK for eBPF maps on a pre-5.11 kernel");
    }
}

/// Runs every check for `needs`; returns all problems at once.
pub fn run_for(needs: Needs) -> Result<(), SelfCheckError> {
    let problems = problems(&Host::gather(), needs);
    if problems.is_empty() { Ok(()) } else { Err(SelfCheckError { problems }) }
}

/// The checks capture needs before loading (TLS needs are checked by
/// [`check_tls`] when TLS capture starts).
pub fn run() -> Result<(), SelfCheckError> {
    run_for(Needs { tls: false })
}

/// The capabilities TLS capture needs (CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH for
/// discovery; CAP_SYS_ADMIN where the kernel's uprobe PMU demands it); without
/// them TLS plaintext would be missing for whole processes.
pub fn check_tls() -> Result<(), SelfCheckError> {
    let eff = effective_caps().unwrap_or(0);
    let problems: Vec<Problem> = cap_problems(eff, MEMCG_BPF_KERNEL, u64::MAX, uprobe_access(), Needs { tls: true })
        .into_iter()
        .filter(|p| CAPABILITIES.iter().any(|c| matches!(c.when, When::Tls | When::TlsUprobes) && c.name == p.what))
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(SelfCheckError { problems }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: Needs = Needs { tls: true };
    const NO_TLS: Needs = Needs { tls: false };

    fn bits(caps: &[u32]) -> u64 {
        caps.iter().fold(0, |a, c| a | (1u64 << c))
    }

    fn all_listed() -> u64 {
        bits(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH])
    }

    fn good_host() -> Host {
        Host {
            kernel_release: "6.1.0-18-amd64".into(),
            caps: Ok(all_listed()),
            btf: true,
            cgroup2: Some("/sys/fs/cgroup".into()),
            tracefs: Tracefs::Mounted,
            memlock: 8 << 20,
            uprobes: UprobeAccess::Allowed,
        }
    }

    fn names(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.what.as_str()).collect()
    }

    #[test]
    fn a_good_host_has_no_problems() {
        assert_eq!(problems(&good_host(), TLS), []);
    }

    #[test]
    fn names_each_missing_capability() {
        let k = (6, 1);
        assert_eq!(names(&cap_problems(0, k, 0, UprobeAccess::Allowed, NO_TLS)), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(
            names(&cap_problems(0, k, 0, UprobeAccess::Allowed, TLS)),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
        assert!(cap_problems(bits(&[CAP_BPF, CAP_PERFMON]), k, 0, UprobeAccess::Allowed, NO_TLS).is_empty());
        assert!(
            cap_problems(bits(&[CAP_SYS_ADMIN]), k, 0, UprobeAccess::Allowed, NO_TLS).is_empty(),
            "CAP_SYS_ADMIN covers BPF and PERFMON"
        );
        assert_eq!(
            names(&cap_problems(bits(&[CAP_SYS_ADMIN]), k, 0, UprobeAccess::Allowed, TLS)),
            ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
        assert_eq!(names(&cap_problems(bits(&[CAP_BPF]), k, 0, UprobeAccess::Allowed, NO_TLS)), ["CAP_PERFMON"]);
        assert_eq!(
            names(&cap_problems(all_listed() & !(1 << CAP_SYS_PTRACE), k, 0, UprobeAccess::Allowed, TLS)),
            ["CAP_SYS_PTRACE"]
        );
    }

    #[test]
    fn sys_admin_only_for_tls_where_uprobes_are_denied() {
        let caps = all_listed();
        let denied = UprobeAccess::Denied;
        assert_eq!(names(&cap_problems(caps, (6, 18), 0, denied, TLS)), ["CAP_SYS_ADMIN"]);
        assert!(cap_problems(caps, (6, 18), 0, denied, NO_TLS).is_empty());
        assert!(cap_problems(caps | (1 << CAP_SYS_ADMIN), (6, 18), 0, denied, TLS).is_empty());
        assert!(cap_problems(caps, (6, 18), 0, UprobeAccess::Unknown, TLS).is_empty());
        let p = &cap_problems(caps, (6, 18), 0, denied, TLS)[0];
        assert!(p.fix.contains("uprobe") && p.fix.contains("--no-tls"), "{}", p.fix);
    }

    #[test]
    fn sys_resource_only_on_old_kernels_with_a_memlock_limit() {
        let caps = all_listed();
        assert!(cap_problems(caps, (5, 11), 64 << 10, UprobeAccess::Allowed, TLS).is_empty());
        assert_eq!(names(&cap_problems(caps, (5, 10), 64 << 10, UprobeAccess::Allowed, TLS)), ["CAP_SYS_RESOURCE"]);
        assert!(
            cap_problems(caps, (5, 10), u64::MAX, UprobeAccess::Allowed, TLS).is_empty(),
            "unlimited memlock needs nothing"
        );
        assert!(cap_problems(caps | (1 << CAP_SYS_RESOURCE), (5, 10), 0, UprobeAccess::Allowed, TLS).is_empty());
        let p = &cap_problems(caps, (5, 10), 0, UprobeAccess::Allowed, TLS)[0];
        assert!(p.fix.contains("RLIMIT_MEMLOCK") && p.fix.contains("LimitMEMLOCK=infinity"), "{}", p.fix);
    }

    #[test]
    fn every_capability_problem_says_why_and_how() {
        for p in cap_problems(0, (5, 10), 0, UprobeAccess::Denied, TLS) {
            let c = CAPABILITIES.iter().find(|c| c.name == p.what).unwrap();
            let short = c.name.trim_start_matches("CAP_");
            assert!(p.fix.contains(c.why), "{p:?}");
            assert!(p.fix.contains(&format!("capabilities.add: [{short}]")), "{p:?}");
            assert!(p.fix.contains(&format!("AmbientCapabilities={}", c.name)), "{p:?}");
            if matches!(c.when, When::Tls | When::TlsUprobes) {
                assert!(p.fix.contains("--no-tls"), "{p:?}");
            }
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("4.19.0"), Some((4, 19)));
        assert_eq!(kernel_version("garbage"), None);
        let mut h = good_host();
        h.memlock = u64::MAX;
        h.kernel_release = "5.4.0-150-generic".into();
        let p = problems(&h, TLS);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("5.17") && p[0].what.contains("5.4") && p[0].fix.contains("bpf_loop"));
        h.kernel_release = "5.16.0".into();
        assert_eq!(problems(&h, TLS).len(), 1, "5.16 has no bpf_loop");
        h.kernel_release = "5.17.0".into();
        assert_eq!(problems(&h, TLS), []);
        h.kernel_release = String::new();
        assert!(problems(&h, TLS)[0].what.contains("kernel version"));
    }

    #[test]
    fn btf_cgroup_and_tracefs_each_named_with_fix() {
        let mut h = good_host();
        h.btf = false;
        h.cgroup2 = None;
        h.tracefs = Tracefs::NotMounted;
        let p = problems(&h, TLS);
        assert_eq!(
            names(&p),
            ["kernel BTF (/sys/kernel/btf/vmlinux)", "a cgroup v2 mount", "tracefs at /sys/kernel/tracing"]
        );
        assert!(p[0].fix.contains("CONFIG_DEBUG_INFO_BTF"));
        assert!(p[1].fix.contains("systemd.unified_cgroup_hierarchy=1"));
        assert!(p[2].fix.contains("mount -t tracefs") && p[2].fix.contains("CAP_SYS_ADMIN"));
        // With CAP_SYS_ADMIN the agent mounts tracefs itself.
        h.caps = Ok(all_listed() | (1 << CAP_SYS_ADMIN));
        assert_eq!(problems(&h, TLS).len(), 2);
        h.tracefs = Tracefs::NoSyscallEvents;
        assert!(problems(&h, TLS).iter().any(|p| p.fix.contains("CONFIG_FTRACE_SYSCALLS")));
    }

    #[test]
    fn error_lists_problems_with_fixes() {
        let e = SelfCheckError { problems: cap_problems(0, (6, 1), 0, UprobeAccess::Allowed, NO_TLS) };
        let s = e.to_string();
        assert!(
            s.contains("missing CAP_BPF: needed to load") && s.contains("missing CAP_PERFMON") && s.contains("grant"),
            "{s}"
        );
    }

    #[test]
    fn this_host_gathers() {
        let h = Host::gather();
        assert!(kernel_version(&h.kernel_release).is_some(), "{h:?}");
        assert!(h.caps.is_ok(), "{h:?}");
    }
}
