//! `wiretrail`: the collector server and the security team's CLI.

use std::process::ExitCode;

/// mimalloc: several times cheaper than glibc's allocator for the collector's
/// many short-lived leaves and rows (BENCHMARKS.md, issue 14).
#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

fn main() -> ExitCode {
    match wiretrail_collector::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", wiretrail_collector::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}
