//! Drives [`super::silence`]: ingest reports the heartbeats of acknowledged
//! batches, a timer checks for silent agents, and each event becomes an
//! `agent_silent` / `agent_returned` entry appended to the log (through the
//! commit thread), which the indexer turns into an alert.
//!
//! The state lives in memory and is seeded at start from the log ([`seeds`]):
//! each agent's newest stored heartbeat, the arrival of its newest batch and
//! whether its silence alert is still open. So an agent that stopped while the
//! collector was down is reported once the threshold has passed since its
//! last batch arrived, and an alert open before a restart is not raised twice.
//! Heartbeats are only taken from batches the collector stored and
//! acknowledged, so a certificate refused for an agent id cannot keep that
//! agent looking alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use wiretrail_proto::v1::{Record, RecordKind, StoredLeaf};

use super::silence::{Beat, Clock, Event, Silence};
use crate::ingest::commit::Work;
use crate::ingest::state::LogState;
use wiretrail_log::entry;
use wiretrail_log::store::{Log, StoreError};

/// What the log says of one agent at start (see [`Silence::seed`]).
#[derive(Debug, Clone)]
pub struct Seed {
    /// The agent id.
    pub agent_id: String,
    /// Its newest stored heartbeat.
    pub last: Beat,
    /// When its newest stored batch arrived.
    pub last_arrival_ns: i64,
    /// The time of its `agent_silent` entry when that is its latest liveness entry.
    pub silent_at: Option<i64>,
}

/// The seeds of every agent with a stored heartbeat: its newest one (kept
/// by the commit state, so one leaf is read per agent) and the arrival of its
/// newest batch. An agent whose heartbeat leaf retention deleted is known
/// again from its next heartbeat, as before any heartbeat was stored.
pub fn seeds(shared: &Log, state: &LogState) -> Result<Vec<Seed>, StoreError> {
    let mut out = Vec::new();
    let read = |i: u64| -> Result<Option<StoredLeaf>, StoreError> {
        match shared.read_leaf(i) {
            Ok(bytes) => StoredLeaf::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}"))),
            Err(StoreError::Deleted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    for (agent, &(leaf, _)) in &state.heartbeats {
        let Some(hb_leaf) = read(leaf)? else { continue };
        let Some((r, hb)) = hb_leaf.record.as_ref().and_then(|r| Some((r, r.heartbeat?))) else {
            // A heartbeat record without its body: nothing to seed from (known again at its next heartbeat).
            tracing::debug!(leaf, agent = %wiretrail_log::text::escape(agent), "newest heartbeat record has no body");
            continue;
        };
        let last = Beat {
            boot_id: hb_leaf.boot_id.clone(),
            time_ns: r.capture_time_ns,
            received_ns: hb_leaf.received_time_ns,
            heartbeat: hb,
        };
        let newest = state.dedup.batches_newest_first(agent).first().map(|b| b.1).unwrap_or(leaf).max(leaf);
        let last_arrival_ns = read(newest)?.map(|l| l.received_time_ns).unwrap_or(hb_leaf.received_time_ns);
        let silent_at = match state.dedup.liveness().get(agent) {
            Some((kind, t)) if kind == entry::AGENT_SILENT => Some(*t),
            _ => None,
        };
        out.push(Seed { agent_id: agent.clone(), last, last_arrival_ns, silent_at });
    }
    Ok(out)
}

/// Silence settings.
#[derive(Debug, Clone)]
pub struct SilenceConfig {
    /// An agent with no heartbeat for this long is silent (`serve --silence-after`).
    pub after: Duration,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig { after: Duration::from_secs(60) }
    }
}

/// The running monitor.
pub struct Monitor {
    state: Mutex<Silence>,
    clock: Arc<dyn Clock>,
    /// `None` once closed (so the commit thread can stop).
    jobs: Mutex<Option<mpsc::Sender<Work>>>,
    tick: Duration,
}

impl Monitor {
    /// A monitor appending its entries through `jobs`.
    pub fn new(config: &SilenceConfig, clock: Arc<dyn Clock>, jobs: mpsc::Sender<Work>) -> Arc<Monitor> {
        // Check often enough that an alert comes at most a quarter threshold late.
        let tick = (config.after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        Arc::new(Monitor { state: Mutex::new(Silence::new(config.after)), clock, jobs: Mutex::new(Some(jobs)), tick })
    }

    /// Makes the agents of the log known (before ingest starts).
    pub fn seed(&self, seeds: Vec<Seed>) {
        let mut st = self.state.lock().expect("silence state");
        for s in seeds {
            tracing::debug!(agent = %wiretrail_log::text::escape(&s.agent_id), last_heartbeat_ns = s.last.time_ns,
                silent = s.silent_at.is_some(), "agent known from the log");
            st.seed(&s.agent_id, s.last, s.last_arrival_ns, s.silent_at);
        }
    }

    /// Stops appending entries (drops the commit thread's sender); the timer ends.
    pub fn close(&self) {
        self.jobs.lock().expect("monitor jobs").take();
    }

    fn sender(&self) -> Option<mpsc::Sender<Work>> {
        self.jobs.lock().expect("monitor jobs").clone()
    }

    /// Notes the heartbeats among `records` of a batch from `agent_id`/`boot_id` that was just acknowledged.
    pub fn observe(self: &Arc<Self>, agent_id: &str, boot_id: &str, records: &[Record]) {
        let now = self.clock.now_ns();
        for r in records.iter().filter(|r| r.kind() == RecordKind::Heartbeat) {
            let Some(hb) = r.heartbeat else { continue };
            let beat =
                Beat { boot_id: boot_id.to_string(), time_ns: r.capture_time_ns, received_ns: now, heartbeat: hb };
            let ev = self.state.lock().expect("silence state").observe(agent_id, beat);
            if let Some(ev) = ev {
                self.emit(ev);
            }
        }
    }

    /// Checks for silent agents now.
    pub fn check(self: &Arc<Self>) {
        let events = self.state.lock().expect("silence state").check(self.clock.now_ns());
        for ev in events {
            self.emit(ev);
        }
    }

    /// Runs [`Monitor::check`] on a timer until the commit thread is gone.
    pub fn spawn_timer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let m = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(m.tick);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while m.sender().is_some_and(|s| !s.is_closed()) {
                t.tick().await;
                m.check();
            }
        })
    }

    /// Appends the event's entry; retried (logged) while the store refuses writes.
    fn emit(self: &Arc<Self>, ev: Event) {
        let (kind, agent_id, detail) = match ev {
            Event::Silent { agent_id, detail } => (entry::AGENT_SILENT, agent_id, detail),
            Event::Returned { agent_id, detail } => (entry::AGENT_RETURNED, agent_id, detail),
        };
        tracing::warn!(kind, agent = %wiretrail_log::text::escape(&agent_id), %detail, "agent liveness changed");
        let m = self.clone();
        tokio::spawn(async move {
            let e = entry::new(kind, m.clock.now_ns(), &agent_id, detail, Vec::new());
            for attempt in 0u32.. {
                let (reply, rx) = oneshot::channel();
                let job = Work::Entry { leaf: entry::leaf(e.clone(), &agent_id), reply };
                let Some(jobs) = m.sender() else {
                    tracing::error!(kind, agent = %wiretrail_log::text::escape(&agent_id),
                        "collector stopping: liveness entry not recorded");
                    return;
                };
                if jobs.send(job).await.is_err() {
                    tracing::error!(kind, agent = %wiretrail_log::text::escape(&agent_id),
                        "collector stopping: liveness entry not recorded");
                    return;
                }
                drop(jobs);
                match rx.await {
                    Ok(Ok(leaf)) => {
                        tracing::info!(kind, leaf, "liveness entry recorded");
                        return;
                    }
                    Ok(Err(err)) => {
                        tracing::error!(kind, attempt, error = %err, "liveness entry not recorded yet; retrying");
                    }
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
