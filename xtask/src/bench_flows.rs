//! `cargo xtask bench flows`: runs the agent's `bench_flows` example (the
//! connection table's throughput on one core: reassembly, parsing, exchange
//! assembly and record making) in release mode. It reports the median of
//! `--runs` timed runs (default 5) with the spread (slowest/fastest), never
//! the best; messages are cut at 16 KiB chunks and, unless `--split false`,
//! every message is split at one more point so parsers see messages spanning
//! events. With `--instructions` it counts instead, under valgrind's
//! callgrind, the instructions executed inside the connection table per record
//! and per event: the same for the same build, so small changes show on a
//! noisy machine where the timed figures do not.
use crate::util::cargo;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for the benchmark (`--mib`, `--connections`, `--runs`, `--only`, `--split`, `--instructions`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut args = vec!["run", "--quiet", "--release", "-p", "wiretrail-agent", "--example", "bench_flows", "--"];
    args.extend(a.rest.iter().map(String::as_str));
    cargo(&args)
}
