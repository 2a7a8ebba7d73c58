//! Logs whose collectors are gone for good, and who expires them.
//!
//! In clustered mode each collector pod has its own origin; a pod that is
//! replaced (a rolling update, a lost node) leaves its log in ClickHouse,
//! readable and verifiable, with nobody left to run its retention. So every
//! collector inserts a heartbeat ([`heartbeat`]: its origin and the server's
//! `now()`, every minute), and a log whose collector has not been seen —
//! no heartbeat, checkpoint or registration by the server's clock — for
//! `--clickhouse-orphan-after-secs` (default 7 days) is orphaned. One live
//! collector looks after all orphaned logs: the one with the smallest origin
//! among those seen within that time (so a second one steps in when it goes).
//!
//! Each retention pass, the collector that looks after them, for each
//! orphaned log ([`Orphans`]):
//! 1. verifies it from ClickHouse (one that does not verify is kept whole
//!    and named at each pass);
//! 2. judges each leaf its signed checkpoints cover, as its own retention
//!    would: class and expiry by the same policy, legal holds of every
//!    collector ([`super::holds`]); collector entries the log relies on
//!    (`permanent`) stay;
//! 3. for each run of deletable leaves (at most [`MAX_RUN`]), appends to
//!    its own log a `retention_deletion` entry naming the orphaned log
//!    (`origin` in its detail) with the leaves' verified hashes, then
//!    deletes the runs' rows from ClickHouse ([`super::expiry::Mirror`]).
//!    The holds are read again before each entry; when they changed, the
//!    log waits for the next pass.
//!
//! Only ranges of the log's own deletion entries under its verified
//! checkpoint and of this collector's entries are skipped and mirrored;
//! rows another entry names are judged like any other.
//!
//! Readers take such an entry as the orphaned log's own: its kept hashes
//! stand in for the deleted leaves, checked against the orphaned log's
//! signed roots, and the entry counts only when the log that holds it
//! verifies and its verified tree holds that entry. A log judged with nothing to delete before a
//! known time is not read again until then (under the same policy).
//!
//! Cost: a pass over a log it may delete from reads that log twice (verify,
//! then judge) and the hashes of all its leaves stay in memory meanwhile
//! (32 bytes a leaf). A collector that comes back after its log was expired
//! inserts the deleted rows again; its own retention deletes them again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sha2::Digest;
use wiretrail_log::entry;
use wiretrail_proto::v1::StoredLeaf;

use super::expiry::{Expired, Mirror, merged};
use super::reader::Reader;
use super::schema::{CHECKPOINTS, HEARTBEATS, LEAVES, ORIGINS};
use super::{ClickHouseConfig, ClickHouseError};
use crate::retention::policy::PERMANENT;
use crate::retention::{Append, Holds, OrphanReport, Policy, RetentionError};

/// Leaves one deletion entry covers at most (2 MiB of kept hashes).
pub const MAX_RUN: u64 = 65_536;

/// How often a collector inserts its heartbeat: every minute, or a third of
/// the orphan time when that is shorter (at least every second).
pub fn heartbeat_every(cfg: &ClickHouseConfig) -> Duration {
    let minute = Duration::from_secs(60);
    cfg.orphan_after.map_or(minute, |d| (d / 3).clamp(Duration::from_secs(1), minute))
}

/// Inserts this collector's heartbeat, stamped by the server's clock.
pub async fn heartbeat(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    origin: &str,
) -> Result<(), ClickHouseError> {
    let mut q = client.query(&format!("INSERT INTO {HEARTBEATS} (origin, seen) SELECT ?, now()")).bind(origin);
    if cfg.cluster.is_some() {
        q = q.with_setting("insert_distributed_sync", "1");
    }
    q.execute().await.map_err(ClickHouseError::query("inserting the heartbeat"))
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Last {
    origin: String,
    t: u32,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct LeafOnly {
    leaf_index: u64,
    #[serde(with = "serde_bytes")]
    leaf: Vec<u8>,
}

impl Reader {
    /// When each log's collector was last seen (server seconds) and how long
    /// ago: its latest heartbeat, by the server's clock; for a log without
    /// heartbeats (a collector of an older version) its latest checkpoint
    /// or registration, stamped by the collector's clock, never later than now.
    pub async fn last_seen(&self) -> Result<BTreeMap<String, Seen>, ClickHouseError> {
        let now: u32 = (self.client.query("SELECT toUInt32(now())").fetch_one().await)
            .map_err(ClickHouseError::query("reading the server's clock"))?;
        let read = |table: &'static str, col: &'static str| {
            let q = format!("SELECT origin, toUInt32(max({col})) AS t FROM {table} GROUP BY origin");
            let c = self.client.clone();
            async move {
                (c.query(&q).fetch_all::<Last>().await)
                    .map_err(ClickHouseError::query(format!("reading the latest {col} per log")))
            }
        };
        let beats: BTreeMap<String, u32> =
            read(HEARTBEATS, "seen").await?.into_iter().map(|r| (r.origin, r.t)).collect();
        let mut last = BTreeMap::<String, u32>::new();
        for (table, col) in [(ORIGINS, "registered"), (CHECKPOINTS, "issued")] {
            for r in read(table, col).await? {
                let e = last.entry(r.origin).or_default();
                *e = (*e).max(r.t.min(now));
            }
        }
        last.extend(beats);
        Ok(last.into_iter().map(|(o, t)| (o, (t, u64::from(now.saturating_sub(t))))).collect())
    }

    /// Judges the leaves `0..signed` of log `origin` not in `gone` (sorted,
    /// merged) under `policy` and `holds` at `now_ns`.
    async fn judge_log(
        &self,
        origin: &str,
        signed: u64,
        gone: &[(u64, u64)],
        policy: &Policy,
        holds: &Holds,
        now_ns: i64,
    ) -> Result<Runs, ClickHouseError> {
        let what = || format!("reading the leaves of the orphaned log {origin}");
        let mut cursor = self
            .client
            .query(&format!(
                "SELECT DISTINCT leaf_index, leaf FROM {LEAVES} WHERE origin = ? AND leaf_index < ? ORDER BY leaf_index"
            ))
            .bind(origin)
            .bind(signed)
            .fetch::<LeafOnly>()
            .map_err(ClickHouseError::query(what()))?;
        let (mut runs, mut g) = (Runs::default(), 0);
        while let Some(r) = cursor.next().await.map_err(ClickHouseError::query(what()))? {
            let i = r.leaf_index;
            while gone.get(g).is_some_and(|r| r.1 <= i) {
                g += 1;
            }
            if gone.get(g).is_some_and(|r| r.0 <= i) {
                runs.keep(None);
                continue;
            }
            let leaf = StoredLeaf::decode(r.leaf.as_slice()).map_err(|e| {
                ClickHouseError::Inconsistent(format!("leaf {i} of the orphaned log {origin} does not decode: {e}"))
            })?;
            let (class, dur) = policy.classify(&leaf);
            let exp = leaf.received_time_ns.saturating_add(dur);
            if class == PERMANENT {
                runs.keep(None);
            } else if exp > now_ns {
                runs.keep(Some(exp));
            } else if !holds.covering(&leaf).is_empty() {
                runs.held = true;
                runs.keep(None);
            } else {
                runs.delete(i, class, exp);
            }
        }
        runs.keep(None);
        Ok(runs)
    }
}

/// When a log's collector was last seen (server seconds) and how many seconds ago.
pub type Seen = (u32, u64);

/// The orphaned logs among `seen` (per log: when its collector was last
/// seen and how many seconds ago), with those, and whether `own` looks after
/// them: the collector with the smallest origin among those seen within
/// `after` does.
pub fn looked_after(own: &str, seen: &BTreeMap<String, Seen>, after: Duration) -> (Vec<(String, Seen)>, bool) {
    let after = after.as_secs();
    let orphans: Vec<(String, Seen)> =
        seen.iter().filter(|(o, (_, a))| o.as_str() != own && *a >= after).map(|(o, s)| (o.clone(), *s)).collect();
    let first_live = seen.iter().filter(|(_, (_, a))| *a < after).map(|(o, _)| o.as_str()).chain([own]).min();
    (orphans, first_live == Some(own))
}

/// A run of consecutive deletable leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// First leaf.
    pub first: u64,
    /// End (exclusive).
    pub end: u64,
    /// Classes of its leaves.
    pub classes: BTreeSet<String>,
    /// When its last leaf expired (UTC ns).
    pub expired_at_ns: i64,
}

/// The runs of one log's judgement, in leaf order.
#[derive(Debug, Default)]
pub struct Runs {
    /// Closed runs.
    pub done: Vec<Run>,
    open: Option<Run>,
    /// The earliest time a kept leaf expires (not counting held ones).
    pub next_ns: Option<i64>,
    /// Whether an expired leaf was kept by a hold.
    pub held: bool,
}

impl Runs {
    /// Leaf `i` (class, expiry) may be deleted.
    pub fn delete(&mut self, i: u64, class: &str, exp: i64) {
        match &mut self.open {
            Some(r) if r.end == i && r.end - r.first < MAX_RUN => {
                r.end += 1;
                r.expired_at_ns = r.expired_at_ns.max(exp);
                if !r.classes.contains(class) {
                    r.classes.insert(class.to_string());
                }
            }
            _ => {
                self.keep(None);
                let classes = BTreeSet::from([class.to_string()]);
                self.open = Some(Run { first: i, end: i + 1, classes, expired_at_ns: exp });
            }
        }
    }

    /// A leaf is kept (until `until`, when it expires then): the open run ends.
    pub fn keep(&mut self, until: Option<i64>) {
        if let Some(t) = until {
            self.next_ns = Some(self.next_ns.map_or(t, |n| n.min(t)));
        }
        self.done.extend(self.open.take());
    }
}

/// What an orphaned log was judged under.
#[derive(Clone)]
struct Judged {
    policy: String,
    holds: Holds,
    /// When its collector was last seen (a log that comes back and goes
    /// again is judged again).
    seen_at: u32,
}

impl Judged {
    fn same(&self, o: &Judged) -> bool {
        self.policy == o.policy && self.seen_at == o.seen_at && self.holds.same_placements(&o.holds)
    }
}

/// Retention of the orphaned logs in ClickHouse, for the collector's retention pass.
pub struct Orphans {
    reader: Reader,
    mirror: Arc<Mirror>,
    own: String,
    after: Duration,
    wait: Duration,
    rt: tokio::runtime::Handle,
    /// Orphaned log -> what it was judged under (policy, holds, when its
    /// collector was last seen) and the time before which it has nothing to delete.
    quiet_until: Mutex<HashMap<String, (Judged, i64)>>,
}

impl Orphans {
    /// When `cfg` sets an orphan time; `mirror` deletes the rows.
    pub async fn open(
        cfg: &ClickHouseConfig,
        own: String,
        mirror: Arc<Mirror>,
    ) -> Result<Option<Orphans>, ClickHouseError> {
        let Some(after) = cfg.orphan_after else { return Ok(None) };
        Ok(Some(Orphans {
            reader: Reader::open(cfg).await?,
            mirror,
            own,
            after,
            // A whole log is read: far longer than one insert may take.
            wait: cfg.timeout * 60,
            rt: tokio::runtime::Handle::current(),
            quiet_until: Mutex::default(),
        }))
    }

    fn block<T>(&self, f: impl Future<Output = Result<T, ClickHouseError>>) -> Result<T, RetentionError> {
        self.rt
            .block_on(async { tokio::time::timeout(self.wait, f).await })
            .map_err(|_| RetentionError::Orphans(format!("ClickHouse did not answer within {:?}", self.wait)))?
            .map_err(|e| RetentionError::Orphans(e.to_string()))
    }

    /// Expires what it may of orphaned log `x` (last seen at `seen.0`, `seen.1` s ago).
    #[allow(clippy::too_many_arguments)]
    fn expire_log(
        &self,
        x: &str,
        seen: Seen,
        policy: &Policy,
        held0: &Holds,
        holds: &dyn Fn() -> Result<Holds, RetentionError>,
        app: &dyn Append,
        now_ns: i64,
        rep: &mut OrphanReport,
    ) -> Result<(), RetentionError> {
        let judged = Judged { policy: format!("{policy:?}"), holds: held0.clone(), seen_at: seen.0 };
        let quiet = self.quiet_until.lock().expect("orphans lock").get(x).cloned();
        if quiet.is_some_and(|(j, t)| j.same(&judged) && t > now_ns) {
            return Ok(());
        }
        let Some(c) = self.block(self.reader.checked_alone(x))? else { return Ok(()) };
        if !c.report.ok {
            rep.unverified += 1;
            tracing::warn!(origin = x, problems = ?c.report.problems,
                "retention: the orphaned log does not verify from ClickHouse; nothing of it is deleted");
            return Ok(());
        }
        // Ranges deleted by entries that count here: the log's own under its
        // verified checkpoint, and this collector's. Rows another entry names
        // are judged (and kept) like any other.
        let (mut ex, _) = self.block(self.reader.expired(Some(x)))?;
        let signed = c.report.verified_size;
        let counts = |e: &Expired| match &e.by {
            None => e.entry_leaf < signed,
            Some(by) => *by == self.own,
        };
        let gone =
            merged(ex.remove(x).unwrap_or_default().iter().filter(|e| counts(e)).map(|e| (e.first, e.end)).collect());
        let runs = self.block(self.reader.judge_log(x, signed, &gone, policy, held0, now_ns))?;
        let (mut all, mut complete) = (gone, true);
        for run in &runs.done {
            if !holds()?.same_placements(held0) {
                tracing::info!(origin = x, "retention: legal holds changed during the pass; the orphaned log waits");
                complete = false;
                break;
            }
            let content: Vec<u8> = c.hashes[run.first as usize..run.end as usize].concat();
            let detail = serde_json::json!({
                "origin": x,
                "first_leaf": run.first,
                "end_leaf": run.end,
                "leaves": run.end - run.first,
                "classes": run.classes,
                "expired_at_ns": run.expired_at_ns,
                "trigger": "expiry of an orphaned log",
                "orphan_last_seen_secs_ago": seen.1,
                "orphan_verified_size": signed,
                "kept_hashes_sha256": hex::encode(sha2::Sha256::digest(&content)),
            });
            let subject = format!("{x} leaves {}..{}", run.first, run.end);
            let leaf = app.append(entry::new(entry::RETENTION_DELETION, now_ns, &subject, detail, content))?;
            tracing::info!(
                origin = x,
                first = run.first,
                end = run.end,
                entry = leaf,
                "retention deleted leaves of an orphaned log"
            );
            rep.entries.push(leaf);
            rep.deleted_leaves += run.end - run.first;
            self.mirror.stats().orphan_leaves_deleted.fetch_add(run.end - run.first, Ordering::Relaxed);
            all.push((run.first, run.end));
        }
        let synced = match self.mirror.sync_log(x, all) {
            Ok(s) => s.rows_left == 0,
            Err(e) => {
                tracing::warn!(origin = x, error = %e, "retention: deleting rows of the orphaned log failed; retried next pass");
                false
            }
        };
        // Held leaves stay held while the placements are the same.
        if complete && synced {
            let until = runs.next_ns.unwrap_or(i64::MAX);
            self.quiet_until.lock().expect("orphans lock").insert(x.to_string(), (judged, until));
        }
        Ok(())
    }
}

impl crate::retention::Orphans for Orphans {
    fn expire(
        &self,
        policy: &Policy,
        holds: &dyn Fn() -> Result<Holds, RetentionError>,
        app: &dyn Append,
        now_ns: i64,
    ) -> Result<OrphanReport, RetentionError> {
        let stats = self.mirror.stats();
        let r = (|| {
            let ages = self.block(self.reader.last_seen())?;
            let (orphans, mine) = looked_after(&self.own, &ages, self.after);
            let mut rep = OrphanReport { orphans: orphans.len() as u64, ..Default::default() };
            stats.orphaned_logs.store(rep.orphans, Ordering::Relaxed);
            if !mine || orphans.is_empty() {
                stats.orphans_unverified.store(0, Ordering::Relaxed);
                return Ok(rep);
            }
            let held0 = holds()?;
            for (x, seen) in orphans {
                rep.looked_after += 1;
                // One log failing (a timeout, a bad row) does not hold the others back.
                if let Err(e) = self.expire_log(&x, seen, policy, &held0, holds, app, now_ns, &mut rep) {
                    tracing::error!(origin = %x, error = %e, "retention of an orphaned log failed; retried next pass");
                    stats.orphan_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            stats.orphans_unverified.store(rep.unverified, Ordering::Relaxed);
            Ok(rep)
        })();
        if r.is_err() {
            stats.orphan_failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests;
