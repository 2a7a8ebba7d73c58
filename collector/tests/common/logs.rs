//! The collector's log lines, captured in the test process: to wait for what
//! the collector says it did (a file rejected, a reload) instead of sleeping.
use std::sync::{Arc, Mutex, OnceLock};

/// The log text written so far (one subscriber per test binary).
#[derive(Clone)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many lines contain every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.text().lines().filter(|l| parts.iter().all(|p| l.contains(p))).count()
    }

    /// Waits (at most 10 s) until `n` lines contain every one of `parts`.
    pub async fn wait_for_count(&self, parts: &[&str], n: usize) {
        let t = std::time::Instant::now();
        while self.count(parts) < n {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "no log line with {parts:?}:\n{}", self.text());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most 10 s) for a line containing every one of `parts`.
    pub async fn wait_for_line(&self, parts: &[&str]) {
        self.wait_for_count(parts, 1).await
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a subscriber writing every log line into
/// a buffer, and returns that buffer.
pub fn capture_logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs(Default::default());
        let w = logs.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || w.clone()).init();
        logs
    })
    .clone()
}
