//! Helpers shared by the end-to-end tests (and `cargo xtask bench`): root checks,
//! the agent as a process, real peers (nginx, PostgreSQL, redis, dnsmasq, Python
//! gRPC and FIX scripts), network namespaces. Reading records back, typed with
//! the agent's own record type, is in `tests/tests/support` (this library
//! must build without the agent: xtask depends on it before the eBPF
//! toolchain is installed).
//!
//! Every helper cleans up after itself on drop; every wait is bounded.
pub mod agent;
pub mod broker_scripts;
pub mod collector;
pub mod curl_trace;
pub mod kube_api;
pub mod netns;
pub mod nginx;
pub mod peers;
pub mod protocol_scripts;
pub mod servers;
pub mod tls;
pub mod workload;

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Fails loudly (never skips) when not root: these tests load eBPF programs,
/// create network namespaces and start servers.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it loads eBPF programs and creates network namespaces); run `cargo xtask test` as root"
    );
}

static SERIAL: Mutex<()> = Mutex::new(());

/// End-to-end tests run one at a time: each starts its own agent, which sees
/// the whole host.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// Directory holding the workspace's built binaries (`target/<profile>`), found
/// from the running test executable (`target/<profile>/deps/<test>`).
pub fn target_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WIRETRAIL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(|p| p.parent()).expect("target/<profile>").to_path_buf()
}

/// Path to a workspace binary; panics with the fix if it was not built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = target_bin_dir().join(name);
    assert!(p.is_file(), "{} not built; run `cargo xtask test` (it builds every binary first)", p.display());
    p
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Wall clock as ns since the Unix epoch.
pub fn now_unix_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}
