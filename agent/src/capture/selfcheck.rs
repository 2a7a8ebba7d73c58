//! Start-up self-check: capabilities, kernel BTF, tracefs, cgroup v2. Every
//! missing item is named together with its fix.
use std::{fmt, path::PathBuf};

/// Linux capability numbers (include/uapi/linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// One problem found by the self-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is missing.
    pub what: String,
    /// How to fix it.
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

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))?;
    u64::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)
}

/// Capability problems for an effective set `eff`.
pub fn cap_problems(eff: u64) -> Vec<Problem> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut out = Vec::new();
    if !(has(CAP_BPF) || admin) {
        out.push(Problem {
            what: "CAP_BPF".into(),
            fix: "needed to load eBPF programs and maps; run as root or grant CAP_BPF (Kubernetes: securityContext.capabilities.add: [BPF])".into(),
        });
    }
    if !(has(CAP_PERFMON) || admin) {
        out.push(Problem {
            what: "CAP_PERFMON".into(),
            fix: "needed to attach tracepoints and read kernel memory from eBPF; grant CAP_PERFMON (Kubernetes: capabilities.add: [PERFMON])".into(),
        });
    }
    out
}

/// The cgroup v2 mount point: `/sys/fs/cgroup` on unified hosts, or the
/// `cgroup2` mount of a hybrid host (e.g. `/sys/fs/cgroup/unified`).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, dst, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dst))
    })
}

/// Runs every check; returns all problems at once.
pub fn run() -> Result<(), SelfCheckError> {
    let mut problems = Vec::new();
    match effective_caps() {
        Ok(eff) => problems.extend(cap_problems(eff)),
        Err(e) => problems.push(Problem {
            what: "capability information".into(),
            fix: format!("cannot read /proc/self/status: {e}"),
        }),
    }
    if std::fs::metadata("/sys/kernel/btf/vmlinux").is_err() {
        problems.push(Problem {
            what: "kernel BTF (/sys/kernel/btf/vmlinux)".into(),
            fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution since 2021)".into(),
        });
    }
    if cgroup2_root().is_none() {
        problems.push(Problem {
            what: "a cgroup v2 mount".into(),
            fix: "mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1; cgroup ids on records come from cgroup v2".into(),
        });
    }
    if problems.is_empty() { Ok(()) } else { Err(SelfCheckError { problems }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_capability() {
        let p = cap_problems(0);
        let names: Vec<_> = p.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON"]);
        assert!(cap_problems((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(cap_problems(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(cap_problems(1 << CAP_BPF)[0].what, "CAP_PERFMON");
    }

    #[test]
    fn error_lists_problems_with_fixes() {
        let e = SelfCheckError { problems: cap_problems(0) };
        let s = e.to_string();
        assert!(s.contains("CAP_BPF") && s.contains("CAP_PERFMON") && s.contains("grant"), "{s}");
    }
}
