//! `cargo xtask setup`: installs what is missing, and only that.
//!
//! - Debian packages: the eBPF toolchain (rustc-web, rust-web-src: rustc 1.96 with
//!   LLVM 22 and its sources for `-Z build-std=core`), the test peers (nginx, curl,
//!   openssl, gnutls-bin, postgresql, redis-server, wrk; mariadb-server and
//!   mariadb-client, rabbitmq-server, nats-server, mosquitto for the broker and
//!   database protocol tests; clickhouse-server 18.16 and zookeeper for the
//!   clustered-mode tests), and tools the tests use
//!   (iproute2, libcap2-bin, bpftool, dig from dnsutils, dnsmasq-base as a DNS
//!   server the tests start themselves; kubectl from kubernetes-client when no
//!   kubectl is installed; python3-venv and systemd for the deployment tests;
//!   chromium, chromium-driver and libnss3-tools for the console's browser tests).
//! - One Python venv at `target/pyvenv` with the PyPI packages the tests use
//!   (linters and schemas for the deployment tests, grpcio and simplefix for the
//!   protocol tests): see `pyvenv.rs`.
//! - bpf-linker 0.13 built against an LLVM 22 shared library: the rustup
//!   toolchain's `libLLVM.so.22.1-rust-*` when present, else Debian's libllvm22
//!   (pulled in by rustc-web). The crate's default feature wants LLVM 23.
use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::util::{path_with_cargo_bin, run as run_cmd};

/// Debian packages the project needs.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "build-essential",
    "pkg-config",
    "curl",
    "ca-certificates",
    "iproute2",
    "libcap2-bin",
    "bpftool",
    "nginx-light",
    "openssl",
    "gnutls-bin",
    "postgresql",
    "redis-server",
    "wrk",
    "golang-go",
    // deployment tests: Python venv for the PyPI linters, systemd-analyze
    "python3",
    "python3-venv",
    "systemd",
    // benchmarks: agent CPU profiles (`bench capture --profile`); instruction
    // counts of the connection table (`bench flows --instructions`)
    "linux-perf",
    "valgrind",
    // protocol tests: dig, and a DNS server the tests start themselves
    "dnsutils",
    "dnsmasq-base",
    // broker and database peers of the protocol tests (started by the tests themselves)
    "mariadb-server",
    "mariadb-client",
    // server-side prepared statements over the binary protocol (libmariadb through Perl DBI)
    "libdbd-mariadb-perl",
    "rabbitmq-server",
    "nats-server",
    "mosquitto",
    // IANA time zones (the collector's registry `hours:` resolve through /usr/share/zoneinfo)
    "tzdata",
    // console tests: headless Chromium driven by selenium, NSS tools for its client certificates
    "chromium",
    "chromium-driver",
    "libnss3-tools",
    // clustered-mode tests: ClickHouse 18.16 replicas (ReplicatedMergeTree, Distributed) and ZooKeeper
    "clickhouse-server",
    "zookeeper",
];

/// Installed only when the command is missing (a node from elsewhere, e.g. with
/// OpenSSL linked in statically, is kept).
/// `kubectl` renders the Kubernetes manifests (`kubectl kustomize`); Debian's is
/// kubernetes-client, kept out of PACKAGES because another kubectl package
/// (e.g. a cloud SDK's) may already own /usr/bin/kubectl.
const IF_MISSING: &[(&str, &str)] = &[("node", "nodejs"), ("kubectl", "kubernetes-client")];

/// Services the Debian packages start on install; the tests start their own
/// instances on loopback ports they pick, so these are stopped and disabled.
/// rabbitmq-server also starts epmd (the Erlang port mapper) through systemd's
/// epmd.socket; the tests run their broker with its own epmd port.
const SERVICES: &[&str] = &[
    "nginx",
    "redis-server",
    "postgresql",
    "mariadb",
    "rabbitmq-server",
    "nats-server",
    "mosquitto",
    "epmd.socket",
    "epmd",
    "clickhouse-server",
    "zookeeper",
];

const BPF_LINKER_VERSION: &str = "0.13";

#[derive(clap::Args)]
pub struct Args {
    /// Only report what is missing; install nothing.
    #[arg(long)]
    pub check: bool,
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!(" {BPF_LINKER_VERSION}.")))
        .unwrap_or(false)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    for (cmd, pkg) in IF_MISSING {
        let found = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().map(|o| o.status.success());
        if !found.unwrap_or(false) {
            missing.push(pkg);
        }
    }
    let linker = bpf_linker_ok();
    if args.check {
        println!("missing Debian packages: {}", if missing.is_empty() { "none".into() } else { missing.join(" ") });
        println!("bpf-linker {BPF_LINKER_VERSION}: {}", if linker { "present" } else { "missing" });
        println!("PyPI tools in target/pyvenv: {}", if crate::pyvenv::present() { "present" } else { "missing" });
        return Ok(());
    }
    if !missing.is_empty() {
        if !crate::util::is_root() {
            bail!("missing Debian packages {}; run `cargo xtask setup` as root", missing.join(" "));
        }
        println!("setup: installing {}", missing.join(" "));
        run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        // The Debian packages start their services; the tests start their own instances.
        for svc in SERVICES {
            let _ = Command::new("systemctl").args(["stop", svc]).status();
            let _ = Command::new("systemctl").args(["disable", svc]).status();
        }
    } else {
        println!("setup: Debian packages present");
    }
    if linker {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
    } else {
        install_bpf_linker()?;
    }
    ensure_cargo_fuzz()?;
    crate::pyvenv::install()
}

/// cargo-fuzz and a nightly toolchain, for the bounded fuzz runs of `xtask test`.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .env("PATH", path_with_cargo_bin())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !nightly {
        println!("setup: installing a rustup nightly toolchain (the fuzz targets need -Z sanitizer)");
        let installed = Command::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .env("PATH", path_with_cargo_bin())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !installed {
            bail!(
                "the fuzz targets need a rustup nightly toolchain (libFuzzer needs -Z sanitizer) and \
                 `rustup toolchain install nightly --profile minimal` failed; install rustup and run it"
            );
        }
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .env("PATH", path_with_cargo_bin())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz");
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "cargo-fuzz", "--locked"])
            .env("PATH", path_with_cargo_bin()),
    )
}

/// An LLVM 22 shared library to build bpf-linker against.
fn llvm22() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(o) = Command::new("rustc").args(["--print", "sysroot"]).env("PATH", path_with_cargo_bin()).output() {
        let lib = Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("lib");
        if let Ok(rd) = std::fs::read_dir(&lib) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("libLLVM.so.22.1-rust-") {
                    return Ok(e.path());
                }
            }
        }
    }
    let debian = Path::new("/usr/lib/x86_64-linux-gnu/libLLVM.so.22.1");
    if debian.exists() {
        return Ok(debian.to_path_buf());
    }
    bail!(
        "no LLVM 22 shared library found (neither the rustup toolchain's libLLVM.so.22.1-rust-* nor Debian's libllvm22)"
    )
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let lib = llvm22()?;
    let prefix = crate::util::root().join("target/llvm22-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link).with_context(|| format!("linking {}", link.display()))?;
    let libdir = lib.parent().expect("lib dir");
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {}", lib.display());
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "bpf-linker", "--version", &format!("~{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", libdir.display()))
            .env("PATH", path_with_cargo_bin()),
    )?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was built but `bpf-linker --version` does not report {BPF_LINKER_VERSION}.x");
    }
    Ok(())
}
