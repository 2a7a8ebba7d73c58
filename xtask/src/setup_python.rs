//! The Python virtual environment at `target/pyvenv` holding PyPI packages the
//! tests drive as third-party peers (e.g. a gRPC server and client, a FIX
//! library). Idempotent: the venv is created once with Debian's `python3 -m
//! venv`, and only requirements not already installed at the pinned version
//! are passed to pip.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::util::run as run_cmd;

/// Python packages the end-to-end protocol tests use (pinned; each has a
/// manylinux wheel or is pure Python for CPython 3.11).
pub const TEST_REQUIREMENTS: &[&str] = &["grpcio==1.66.2", "simplefix==1.0.17"];

/// Debian's interpreter (not a pyenv shim): the one CI has.
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").is_file() { "/usr/bin/python3" } else { "python3" }
}

/// Whether `req` (`name==version`) is installed in the venv at that version.
fn satisfied(python: &Path, req: &str) -> bool {
    let Some((name, version)) = req.split_once("==") else {
        return false;
    };
    Command::new(python)
        .args(["-m", "pip", "show", "--disable-pip-version-check", name])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == format!("Version: {version}"))
        })
        .unwrap_or(false)
}

/// Creates `target/pyvenv` if missing and installs the requirements it lacks;
/// returns the venv's directory.
pub fn ensure_venv(requirements: &[&str]) -> anyhow::Result<PathBuf> {
    let venv = crate::util::root().join("target/pyvenv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        println!("setup: creating {}", venv.display());
        std::fs::create_dir_all(venv.parent().expect("target dir"))?;
        run_cmd(Command::new(system_python()).args(["-m", "venv"]).arg(&venv))
            .context("python3 -m venv (Debian package python3-venv)")?;
    }
    let missing: Vec<&str> = requirements.iter().copied().filter(|r| !satisfied(&python, r)).collect();
    if missing.is_empty() {
        println!("setup: Python packages present ({})", requirements.join(" "));
        return Ok(venv);
    }
    println!("setup: pip installing {}", missing.join(" "));
    run_cmd(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:"])
            .args(&missing),
    )?;
    if let Some(r) = missing.iter().find(|r| !satisfied(&python, r)) {
        bail!("pip reported success but {r} is not installed in {}", venv.display());
    }
    Ok(venv)
}
