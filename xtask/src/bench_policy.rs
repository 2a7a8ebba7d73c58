//! `cargo xtask bench policy`: the connect() rate of a workload in a segmented
//! zone with no hooks, then with the agent enforcing a 10,000-rule policy
//! (`--no-capture`: only the segmentation hooks are attached, so the figure is
//! theirs), then with no hooks again. Every connect is allowed by a rule, so
//! each one goes through the full lookup twice (its connect hook and its
//! inbound SYN's ingress hook) and emits two decision events, which the agent
//! reads and counts. The agent runs with `--output none` and no collector:
//! decision records are made only in the forms that are written or shipped,
//! so here none is built and their cost is NOT included. Prints both
//! baselines with their spread, the hooked rate and its ratio to the mean
//! baseline; a missing counter in the agent's stats is an error.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use wiretrail_tests::{free_port, wait_until, workload::Cgroup};

use crate::util::{cargo, root};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Rules in the policy.
    #[arg(long, default_value_t = 10_000)]
    pub rules: usize,
}

/// Arguments of the connect loop (run inside the bench cgroup).
#[derive(clap::Args)]
pub struct LoopArgs {
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub secs: u64,
}

/// The policy: the bench zone may reach 127.0.0.1:`port` and be reached from
/// it; the rest are filler rules between 99 other zones (distinct keys, so
/// the maps hold `rules` entries).
fn policy(slice: &str, port: u16, rules: usize) -> String {
    let mut p = String::from("version: 1\nzones:\n");
    p.push_str(&format!("  - name: bench\n    mode: enforce\n    members:\n      - cgroup: \"/{slice}/bench\"\n"));
    for z in 1..100 {
        p.push_str(&format!(
            "  - name: z{z}\n    mode: enforce\n    members:\n      - cgroup: \"/{slice}/absent-{z}\"\n    addresses: [10.{z}.0.0/16]\n"
        ));
    }
    p.push_str("rules:\n");
    let filler = rules.saturating_sub(2);
    for i in 0..filler {
        let (from, to, port) = (1 + i % 99, 1 + (i / 99) % 99, 1000 + (i / (99 * 99)) as u16);
        p.push_str(&format!("  - from: z{from}\n    to: z{to}\n    ports: [{port}]\n    protocol: tcp\n"));
    }
    p.push_str(&format!(
        "  - name: bench-out\n    from: bench\n    to: {{cidr: 127.0.0.1/32}}\n    ports: [{port}]\n    protocol: tcp\n"
    ));
    p.push_str(&format!(
        "  - name: bench-in\n    from: {{cidr: 127.0.0.1/32}}\n    to: bench\n    ports: [{port}]\n    protocol: tcp\n"
    ));
    p
}

/// The connect loop: connects to 127.0.0.1:`port` for `secs` seconds (closing
/// with RST so no TIME_WAIT piles up), accepting in a thread; prints connects/s.
pub fn connect_loop(a: &LoopArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("127.0.0.1:{}", a.port).parse()?;
    let listener = TcpListener::bind(addr).context("bind")?;
    // Connects wait for the acceptor to keep up: an overflowing accept queue
    // drops SYNs, and each retransmit costs a second (the loop would measure that).
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acc = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
            acc.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    let t0 = Instant::now();
    let mut n: u64 = 0;
    let mut failed: u64 = 0;
    while Instant::now() < deadline {
        // 256 connects between clock reads.
        for _ in 0..256 {
            while n.saturating_sub(accepted.load(std::sync::atomic::Ordering::Relaxed)) > 32 {
                std::thread::yield_now();
            }
            match TcpStream::connect(addr) {
                Ok(s) => {
                    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                    // SAFETY: valid fd and a correctly sized option value.
                    unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as u32,
                        )
                    };
                    n += 1;
                }
                Err(_) => failed += 1,
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{} {}", n as f64 / secs, failed);
    Ok(())
}

/// Runs the loop in the bench cgroup; returns (connects/s, failed connects).
fn measure(cg: &Cgroup, port: u16, secs: u64) -> anyhow::Result<(f64, u64)> {
    let me = std::env::current_exe()?;
    let out = cg
        .command(
            None,
            me.to_str().unwrap(),
            &["connect-loop", "--port", &port.to_string(), "--secs", &secs.to_string()],
        )
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "connect loop failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    let rate: f64 = f.next().context("rate")?.parse()?;
    let failed: u64 = f.next().context("failed")?.parse()?;
    Ok((rate, failed))
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(crate::util::is_root(), "the benchmark attaches cgroup eBPF programs: run as root");
    cargo(&["build", "--release", "-p", "wiretrail-agent"])?;
    let agent_bin = root().join("target/release/wiretrail-agent");
    let slice = format!("wiretrail-bench-{}.slice", std::process::id());
    let cg = Cgroup::new(&slice, "bench");
    let port = free_port();
    let dir = tempfile::tempdir()?;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy(&slice, port, a.rules))?;

    eprintln!("bench: warm-up");
    measure(&cg, port, 2)?;
    eprintln!("bench: no hooks, {} s", a.duration);
    let (off1, off_failed) = measure(&cg, port, a.duration)?;

    let ready = dir.path().join("ready");
    let stats = dir.path().join("stats.json");
    let mut agent = Command::new(&agent_bin)
        .args(["--no-capture", "--output", "none", "--log-level", "warn", "--policy"])
        .arg(&policy_path)
        .arg("--ready-file")
        .arg(&ready)
        .arg("--stats-file")
        .arg(&stats)
        .arg("--redact-key-file")
        .arg(dir.path().join("redact.key"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    if !wait_until(Duration::from_secs(60), || ready.exists()) {
        let _ = agent.kill();
        bail!("agent did not attach");
    }
    eprintln!("bench: hooks with a {}-rule policy, {} s", a.rules, a.duration);
    let (cpu0, _) = crate::bench_capture::proc_usage(agent.id())?;
    let t0 = Instant::now();
    let (on, on_failed) = measure(&cg, port, a.duration)?;
    let (cpu1, rss_kib) = crate::bench_capture::proc_usage(agent.id())?;
    let agent_cpu = (cpu1 - cpu0) / t0.elapsed().as_secs_f64();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let st = agent.wait()?;
    anyhow::ensure!(st.success(), "agent exited with {st}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats)?)?;
    // Without hooks again: the mean of the runs before and after is the
    // baseline (this machine's speed drifts).
    eprintln!("bench: no hooks again, {} s", a.duration);
    let (off2, off_failed2) = measure(&cg, port, a.duration)?;
    let off = (off1 + off2) / 2.0;
    let off_failed = off_failed + off_failed2;
    anyhow::ensure!(on_failed == 0 && off_failed == 0, "connects failed: {off_failed} without hooks, {on_failed} with");
    let stat = |name: &str| s[name].as_u64().with_context(|| format!("the agent's stats have no {name}: {s}"));
    anyhow::ensure!(stat("policy_denied")? == 0, "the bench flow was denied: {s}");
    let (allowed, decisions, lost) = (stat("policy_allowed")?, stat("policy_decisions")?, stat("policy_lost")?);

    println!("| metric | value |");
    println!("|---|---|");
    println!("| rules in the policy | {} |", a.rules);
    println!(
        "| connect()/s, no hooks (before / after; spread) | {off1:.0} / {off2:.0} ({:.1} %) |",
        100.0 * (off1 - off2).abs() / off
    );
    println!("| connect()/s, hooks + {}-rule policy | {on:.0} |", a.rules);
    // Four digits: 0.9499 must not print as 0.950 next to a goal of 0.95.
    println!("| ratio hooked / mean(no hooks) (goal >= 0.95) | {:.4} |", on / off);
    println!("| agent CPU while hooked (share of one core) | {:.0} % |", agent_cpu * 100.0);
    println!("| agent peak RSS | {} MiB |", rss_kib / 1024);
    println!("| decisions allowed (kernel) | {allowed} |");
    println!("| decision events read (no record built: --output none) | {decisions} |");
    println!("| decision events lost | {lost} |");
    Ok(())
}
