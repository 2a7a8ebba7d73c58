//! `cargo xtask <command>`: project automation. Each command lives in its own module.

mod bench_collector;
mod certs;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a local CA, collector and client certificates.
    Certs {
        /// Output directory.
        #[arg(long, default_value = ".wiretrail/certs")]
        out: std::path::PathBuf,
        /// Client certificate names.
        #[arg(long, default_values_t = ["agent".to_string(), "security".to_string()])]
        client: Vec<String>,
    },
    /// Benchmarks (run with --release).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Collector ingest, query and verify figures.
    Collector(bench_collector::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Certs { out, client } => {
            let names: Vec<&str> = client.iter().map(String::as_str).collect();
            certs::generate(&out, &names)?;
            println!("certificates written to {}", out.display());
        }
        Cmd::Bench {
            what: Bench::Collector(args),
        } => bench_collector::run(args)?,
    }
    Ok(())
}
