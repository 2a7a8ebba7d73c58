//! `cargo xtask bench capture`: wrk against nginx on loopback, agent off vs on.
//!
//! Phases, all in one run so the figures are ratios of one machine state:
//! 1. no agent (baseline before);
//! 2. the floor: the agent's own tracepoints with programs that return at
//!    once (`wiretrail-agent floor --hooks syscalls`);
//! 3. plain: the floor of the socket layer as a data path, no-op
//!    fentry/fexit on the TCP/UDP send and receive functions (`--hooks
//!    sockets`; printed as not measured, with the kernel's answer, where they
//!    cannot load); HTTPS (`bench tls`): the agent's TLS uprobes on nginx's
//!    libssl with no-op programs (`--hooks tls`);
//!    Plain: then the agent's own capture programs with user space only
//!    reading the ring and dropping the events (`--hooks capture`), which
//!    splits the agent's cost into its kernel side and its user space;
//! 4. the agent capturing with `--output none` (capture, connection table,
//!    records made but not written): requests/s, agent CPU per kernel event,
//!    peak RSS, losses — optionally profiled with `perf` (`--profile`);
//! 5. no agent (baseline after: the VM's speed drifts, so both baselines and
//!    their spread are printed and the ratio uses their mean);
//! 6. the agent shipping to a collector on this host (plaintext gRPC, zstd):
//!    records shipped per second, records per request, encoded record bytes
//!    and bytes on the wire (TCP bytes acked, from `ss`) per captured payload byte.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
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
    /// Agent output while measuring phase 2: `none` (records made, not
    /// written) or `jsonl` (JSON lines to /dev/null).
    #[arg(long, default_value = "none")]
    pub output: String,
    /// Record a CPU profile of the agent in phase 2 (`perf record`) and print its top functions.
    #[arg(long)]
    pub profile: bool,
    /// Skip phase 4 (shipping to a collector).
    #[arg(long)]
    pub no_ship: bool,
    /// One more argument for the agent while it is measured (repeat for
    /// several), e.g. `--agent-arg=--keep-tls-ciphertext`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Measure this agent binary instead of the one built here (A/B runs
    /// of two builds, alternated).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
    /// HTTPS (set by `bench tls`): TLS plaintext capture on vs off.
    #[arg(skip)]
    pub tls: bool,
}

/// wrk's figures.
struct Wrk {
    rps: f64,
    requests: u64,
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
fn wrk(addr: SocketAddr, a: &Args, secs: u64) -> anyhow::Result<Wrk> {
    let scheme = if a.tls { "https" } else { "http" };
    let out = Command::new("wrk")
        .args(["-t", &a.threads.to_string(), "-c", &a.connections.to_string(), "-d", &format!("{secs}s")])
        .arg(format!("{scheme}://{addr}/index.html"))
        .output()
        .context("running wrk (apt-get install wrk; `cargo xtask setup` does it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    let latency_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_latency_us)
        .with_context(|| format!("no Latency in wrk output:\n{text}"))?;
    Ok(Wrk { rps, requests, latency_us })
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
        .context("no VmHWM in /proc/PID/status")?;
    Ok((ticks / hz, hwm))
}

/// The agent's counters now, from its metrics endpoint (a missing counter is an error).
pub(crate) fn counters(metrics: SocketAddr) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).context("connecting to the agent's metrics")?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.strip_prefix("wiretrail_agent_")?.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

pub(crate) fn counter(c: &std::collections::HashMap<String, u64>, name: &str) -> anyhow::Result<u64> {
    c.get(name).copied().with_context(|| format!("the agent's metrics have no {name}"))
}

/// A running agent and how to read it.
pub(crate) struct Running {
    child: Child,
    pub(crate) metrics: SocketAddr,
}

impl Running {
    /// The agent with `output` (`none`, `jsonl`), TLS capture on if `tls`.
    pub(crate) fn start(bin: &Path, dir: &Path, output: &str, tls: bool, extra: &[&str]) -> anyhow::Result<Running> {
        let ready = dir.join("ready");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let child = Command::new(bin)
            .args(["--output", output, "--output-file", "/dev/null"])
            .args(if tls { &[][..] } else { &["--no-tls"][..] })
            .arg("--ready-file")
            .arg(&ready)
            .arg("--redact-key-file")
            .arg(dir.join("redact.key"))
            .args(["--metrics-addr", &metrics.to_string(), "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the agent")?;
        let mut r = Running { child, metrics };
        if !wait_until(Duration::from_secs(60), || ready.exists()) {
            let _ = r.child.kill();
            bail!("agent did not attach");
        }
        // The metrics endpoint answers once the main loop runs.
        if !wait_until(Duration::from_secs(10), || counters(metrics).is_ok()) {
            let _ = r.child.kill();
            bail!("agent metrics did not answer");
        }
        Ok(r)
    }

    pub(crate) fn stop(self) -> anyhow::Result<()> {
        terminate(self.child, "agent")
    }
}

/// SIGTERM to `child`, then its exit status must be success.
fn terminate(mut child: Child, what: &str) -> anyhow::Result<()> {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait()?;
    anyhow::ensure!(st.success(), "{what} exited with {st}");
    Ok(())
}

/// `wiretrail-agent floor`: a hook set with programs that return at once.
struct Floor {
    child: Child,
}

impl Floor {
    /// Starts it; `Err` carries the agent's own message when the hooks
    /// cannot be loaded on this kernel.
    fn start(bin: &Path, dir: &Path, hooks: &str, extra: &[&str]) -> anyhow::Result<Floor> {
        let ready = dir.join(format!("floor-{hooks}.ready"));
        let log = dir.join(format!("floor-{hooks}.log"));
        let child = Command::new(bin)
            .args(["floor", "--hooks", hooks, "--log-level", "warn", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .stdout(std::fs::File::create(dir.join(format!("floor-{hooks}.out")))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the agent's floor mode")?;
        let mut f = Floor { child };
        let up = wait_until(Duration::from_secs(30), || ready.exists() || f.child.try_wait().ok().flatten().is_some());
        if !up || !ready.exists() {
            let _ = f.child.kill();
            let _ = f.child.wait();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            let first = err.lines().find(|l| l.starts_with("Error")).unwrap_or("did not attach").to_string();
            bail!("{first}");
        }
        Ok(f)
    }

    fn stop(self) -> anyhow::Result<()> {
        terminate(self.child, "floor agent")
    }
}

/// wrk with a floor hook set attached: its figures, or why it could not load.
fn floor_run(
    bin: &Path,
    dir: &Path,
    hooks: &str,
    extra: &[&str],
    addr: SocketAddr,
    a: &Args,
) -> anyhow::Result<Result<Wrk, String>> {
    let f = match Floor::start(bin, dir, hooks, extra) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let w = wrk(addr, a, a.duration)?;
    f.stop()?;
    Ok(Ok(w))
}

/// The libssl file nginx links (from `ldd`), where the agent probes it.
fn nginx_libssl() -> anyhow::Result<String> {
    let out = Command::new("ldd").arg("/usr/sbin/nginx").output().context("ldd /usr/sbin/nginx")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("libssl.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .context("nginx links no libssl (ldd)")
}

/// Bytes acknowledged by the peer on TCP connections to `port` (from `ss`).
fn tcp_bytes_acked_to(port: u16) -> anyhow::Result<u64> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", &format!("( dport = :{port} )")])
        .output()
        .context("ss (iproute2)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes_acked:"))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum())
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(crate::util::is_root(), "the benchmark loads eBPF programs: run as root");
    cargo(&["build", "--release", "-p", "wiretrail-agent", "-p", "wiretrail-collector"])?;
    let agent_bin = a.agent_bin.clone().unwrap_or_else(|| root().join("target/release/wiretrail-agent"));
    let collector_bin = root().join("target/release/wiretrail");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let _nginx = if a.tls { Nginx::start_tls(&[addr]) } else { Nginx::start_with(&[addr], None, a.workers) };
    let dir = tempfile::tempdir()?;

    eprintln!("bench: warm-up");
    wrk(addr, a, 2)?;
    eprintln!("bench: 1/6 agent off, {} s", a.duration);
    let off1 = wrk(addr, a, a.duration)?;
    eprintln!("bench: 2/6 floor: the agent's tracepoints with no-op programs, {} s", a.duration);
    let floor_tp = floor_run(&agent_bin, dir.path(), "syscalls", &[], addr, a)?;
    let floor_sock = if a.tls {
        eprintln!("bench: 3/6 floor: the agent's TLS uprobes on nginx's libssl with no-op programs, {} s", a.duration);
        let lib = nginx_libssl()?;
        floor_run(&agent_bin, dir.path(), "tls", &["--library", &lib], addr, a)?
    } else {
        eprintln!("bench: 3/6 floor: fentry/fexit on the socket layer with no-op programs, {} s", a.duration);
        floor_run(&agent_bin, dir.path(), "sockets", &[], addr, a)?
    };
    // Plain only: the TLS uprobes are not part of it.
    let kernel_side = if a.tls {
        None
    } else {
        eprintln!("bench: 3/6 (second part) the agent's capture programs, events read and dropped, {} s", a.duration);
        let w = floor_run(&agent_bin, dir.path(), "capture", &[], addr, a)?;
        // Its last line: "N events read and dropped, W written, L lost (...)".
        let said = std::fs::read_to_string(dir.path().join("floor-capture.out")).unwrap_or_default();
        let counts = said.lines().find(|l| l.contains("events read and dropped")).unwrap_or("").to_string();
        Some(w.map(|w| (w, counts)))
    };

    eprintln!("bench: 4/6 agent on (output {}), {} s", a.output, a.duration);
    let extra: Vec<&str> = a.agent_args.iter().map(String::as_str).collect();
    let agent = Running::start(&agent_bin, dir.path(), &a.output, a.tls, &extra)?;
    let pid = agent.child.id();
    let (cpu0, _) = proc_usage(pid)?;
    let c0 = counters(agent.metrics)?;
    let perf_data = dir.path().join("perf.data");
    let profiler = a
        .profile
        .then(|| {
            Command::new("perf")
                .args(["record", "-F", "499", "-g", "-o"])
                .arg(&perf_data)
                .args(["-p", &pid.to_string(), "--", "sleep", &a.duration.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("perf record (apt-get install linux-perf)")
        })
        .transpose()?;
    let t0 = Instant::now();
    let on = wrk(addr, a, a.duration)?;
    let wall = t0.elapsed().as_secs_f64();
    // The agent publishes kernel counters every second: wait for the last one.
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu1, hwm_kib) = proc_usage(pid)?;
    let c1 = counters(agent.metrics)?;
    if let Some(mut p) = profiler {
        p.wait()?;
    }
    agent.stop()?;
    let events = counter(&c1, "kernel_events")? - counter(&c0, "kernel_events")?;
    let lost = counter(&c1, "kernel_lost_events")?;
    let gap_records = counter(&c1, "gap_records")?;
    let records = counter(&c1, "records_out")? - counter(&c0, "records_out")?;
    let data_bytes = counter(&c1, "data_bytes")? - counter(&c0, "data_bytes")?;
    let not_kept =
        counter(&c1, "kernel_tls_ciphertext_not_kept_bytes")? - counter(&c0, "kernel_tls_ciphertext_not_kept_bytes")?;
    let cpu = cpu1 - cpu0;

    eprintln!("bench: 5/6 agent off, {} s", a.duration);
    let off2 = wrk(addr, a, a.duration)?;
    let base = (off1.rps + off2.rps) / 2.0;

    let ship = if a.no_ship {
        None
    } else {
        eprintln!("bench: 6/6 agent shipping to a collector on this host, {} s", a.duration);
        let port = free_port();
        let data = dir.path().join("data");
        let mut collector = Command::new(&collector_bin)
            .args(["serve", "--insecure-plaintext", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?;
        anyhow::ensure!(
            wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "collector did not listen"
        );
        let spool = dir.path().join("spool");
        let agent = Running::start(
            &agent_bin,
            dir.path(),
            &a.output,
            a.tls,
            &[
                &["--collector", &format!("http://127.0.0.1:{port}"), "--spool-dir", spool.to_str().unwrap()],
                &extra[..],
            ]
            .concat(),
        )?;
        let c0 = counters(agent.metrics)?;
        let wire0 = tcp_bytes_acked_to(port)?;
        let t0 = Instant::now();
        let w = wrk(addr, a, a.duration)?;
        let wall = t0.elapsed().as_secs_f64();
        // Let the shipper send what the run made.
        std::thread::sleep(Duration::from_secs(3));
        let c1 = counters(agent.metrics)?;
        let wire = tcp_bytes_acked_to(port)? - wire0;
        agent.stop()?;
        let _ = collector.kill();
        let _ = collector.wait();
        let records = counter(&c1, "records_out")? - counter(&c0, "records_out")?;
        let payload = counter(&c1, "data_bytes")? - counter(&c0, "data_bytes")?;
        let held = counter(&c1, "record_payload_bytes")? - counter(&c0, "record_payload_bytes")?;
        let encoded = counter(&c1, "wire_record_bytes")? - counter(&c0, "wire_record_bytes")?;
        Some((w, wall, records, payload, held, encoded, wire))
    };

    println!("| metric | value |");
    println!("|---|---|");
    let scheme = if a.tls { "https, TLS capture on" } else { "http" };
    println!(
        "| wrk -t{} -c{} -d{}s ({scheme}), nginx workers {}, agent output {}{} | |",
        a.threads,
        a.connections,
        a.duration,
        a.workers,
        a.output,
        if extra.is_empty() { String::new() } else { format!(", agent args {}", extra.join(" ")) }
    );
    println!(
        "| requests/s, agent off (before / after; spread) | {:.0} / {:.0} ({:.1} %) |",
        off1.rps,
        off2.rps,
        100.0 * (off1.rps - off2.rps).abs() / base
    );
    let second = if a.tls { "the agent's TLS uprobes (libssl)" } else { "fentry/fexit tcp/udp send/recvmsg" };
    let floors = [("the agent's tracepoints", &floor_tp), (second, &floor_sock)];
    for (name, f) in floors {
        match f {
            Ok(w) => println!(
                "| requests/s, floor: {name}, no-op programs (ratio to mean(off)) | {:.0} ({:.4}) |",
                w.rps,
                w.rps / base
            ),
            Err(e) => println!("| requests/s, floor: {name}, no-op programs | not measured: {e} |"),
        }
    }
    println!("| requests/s, agent on | {:.0} |", on.rps);
    println!("| ratio on / mean(off) | {:.4} |", on.rps / base);
    if let Ok(w) = &floor_tp {
        println!("| ratio on / floor (the agent's tracepoints) | {:.4} |", on.rps / w.rps);
    }
    if let Ok(w) = &floor_sock {
        println!("| ratio on / floor ({second}) | {:.4} |", on.rps / w.rps);
    }
    match &kernel_side {
        Some(Ok((k, counts))) => {
            let of_floor = floor_tp.as_ref().map_or("no tracepoint floor".into(), |f| format!("{:.4}", k.rps / f.rps));
            println!(
                "| requests/s, the agent's capture programs, events read and dropped (ratio to the tracepoint floor) | {:.0} ({of_floor}) |",
                k.rps
            );
            println!("| its events (the floor agent's count) | {} |", counts.trim_start_matches("wiretrail-agent: "));
            println!("| ratio on / that (what the agent's user space costs) | {:.4} |", on.rps / k.rps);
        }
        Some(Err(e)) => println!("| requests/s, the agent's capture programs, events dropped | not measured: {e} |"),
        None => {}
    }
    println!(
        "| mean latency off / on | {:.0} µs / {:.0} µs |",
        (off1.latency_us + off2.latency_us) / 2.0,
        on.latency_us
    );
    println!("| agent CPU during run | {:.1} % of one core |", 100.0 * cpu / wall);
    println!("| kernel events during run | {events} ({:.0}/s) |", events as f64 / wall);
    println!("| agent CPU per kernel event | {:.2} µs |", cpu * 1e6 / events.max(1) as f64);
    println!("| records made per request | {:.3} |", records as f64 / on.requests.max(1) as f64);
    println!(
        "| payload bytes copied / TLS ciphertext bytes counted, not copied, per request | {:.0} / {:.0} |",
        data_bytes as f64 / on.requests.max(1) as f64,
        not_kept as f64 / on.requests.max(1) as f64
    );
    println!("| agent peak RSS | {:.1} MiB |", hwm_kib as f64 / 1024.0);
    println!("| lost events (whole run) | {lost} |");
    println!("| gap records (whole run) | {gap_records} |");
    if let Some((w, wall, records, payload, held, encoded, wire)) = ship {
        println!("| shipping: requests/s | {:.0} |", w.rps);
        println!("| shipping: records shipped per second | {:.0} |", records as f64 / wall);
        println!("| shipping: records per request | {:.3} |", records as f64 / w.requests.max(1) as f64);
        println!("| shipping: payload bytes captured (both ends) / held in records (once) | {payload} / {held} |");
        println!(
            "| shipping: encoded record bytes per payload byte captured / held | {:.3} / {:.3} |",
            encoded as f64 / payload.max(1) as f64,
            encoded as f64 / held.max(1) as f64
        );
        println!(
            "| shipping: bytes on the wire (TCP, zstd) per payload byte captured / held | {:.3} / {:.3} ({wire} B) |",
            wire as f64 / payload.max(1) as f64,
            wire as f64 / held.max(1) as f64
        );
    }
    if a.profile {
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "1.5", "-i"])
            .arg(&perf_data)
            .output()
            .context("perf report")?;
        println!("\nagent CPU profile (perf, phase 2, self time):");
        for l in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains('%') && !l.starts_with('#')) {
            if !l.trim_start().starts_with('-') && !l.trim_start().starts_with('|') {
                println!("{}", l.trim());
            }
        }
    }
    Ok(())
}
