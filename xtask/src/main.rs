//! `cargo xtask`: project automation. Each subcommand lives in its own module;
//! this file only dispatches.

mod bench_flows;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "wiretrail project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Flow reassembly + protocol parsing throughput (single core).
    Flows(bench_flows::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench { which } => match which {
            Bench::Flows(args) => bench_flows::run(args),
        },
    }
}
