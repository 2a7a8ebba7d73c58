//! `cargo xtask`: the project's commands. Each subcommand lives in its own file.
mod bench_capture;
mod pyvenv;
mod run;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
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
    /// Benchmarks that print figures.
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Build => util::cargo(&["build", "--release", "--workspace"]),
        Cmd::Run(a) => run::run(&a),
        Cmd::Test(a) => test::run(&a),
        Cmd::Bench { which: Bench::Capture(a) } => bench_capture::run(&a),
        Cmd::Bench { which: Bench::Tls(a) } => bench_capture::run(&bench_capture::Args { tls: true, ..a }),
    }
}
