//! Segmentation while the agent runs: the enforcer, its kernel readers (decision
//! events, new cgroups), and the notices that make its history evidence (which
//! policy was in force from when, which file was rejected, what was lost).
use std::{path::Path, sync::Arc};

use aya::Ebpf;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use wiretrail_common::segment::*;

use super::{Enforcer, SegmentError, cgroups, decisions, enforcer::Outcome};
use crate::{
    capture::reader::ReaderError,
    identity::Sources,
    metrics::Metrics,
    record::{LostRecord, Record, Stamp},
};

/// What the agent's main loop drives.
pub struct Segmentation {
    pub enforcer: Enforcer,
    /// The decisions reader.
    decisions: tokio::task::JoinHandle<Result<(), ReaderError>>,
    /// Notices and gap records go to the pipeline here.
    notes: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
    /// Decision events lost in the kernel, already reported.
    lost: u64,
}

impl Segmentation {
    /// Puts the policy at `path` in force and starts the kernel readers;
    /// `new_cgroups` is signalled when the kernel reports a new cgroup (the
    /// caller then calls `enforcer.refresh()`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        ebpf: &mut Ebpf,
        path: &Path,
        sources: Sources,
        want: decisions::Wanted,
        notes: mpsc::Sender<Record>,
        new_cgroups: Arc<Notify>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Segmentation, SegmentError> {
        let (enforcer, rings, loaded) = Enforcer::start(ebpf, path, sources.pods.clone())?;
        tokio::spawn(cgroups::watch(rings.cgroups, new_cgroups, shutdown.clone()));
        let decisions = tokio::spawn(decisions::run(
            rings.decisions,
            enforcer.generations.clone(),
            sources,
            want,
            notes.clone(),
            metrics.clone(),
            shutdown,
        ));
        let mut s = Segmentation { enforcer, decisions, notes, metrics, lost: 0 };
        s.announce(&loaded).await;
        Ok(s)
    }

    /// SIGHUP: re-read the file.
    pub async fn reload(&mut self) {
        let outcome = self.enforcer.reload();
        self.announce(&outcome).await;
    }

    /// Every second: a changed file, membership, the kernel's counters.
    pub async fn tick(&mut self) {
        if let Some(outcome) = self.enforcer.tick() {
            self.announce(&outcome).await;
        }
        self.kernel_counters().await;
    }

    /// After shutdown was signalled: final counters, then the decisions reader
    /// drains its ring and stops.
    pub async fn finish(mut self) -> Result<(), ReaderError> {
        self.kernel_counters().await;
        self.decisions.await.unwrap_or(Ok(()))
    }

    /// Records a load or a rejection as a notice (evidence of which policy was
    /// in force from when).
    async fn announce(&mut self, outcome: &Outcome) {
        let path = self.enforcer.path().display().to_string();
        let note = match outcome {
            Outcome::Unchanged => return,
            Outcome::Loaded { sha256, generation, zones, rules } => {
                self.metrics.policy_generation.set(*generation as u64);
                Record::notice(
                    "policy_loaded",
                    serde_json::json!({"path": path, "policy_sha256": sha256, "policy_generation": generation,
                        "zones": zones, "rules": rules}),
                )
            }
            Outcome::Rejected { error } => {
                self.metrics.policy_rejected.inc();
                Record::notice(
                    "policy_rejected",
                    serde_json::json!({"path": path, "error": error,
                        "policy_sha256_in_force": self.enforcer.sha256()}),
                )
            }
        };
        let _ = self.notes.send(note).await;
    }

    /// Publishes the kernel's decision counters; decision events the kernel
    /// could not queue become a gap record (the decisions themselves applied).
    async fn kernel_counters(&mut self) {
        let k = self.enforcer.kernel_stats();
        let m = &self.metrics;
        m.policy_allowed.set(k[PSTAT_ALLOW as usize]);
        m.policy_denied.set(k[PSTAT_DENY as usize]);
        m.policy_audited.set(k[PSTAT_AUDIT as usize]);
        m.policy_errors.set(k[PSTAT_ERRORS as usize]);
        let lost = k[PSTAT_LOST as usize];
        m.policy_lost.set(lost);
        if lost <= self.lost {
            return;
        }
        let n = lost - self.lost;
        self.lost = lost;
        tracing::warn!(lost = n, "policy decision events lost (ring full); the decisions were applied");
        let note = Record::Lost(Box::new(LostRecord {
            stamp: Stamp::now(),
            what: "policy_decisions".into(),
            count: n,
            detail: format!("{n} policy decision events lost (decision ring full); the decisions were applied"),
        }));
        let _ = self.notes.send(note).await;
    }
}
