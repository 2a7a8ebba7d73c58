//! The agent as a child process writing JSON lines to a file.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{wait_until, workspace_bin};

/// A running `wiretrail-agent`; stopped with SIGTERM on drop.
pub struct Agent {
    child: Option<Child>,
    /// Holds the output, stats and log files.
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `extra` arguments and waits until it is attached.
    pub fn start(extra: &[&str]) -> Agent {
        Agent::start_wrapped(&[], extra)
    }

    /// Like [`Agent::start`], with the agent run by `wrapper` (a program and its
    /// arguments that executes the rest of the command line, e.g. `setpriv
    /// --bounding-set=...`); the wrapper must exec so the pid stays the agent's.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("records.jsonl");
        let ready = dir.path().join("ready");
        let stats = dir.path().join("stats.json");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log file");
        let bin = workspace_bin("wiretrail-agent");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("--output-file")
            .arg(&out)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--stats-file")
            .arg(&stats)
            .args(["--reorder-window-ms", "500"])
            // The redaction key in the test's own directory, not /var/lib.
            .arg("--redact-key-file")
            .arg(dir.path().join("redact.key"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn wiretrail-agent (wrapper {wrapper:?}): {e}"));
        let mut agent = Agent { child: Some(child), dir };
        let attached = wait_until(Duration::from_secs(60), || ready.exists() || agent.exited());
        assert!(attached && ready.exists(), "agent did not attach:\n{}", agent.log());
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush or spool anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The redaction tokenization key file the agent was started with.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("redact.key")
    }

    pub fn output_path(&self) -> PathBuf {
        self.dir.path().join("records.jsonl")
    }

    /// The complete JSON lines written so far (the agent flushes at least
    /// every second; a line it is still writing is left for the next read).
    pub fn records_now(&self) -> String {
        let mut text = std::fs::read_to_string(self.output_path()).unwrap_or_default();
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        text
    }

    /// Stops the agent (SIGTERM), waits for a clean exit, and returns every
    /// record (its JSON lines) and the final counters.
    pub fn stop(mut self) -> (String, Value) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = child.kill();
            panic!("agent did not stop within 30 s after SIGTERM:\n{}", self.log());
        }
        let status = child.wait().expect("wait");
        assert!(status.success(), "agent exited with {status}:\n{}", self.log());
        let stats: Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("stats.json")).expect("stats file"))
                .expect("stats json");
        (std::fs::read_to_string(self.output_path()).unwrap_or_default(), stats)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(20), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
