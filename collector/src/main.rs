//! `wiretrail`: the collector server and the security team's CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    match wiretrail_collector::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", wiretrail_collector::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}
