//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! 1. `setup` (installs what is missing);
//! 2. build every binary (the end-to-end tests run them as processes);
//! 3. `cargo test --workspace`: unit, property, kernel and end-to-end tests (the
//!    latter need root and fail loudly without it);
//! 4. every fuzz target for a bounded time (`fuzz/run-all.sh`);
//! 5. clippy with warnings denied.
use crate::util::cargo;

#[derive(clap::Args)]
pub struct Args {
    /// Skip `setup` (prerequisites already installed).
    #[arg(long)]
    pub no_setup: bool,
    /// Skip clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Seconds each fuzz target runs (0 skips fuzzing).
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u64,
    /// Extra arguments for `cargo test` (e.g. a test name filter after `--`).
    #[arg(trailing_var_arg = true)]
    pub rest: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.no_setup {
        crate::setup::run(&crate::setup::Args { check: false })?;
    }
    report_free_disk("before the build");
    cargo(&["build", "--workspace", "--bins"])?;
    let mut test = vec!["test", "--workspace", "--no-fail-fast"];
    test.extend(args.rest.iter().map(String::as_str));
    let tested = cargo(&test);
    // A linker killed by SIGBUS or a test failing with ENOSPC reads like a bug;
    // the free space beside the result says what it was.
    report_free_disk("after the tests");
    tested?;
    if args.fuzz_seconds > 0 {
        crate::util::run(
            std::process::Command::new("bash")
                .arg(crate::util::root().join("fuzz/run-all.sh"))
                .arg(args.fuzz_seconds.to_string())
                .env("PATH", crate::util::path_with_cargo_bin()),
        )?;
    }
    if !args.no_lint {
        cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    }
    Ok(())
}

/// Prints the free space where the build writes (`target/`), so a run that
/// fails for want of disk says so.
fn report_free_disk(when: &str) {
    let target = crate::util::root().join("target");
    let dir = if target.exists() { target } else { crate::util::root() };
    match crate::util::free_bytes(&dir) {
        Ok(free) => eprintln!(
            "xtask test: {:.1} GiB free on the disk of {} {when}",
            free as f64 / (1u64 << 30) as f64,
            dir.display()
        ),
        Err(e) => eprintln!("xtask test: free space of {} unknown: {e}", dir.display()),
    }
}
