//! Facts about the host every stage may need: the cgroup v2 hierarchy and
//! the host name. Depends on nothing else in the agent.
use std::path::PathBuf;

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` on most nodes, `/sys/fs/cgroup/unified`
/// on hybrid hosts. In a container, the host's hierarchy bind-mounted under
/// `/host` (see the DaemonSet) is preferred over the container's own, which a
/// cgroup namespace limits to the pod's subtree.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let all: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_src, dst, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dst))
        })
        .collect();
    all.iter().find(|p| p.starts_with("/host")).or(all.first()).cloned()
}

/// This node's host name (the default agent id and the host stamped on records).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}
