//! `cargo xtask`: the project's commands. Each subcommand lives in its own
//! module; this file only dispatches.
mod bench_capture;
mod bench_collector;
mod bench_collector_ch;
mod bench_flows;
mod bench_frames;
mod bench_hook;
mod bench_payload;
mod bench_policy;
mod certs;
mod pyvenv;
mod run;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

/// The collector's allocator (its `main.rs`): `bench collector` runs the
/// collector in this process, so its figures are the collector binary's.
#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

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
    /// Set up, build, and run the collector and the agent capturing this host.
    Run(run::Args),
    /// Set up, build, and run the whole test suite (unit, kernel, end to end).
    Test(test::Args),
    /// Create a local CA, collector and client certificates.
    Certs {
        /// Output directory.
        #[arg(long, default_value = ".wiretrail/certs")]
        out: std::path::PathBuf,
        /// Client certificates: NAME or NAME:ROLE+ROLE (roles agent, reviewer, auditor,
        /// admin); `security` is reviewer+auditor, other names without roles are agents.
        #[arg(long, default_values_t = ["agent".to_string(), "security".to_string()])]
        client: Vec<String>,
    },
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// (Used by `bench policy`.) The connect loop, run inside the bench cgroup.
    #[command(hide = true)]
    ConnectLoop(bench_policy::LoopArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// wrk against nginx on loopback, agent off vs on.
    Capture(bench_capture::Args),
    /// wrk against nginx over HTTPS, TLS capture off vs on.
    Tls(bench_capture::Args),
    /// Flow reassembly + protocol parsing throughput (single core).
    Flows(bench_flows::Args),
    /// Collector ingest, query and verify figures.
    Collector(bench_collector::Args),
    /// connect() rate without hooks vs with the segmentation hooks and a 10,000-rule policy.
    Policy(bench_policy::Args),
    /// How long after its exec a program with TLS in its own executable is hooked.
    HookWindow(bench_hook::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Build => util::cargo(&["build", "--release", "--workspace"]),
        Cmd::Run(a) => run::run(&a),
        Cmd::Test(a) => test::run(&a),
        Cmd::Certs { out, client } => {
            let names: Vec<&str> = client.iter().map(String::as_str).collect();
            certs::generate(&out, &names)?;
            println!("certificates written to {}", out.display());
            Ok(())
        }
        Cmd::Bench { which: Bench::Capture(a) } => bench_capture::run(&a),
        Cmd::Bench { which: Bench::Tls(a) } => bench_capture::run(&bench_capture::Args { tls: true, ..a }),
        Cmd::Bench { which: Bench::Flows(a) } => bench_flows::run(a),
        // The collector runs inside xtask: measure an optimized build of it,
        // whatever profile `cargo xtask` itself was built with.
        Cmd::Bench { which: Bench::Collector(_) } if cfg!(debug_assertions) => {
            let mut args =
                vec!["run".to_string(), "--quiet".into(), "--release".into(), "-p".into(), "xtask".into(), "--".into()];
            args.extend(std::env::args().skip(1));
            util::cargo(&args.iter().map(String::as_str).collect::<Vec<_>>())
        }
        Cmd::Bench { which: Bench::Collector(a) } => bench_collector::run(a),
        Cmd::Bench { which: Bench::Policy(a) } => bench_policy::run(&a),
        Cmd::Bench { which: Bench::HookWindow(a) } => bench_hook::run(&a),
        Cmd::ConnectLoop(a) => bench_policy::connect_loop(&a),
    }
}
