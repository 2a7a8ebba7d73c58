//! `wiretrail`: the collector server and the security team's CLI.

fn main() -> anyhow::Result<()> {
    wiretrail_collector::cli::main()
}
