//! Continuous verification (SEC 17a-4(f)): the running collector re-verifies
//! its own log against its signed checkpoints, so an altered or lost byte is
//! found without anyone running `wiretrail verify`.
//!
//! - A **full** run at start, then every `full_interval` (default 24 h): every
//!   segment re-read, every leaf hash and every checkpoint root recomputed.
//! - An **incremental** run every `interval` (default 1 h): from the frontier
//!   of the last good run to the latest checkpoint (leaves already verified
//!   are not re-read; the next full run re-reads them).
//! - A run covers the log up to the latest checkpoint the collector has
//!   issued when it starts: leaves after it may still be being written.
//!
//! The first run that finds a problem appends a `verification_failed` entry
//! to the log (an alert); runs finding the same first bad leaf again do not
//! repeat it. A run that cannot judge the log (the checkpoints file cannot be
//! read, I/O errors) is retried once after a second, and if it fails again
//! it is reported the same way: an unreadable log is a finding too.
//!
//! The thread has its own clock-free schedule (`Schedule`), tested without
//! sleeping; [`Status`] holds what the last runs found, for metrics and logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{Report, State, VerifyError, verify_upto};
use crate::store::{Log, now_ns};

/// When background verification runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Between incremental runs.
    pub interval: Duration,
    /// Between full runs (the first one is at start).
    pub full_interval: Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig { interval: Duration::from_secs(3600), full_interval: Duration::from_secs(24 * 3600) }
    }
}

/// Kind of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Every leaf from the first.
    Full,
    /// From the last good frontier.
    Incremental,
}

impl Run {
    /// Name in entries, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Run::Full => "full",
            Run::Incremental => "incremental",
        }
    }
}

/// Which run is due at a given time, given when the last ones were.
#[derive(Debug, Clone)]
pub struct Schedule {
    config: VerifyConfig,
    last_full: Option<Instant>,
    last_any: Option<Instant>,
}

impl Schedule {
    /// A schedule whose first run is a full one, due at once.
    pub fn new(config: VerifyConfig) -> Self {
        Schedule { config, last_full: None, last_any: None }
    }

    /// The run due at `now`, or how long until the next one.
    pub fn due(&self, now: Instant) -> Result<Run, Duration> {
        let (Some(full), Some(any)) = (self.last_full, self.last_any) else { return Ok(Run::Full) };
        let next_full = full + self.config.full_interval;
        let next_any = any + self.config.interval;
        if now >= next_full {
            Ok(Run::Full)
        } else if now >= next_any {
            Ok(Run::Incremental)
        } else {
            Err(next_full.min(next_any) - now)
        }
    }

    /// Notes that `run` started at `at`.
    pub fn ran(&mut self, run: Run, at: Instant) {
        if run == Run::Full {
            self.last_full = Some(at);
        }
        self.last_any = Some(at);
    }
}

/// What background verification found so far (read by metrics and tests).
#[derive(Debug, Default)]
pub struct Status {
    /// Runs that found the log consistent.
    pub runs_ok: AtomicU64,
    /// Runs that found a problem (or could not read the log).
    pub runs_failed: AtomicU64,
    /// Leaves covered by the last good run (its checkpoint size).
    pub verified_size: AtomicU64,
    /// UTC ns when the last good run finished (0 = none yet).
    pub last_ok_ns: AtomicU64,
    /// Leaf index + 1 of the first bad leaf found (0 = none).
    pub first_bad_plus_one: AtomicU64,
    /// A run is in progress.
    pub running: AtomicBool,
    /// UTC ns when the last full run ended, whatever it found (0 = none yet).
    pub last_full_ns: AtomicU64,
    /// UTC ns when the last incremental run ended (0 = none yet).
    pub last_incremental_ns: AtomicU64,
}

/// Where a finding goes: appends a `verification_failed` entry to the log.
pub type ReportSink = Box<dyn FnMut(serde_json::Value) -> Result<(), String> + Send>;

/// The running verification thread.
pub struct Verifying {
    wake: Sender<()>,
    cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Verifying {
    /// Stops the thread (a run in progress stops at its next segment) and waits for it.
    pub fn stop(self) {
        self.cancel.store(true, Ordering::Relaxed);
        drop(self.wake);
        let _ = self.thread.join();
    }
}

/// Spawns the verification thread.
pub fn spawn(shared: Arc<Log>, config: VerifyConfig, status: Arc<Status>, mut sink: ReportSink) -> Verifying {
    let (wake, sleep) = std::sync::mpsc::channel::<()>();
    let cancel = Arc::new(AtomicBool::new(false));
    let cancelled = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("wt-verify".into())
        .spawn(move || {
            let mut schedule = Schedule::new(config);
            let mut good: Option<State> = None;
            let mut reported: Option<u64> = None;
            loop {
                let run = match schedule.due(Instant::now()) {
                    Ok(run) => run,
                    Err(wait) => match sleep.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    },
                };
                schedule.ran(run, Instant::now());
                // An empty frontier matches no checkpoint: start from the first leaf.
                let resume = good.clone().filter(|s| run == Run::Incremental && s.frontier.size > 0);
                let upto = shared.latest_checkpoint().map(|c| c.checkpoint.size).unwrap_or(0);
                let t = Instant::now();
                status.running.store(true, Ordering::Relaxed);
                let outcome = once_or_retry(&shared, resume, upto, &cancelled, &sleep);
                status.running.store(false, Ordering::Relaxed);
                let Some(outcome) = outcome else { break };
                let ended = match run {
                    Run::Full => &status.last_full_ns,
                    Run::Incremental => &status.last_incremental_ns,
                };
                ended.store(now_ns().max(0) as u64, Ordering::Relaxed);
                match judge(outcome) {
                    Ok((report, state)) => {
                        status.runs_ok.fetch_add(1, Ordering::Relaxed);
                        status.verified_size.store(report.verified_size, Ordering::Relaxed);
                        status.last_ok_ns.store(now_ns().max(0) as u64, Ordering::Relaxed);
                        status.first_bad_plus_one.store(0, Ordering::Relaxed);
                        reported = None;
                        good = Some(state);
                        tracing::info!(
                            run = run.as_str(),
                            leaves = report.leaves,
                            bytes = report.bytes,
                            leaf_bytes = report.leaf_bytes,
                            verified_size = report.verified_size,
                            checkpoints = report.checkpoints_checked,
                            kept_hash_only = report.kept_hash_only,
                            secs = t.elapsed().as_secs_f64(),
                            "background verification OK"
                        );
                    }
                    Err(finding) => {
                        status.runs_failed.fetch_add(1, Ordering::Relaxed);
                        let first_bad = finding["first_bad"].as_u64().unwrap_or(u64::MAX);
                        status.first_bad_plus_one.store(first_bad.saturating_add(1), Ordering::Relaxed);
                        tracing::error!(run = run.as_str(), finding = %finding,
                            "ALERT verification_failed: the log does not match its signed checkpoints");
                        if reported != Some(first_bad) {
                            let mut detail = finding;
                            detail["run"] = run.as_str().into();
                            detail["upto"] = upto.into();
                            match sink(detail) {
                                Ok(()) => reported = Some(first_bad),
                                Err(e) => tracing::error!(error = %e,
                                    "the verification_failed entry could not be appended; retried next run"),
                            }
                        }
                        // The next incremental run starts again from the last good frontier.
                    }
                }
            }
            tracing::info!("background verification stopped");
        })
        .expect("spawning the verification thread");
    Verifying { wake, cancel, thread }
}

/// One run; a run that cannot read the log is tried once more after a
/// second (a checkpoint line being appended as it was read). `None` when
/// stopped meanwhile.
fn once_or_retry(
    shared: &Log,
    resume: Option<State>,
    upto: u64,
    cancel: &AtomicBool,
    sleep: &Receiver<()>,
) -> Option<Result<(Report, Option<State>), VerifyError>> {
    // The key ring is read again for each try: a rotation may have added a
    // key (and a checkpoint signed by it) since the previous one.
    // One hashing thread: the live collector's ingest keeps the other cores.
    let run = |resume| verify_upto(shared.dir(), &shared.keyring(), resume, Some(upto), 1, cancel, |_, _| {});
    match run(resume.clone()) {
        Err(VerifyError::Cancelled) => None,
        Err(_) => match sleep.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) => match run(resume) {
                Err(VerifyError::Cancelled) => None,
                r => Some(r),
            },
            _ => None,
        },
        r => Some(r),
    }
}

/// The report and state of a good run, or the finding (JSON) of a bad one.
fn judge(outcome: Result<(Report, Option<State>), VerifyError>) -> Result<(Report, State), serde_json::Value> {
    match outcome {
        Ok((report, Some(state))) if report.first_bad.is_none() => Ok((report, state)),
        Ok((report, _)) => Err(serde_json::json!({
            "first_bad": report.first_bad,
            "problem": report.problem,
            "verified_size": report.verified_size,
            "leaves_read": report.leaves,
        })),
        Err(e) => {
            Err(serde_json::json!({ "first_bad": null, "problem": format!("the log could not be verified: {e}") }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_start_then_incremental_and_full_on_their_intervals() {
        let cfg = VerifyConfig { interval: Duration::from_secs(10), full_interval: Duration::from_secs(35) };
        let mut s = Schedule::new(cfg);
        let t0 = Instant::now();
        assert_eq!(s.due(t0), Ok(Run::Full));
        s.ran(Run::Full, t0);
        assert_eq!(s.due(t0 + Duration::from_secs(3)), Err(Duration::from_secs(7)));
        assert_eq!(s.due(t0 + Duration::from_secs(10)), Ok(Run::Incremental));
        s.ran(Run::Incremental, t0 + Duration::from_secs(10));
        s.ran(Run::Incremental, t0 + Duration::from_secs(20));
        s.ran(Run::Incremental, t0 + Duration::from_secs(30));
        assert_eq!(s.due(t0 + Duration::from_secs(34)), Err(Duration::from_secs(1)));
        assert_eq!(s.due(t0 + Duration::from_secs(35)), Ok(Run::Full));
        s.ran(Run::Full, t0 + Duration::from_secs(35));
        assert_eq!(s.due(t0 + Duration::from_secs(36)), Err(Duration::from_secs(9)));
    }

    #[test]
    fn a_bad_report_is_a_finding_naming_the_first_bad_leaf() {
        let report = Report {
            leaves: 7,
            bytes: 700,
            leaf_bytes: 900,
            checkpoints_checked: 1,
            first_bad: Some(5),
            problem: Some("record bytes do not match the leaf hash stored with them".into()),
            verified_size: 4,
            kept_hash_only: 0,
        };
        let f = judge(Ok((report, None))).unwrap_err();
        assert_eq!(f["first_bad"], 5);
        assert_eq!(f["verified_size"], 4);
        assert!(f["problem"].as_str().unwrap().contains("leaf hash"));
        let f = judge(Err(VerifyError::State("x".into()))).unwrap_err();
        assert!(f["first_bad"].is_null());
        assert!(f["problem"].as_str().unwrap().contains("could not be verified"));
    }
}
