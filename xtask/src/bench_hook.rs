//! `cargo xtask bench hook-window`: how long after its exec a program with
//! TLS linked into its own executable is hooked (the late-hook window: what it
//! says before then is not captured, and its connections say so).
//!
//! Runs `--runs` fresh copies of a rustls program (`tests/peers/rustls-peer`,
//! release build; a new file each, as a new image would be) under the release
//! agent, one every `--pause-ms`, and reads the agent's own figures: files
//! hooked after an exec, the summed and the longest delay from the exec's
//! kernel timestamp to the probes being attached. The copies exit, so the
//! agent's rescan (every 5 s) detaches earlier copies while later ones start:
//! the run includes attaches that meet closes.
use std::{process::Command, time::Duration};

use anyhow::Context;

use crate::{
    bench_capture::{Running, counter, counters},
    util::{cargo, root},
};

#[derive(clap::Args)]
pub struct Args {
    /// Programs executed.
    #[arg(long, default_value_t = 30)]
    pub runs: u32,
    /// Milliseconds between two executions.
    #[arg(long, default_value_t = 700)]
    pub pause_ms: u64,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(crate::util::is_root(), "the benchmark loads eBPF programs: run as root");
    cargo(&["build", "--release", "-p", "wiretrail-agent"])?;
    let agent_bin = root().join("target/release/wiretrail-agent");
    let peer = wiretrail_tests::tls::build_rustls_peer();
    let dir = tempfile::tempdir()?;
    let agent = Running::start(&agent_bin, dir.path(), "none", true, &[])?;
    let c0 = counters(agent.metrics)?;
    for i in 0..a.runs {
        let copy = dir.path().join(format!("rustls-peer-{i}"));
        std::fs::copy(&peer, &copy).with_context(|| format!("copying {}", peer.display()))?;
        // Without arguments it waits 500 ms, prints its usage and exits.
        let out = Command::new(&copy).output().with_context(|| format!("running {}", copy.display()))?;
        anyhow::ensure!(out.status.code() == Some(2), "{} did not run: {out:?}", copy.display());
        std::thread::sleep(Duration::from_millis(a.pause_ms));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let c1 = counters(agent.metrics)?;
    agent.stop()?;
    let delta = |name: &str| -> anyhow::Result<u64> { Ok(counter(&c1, name)? - counter(&c0, name)?) };
    let hooked = delta("tls_exec_attaches")?;
    let sum_us = delta("tls_exec_attach_us_sum")?;
    let max_us = counter(&c1, "tls_exec_attach_us_max")?;
    println!("| metric | value |");
    println!("|---|---|");
    println!("| programs executed (rustls linked in, a new file each, one every {} ms) | {} |", a.pause_ms, a.runs);
    println!("| hooked after their exec | {hooked} |");
    println!("| exec → probes attached, mean | {:.1} ms |", sum_us as f64 / hooked.max(1) as f64 / 1000.0);
    println!("| exec → probes attached, longest | {:.1} ms |", max_us as f64 / 1000.0);
    // Other programs started on the host meanwhile count too: at least every run must be hooked.
    anyhow::ensure!(
        hooked >= a.runs as u64,
        "{} of {} programs were not hooked",
        (a.runs as u64).saturating_sub(hooked),
        a.runs
    );
    Ok(())
}
