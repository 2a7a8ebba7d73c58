//! Retention's deletions, mirrored in ClickHouse.
//!
//! Retention deletes whole closed segments of a collector's log, judged per
//! leaf by class and legal hold ([`crate::retention::pass`]): the leaves'
//! hashes are kept and a `retention_deletion` entry is appended, whose content
//! is those hashes and whose detail names the range. That entry is a leaf like
//! any other, so it reaches ClickHouse before the deletion goes on. Then
//! [`Mirror::sync`] deletes the range's rows of this log from ClickHouse:
//! `ALTER TABLE leaves DELETE WHERE origin = .. AND leaf_index ..`
//! (`leaves_local ON CLUSTER` with a cluster), a mutation every server since
//! 2018 runs (Debian's 18.16 included), asynchronous.
//!
//! Readers of ClickHouse read the deletion entries first ([`Reader::expired`]):
//! verify puts each deleted leaf's kept hash in its place (checked against
//! the signed checkpoints like any leaf hash, so a range deleted without an
//! entry, or an entry that lies, fails; and only from an entry a verified
//! checkpoint covers, so rows added past the log's end explain nothing),
//! the inventory and alerts skip the ranges, and the sink never inserts
//! them again.
//!
//! Why not day partitions dropped, nor a TTL: a day's partition holds every
//! collector's rows and leaves of several classes, some under hold, so only
//! the ranges retention judged deletable may go; a partition all of whose
//! rows were deleted keeps only emptied parts (whether and when the server
//! drops them was not checked).
//!
//! Each retention pass calls [`Mirror::sync`] with every range the local log
//! has deleted; ranges seen gone from ClickHouse once are not asked about
//! again, so a mutation that failed (ClickHouse unreachable) or a deletion
//! finished by a restart is mirrored at the next pass, and no second
//! mutation is started while one of this table's is still running (it would
//! queue behind it: the server runs a table's mutations in order).
//!
//! A mutation that never finishes (one whose every attempt fails, anyone's:
//! the table is shared) holds every later deletion back. The mirror names it
//! at each pass — its id, age and, where the server says (19.x on), why its
//! last attempt failed — as a warning once it fails or has run for
//! [`STUCK_AFTER`], with the `KILL MUTATION` that unblocks it, and in the
//! metrics ([`MirrorStats`]): rows of deleted leaves still in ClickHouse,
//! how long a deletion has been held back, whether by a failing mutation.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use sha2::Digest;
use wiretrail_log::entry::RETENTION_DELETION;
use wiretrail_log::merkle::Hash;
use wiretrail_log::store::Deleted;
use wiretrail_proto::v1::StoredLeaf;

use super::reader::Reader;
use super::schema::LEAVES;
use super::{ClickHouseConfig, ClickHouseError};

/// A range of one log that retention deleted, as its `retention_deletion` entry states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// First leaf deleted.
    pub first: u64,
    /// End of the range (exclusive).
    pub end: u64,
    /// Leaf index of the entry.
    pub entry_leaf: u64,
    /// The deleted leaves' Merkle leaf hashes, `end - first` of them.
    pub hashes: Vec<Hash>,
    /// The log holding the entry when it is not the log deleted from: a
    /// collector that expired an orphaned log ([`super::orphans`]).
    pub by: Option<String>,
    /// The Merkle leaf hash of the entry's row (checked against the signed
    /// tree of the log holding it).
    pub entry_hash: Hash,
}

impl Expired {
    /// The kept hash of leaf `i`, when this range holds it.
    pub fn hash_of(&self, i: u64) -> Option<&Hash> {
        if i < self.first || i >= self.end {
            return None;
        }
        self.hashes.get((i - self.first) as usize)
    }
}

/// The deleted range the `retention_deletion` entry at leaf `entry_leaf`
/// (bytes `leaf`) of its log states; why not, when the entry is malformed.
/// An entry naming another log (`origin` in its detail) is marked `by`
/// `"?"`: [`expired_in`] names the log that holds it.
pub fn expired_of(leaf: &[u8], entry_leaf: u64) -> Result<Expired, String> {
    expired_in(leaf, entry_leaf, "?").map(|(_, e)| e)
}

/// [`expired_of`] for an entry of log `holder`: the log it deleted from
/// (`holder` unless its detail names another) and the range.
pub fn expired_in(leaf: &[u8], entry_leaf: u64, holder: &str) -> Result<(String, Expired), String> {
    let l = StoredLeaf::decode(leaf).map_err(|e| format!("retention_deletion leaf does not decode: {e}"))?;
    let e = l.entry.ok_or("a row marked retention_deletion holds a record, not an entry")?;
    if e.kind != RETENTION_DELETION {
        return Err(format!("a row marked retention_deletion holds a {} entry", e.kind));
    }
    let d: serde_json::Value =
        serde_json::from_str(&e.detail_json).map_err(|e| format!("retention_deletion detail is not JSON: {e}"))?;
    let num = |k: &str| d[k].as_u64().ok_or(format!("retention_deletion entry without {k}"));
    let (first, end) = (num("first_leaf")?, num("end_leaf")?);
    let of = d["origin"].as_str().filter(|o| !o.is_empty() && *o != holder);
    // In its own log a deletion follows the leaves it deleted.
    if end <= first || (of.is_none() && end > entry_leaf) {
        return Err(format!("retention_deletion entry names leaves {first}..{end}, not a range before it"));
    }
    let n = (end - first) as usize;
    if e.content.len() != n * 32 {
        return Err(format!("retention_deletion entry keeps {} bytes of hashes for {n} leaves", e.content.len()));
    }
    if d["kept_hashes_sha256"].as_str() != Some(hex::encode(sha2::Sha256::digest(&e.content)).as_str()) {
        return Err("retention_deletion entry's hashes do not match the digest in its detail".into());
    }
    let hashes = e.content.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
    let by = of.map(|_| holder.to_string());
    let entry_hash = wiretrail_log::merkle::leaf_hash(leaf);
    Ok((of.unwrap_or(holder).to_string(), Expired { first, end, entry_leaf, hashes, by, entry_hash }))
}

/// `ranges` sorted by first leaf with every overlap cut from the later one
/// (an orphaned log's range may overlap one its own collector deleted), so
/// the range holding a leaf is found by its first leaf.
pub(super) fn disjoint(mut ranges: Vec<Expired>) -> Vec<Expired> {
    ranges.sort_by_key(|e| (e.first, std::cmp::Reverse(e.end)));
    let mut out: Vec<Expired> = Vec::with_capacity(ranges.len());
    for mut e in ranges {
        let covered = out.last().map_or(0, |l| l.end);
        if e.end <= covered {
            continue;
        }
        if e.first < covered {
            e.hashes.drain(..(covered - e.first) as usize);
            e.first = covered;
        }
        out.push(e);
    }
    out
}

/// A collector entry's row: its log, leaf index and bytes.
#[derive(clickhouse::Row, serde::Deserialize)]
pub(super) struct EntryRow {
    pub origin: String,
    pub leaf_index: u64,
    #[serde(with = "serde_bytes")]
    pub leaf: Vec<u8>,
}

impl Reader {
    /// Every range retention deleted, per log deleted from (only `origin`'s
    /// when given), disjoint and sorted by first leaf ([`disjoint`]), from the
    /// `retention_deletion` entries of that log and of the logs that expired
    /// it as an orphan; with each malformed entry's (log, leaf index, why).
    /// Not verified here: verify checks the hashes against the signed checkpoints.
    pub async fn expired(
        &self,
        origin: Option<&str>,
    ) -> Result<(BTreeMap<String, Vec<Expired>>, Vec<(String, u64, String)>), ClickHouseError> {
        // Another log's entry names this one in its detail: a candidate test.
        let only = if origin.is_some() { " AND (origin = ? OR position(leaf, ?) > 0)" } else { "" };
        let mut q = self.client.query(&format!(
            "SELECT DISTINCT origin, leaf_index, leaf FROM {LEAVES} WHERE kind = ?{only} ORDER BY origin, leaf_index"
        ));
        q = q.bind(format!("entry:{RETENTION_DELETION}"));
        if let Some(o) = origin {
            q = q.bind(o).bind(format!("\"origin\":{}", serde_json::Value::from(o)));
        }
        let rows: Vec<EntryRow> =
            q.fetch_all().await.map_err(ClickHouseError::query("reading the retention_deletion entries"))?;
        let (mut out, mut bad) = (BTreeMap::<String, Vec<Expired>>::new(), Vec::new());
        for r in rows {
            match expired_in(&r.leaf, r.leaf_index, &r.origin) {
                Ok((of, e)) if origin.is_none_or(|o| o == of) => out.entry(of).or_default().push(e),
                Ok(_) => {}
                Err(why) => bad.push((r.origin, r.leaf_index, why)),
            }
        }
        let out = out.into_iter().map(|(k, v)| (k, disjoint(v))).collect();
        Ok((out, bad))
    }
}

/// Sorted, merged ranges: adjacent or overlapping ones become one.
pub(super) fn merged(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (f, e) in r {
        match out.last_mut() {
            Some(last) if f <= last.1 => last.1 = last.1.max(e),
            _ => out.push((f, e)),
        }
    }
    out
}

/// Leaves of `[from, to)` inside `ranges` (disjoint).
pub(super) fn deleted_in(ranges: &[(u64, u64)], from: u64, to: u64) -> u64 {
    ranges.iter().map(|&(f, e)| e.min(to).saturating_sub(f.max(from))).sum()
}

/// `ranges` minus `gone` (both sorted and merged).
fn minus(ranges: &[(u64, u64)], gone: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(f, e) in ranges {
        let mut start = f;
        for &(gf, ge) in gone.iter().filter(|g| g.0 < e && g.1 > f) {
            if gf > start {
                out.push((start, gf));
            }
            start = start.max(ge);
        }
        if start < e {
            out.push((start, e));
        }
    }
    out
}

/// Ranges per SQL condition: holds can split the deleted runs, and a query
/// naming thousands of ranges would pass the server's `max_query_size`.
const RANGES_PER_QUERY: usize = 500;

/// The SQL condition on `leaf_index` for `ranges` (non-empty).
fn condition(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges.iter().map(|(f, e)| format!("(leaf_index >= {f} AND leaf_index < {e})")).collect();
    format!("({})", parts.join(" OR "))
}

/// Distinct leaves of log `origin` that ClickHouse holds inside `ranges`,
/// asked [`RANGES_PER_QUERY`] ranges at a time; with the condition of the
/// first group of ranges that holds any.
pub(super) async fn rows_in(
    client: &clickhouse::Client,
    origin: &str,
    ranges: &[(u64, u64)],
) -> Result<(u64, Option<String>), ClickHouseError> {
    let (mut n, mut first) = (0u64, None);
    for group in ranges.chunks(RANGES_PER_QUERY) {
        let cond = condition(group);
        let k: u64 = client
            .query(&format!("SELECT uniqExact(leaf_index) FROM {LEAVES} WHERE origin = ? AND {cond}"))
            .bind(origin)
            .fetch_one()
            .await
            .map_err(ClickHouseError::query("counting the rows of deleted leaves"))?;
        if k > 0 && first.is_none() {
            first = Some(cond);
        }
        n += k;
    }
    Ok((n, first))
}

/// A running mutation older than this that holds a deletion back is warned about.
pub const STUCK_AFTER: Duration = Duration::from_secs(3600);

/// What one [`Mirror::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Leaves of deleted ranges still in ClickHouse when asked.
    pub rows_left: u64,
    /// Whether a deletion (mutation) was started.
    pub mutation_started: bool,
    /// The table's oldest running mutation, when one held the deletion back
    /// (none was started then).
    pub blocked_by: Option<Running>,
}

/// A mutation of the table not done yet.
#[derive(clickhouse::Row, serde::Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its id (`KILL MUTATION WHERE mutation_id = ..` names it).
    pub mutation_id: String,
    /// What it does (the part of the ALTER after the table).
    pub command: String,
    /// Seconds since it was created, by the server's clock.
    pub age_secs: u64,
    /// Why its last attempt failed; empty when it has not failed or the
    /// server does not say (18.x).
    pub fail_reason: String,
}

impl Running {
    /// Whether it should be warned about: failing, or running for [`STUCK_AFTER`].
    pub fn stuck(&self) -> bool {
        !self.fail_reason.is_empty() || self.age_secs >= STUCK_AFTER.as_secs()
    }
}

/// The mirror's state for the metrics endpoint (`wiretrail_clickhouse_*`).
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Rows of deleted leaves ClickHouse still held at the last check.
    pub rows_pending: AtomicU64,
    /// Age in seconds of the mutation that held the last deletion back (0: none did).
    pub blocked_secs: AtomicU64,
    /// 1 when that mutation's last attempt failed.
    pub blocked_failing: AtomicU64,
    /// Mirror passes that failed (ClickHouse unreachable, a query refused, a timeout).
    pub failures: AtomicU64,
    /// Orphaned logs seen at the last pass ([`super::orphans`]).
    pub orphaned_logs: AtomicU64,
    /// Of them, those that did not verify from ClickHouse (kept whole) at
    /// the last pass of the collector looking after them.
    pub orphans_unverified: AtomicU64,
    /// Leaves of orphaned logs this collector deleted.
    pub orphan_leaves_deleted: AtomicU64,
    /// Passes over the orphaned logs that failed (retried next pass).
    pub orphan_failures: AtomicU64,
}

/// Deletes from ClickHouse the rows of the ranges this collector's retention deleted.
pub struct Mirror {
    client: clickhouse::Client,
    cfg: ClickHouseConfig,
    origin: String,
    rt: tokio::runtime::Handle,
    /// Ranges seen gone from ClickHouse (sorted, merged), per log.
    gone: Mutex<std::collections::HashMap<String, Vec<(u64, u64)>>>,
    /// `system.mutations` has `latest_fail_reason` (19.x on).
    fail_reasons: bool,
    stats: std::sync::Arc<MirrorStats>,
}

impl Mirror {
    /// A mirror for log `origin` (the server's version checked).
    pub async fn open(cfg: ClickHouseConfig, origin: String) -> Result<Mirror, ClickHouseError> {
        let c = super::client(&cfg).with_database(&cfg.database);
        let v = super::server_version(&c).await?;
        let c = c.with_validation(v.validation());
        let fail_reasons: u64 = c
            .query("SELECT count() FROM system.columns WHERE database = 'system' AND table = 'mutations' AND name = 'latest_fail_reason'")
            .fetch_one()
            .await
            .map_err(ClickHouseError::query("reading the columns of system.mutations"))?;
        Ok(Mirror {
            client: c,
            cfg,
            origin,
            rt: tokio::runtime::Handle::current(),
            gone: Default::default(),
            fail_reasons: fail_reasons > 0,
            stats: Default::default(),
        })
    }

    /// Its counters, read by the metrics endpoint.
    pub fn stats(&self) -> std::sync::Arc<MirrorStats> {
        self.stats.clone()
    }

    /// Makes ClickHouse delete its rows of `deleted` (every range the local
    /// log deleted); blocking, from the retention thread.
    pub fn sync(&self, deleted: &[Deleted]) -> Result<SyncReport, ClickHouseError> {
        let r = self.sync_log(&self.origin, deleted.iter().map(|d| (d.first, d.end)).collect());
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let s = &self.stats;
        s.rows_pending.store(r.rows_left, Ordering::Relaxed);
        let b = r.blocked_by.as_ref();
        s.blocked_secs.store(b.map_or(0, |b| b.age_secs.max(1)), Ordering::Relaxed);
        s.blocked_failing.store(b.is_some_and(|b| !b.fail_reason.is_empty()) as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// Makes ClickHouse delete the rows of log `origin` in `ranges` (every
    /// range deleted from it so far: this log's, or an orphaned log's, see
    /// [`super::orphans`]); blocking. The metrics count this log's only.
    pub fn sync_log(&self, origin: &str, ranges: Vec<(u64, u64)>) -> Result<SyncReport, ClickHouseError> {
        let all = merged(ranges);
        let pending = minus(&all, self.gone.lock().expect("gone lock").get(origin).map_or(&[], |g| g.as_slice()));
        if pending.is_empty() {
            return Ok(SyncReport::default());
        }
        // Bounded: a hung ClickHouse must not hold retention up for ever.
        let wait = self.cfg.timeout * 3;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(wait, self.delete(origin, &pending)).await })
            .map_err(|_| ClickHouseError::Timeout("deleting the rows of leaves retention deleted".into()))
            .and_then(|r| r)?;
        if r.rows_left == 0 {
            self.gone.lock().expect("gone lock").insert(origin.to_string(), all);
        }
        Ok(r)
    }

    /// The table's oldest mutation not done, if any.
    async fn running(&self, table: &str) -> Result<Option<Running>, ClickHouseError> {
        let reason = if self.fail_reasons { "latest_fail_reason" } else { "''" };
        let rows: Vec<Running> = self
            .client
            .query(&format!(
                "SELECT mutation_id, command, \
                 toUInt64(greatest(toInt64(now()) - toInt64(create_time), 0)) AS age_secs, \
                 {reason} AS fail_reason \
                 FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0 \
                 ORDER BY create_time LIMIT 1"
            ))
            .bind(&self.cfg.database)
            .bind(table)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query("reading the running mutations"))?;
        Ok(rows.into_iter().next())
    }

    /// One mutation per call, for the first group of ranges with rows left
    /// (the next pass takes the next group).
    async fn delete(&self, origin: &str, pending: &[(u64, u64)]) -> Result<SyncReport, ClickHouseError> {
        let (rows_left, cond) = rows_in(&self.client, origin, pending).await?;
        let mut r = SyncReport { rows_left, ..Default::default() };
        let Some(cond) = cond else { return Ok(r) };
        let table = table_of(&self.cfg);
        if let Some(m) = self.running(&table).await? {
            r.blocked_by = Some(m);
            return Ok(r);
        }
        let on = self.cfg.cluster.as_ref().map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
        self.client
            .query(&format!("ALTER TABLE {}.{table}{on} DELETE WHERE origin = ? AND {cond}", self.cfg.database))
            .bind(origin)
            .execute()
            .await
            .map_err(ClickHouseError::query("deleting the rows of leaves retention deleted"))?;
        tracing::info!(
            origin,
            rows = rows_left,
            ranges = pending.len(),
            "retention: ClickHouse deletes the rows of the leaves retention deleted"
        );
        r.mutation_started = true;
        Ok(r)
    }
}

/// The table deletions run on: each server's local table in a cluster.
fn table_of(cfg: &ClickHouseConfig) -> String {
    if cfg.cluster.is_some() { format!("{LEAVES}_local") } else { LEAVES.to_string() }
}

impl crate::retention::Mirror for Mirror {
    fn mirror(&self, deleted: &[Deleted]) -> Result<(), String> {
        let r = self.sync(deleted).map_err(|e| e.to_string())?;
        match r.blocked_by {
            Some(m) if m.stuck() => tracing::warn!(
                rows = r.rows_left,
                mutation_id = %m.mutation_id,
                command = %m.command,
                age_secs = m.age_secs,
                fail_reason = %m.fail_reason,
                "retention: a mutation of the ClickHouse table {}.{} is failing or has run too long, and the \
                 deletion of the rows of leaves deleted here waits behind it; when it is not needed, \
                 `KILL MUTATION WHERE database = '{}' AND mutation_id = '{}'` unblocks the deletions",
                self.cfg.database, table_of(&self.cfg), self.cfg.database, m.mutation_id
            ),
            Some(m) => tracing::info!(
                rows = r.rows_left,
                mutation_id = %m.mutation_id,
                age_secs = m.age_secs,
                "retention: a ClickHouse mutation of the table is still running; the deletion is checked again next pass"
            ),
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
