//! `cargo xtask`: the project's commands. Each subcommand lives in its own
//! module; this file only dispatches.
mod bench_capture;
mod bench_flows;
mod run;
mod setup;
mod setup_python;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "wiretrail project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install every prerequisite on Debian (as root); quick when already present.
    Setup(setup::Args),
    /// Build everything in release mode (the eBPF object is built and embedded).
    Build,
    /// Set up, build, and run the agent capturing this host, with demo traffic.
    Run(run::Args),
    /// Set up, build, and run the whole test suite (unit, kernel, end to end).
    Test(test::Args),
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// wrk against nginx on loopback, agent off vs on.
    Capture(bench_capture::Args),
    /// wrk against nginx over HTTPS, TLS capture off vs on.
    Tls(bench_capture::Args),
    /// Flow reassembly + protocol parsing throughput (single core).
    Flows(bench_flows::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Build => util::cargo(&["build", "--release", "--workspace"]),
        Cmd::Run(a) => run::run(&a),
        Cmd::Test(a) => test::run(&a),
        Cmd::Bench { which: Bench::Capture(a) } => bench_capture::run(&a),
        Cmd::Bench { which: Bench::Tls(a) } => bench_capture::run(&bench_capture::Args { tls: true, ..a }),
        Cmd::Bench { which: Bench::Flows(a) } => bench_flows::run(a),
    }
}
