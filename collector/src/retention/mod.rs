//! Retention classes, expiry deletion and legal holds (embedded store).
//!
//! - [`policy`]: the retention file (classes, durations, selectors; defaults
//!   3 years for communications records, 6 years for the collector's own entries);
//! - [`holds`]: legal holds placed and lifted by an admin, recorded in the
//!   log and rebuilt from it at start;
//! - [`pass`]: judging closed segments and deleting the expired, unheld ones
//!   (whole segments; the kept hashes and the `retention_deletion` entry keep
//!   every proof verifiable, see [`wiretrail_log::store::kept`]); early deletion
//!   requests, refused and recorded unless everything requested is expired.
//!
//! [`Retention`] ties them together for the server: a periodic pass
//! (`--retention-interval-secs`) with an injectable [`Clock`], and the hold /
//! deletion RPCs. Holds and deletions are serialized by one lock, so a hold
//! placed before a pass is always seen by it.
//!
//! Clustered mode ([`Retention::with_shared_holds`]): the holds of every
//! collector sharing the store count ([`holds`]). They are read before a
//! pass, again just before each segment it would delete, and before a
//! request is judged or a hold placed, lifted or listed; when they cannot be
//! read, nothing is deleted (the pass fails and the next one tries again).
//! A hold placed at another collector in the milliseconds between that last
//! read and the deletion entry does not stop that one segment; the entry
//! names it. A pass holds the holds lock while it reads them, so a hold
//! placed at this collector may wait for ClickHouse. After each pass the logs of collectors gone for good are
//! expired too, by one live collector ([`Orphans`]).

pub mod holds;
pub mod pass;
pub mod policy;
pub mod service;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wiretrail_proto::v1::CollectorEntry;

pub use holds::{Hold, HoldFilter, Holds, LogEntry, SharedHolds};
pub use pass::{PassReport, Verdict};
pub use policy::{Policy, Selector};
use wiretrail_log::store::{Deleted, Log, StoreError, Writer};

/// Errors of retention.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The retention file is invalid.
    #[error("retention file {0}")]
    Policy(String),
    /// A request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such hold or leaf.
    #[error("{0}")]
    NotFound(String),
    /// An early deletion was refused (and the refusal recorded).
    #[error("deletion refused: {why} (recorded as the retention_refused entry at leaf {entry})")]
    Refused {
        /// Why.
        why: String,
        /// Leaf index of the refusal entry.
        entry: u64,
    },
    /// Appending an entry failed.
    #[error("appending the entry failed: {0}")]
    Append(String),
    /// Removing index rows failed.
    #[error("index: {0}")]
    Index(String),
    /// The holds of the other collectors sharing the store could not be read.
    #[error(
        "the legal holds of the collectors sharing the store could not be read ({0}); nothing is deleted until they can"
    )]
    SharedHolds(String),
    /// Expiring the orphaned logs failed (clustered mode).
    #[error("orphaned logs: {0}")]
    Orphans(String),
}

/// Appends a collector entry durably and returns its leaf index.
pub trait Append: Send + Sync {
    /// Appends `e` and waits until it is durable.
    fn append(&self, e: CollectorEntry) -> Result<u64, RetentionError>;
}

/// Through the commit thread (from outside the async runtime).
impl Append for tokio::sync::mpsc::Sender<crate::ingest::commit::Work> {
    fn append(&self, e: CollectorEntry) -> Result<u64, RetentionError> {
        crate::ingest::commit::append_entry_blocking(self, e, "").map_err(|e| RetentionError::Append(e.to_string()))
    }
}

/// Directly to a writer (offline tools, tests).
impl Append for Mutex<Writer> {
    fn append(&self, e: CollectorEntry) -> Result<u64, RetentionError> {
        let mut w = self.lock().expect("writer lock");
        let i = w.append(&[wiretrail_log::entry::leaf(e, "")])?;
        w.commit()?;
        Ok(i)
    }
}

/// Where retention's deletions are repeated (clustered mode: ClickHouse,
/// [`crate::clickhouse::expiry::Mirror`]).
pub trait Mirror: Send + Sync {
    /// Repeats there every deletion of the log (`deleted`: all the ranges
    /// deleted so far; idempotent). Called after each pass and each granted
    /// request; a failure is logged and the next pass tries again.
    fn mirror(&self, deleted: &[Deleted]) -> Result<(), String>;
}

/// The logs of collectors that are gone for good, expired by this one
/// (clustered mode: [`crate::clickhouse::orphans::Orphans`]).
pub trait Orphans: Send + Sync {
    /// Expires what `policy` lets go of in every orphaned log this collector
    /// looks after, under the holds `holds` reads (read again before each
    /// deletion: when they changed, that log waits for the next pass); each
    /// deletion is a `retention_deletion` entry appended with `app`, naming
    /// the orphaned log. Blocking.
    fn expire(
        &self,
        policy: &Policy,
        holds: &dyn Fn() -> Result<Holds, RetentionError>,
        app: &dyn Append,
        now_ns: i64,
    ) -> Result<OrphanReport, RetentionError>;
}

/// What one pass over the orphaned logs did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrphanReport {
    /// Orphaned logs seen (whoever looks after them).
    pub orphans: u64,
    /// Of them, looked after by this collector.
    pub looked_after: u64,
    /// Of those, logs that did not verify from ClickHouse (kept whole).
    pub unverified: u64,
    /// Leaves deleted from them now.
    pub deleted_leaves: u64,
    /// Leaf indexes (in this log) of the `retention_deletion` entries appended.
    pub entries: Vec<u64>,
}

/// The time retention judges expiry against.
pub use crate::when::{Clock, SystemClock};

/// Retention settings of the server.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// The retention file (`None`: defaults). Re-read at each pass.
    pub file: Option<PathBuf>,
    /// Time between passes; `None` disables the periodic pass.
    pub interval: Option<Duration>,
    /// Added to the clock (hidden test flag `--test-clock-offset-secs`).
    pub clock_offset_ns: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { file: None, interval: Some(Duration::from_secs(3600)), clock_offset_ns: 0 }
    }
}

/// Retention and holds of one store.
pub struct Retention {
    shared: Arc<Log>,
    app: Arc<dyn Append>,
    file: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    holds: Mutex<Holds>,
    expiry: Mutex<pass::ExpiryCache>,
    mirror: Option<Arc<dyn Mirror>>,
    shared_holds: Option<Arc<dyn SharedHolds>>,
    orphans: Option<Arc<dyn Orphans>>,
}

impl Retention {
    /// Loads the policy (to check it) and rebuilds the holds from the log's
    /// hold entries at `hold_entries` (found by the commit thread's state:
    /// `crate::ingest::state::LogState`).
    pub fn open(
        shared: Arc<Log>,
        app: Arc<dyn Append>,
        file: Option<PathBuf>,
        clock: Arc<dyn Clock>,
        hold_entries: &[u64],
    ) -> Result<Retention, RetentionError> {
        Policy::load(file.as_deref())?;
        let holds = Holds::from_entries(&shared, hold_entries)?;
        Ok(Retention {
            shared,
            app,
            file,
            clock,
            holds: Mutex::new(holds),
            expiry: Default::default(),
            mirror: None,
            shared_holds: None,
            orphans: None,
        })
    }

    /// Repeats every deletion in `m` too (clustered mode).
    pub fn with_mirror(mut self, m: Arc<dyn Mirror>) -> Retention {
        self.mirror = Some(m);
        self
    }

    /// Counts the holds of every collector sharing the store too (clustered mode).
    pub fn with_shared_holds(mut self, s: Arc<dyn SharedHolds>) -> Retention {
        self.shared_holds = Some(s);
        self
    }

    /// Expires the orphaned logs it looks after too, after each pass (clustered mode).
    pub fn with_orphans(mut self, o: Arc<dyn Orphans>) -> Retention {
        self.orphans = Some(o);
        self
    }

    /// The holds in force: this log's, with every sharing log's when shared.
    fn view(&self, local: &Holds) -> Result<Holds, RetentionError> {
        match &self.shared_holds {
            None => Ok(local.clone()),
            Some(s) => Ok(local.with_logs(&s.hold_entries().map_err(RetentionError::SharedHolds)?)),
        }
    }

    /// Hands every deletion so far to the mirror, if any (a failure is logged: the next pass retries).
    fn mirror_deletions(&self) {
        if let Some(m) = &self.mirror {
            let deleted = self.shared.deleted();
            if !deleted.is_empty()
                && let Err(e) = m.mirror(&deleted)
            {
                tracing::warn!(error = %e, "retention: repeating the deletions in ClickHouse failed; retried next pass");
            }
        }
    }

    /// Now, by the retention clock.
    pub fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    /// One pass (the retention file is re-read first).
    pub fn pass(&self) -> Result<PassReport, RetentionError> {
        let policy = Policy::load(self.file.as_deref())?;
        let r = {
            let local = self.holds.lock().expect("holds lock");
            let mut cache = self.expiry.lock().expect("expiry lock");
            let recheck = || self.view(&local);
            let recheck = self.shared_holds.as_ref().map(|_| &recheck as &dyn Fn() -> Result<Holds, RetentionError>);
            self.view(&local).and_then(|view| {
                pass::run_pass(&self.shared, self.app.as_ref(), &policy, view, recheck, self.now_ns(), &mut cache)
            })
        };
        // Orphaned logs outside the holds lock (reading one may take long): the
        // holds are read again before each deletion, a hold placed here included.
        if let (Ok(_), Some(o)) = (&r, &self.orphans) {
            let read = || self.view(&self.holds.lock().expect("holds lock"));
            match o.expire(&policy, &read, self.app.as_ref(), self.now_ns()) {
                Ok(rep) if rep.orphans > 0 => tracing::info!(?rep, "retention pass over orphaned logs done"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention of orphaned logs failed; retried next pass"),
            }
        }
        // Outside the locks: a slow ClickHouse must not hold up holds being placed.
        self.mirror_deletions();
        r
    }

    /// Places a hold.
    pub fn place_hold(&self, case: &str, filter: HoldFilter, by: &str) -> Result<Hold, RetentionError> {
        let mut local = self.holds.lock().expect("holds lock");
        let view = self.view(&local)?;
        local.place(&view, self.app.as_ref(), case, filter, by, self.now_ns())
    }

    /// Lifts a hold.
    pub fn lift_hold(&self, case: &str, by: &str) -> Result<Hold, RetentionError> {
        let mut local = self.holds.lock().expect("holds lock");
        let view = self.view(&local)?;
        local.lift(&view, self.app.as_ref(), case, by, self.now_ns())
    }

    /// The holds in force (every sharing collector's in clustered mode).
    pub fn holds(&self) -> Result<Vec<Hold>, RetentionError> {
        let local = self.holds.lock().expect("holds lock");
        Ok(self.view(&local)?.list())
    }

    /// Checks that a deletion request names this collector's log: `origin`
    /// is required in clustered mode (any collector may receive the request;
    /// leaf numbers are per log) and, when given, must be this log's.
    pub fn check_origin(&self, origin: &str) -> Result<(), RetentionError> {
        let own = self.shared.verifier().name;
        if origin.is_empty() && self.shared_holds.is_some() {
            return Err(RetentionError::Invalid(format!(
                "in clustered mode a deletion request must name its log (--origin): leaf numbers are per collector \
                 and any collector behind the Service may receive it (this one keeps log {own})"
            )));
        }
        if !origin.is_empty() && origin != own {
            return Err(RetentionError::Invalid(format!(
                "the request names log {origin}, but this collector keeps log {own}: send it to the collector keeping {origin}"
            )));
        }
        Ok(())
    }

    /// An admin's request to delete the closed segments holding leaves `first..=last` now.
    pub fn request_deletion(&self, first: u64, last: u64, by: &str) -> Result<Vec<Deleted>, RetentionError> {
        let policy = Policy::load(self.file.as_deref())?;
        let r = {
            let local = self.holds.lock().expect("holds lock");
            let view = self.view(&local)?;
            pass::request_deletion(&self.shared, self.app.as_ref(), &policy, &view, first, last, by, self.now_ns())
        };
        if r.is_ok() {
            self.mirror_deletions();
        }
        r
    }

    /// Runs a pass every `interval` on a thread until the returned handle is stopped.
    pub fn spawn(self: &Arc<Self>, interval: Duration) -> Periodic {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                loop {
                    match me.pass() {
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "retention pass failed"),
                    }
                    match rx.recv_timeout(interval) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
            })
            .expect("spawning the retention thread");
        Periodic { stop: Some(stop), thread: Some(thread) }
    }
}

/// The periodic pass thread.
pub struct Periodic {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// Stops the thread (after its current pass) and waits for it.
    pub fn stop(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
