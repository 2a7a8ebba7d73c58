//! Workload identity of the process behind each record: its cgroup v2 path
//! (resolved from the kernel's cgroup id), the container that path names, and
//! its executable. Kubernetes enrichment and the identity registry build on this.
pub mod container;

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use container::Container;

/// What the records carry about the process that spoke.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// cgroup v2 path relative to the cgroup root (e.g. `/system.slice/nginx.service`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// The container the cgroup path names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The process's executable (as `/proc/PID/exe` shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// Executables read at exec time (by the exec-notification reader, while the
/// process is fresh), so short-lived processes still get theirs. Bounded.
#[derive(Debug, Default)]
pub struct ExecCache(std::sync::Mutex<HashMap<(u32, String), String>>);

impl ExecCache {
    /// Most entries kept; the cache is cleared when full (it is only a cache).
    const MAX: usize = 65_536;

    /// Reads `/proc/PID/exe` of a process that just executed a new image.
    pub fn record_exec(&self, pid: u32, comm: &str) {
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= Self::MAX {
                m.clear();
            }
            m.insert((pid, comm.to_string()), exe.display().to_string());
        }
    }

    fn get(&self, pid: u32, comm: &str) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&(pid, comm.to_string())).cloned()
    }
}

/// Every cgroup under `root` as (cgroup id = directory inode, path relative to
/// the root, `/` for the root itself). Bounded: cgroup trees are shallow, but
/// a walk never runs forever.
pub fn walk_cgroups(root: &std::path::Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut budget = 200_000usize;
    while let Some(dir) = stack.pop() {
        let Ok(md) = std::fs::metadata(&dir) else { continue };
        let rel = dir.strip_prefix(root).map(|p| format!("/{}", p.display())).unwrap_or_else(|_| "/".into());
        out.push((md.ino(), rel));
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if budget == 0 {
                return out;
            }
            budget -= 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Caches cgroup id → path (rescanning the hierarchy on a miss, at most once a
/// second) and pid → executable.
pub struct IdentityResolver {
    /// Root of the cgroup v2 hierarchy, found from /proc/self/mounts.
    root: Option<PathBuf>,
    /// cgroup id (the directory's inode) → path relative to the root.
    cgroups: HashMap<u64, String>,
    /// When the hierarchy was last walked.
    scanned: Option<Instant>,
    /// pid → (comm, cgroup id, identity): resolved once and shared by every
    /// record of the process; a new comm (execve, pid reuse) or cgroup re-resolves.
    by_pid: HashMap<u32, (String, u64, Arc<Identity>)>,
    /// Bound on `by_pid` (cleared when full: a cache, not a record).
    max_pids: usize,
    /// Executables seen at exec time.
    execs: std::sync::Arc<ExecCache>,
}

impl IdentityResolver {
    pub fn new(execs: std::sync::Arc<ExecCache>) -> Self {
        IdentityResolver {
            root: crate::capture::selfcheck::cgroup2_root(),
            cgroups: HashMap::new(),
            scanned: None,
            by_pid: HashMap::new(),
            max_pids: 65_536,
            execs,
        }
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        let Some(root) = self.root.clone() else { return };
        self.cgroups.extend(walk_cgroups(&root));
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cgroups.get(&id) {
            return Some(p.clone());
        }
        if self.scanned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.scan();
        }
        self.cgroups.get(&id).cloned()
    }

    /// The identity of process `pid` (command `comm`) in cgroup `cgroup_id`.
    /// No allocation when the process was seen before with the same comm and cgroup.
    pub fn resolve(&mut self, pid: u32, comm: &str, cgroup_id: u64) -> Arc<Identity> {
        if let Some((c, g, id)) = self.by_pid.get(&pid)
            && c == comm
            && *g == cgroup_id
        {
            return id.clone();
        }
        let cgroup_path = self.cgroup_path(cgroup_id);
        let container = cgroup_path.as_deref().and_then(container::from_cgroup_path);
        let exe = self
            .execs
            .get(pid, comm)
            .or_else(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string()));
        let id = Arc::new(Identity { cgroup_path, container, exe });
        if self.by_pid.len() >= self.max_pids {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, (comm.to_string(), cgroup_id, id.clone()));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_this_process() {
        let mut r = IdentityResolver::new(Default::default());
        let me = std::process::id();
        // Our own cgroup id is the inode of our cgroup directory.
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = cg.lines().find_map(|l| l.strip_prefix("0::")).expect("cgroup v2 entry").to_string();
        let root = crate::capture::selfcheck::cgroup2_root().expect("cgroup v2 mounted");
        let ino = std::fs::metadata(root.join(rel.trim_start_matches('/'))).unwrap().ino();
        let id = r.resolve(me, "test", ino);
        assert_eq!(id.cgroup_path.as_deref(), Some(rel.as_str()));
        assert_eq!(id.exe, Some(std::fs::read_link("/proc/self/exe").unwrap().display().to_string()));
        assert_eq!(r.resolve(me, "test", u64::MAX).cgroup_path, None, "unknown ids stay unknown");
    }
}
