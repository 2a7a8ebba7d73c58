//! The access log: every read of the evidence (search, view, export, proof,
//! checkpoint, access log) is an `access` collector entry appended to the log
//! itself, durable before the answer is sent; a failed append fails the
//! request. Entries go through the commit thread's queue
//! ([`crate::ingest::commit::Work::Entry`]) like batches, so they are fsynced
//! with them (group commit) and neither blocks the other.
//!
//! [`list`] serves `Query.AccessLog` (auditors); [`meta`] is the client side
//! of the case id and purpose metadata.

pub mod list;
pub mod meta;

use std::collections::BTreeSet;

use tokio::sync::{mpsc, oneshot};
use tonic::Request;
use wiretrail_proto::v1::StoredLeaf;

use crate::authz::Grant;
use crate::error::Error;
use crate::ingest::commit::Work;
use wiretrail_log::entry;

/// Most workload keys (and agent ids, certificate identities) one entry lists;
/// the rest are counted in `workloads_truncated`.
pub const MAX_LISTED: usize = 10_000;

/// Who asks, for what, under which case.
#[derive(Debug, Clone)]
pub struct Access {
    /// The caller and its role.
    pub grant: Grant,
    /// `search`, `view`, `inclusion_proof`, ...
    pub action: &'static str,
    /// The client's `x-wiretrail-case` (may be empty).
    pub case_id: String,
    /// The client's `x-wiretrail-purpose` (`export` or empty).
    pub purpose: String,
}

impl Access {
    /// The access `req` asks for, with its case id and purpose from metadata.
    pub fn of<T>(req: &Request<T>, grant: Grant, action: &'static str) -> Result<Access, Error> {
        let get = |key: &str| -> Result<String, Error> {
            match req.metadata().get(key) {
                None => Ok(String::new()),
                Some(v) => {
                    let s = v.to_str().map_err(|_| Error::InvalidArgument(format!("{key} is not ASCII text")))?;
                    if s.len() > meta::MAX_LEN || s.chars().any(char::is_control) {
                        return Err(Error::InvalidArgument(format!(
                            "{key} must be at most {} printable characters",
                            meta::MAX_LEN
                        )));
                    }
                    Ok(s.to_string())
                }
            }
        };
        let purpose = get(meta::PURPOSE)?;
        if !purpose.is_empty() && purpose != "export" {
            return Err(Error::InvalidArgument(format!("{}: {purpose:?} is not \"export\"", meta::PURPOSE)));
        }
        Ok(Access { grant, action, case_id: get(meta::CASE)?, purpose })
    }
}

/// Whose records a read returned.
#[derive(Debug, Default, Clone)]
pub struct Returned {
    /// Leaves returned.
    pub count: u64,
    /// Workload identity keys of the records (both ends of two-witness records).
    pub workloads: BTreeSet<String>,
    /// Agent ids the batches claimed.
    pub agent_ids: BTreeSet<String>,
    /// Certificate identities that shipped them.
    pub shipped_by: BTreeSet<String>,
    /// Values not listed because a set was full.
    pub truncated: u64,
}

impl Returned {
    /// Counts one returned leaf.
    pub fn add(&mut self, l: &StoredLeaf) {
        self.count += 1;
        let mut put = |set: &mut BTreeSet<String>, v: String| {
            if set.len() < MAX_LISTED || set.contains(&v) {
                set.insert(v);
            } else {
                self.truncated += 1;
            }
        };
        if let Some(r) = &l.record {
            for s in wiretrail_log::sides::sides(r) {
                put(&mut self.workloads, crate::inventory::identity_key(s.identity, &r.host));
            }
        }
        if !l.agent_id.is_empty() {
            put(&mut self.agent_ids, l.agent_id.clone());
        }
        if l.entry.is_none() {
            put(&mut self.shipped_by, l.peer_identity.clone());
        }
    }
}

/// Appends access entries through the commit thread.
#[derive(Clone)]
pub struct Logger {
    /// The commit queue; weak so that open streams never keep the commit
    /// thread from stopping at shutdown.
    jobs: mpsc::WeakSender<Work>,
}

impl Logger {
    /// A logger feeding `jobs`.
    pub fn new(jobs: &mpsc::Sender<Work>) -> Self {
        Logger { jobs: jobs.downgrade() }
    }

    /// Appends another collector entry (e.g. a key rotation) through the
    /// same queue; returns its leaf index once durable.
    pub async fn append_entry(&self, e: wiretrail_proto::v1::CollectorEntry) -> Result<u64, Error> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("collector is shutting down; entry not appended".into());
        let jobs = self.jobs.upgrade().ok_or_else(gone)?;
        jobs.send(Work::Entry { leaf: entry::leaf(e, ""), reply }).await.map_err(|_| gone())?;
        drop(jobs);
        rx.await.map_err(|_| gone())?
    }

    /// Appends the access `a` with `detail` (a JSON object: what was asked)
    /// and what came back; returns its leaf index once durable.
    pub async fn append(&self, a: &Access, mut detail: serde_json::Value, returned: &Returned) -> Result<u64, Error> {
        let m = detail.as_object_mut().expect("access detail is a JSON object");
        m.insert("identity".into(), a.grant.identity.clone().into());
        m.insert("role".into(), a.grant.role.clone().into());
        m.insert("action".into(), a.action.into());
        m.insert("purpose".into(), a.purpose.clone().into());
        m.insert("case_id".into(), a.case_id.clone().into());
        m.insert("returned".into(), returned.count.into());
        m.insert("workloads".into(), returned.workloads.iter().cloned().collect::<Vec<_>>().into());
        m.insert("agent_ids".into(), returned.agent_ids.iter().cloned().collect::<Vec<_>>().into());
        m.insert("shipped_by".into(), returned.shipped_by.iter().cloned().collect::<Vec<_>>().into());
        m.insert("workloads_truncated".into(), returned.truncated.into());
        let e = entry::new(entry::ACCESS, wiretrail_log::store::now_ns(), &a.grant.identity, detail, Vec::new());
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("collector is shutting down; access not logged, nothing returned".into());
        let jobs = self.jobs.upgrade().ok_or_else(gone)?;
        jobs.send(Work::Entry { leaf: entry::leaf(e, ""), reply }).await.map_err(|_| gone())?;
        drop(jobs);
        let leaf = rx.await.map_err(|_| gone())?.map_err(|e| {
            tracing::error!(error = %e, action = a.action, "access entry not stored; request refused");
            e
        })?;
        tracing::debug!(leaf, action = a.action, identity = %wiretrail_log::text::escape(&a.grant.identity), "access logged");
        Ok(leaf)
    }
}
