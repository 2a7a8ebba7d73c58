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
pub mod clickhouse;
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

/// A TCP port for a server a test starts as another process (which cannot be
/// handed a bound socket). Binding port 0 and closing would hand out an
/// ephemeral port, which any connect() on the host may take as its source
/// port before the server binds it. This port is instead outside the
/// kernel's ephemeral range (`ip_local_port_range`: connect() never picks
/// it), handed out once per process, and bindable on 127.0.0.1 and ::1 when
/// returned.
/// In-process servers bind port 0 themselves and pass the bound listener.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let (lo, hi) = ephemeral_range();
    // Below the ephemeral range; a per-process start spreads concurrent test
    // binaries over the range.
    let (first, last) = if lo > 10_000 { (10_000u16, lo - 1) } else { (hi.saturating_add(1), u16::MAX) };
    let span = u32::from(last - first) + 1;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let mut candidate = next.unwrap_or(first + (std::process::id() % span) as u16);
    for _ in 0..span {
        let port = candidate;
        candidate = if candidate >= last { first } else { candidate + 1 };
        let v6_free = || match TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable, // no IPv6 loopback
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && v6_free() {
            *next = Some(candidate);
            return port;
        }
    }
    panic!("no free TCP port in {first}..={last} on 127.0.0.1");
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("ip_local_port_range");
    let v: Vec<u16> = text.split_whitespace().map(|p| p.parse().expect("a port")).collect();
    assert_eq!(v.len(), 2, "ip_local_port_range: {text}");
    (v[0], v[1])
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
