//! Which workloads are in which zone right now: every cgroup is matched
//! against the zones' cgroup-level selectors, member executables are resolved
//! to (device, inode), and the addresses of members that live in their own
//! network namespace (containers, pods, test namespaces) are learned so the
//! zone can be recognised as a peer.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use wiretrail_common::policy::{Policy, WorkloadAttrs};

use super::maps::Membership;

/// Most processes of one cgroup inspected for their network namespace.
const PIDS_PER_CGROUP: usize = 8;

/// Finds members on this host. Keeps the host's own network namespace (whose
/// addresses belong to no single workload) and what it already warned about.
pub struct Discovery {
    /// Root of the cgroup v2 hierarchy.
    root: PathBuf,
    /// Inode of the host network namespace (the agent's own).
    host_netns: u64,
    /// Member executables that do not exist (warned once each).
    missing_exes: HashSet<String>,
    /// cgroup id → cgroup path: the last walk, for decision records.
    pub cgroup_paths: HashMap<u64, String>,
    /// Address → cgroup id of a member owning it (peer identity on decisions).
    pub addr_owner: HashMap<IpAddr, u64>,
    /// This node's pods (with `--kube`): Kubernetes selectors and pod IPs.
    pods: Option<std::sync::Arc<crate::identity::PodIndex>>,
}

impl Discovery {
    pub fn new(root: PathBuf, pods: Option<std::sync::Arc<crate::identity::PodIndex>>) -> Discovery {
        let host_netns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
        Discovery {
            root,
            host_netns,
            missing_exes: HashSet::new(),
            cgroup_paths: HashMap::new(),
            addr_owner: HashMap::new(),
            pods,
        }
    }

    /// The membership `policy` gives the host as it is now; `declared` are the
    /// policy's own zone addresses (LPM prefix length, address, zone).
    pub fn membership(&mut self, policy: &Policy, declared: &[(u32, [u8; 16], u32)]) -> Membership {
        let mut m = Membership::default();
        for &(bits, addr, zone) in declared {
            m.addrs.insert((bits, addr), zone);
        }
        self.cgroup_paths.clear();
        self.addr_owner.clear();
        let mut netns_addrs: HashMap<u64, Vec<IpAddr>> = HashMap::new();
        for (id, path) in crate::identity::walk_cgroups(&self.root) {
            let pod = crate::identity::container::from_cgroup_path(&path)
                .and_then(|c| self.pods.as_ref().and_then(|p| p.by_container(&c.id)));
            let attrs = WorkloadAttrs {
                cgroup_path: Some(&path),
                k8s_namespace: pod.as_deref().map(|p| p.namespace.as_str()),
                k8s_service_account: pod.as_deref().map(|p| p.service_account.as_str()),
                k8s_labels: pod.as_deref().map(|p| &p.labels),
                ..Default::default()
            };
            if let Some(zone) = policy.cgroup_zone(&attrs) {
                m.cgroups.insert(id, zone);
                // Pod IPs (the index leaves host-network pods out) and the
                // addresses of the member's own network namespace.
                let pod_ips = pod.as_deref().map(|p| p.ips.clone()).unwrap_or_default();
                let pod_ips =
                    pod_ips.into_iter().filter(|ip| self.pods.as_ref().is_some_and(|p| p.by_ip(*ip).is_some()));
                let own: Vec<IpAddr> = pod_ips.chain(self.member_addrs(&path, &mut netns_addrs)).collect();
                for addr in own {
                    m.addrs.insert(host_prefix(addr), zone);
                    self.addr_owner.insert(addr, id);
                }
            }
            self.cgroup_paths.insert(id, path);
        }
        for (path, zone) in policy.exe_members() {
            match std::fs::metadata(&path) {
                Ok(md) => {
                    m.exes.insert((kernel_dev(md.dev()), md.ino()), zone);
                    self.missing_exes.remove(&path);
                }
                Err(e) => {
                    if self.missing_exes.insert(path.clone()) {
                        tracing::warn!(exe = %path, error = %e, "policy member executable not found; it matches nothing until it exists");
                    }
                }
            }
        }
        m
    }

    /// Addresses of the network namespaces of a cgroup's processes, when those
    /// are not the host's.
    fn member_addrs(&self, cgroup: &str, cache: &mut HashMap<u64, Vec<IpAddr>>) -> Vec<IpAddr> {
        let procs = self.root.join(cgroup.trim_start_matches('/')).join("cgroup.procs");
        let Ok(text) = std::fs::read_to_string(procs) else { return Vec::new() };
        let mut out = Vec::new();
        for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()).take(PIDS_PER_CGROUP) {
            let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()) else { continue };
            if ns == self.host_netns {
                continue;
            }
            let addrs = cache.entry(ns).or_insert_with(|| netns_addrs(Path::new(&format!("/proc/{pid}/net"))));
            for a in addrs.iter() {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }
}

/// `st_dev` (userspace encoding) as the kernel's `sb->s_dev` (`MAJOR << 20 | MINOR`).
pub fn kernel_dev(st_dev: u64) -> u64 {
    let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
    (major << 20) | minor
}

/// The LPM entry of one address: IPv4-mapped IPv6, full length, after the slot.
pub fn host_prefix(addr: IpAddr) -> (u32, [u8; 16]) {
    (32 + 128, mapped(addr))
}

/// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), IPv6 as is.
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Global (non-loopback, non-link-local) addresses of the namespace whose
/// `/proc/PID/net` is `net`.
pub fn netns_addrs(net: &Path) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string(net.join("fib_trie")) {
        out.extend(local_v4_from_fib_trie(&t).into_iter().map(IpAddr::V4));
    }
    if let Ok(t) = std::fs::read_to_string(net.join("if_inet6")) {
        out.extend(global_v6_from_if_inet6(&t).into_iter().map(IpAddr::V6));
    }
    out
}

/// Local IPv4 addresses in `/proc/net/fib_trie` (`|-- A.B.C.D` then `/32 host LOCAL`).
pub fn local_v4_from_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut last: Option<Ipv4Addr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
            && !a.is_loopback()
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// Global-scope addresses in `/proc/net/if_inet6` (32 hex digits, index, prefix, scope 00, flags, name).
pub fn global_v6_from_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[3] != "00" || f[0].len() != 32 {
                return None;
            }
            u128::from_str_radix(f[0], 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_v4_from_fib_trie() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 198.18.0.0\n        /30 link UNICAST\n     |-- 198.18.0.1\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n     |-- 198.18.0.1\n        /32 host LOCAL\n";
        assert_eq!(local_v4_from_fib_trie(t), vec![Ipv4Addr::new(198, 18, 0, 1)]);
    }

    #[test]
    fn reads_global_v6_from_if_inet6() {
        let t = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80 eth0\nfd000000000000000000000000000002 02 40 00 80 eth0\n";
        assert_eq!(global_v6_from_if_inet6(t), vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn kernel_dev_encoding() {
        // 8:1 (sda1) in userspace encoding is 0x801; the kernel's is 8 << 20 | 1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 300);
    }

    #[test]
    fn this_namespace_has_addresses_or_none() {
        // Loopback is never reported.
        let addrs = netns_addrs(Path::new("/proc/self/net"));
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
    }
}
