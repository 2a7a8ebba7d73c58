//! Finding the files processes execute code from: `/proc/PID/exe` and the
//! executable mappings in `/proc/PID/maps`, opened through `/proc/PID/root` so
//! files inside containers are found too.
use std::{collections::BTreeSet, os::unix::fs::MetadataExt, path::PathBuf};

/// A file some process executes, identified by device and inode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// (device, inode): one attach per distinct file.
    pub id: (u64, u64),
    /// Openable path from the agent's mount namespace (`/proc/PID/root/...`).
    pub open_path: PathBuf,
    /// The path as the process sees it (for reports).
    pub shown_path: String,
    pub pid: u32,
}

/// Executable file mappings of `pid` (including its main executable).
pub fn candidates(pid: u32) -> Vec<Candidate> {
    let mut out = BTreeSet::new();
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return Vec::new() };
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut f = line.split_whitespace();
        let (Some(_), Some(perms), Some(_), Some(_), Some(inode)) = (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(path) = f.next() else { continue };
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        let open_path = root.join(path.trim_start_matches('/'));
        let Ok(md) = std::fs::metadata(&open_path) else { continue };
        out.insert(Candidate { id: (md.dev(), md.ino()), open_path, shown_path: path.to_string(), pid });
    }
    out.into_iter().collect()
}

/// Every live process id.
pub fn pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// TLS libraries at their usual places, attached even before a process maps
/// them so the first connection of a new process is not missed.
pub fn well_known() -> Vec<Candidate> {
    const PATHS: &[&str] = &[
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
        "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
        "/usr/lib64/libssl.so.3",
        "/usr/lib64/libssl.so.1.1",
        "/usr/lib64/libgnutls.so.30",
        "/lib/libssl.so.3",
        "/usr/lib/libssl.so.3",
    ];
    PATHS
        .iter()
        .filter_map(|p| {
            let md = std::fs::metadata(p).ok()?;
            Some(Candidate { id: (md.dev(), md.ino()), open_path: PathBuf::from(p), shown_path: p.to_string(), pid: 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_maps_include_its_executable() {
        let me = std::process::id();
        let c = candidates(me);
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert!(c.iter().any(|c| c.id == (exe.dev(), exe.ino())), "{c:?}");
        assert!(pids().contains(&me));
    }
}
