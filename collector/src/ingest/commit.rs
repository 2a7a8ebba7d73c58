//! The commit thread: owns the store writer, deduplicates batches and acks
//! them after one fsync per group of batches (group commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use wiretrail_proto::v1::Ack;

use crate::error::Error;
use crate::store::{Shared, StoreError, Writer};

/// One batch waiting to be made durable.
pub struct Job {
    /// Agent id from the batch.
    pub agent_id: String,
    /// Boot id from the batch.
    pub boot_id: String,
    /// Batch sequence number.
    pub seq: u64,
    /// Encoded `StoredLeaf`s, one per record.
    pub leaves: Vec<Vec<u8>>,
    /// Where the ack (or error) goes once the batch is durable.
    pub reply: oneshot::Sender<Result<Ack, Error>>,
}

/// An ack channel and what to send on it after the group's fsync.
type Reply = (oneshot::Sender<Result<Ack, Error>>, Result<Ack, Error>);

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
    /// fsyncs (group commits).
    pub commits: AtomicU64,
}

/// Leaf ranges of stored batches per (agent id, boot id), indexed by seq.
#[derive(Default)]
pub struct Dedup {
    /// `ranges[(agent, boot)][seq] = (first leaf, last leaf)`.
    ranges: HashMap<(String, String), Vec<(u64, u64)>>,
}

/// Just the batch key of a `StoredLeaf` (other fields are skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
struct LeafKey {
    #[prost(string, tag = "1")]
    agent_id: String,
    #[prost(string, tag = "2")]
    boot_id: String,
    #[prost(uint64, tag = "3")]
    seq: u64,
}

impl Dedup {
    /// Rebuilds the table by scanning the log.
    pub fn rebuild(shared: &Shared) -> Result<Self, StoreError> {
        let mut d = Dedup::default();
        for item in shared.iter(0, shared.size())? {
            let (i, leaf) = item?;
            let k = LeafKey::decode(leaf.as_slice())
                .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
            let v = d.ranges.entry((k.agent_id, k.boot_id)).or_default();
            match v.len() as u64 {
                n if n == k.seq + 1 => v[k.seq as usize].1 = i,
                n if n == k.seq => v.push((i, i)),
                n => {
                    return Err(StoreError::Inconsistent(format!("leaf {i}: batch seq {} after {n} batches", k.seq)));
                }
            }
        }
        Ok(d)
    }
}

/// Spawns the commit thread; jobs are sent on the returned channel.
pub fn spawn(
    mut writer: Writer,
    mut dedup: Dedup,
    stats: Arc<CommitStats>,
) -> (mpsc::Sender<Job>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(1024);
    let handle = std::thread::Builder::new()
        .name("wt-commit".into())
        .spawn(move || {
            let mut group: Vec<Reply> = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                let mut bytes: usize = jobs[0].leaves.iter().map(Vec::len).sum();
                while bytes < (32 << 20) {
                    match rx.try_recv() {
                        Ok(j) => {
                            bytes += j.leaves.iter().map(Vec::len).sum::<usize>();
                            jobs.push(j);
                        }
                        Err(_) => break,
                    }
                }
                let mut appended = false;
                for job in jobs {
                    let res = handle_job(&mut writer, &mut dedup, &stats, &job, &mut appended);
                    group.push((job.reply, res));
                }
                if appended {
                    if let Err(e) = writer.commit() {
                        for (_, r) in group.iter_mut() {
                            if r.is_ok() {
                                *r = Err(Error::Unavailable(format!("fsync failed: {e}")));
                            }
                        }
                    } else {
                        stats.commits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for (reply, res) in group.drain(..) {
                    // The client may have gone; its retry will be deduplicated.
                    let _ = reply.send(res);
                }
            }
            tracing::info!("commit thread stopped");
        })
        .expect("spawning commit thread");
    (tx, handle)
}

fn handle_job(
    writer: &mut Writer,
    dedup: &mut Dedup,
    stats: &CommitStats,
    job: &Job,
    appended: &mut bool,
) -> Result<Ack, Error> {
    let key = (job.agent_id.clone(), job.boot_id.clone());
    let ranges = dedup.ranges.entry(key).or_default();
    let next = ranges.len() as u64;
    if job.seq < next {
        let (first, last) = ranges[job.seq as usize];
        stats.duplicates.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(agent = %job.agent_id, seq = job.seq, "duplicate batch acknowledged from dedup table");
        return Ok(Ack { seq: job.seq, first_leaf_index: first, last_leaf_index: last, duplicate: true });
    }
    if job.seq > next {
        stats.out_of_sequence.fetch_add(1, Ordering::Relaxed);
        return Err(Error::OutOfSequence(format!(
            "agent {} boot {}: got batch {} but expected {next}",
            job.agent_id, job.boot_id, job.seq
        )));
    }
    let first = writer.append(&job.leaves)?;
    let last = first + job.leaves.len() as u64 - 1;
    ranges.push((first, last));
    *appended = true;
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.records.fetch_add(job.leaves.len() as u64, Ordering::Relaxed);
    Ok(Ack { seq: job.seq, first_leaf_index: first, last_leaf_index: last, duplicate: false })
}
