//! The commit thread: owns the store writer, decides each batch against
//! what is stored ([`Dedup`]) and acks batches after one fsync per group of
//! batches (group commit).
//!
//! Per batch, in order:
//! 1. agent id ownership: the roles file's binding, else the first identity
//!    that shipped for the id (its batch's leaves carry that identity, so the
//!    claim is in the log); another
//!    identity is refused (PERMISSION_DENIED) and the refusal is recorded once
//!    per (agent id, identity) as an `agent_id_refused` entry (an alert);
//! 2. sequence: the next seq is stored; a stored seq with the same content
//!    hash is a duplicate (acked with its leaves); with other content it is a
//!    conflict: the batch is kept whole in a `batch_conflict` entry (an alert)
//!    and acked with `conflict`; a seq ahead is FAILED_PRECONDITION with the
//!    expected seq in the status metadata.
//!
//! Collector entries made elsewhere in the collector (access entries from
//! the query API, agent liveness, background verification findings) go
//! through the same queue ([`Work::Entry`]): appended in arrival order with the batches
//! around them, answered with their leaf index after the group's fsync, so an
//! access is durable before anything is returned and never starves ingest.
//!
//! Clustered mode ([`crate::clickhouse`]): after the group's fsync and
//! before any answer, every durable leaf not yet in ClickHouse is inserted
//! there (with the configured quorum); when that fails the whole group is
//! refused with UNAVAILABLE (its leaves stay in the local log and are
//! inserted before the next group is answered, so a retried batch is acked
//! as a duplicate only once ClickHouse has it).
//!
//! Store failures (disk full, I/O errors) refuse the batch with UNAVAILABLE;
//! the writer rolls the failed write back, so the next batch tries again and
//! the collector recovers by itself when space returns. The episode is
//! recorded as a `storage_unavailable` entry (an alert) once writes succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use wiretrail_proto::v1::{Ack, Batch, StoredLeaf};

use super::dedup::{Seq, Stored};
use super::state::LogState;
use crate::clickhouse::writer::Appended;
use crate::error::Error;
use crate::roles::{AgentIdRule, Roles};
use wiretrail_log::entry;
use wiretrail_log::store::{StoreError, Writer, now_ns};
use wiretrail_log::text::escape;

/// One batch waiting to be made durable.
pub struct Job {
    /// Agent id from the batch.
    pub agent_id: String,
    /// Boot id from the batch.
    pub boot_id: String,
    /// Batch sequence number.
    pub seq: u64,
    /// Last seq the batch stands for (`seq`, or its `covers_through_seq`).
    pub through: u64,
    /// Certificate identity of the sender.
    pub peer: String,
    /// Content hash of the batch.
    pub hash: [u8; 32],
    /// Encoded `StoredLeaf`s, one per record.
    pub leaves: Vec<Vec<u8>>,
    /// Their hashes and stored bodies ([`wiretrail_log::frame::prepare_all`]),
    /// one per leaf; empty: the commit thread prepares them.
    pub prepared: Vec<wiretrail_log::frame::Prepared>,
    /// In clustered mode, their ClickHouse columns, one per leaf (computed
    /// from the records on the ingest tasks); else empty.
    pub columns: Vec<crate::clickhouse::writer::Columns>,
    /// Position in the batch and capture time of its newest heartbeat record, if any.
    pub heartbeat: Option<(u32, i64)>,
    /// Where the ack (or error) goes once the batch is durable.
    pub reply: oneshot::Sender<Result<Ack, Error>>,
}

/// What the commit thread is asked to make durable.
pub enum Work {
    /// A batch from an agent.
    Batch(Job),
    /// One collector entry leaf (e.g. an access entry); answered with its
    /// leaf index once durable.
    Entry {
        /// The encoded leaf ([`entry::leaf`]).
        leaf: Vec<u8>,
        /// Where the leaf index (or error) goes.
        reply: oneshot::Sender<Result<u64, Error>>,
    },
}

impl Work {
    fn bytes(&self) -> usize {
        match self {
            Work::Batch(j) => j.leaves.iter().map(Vec::len).sum(),
            Work::Entry { leaf, .. } => leaf.len(),
        }
    }
}

/// Appends `entry` through the commit thread and waits until it is durable
/// (from a thread outside the async runtime). Returns its leaf index.
pub fn append_entry_blocking(
    work: &mpsc::Sender<Work>,
    e: wiretrail_proto::v1::CollectorEntry,
    agent_id: &str,
) -> Result<u64, Error> {
    let (reply, rx) = oneshot::channel();
    work.blocking_send(Work::Entry { leaf: entry::leaf(e, agent_id), reply })
        .map_err(|_| Error::Unavailable("the collector is stopping".into()))?;
    rx.blocking_recv().map_err(|_| Error::Unavailable("the collector is stopping".into()))?
}

/// A reply channel and what to send on it after the group's fsync.
enum Reply {
    Ack(oneshot::Sender<Result<Ack, Error>>, Result<Ack, Error>),
    Entry(oneshot::Sender<Result<u64, Error>>, Result<u64, Error>),
}

impl Reply {
    /// Turns a success into `e` (the group's fsync failed).
    fn fail(&mut self, msg: &str) {
        match self {
            Reply::Ack(_, r @ Ok(_)) => *r = Err(Error::Unavailable(msg.to_string())),
            Reply::Entry(_, r @ Ok(_)) => *r = Err(Error::Unavailable(msg.to_string())),
            _ => {}
        }
    }

    fn send(self) {
        // The client may have gone; a batch's retry will be deduplicated.
        match self {
            Reply::Ack(tx, r) => drop(tx.send(r)),
            Reply::Entry(tx, r) => drop(tx.send(r)),
        }
    }
}

/// Counters of the commit thread.
#[derive(Default, Debug)]
pub struct CommitStats {
    /// Batches made durable.
    pub batches: AtomicU64,
    /// Records made durable.
    pub records: AtomicU64,
    /// Retried batches answered from the dedup table.
    pub duplicates: AtomicU64,
    /// Batches refused for a sequence gap.
    pub out_of_sequence: AtomicU64,
    /// Batches stored as conflicts.
    pub conflicts: AtomicU64,
    /// Batches refused for an agent id owned by another identity.
    pub refused: AtomicU64,
    /// Batches refused because the store could not write.
    pub storage_refused: AtomicU64,
    /// fsyncs (group commits).
    pub commits: AtomicU64,
}

/// A period in which the store could not write.
#[derive(Debug, Clone)]
struct Down {
    /// When it started (UTC ns).
    since_ns: i64,
    /// The first error.
    error: String,
    /// Batches refused since.
    refused: u64,
}

/// The commit thread's state.
struct Committer {
    writer: Writer,
    state: LogState,
    roles: Arc<Roles>,
    stats: Arc<CommitStats>,
    down: Option<Down>,
    /// Clustered mode: where durable leaves go before the acks.
    sink: Option<crate::clickhouse::writer::Sink>,
}

/// Spawns the commit thread; jobs are sent on the returned channel.
pub fn spawn(
    writer: Writer,
    state: LogState,
    roles: Arc<Roles>,
    stats: Arc<CommitStats>,
    sink: Option<crate::clickhouse::writer::Sink>,
) -> (mpsc::Sender<Work>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Work>(1024);
    let mut c = Committer { writer, state, roles, stats, down: None, sink };
    let handle = std::thread::Builder::new()
        .name("wt-commit".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                let mut bytes: usize = jobs[0].bytes();
                while bytes < (32 << 20) {
                    match rx.try_recv() {
                        Ok(j) => {
                            bytes += j.bytes();
                            jobs.push(j);
                        }
                        Err(_) => break,
                    }
                }
                c.group(jobs);
            }
            c.state.maybe_save(&c.writer, true);
            tracing::info!("commit thread stopped");
        })
        .expect("spawning commit thread");
    (tx, handle)
}

impl Committer {
    /// Handles a group of jobs with one fsync, then answers them.
    fn group(&mut self, jobs: Vec<Work>) {
        let t = std::time::Instant::now();
        let before = self.writer.appended();
        let was_down = self.down.clone();
        let mut group: Vec<Reply> = Vec::with_capacity(jobs.len());
        // Whether a batch was written (small entries may fit where batches do not).
        let mut batch_written = false;
        // Entry leaves and heartbeat leaves of the group, applied to the state once durable.
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut beats: Vec<(String, u64, i64)> = Vec::new();
        // Clustered mode: the batches' leaves as written, for the sink.
        let mut shipping: Vec<Appended> = Vec::new();
        for work in jobs {
            match work {
                Work::Batch(job) => {
                    let at = self.writer.appended();
                    let res = self.handle(&job);
                    if let (Ok(a), Some((k, t))) = (&res, job.heartbeat)
                        && !a.duplicate
                        && !a.conflict
                    {
                        beats.push((job.agent_id.clone(), a.first_leaf_index + k as u64, t));
                    }
                    batch_written |= self.writer.appended() != at;
                    if let Ok(a) = &res
                        && !a.duplicate
                        && !a.conflict
                        && self.sink.is_some()
                        && job.prepared.len() == job.leaves.len()
                        && job.columns.len() == job.leaves.len()
                    {
                        let hashes = job.prepared.iter().map(|p| p.hash);
                        let leaves = job.leaves.into_iter().zip(hashes).zip(job.columns);
                        let leaves = leaves.map(|((leaf, hash), columns)| (leaf, hash, columns)).collect();
                        shipping.push(Appended { first: a.first_leaf_index, leaves });
                    }
                    group.push(Reply::Ack(job.reply, res));
                }
                Work::Entry { leaf, reply } => {
                    let res = match self.writer.append(std::slice::from_ref(&leaf)) {
                        Ok(i) => {
                            entries.push((i, leaf));
                            Ok(i)
                        }
                        Err(e @ StoreError::LeafTooLarge(_)) => Err(Error::Store(e)),
                        Err(e) => Err(Error::Unavailable(self.store_failed(&e))),
                    };
                    group.push(Reply::Entry(reply, res));
                }
            }
        }
        if self.down.is_some() && batch_written {
            // A batch could be written again: the outage is over; record it.
            self.record_recovery();
        }
        let appended = t.elapsed();
        if self.writer.appended() != before {
            match self.writer.commit() {
                Ok(_) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.state.dedup.commit_group();
                    for (i, leaf) in &entries {
                        self.state.entry_committed(*i, leaf);
                    }
                    for (agent, leaf, time_ns) in beats {
                        self.state.heartbeat_committed(agent, leaf, time_ns);
                    }
                    self.state.maybe_save(&self.writer, false);
                }
                Err(e) => {
                    self.state.dedup.rollback_group();
                    // Rolled back: these positions will hold other leaves.
                    shipping.clear();
                    self.down = was_down;
                    let msg = self.store_failed(&e);
                    for r in group.iter_mut() {
                        r.fail(&msg);
                    }
                }
            }
        } else {
            self.state.dedup.commit_group();
        }
        tracing::debug!(
            leaves = self.writer.appended() - before,
            append_ms = appended.as_secs_f64() * 1e3,
            commit_ms = (t.elapsed() - appended).as_secs_f64() * 1e3,
            "group appended and committed"
        );
        if let Some(sink) = &mut self.sink
            && let Err(e) = sink.sync(shipping)
        {
            tracing::error!(error = %e, "ClickHouse refused or timed out; refusing the group (the agents retry)");
            let msg =
                format!("not acknowledged: the leaves are stored locally but not yet in ClickHouse ({e}); retry later");
            for r in group.iter_mut() {
                r.fail(&msg);
            }
        }
        for r in group {
            r.send();
        }
    }

    /// Notes a store failure; returns the message for the refused clients.
    fn store_failed(&mut self, e: &StoreError) -> String {
        self.stats.storage_refused.fetch_add(1, Ordering::Relaxed);
        match &mut self.down {
            Some(d) => d.refused += 1,
            None => {
                tracing::error!(error = %e, disk_full = e.is_disk_full(),
                    "ALERT storage_unavailable: the store cannot write; refusing batches until it can");
                self.down = Some(Down { since_ns: now_ns(), error: e.to_string(), refused: 1 });
            }
        }
        format!("collector storage unavailable ({e}); nothing of the batch was stored, retry later")
    }

    /// Appends one entry leaf (its own batch of one).
    fn append_entry(&mut self, e: wiretrail_proto::v1::CollectorEntry, agent_id: &str) -> Result<u64, StoreError> {
        self.writer.append(&[entry::leaf(e, agent_id)])
    }

    /// The store was down and a batch was written again: record the episode.
    fn record_recovery(&mut self) {
        let d = self.down.clone().expect("called when down");
        let now = now_ns();
        let detail = serde_json::json!({"error": d.error, "since_ns": d.since_ns, "refused_batches": d.refused});
        let e = entry::new(entry::STORAGE_UNAVAILABLE, now, "store", detail, Vec::new());
        match self.append_entry(e, "") {
            Ok(_) => {
                tracing::warn!(refused = d.refused, since_ns = d.since_ns, "store writable again");
                self.down = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the outage entry does not fit yet; it is written with a later batch");
            }
        }
    }

    fn handle(&mut self, job: &Job) -> Result<Ack, Error> {
        match self.handle_inner(job) {
            Err(Error::Store(e)) if !matches!(e, StoreError::LeafTooLarge(_)) => {
                Err(Error::Unavailable(self.store_failed(&e)))
            }
            r => r,
        }
    }

    fn handle_inner(&mut self, job: &Job) -> Result<Ack, Error> {
        let new_owner = self.check_owner(job)?;
        let key = (job.agent_id.clone(), job.boot_id.clone());
        match self.state.dedup.check(&key, job.seq, &job.hash) {
            Seq::Duplicate(s) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %escape(&job.agent_id), seq = job.seq, "duplicate batch acknowledged");
                return Ok(Ack {
                    seq: job.seq,
                    first_leaf_index: s.first,
                    last_leaf_index: s.last,
                    duplicate: true,
                    conflict: false,
                });
            }
            Seq::Conflict(s) => {
                let s = s.clone();
                return self.conflict(job, &s);
            }
            Seq::Ahead(expected) => {
                self.stats.out_of_sequence.fetch_add(1, Ordering::Relaxed);
                return Err(Error::OutOfSequence {
                    message: format!(
                        "agent {} boot {}: got batch {} but expected {expected}",
                        escape(&job.agent_id),
                        escape(&job.boot_id),
                        job.seq
                    ),
                    expected,
                });
            }
            Seq::New => {}
        }
        let first = if job.prepared.is_empty() {
            self.writer.append(&job.leaves)?
        } else {
            self.writer.append_prepared(&job.leaves, &job.prepared)?
        };
        if new_owner {
            self.state.dedup.set_owner(&job.agent_id, &job.peer);
            tracing::info!(agent = %escape(&job.agent_id), identity = %escape(&job.peer), "agent id claimed");
        }
        let last = first + job.leaves.len() as u64 - 1;
        let s = Stored { from: job.seq, to: job.through, first, last, hash: job.hash.to_vec() };
        self.state.dedup.push(key, s);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.records.fetch_add(job.leaves.len() as u64, Ordering::Relaxed);
        Ok(Ack { seq: job.seq, first_leaf_index: first, last_leaf_index: last, duplicate: false, conflict: false })
    }

    /// Checks the sender may ship for the agent id; `Ok(true)` when it is the
    /// first identity to do so (it becomes the owner once its batch is stored).
    fn check_owner(&mut self, job: &Job) -> Result<bool, Error> {
        let owner = match self.roles.agent_id_rule(&job.peer, &job.agent_id) {
            AgentIdRule::Allowed => return Ok(false),
            AgentIdRule::Refused => "(roles file)".to_string(),
            AgentIdRule::Unbound => match self.state.dedup.owner(&job.agent_id) {
                None => return Ok(true),
                Some(o) if o == job.peer => return Ok(false),
                Some(o) => o.to_string(),
            },
        };
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if !self.state.dedup.refusal_recorded(&job.agent_id, &job.peer) {
            let detail = serde_json::json!({
                "identity": job.peer, "owner": owner, "boot_id": job.boot_id, "seq": job.seq,
                "batch_sha256": hex::encode(job.hash), "records": job.leaves.len(),
            });
            let e = entry::new(entry::AGENT_ID_REFUSED, now_ns(), &job.agent_id, detail, Vec::new());
            self.append_entry(e, &job.agent_id)?;
            tracing::warn!(agent = %escape(&job.agent_id), identity = %escape(&job.peer), owner = %escape(&owner),
                "ALERT agent_id_refused: a certificate shipped for an agent id it does not own");
        }
        Err(Error::PermissionDenied(format!(
            "agent id {:?} belongs to {}; certificate {} may not ship for it",
            escape(&job.agent_id),
            escape(&owner),
            escape(&job.peer)
        )))
    }

    /// Keeps a batch that reuses a stored (agent, boot, seq) with other content.
    fn conflict(&mut self, job: &Job, stored: &Stored) -> Result<Ack, Error> {
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        let key = (job.agent_id.clone(), job.boot_id.clone(), job.seq, job.hash.to_vec());
        let leaf = match self.state.dedup.conflict(&key) {
            Some(leaf) => leaf,
            None => {
                let records = job
                    .leaves
                    .iter()
                    .map(|l| StoredLeaf::decode(l.as_slice()).map(|l| l.record.unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::InvalidArgument(format!("re-decoding the batch: {e}")))?;
                let batch = Batch {
                    agent_id: job.agent_id.clone(),
                    boot_id: job.boot_id.clone(),
                    seq: job.seq,
                    records,
                    covers_through_seq: if job.through > job.seq { job.through } else { 0 },
                };
                let detail = serde_json::json!({
                    "boot_id": job.boot_id, "seq": job.seq, "identity": job.peer,
                    "stored_sha256": hex::encode(&stored.hash), "received_sha256": hex::encode(job.hash),
                    "stored_first_leaf": stored.first, "stored_last_leaf": stored.last,
                    "records": job.leaves.len(),
                });
                let e = entry::new(entry::BATCH_CONFLICT, now_ns(), &job.agent_id, detail, batch.encode_to_vec());
                let leaf = self.append_entry(e, &job.agent_id)?;
                self.state.dedup.add_conflict(key, leaf);
                tracing::warn!(agent = %escape(&job.agent_id), boot = %escape(&job.boot_id), seq = job.seq, leaf,
                    identity = %escape(&job.peer),
                    "ALERT batch_conflict: a batch reused a stored seq with different content; kept as a conflict entry");
                leaf
            }
        };
        Ok(Ack { seq: job.seq, first_leaf_index: leaf, last_leaf_index: leaf, duplicate: false, conflict: true })
    }
}
