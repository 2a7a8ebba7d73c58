//! `cargo xtask bench capture`: wrk against nginx on loopback for a fixed time,
//! first with the agent off, then with the agent capturing everything (JSON lines
//! written to /dev/null, so formatting cost is included). Prints requests/s for
//! both, the ratio, the agent's CPU and peak RSS, events/s and lost events.
use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use wiretrail_tests::{free_port, nginx::Nginx, wait_until};

use crate::util::{cargo, root};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// nginx worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Agent output while measuring: `none` (capture, decode and byte
    /// accounting, no formatting) or `jsonl` (JSON lines to /dev/null).
    #[arg(long, default_value = "none")]
    pub output: String,
    /// HTTPS (set by `bench tls`): TLS plaintext capture on vs off.
    #[arg(skip)]
    pub tls: bool,
}

/// wrk's figures.
struct Wrk {
    rps: f64,
    /// Mean latency, microseconds.
    latency_us: f64,
}

fn parse_latency_us(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

/// Runs wrk once.
fn wrk(addr: SocketAddr, a: &Args) -> anyhow::Result<Wrk> {
    let scheme = if a.tls { "https" } else { "http" };
    let out = Command::new("wrk")
        .args(["-t", &a.threads.to_string(), "-c", &a.connections.to_string(), "-d", &format!("{}s", a.duration)])
        .arg(format!("{scheme}://{addr}/index.html"))
        .output()
        .context("running wrk (apt-get install wrk; `cargo xtask setup` does it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let latency_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_latency_us)
        .with_context(|| format!("no Latency in wrk output:\n{text}"))?;
    Ok(Wrk { rps, latency_us })
}

/// (user+system CPU seconds, peak RSS KiB) of a live process.
pub fn proc_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = (f[11].parse::<u64>()? + f[12].parse::<u64>()?) as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok((ticks / hz, hwm))
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(crate::util::is_root(), "the benchmark loads eBPF programs: run as root");
    cargo(&["build", "--release", "-p", "wiretrail-agent"])?;
    let agent_bin = root().join("target/release/wiretrail-agent");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let _nginx = if a.tls { Nginx::start_tls(&[addr]) } else { Nginx::start_with(&[addr], None, a.workers) };

    eprintln!("bench: warm-up");
    wrk(addr, &Args { duration: 2, output: a.output.clone(), ..*a })?;
    eprintln!("bench: agent off, {} s", a.duration);
    let off = wrk(addr, a)?;

    let dir = tempfile::tempdir()?;
    let ready = dir.path().join("ready");
    let stats = dir.path().join("stats.json");
    let mut agent = Command::new(&agent_bin)
        .args(["--output", &a.output, "--output-file", "/dev/null"])
        .args(if a.tls { &[][..] } else { &["--no-tls"][..] })
        .arg("--ready-file")
        .arg(&ready)
        .arg("--stats-file")
        .arg(&stats)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    if !wait_until(Duration::from_secs(60), || ready.exists()) {
        let _ = agent.kill();
        bail!("agent did not attach");
    }
    let (cpu0, _) = proc_usage(agent.id())?;
    eprintln!("bench: agent on, {} s", a.duration);
    let t0 = Instant::now();
    let on = wrk(addr, a)?;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, hwm_kib) = proc_usage(agent.id())?;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let st = agent.wait()?;
    anyhow::ensure!(st.success(), "agent exited with {st}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats)?)?;
    let events = s["kernel_events"].as_u64().unwrap_or(0);
    let lost = s["kernel_lost_events"].as_u64().unwrap_or(0);
    let gaps = s["gaps"].as_u64().unwrap_or(0);

    println!("| metric | value |");
    println!("|---|---|");
    let scheme = if a.tls { "https, TLS capture on" } else { "http" };
    println!(
        "| wrk -t{} -c{} -d{}s ({scheme}), nginx workers {}, agent output {} | |",
        a.threads, a.connections, a.duration, a.workers, a.output
    );
    println!("| requests/s, agent off | {:.0} |", off.rps);
    println!("| requests/s, agent on | {:.0} |", on.rps);
    println!("| ratio on/off | {:.3} |", on.rps / off.rps);
    println!(
        "| mean latency off / on | {:.0} µs / {:.0} µs (added {:.0} µs per request) |",
        off.latency_us,
        on.latency_us,
        on.latency_us - off.latency_us
    );
    println!("| agent CPU during run | {:.1}% of one core |", 100.0 * (cpu1 - cpu0) / wall);
    println!("| agent peak RSS | {:.1} MiB |", hwm_kib as f64 / 1024.0);
    println!("| kernel events (whole agent run) | {events} |");
    println!("| events/s during run | {:.0} |", events as f64 / wall);
    println!("| lost events | {lost} |");
    println!("| gap records | {gaps} |");
    Ok(())
}
