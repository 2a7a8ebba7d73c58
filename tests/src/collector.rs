//! The collector (`wiretrail serve`) as a child process with mTLS, and the
//! `wiretrail` CLI to query and verify it.
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{wait_until, workspace_bin};

/// A running collector; killed on drop.
pub struct Collector {
    child: Option<Child>,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Directory with ca.pem, collector.pem/key, agent.pem/key, security.pem/key.
    pub certs: PathBuf,
    pub port: u16,
}

impl Collector {
    pub fn start(data_dir: &Path, certs: &Path, port: u16) -> Collector {
        Collector::start_with(data_dir, certs, port, &[])
    }

    /// [`Collector::start`] with extra `serve` arguments.
    pub fn start_with(data_dir: &Path, certs: &Path, port: u16, extra: &[&str]) -> Collector {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("collector log");
        let child = Command::new(workspace_bin("wiretrail"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--checkpoint-secs", "1", "--data-dir"])
            .arg(data_dir)
            .arg("--tls-dir")
            .arg(certs)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wiretrail serve");
        let c = Collector { child: Some(child), data_dir: data_dir.into(), certs: certs.into(), port };
        assert!(
            wait_until(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "collector did not listen:\n{}",
            c.log()
        );
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// Graceful stop (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(20), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `wiretrail query --json` with extra filter arguments.
    pub fn query(&self, filter: &[&str]) -> Vec<Value> {
        self.cli_json("query", filter)
    }

    /// `wiretrail SUBCOMMAND --json --server .. --tls-dir .. ARGS`: the JSON lines
    /// it prints (none if it failed).
    pub fn cli_json(&self, subcommand: &str, args: &[&str]) -> Vec<Value> {
        let out = Command::new(workspace_bin("wiretrail"))
            .args([subcommand, "--json", "--server", &format!("127.0.0.1:{}", self.port), "--tls-dir"])
            .arg(&self.certs)
            .args(args)
            .output()
            .expect("run wiretrail");
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `wiretrail verify` of the data directory (collector stopped or running).
    pub fn verify(&self) -> (bool, String) {
        let out = Command::new(workspace_bin("wiretrail"))
            .arg("verify")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("wiretrail verify");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}
