//! Verifying every log stored in ClickHouse from ClickHouse alone.
//!
//! Per origin: rows are read in leaf order (one per leaf index; two different
//! rows for one index are a finding); each row's leaf hash is recomputed from
//! its bytes and checked against the stored `leaf_hash` and the next row's
//! `prev_hash` (so a changed or reordered row is named by its leaf index); then
//! the Merkle root of the recomputed hashes is checked against every stored
//! checkpoint the rows cover. A row rewritten with all its hashes recomputed
//! still fails the root: the finding then names the first checkpoint that
//! fails (the change lies below its size). A leaf retention deleted has no
//! row: the hash its `retention_deletion` entry kept stands in
//! ([`super::expiry`]), checked by the same roots.
//!
//! Keys: the first key of a log is the trust anchor. It is the one the auditor
//! pins ([`Pins`], `wiretrail verify --clickhouse --verifier-key ORIGIN=FILE`);
//! without a pin it is the key the collector registered in ClickHouse, and the
//! report says so (`key_source: "clickhouse"`): whoever can rewrite the
//! database could then replace the key too. Rotations are followed from the
//! log itself, as the embedded store's verify follows its key history: each
//! `key_rotation` entry must name the key in force as its old key, and a
//! checkpoint signed by that old key must cover the entry; the new key then
//! signs only sizes above the old key's last checkpoint
//! ([`wiretrail_log::merkle::KeyRing`]). A checkpoint signed by any other key fails.

use std::collections::BTreeMap;

use prost::Message;
use serde::Serialize;
use wiretrail_proto::v1::StoredLeaf;

use super::ClickHouseError;
use super::expiry::Expired;
use super::reader::Reader;
use super::schema::{CHECKPOINTS, LEAVES, ORIGINS};
use super::writer::{CheckpointRow, LeafRow, OriginRow};
use wiretrail_log::entry::KEY_ROTATION;
use wiretrail_log::merkle::{Hash, KeyRing, SignedCheckpoint, Verifier, leaf_hash, root_of_leaf_hashes};

/// First keys pinned by the auditor, per origin.
pub type Pins = BTreeMap<String, Verifier>;

/// A `key_rotation` entry found in a log.
struct Rotation {
    entry_index: u64,
    old_key: String,
    new_key: String,
}

impl Reader {
    /// Verifies every log (origin) stored in ClickHouse with the keys it
    /// registered there (see [`Reader::verify_pinned`]).
    pub async fn verify(&self) -> Result<Vec<OriginReport>, ClickHouseError> {
        self.verify_pinned(&Pins::new()).await
    }

    /// Verifies every log stored in ClickHouse; an origin in `pins` is
    /// verified from the pinned key (a different registered key is a
    /// finding), and a pinned origin missing from ClickHouse is a report
    /// that fails.
    pub async fn verify_pinned(&self, pins: &Pins) -> Result<Vec<OriginReport>, ClickHouseError> {
        let origins: Vec<OriginRow> = self
            .client
            .query(&format!("SELECT ?fields FROM {ORIGINS} ORDER BY origin LIMIT 1 BY origin"))
            .fetch_all()
            .await
            .map_err(ClickHouseError::query("reading origins"))?;
        let (mut out, others) = (Vec::new(), Others::new(pins));
        for o in &origins {
            out.push(self.check_origin(o, pins.get(&o.origin), Some(&others)).await?.report);
        }
        for (origin, key) in pins {
            if !origins.iter().any(|o| &o.origin == origin) {
                let mut rep = OriginReport {
                    origin: origin.clone(),
                    verifier_key_id: key.id_hex(),
                    key_source: KeySource::Pinned,
                    ..Default::default()
                };
                rep.fail(0, "the pinned origin is not in ClickHouse");
                out.push(rep);
            }
        }
        Ok(out)
    }

    /// The rows of origin `name` as ClickHouse holds them, verified (see
    /// [`Checked`]); `None` when ClickHouse has no such origin.
    pub(super) async fn checked(&self, name: &str, pin: Option<&Verifier>) -> Result<Option<Checked>, ClickHouseError> {
        let pins: Pins = pin.map(|p| (name.to_string(), p.clone())).into_iter().collect();
        match self.origin_row(name).await? {
            Some(o) => Ok(Some(self.check_origin(&o, pin, Some(&Others::new(&pins))).await?)),
            None => Ok(None),
        }
    }

    /// [`Reader::checked`] without checking the deletion entries other logs
    /// hold for it against those logs' checkpoints (their kept hashes are
    /// still checked against this log's signed roots).
    pub(super) async fn checked_alone(&self, name: &str) -> Result<Option<Checked>, ClickHouseError> {
        match self.origin_row(name).await? {
            Some(o) => Ok(Some(self.check_origin(&o, None, None).await?)),
            None => Ok(None),
        }
    }

    /// The `origins` row of log `name`, if ClickHouse has one.
    async fn origin_row(&self, name: &str) -> Result<Option<OriginRow>, ClickHouseError> {
        let origins: Vec<OriginRow> = self
            .client
            .query(&format!("SELECT ?fields FROM {ORIGINS} WHERE origin = ? LIMIT 1"))
            .bind(name)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query("reading origins"))?;
        Ok(origins.into_iter().next())
    }

    /// Verifies one log; with `others`, the deletion entries other logs hold
    /// for it are checked against those logs' verified trees too.
    async fn check_origin(
        &self,
        o: &OriginRow,
        pin: Option<&Verifier>,
        others: Option<&Others<'_>>,
    ) -> Result<Checked, ClickHouseError> {
        let stored = Verifier::parse(&o.verifier_key)
            .map_err(|source| ClickHouseError::Note { origin: o.origin.clone(), source })?;
        let first = pin.cloned().unwrap_or_else(|| stored.clone());
        let mut rep = OriginReport {
            origin: o.origin.clone(),
            verifier_key_id: first.id_hex(),
            key_source: if pin.is_some() { KeySource::Pinned } else { KeySource::ClickHouse },
            ..Default::default()
        };
        if stored.key_string() != first.key_string() {
            rep.fail(
                0,
                &format!(
                    "the key registered in ClickHouse ({}) is not the pinned key ({})",
                    stored.key_string(),
                    first.key_string()
                ),
            );
        }
        // Streamed: only the recomputed hashes (32 bytes a leaf) are kept, not the rows.
        let what = || format!("reading the leaves of {}", o.origin);
        let mut cursor = self
            .client
            .query(&format!("SELECT DISTINCT ?fields FROM {LEAVES} WHERE origin = ? ORDER BY leaf_index"))
            .bind(&o.origin)
            .fetch::<LeafRow>()
            .map_err(ClickHouseError::query(what()))?;
        let mut rows = RowCheck::default();
        let (mut expired, bad) = self.expired(Some(&o.origin)).await?;
        for (_, leaf, why) in bad {
            rep.fail(leaf, &why);
        }
        rows.expired = expired.remove(&o.origin).unwrap_or_default();
        while let Some(r) = cursor.next().await.map_err(ClickHouseError::query(what()))? {
            if !rows.push(&r, &mut rep) {
                break;
            }
        }
        // An orphaned log's deleted leaves may be its last (no row after them).
        rows.fill_kept(&mut rep);
        let RowCheck { hashes, rotations, stood_in, .. } = rows;
        rep.leaves = hashes.len() as u64;
        let cps: Vec<CheckpointRow> = self
            .client
            .query(&format!("SELECT DISTINCT ?fields FROM {CHECKPOINTS} WHERE origin = ? ORDER BY size"))
            .bind(&o.origin)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query(format!("reading the checkpoints of {}", o.origin)))?;
        let ring = key_ring(first, &rotations, &cps, &mut rep);
        check_checkpoints(&ring, &cps, &hashes, &mut rep);
        // A kept hash is evidence only from an entry the signed tree holds: a
        // row added past the last verified checkpoint could otherwise explain
        // away leaves deleted from ClickHouse (with their real hashes).
        if let Some((i, entry, ..)) =
            stood_in.iter().find(|(_, entry, by, _)| by.is_none() && *entry >= rep.verified_size)
        {
            rep.fail(
                *i,
                &format!(
                    "missing from ClickHouse: the retention_deletion entry at leaf {entry} that would explain it is \
                     not under a verified checkpoint (verified size {})",
                    rep.verified_size
                ),
            );
        }
        // Entries of the logs that expired this one as an orphan: each the
        // entry that log's verified tree holds, under its verified checkpoint.
        if let Some(others) = others {
            for (i, entry, by, entry_hash) in &stood_in {
                let Some(by) = by else { continue };
                *rep.expired_by.entry(by.clone()).or_default() += 1;
                if let Some(why) = others.refuses(self, by, *entry, entry_hash).await? {
                    rep.fail(
                        *i,
                        &format!(
                            "missing from ClickHouse: the retention_deletion entry of log {by} at leaf {entry} that \
                             would explain it does not count: {why}"
                        ),
                    );
                    break;
                }
            }
        }
        rep.ok = rep.problems.is_empty() && rep.checkpoints > 0;
        Ok(Checked { report: rep, hashes, ring, checkpoints: cps })
    }
}

/// The logs holding deletion entries for another log, each verified once
/// (from its pinned key when pinned) as the entries are checked.
pub(super) struct Others<'a> {
    pins: &'a Pins,
    /// Log -> what verifying it found.
    seen: std::sync::Mutex<BTreeMap<String, std::sync::Arc<Holder>>>,
}

/// A log holding deletion entries for another, as verified: whether it
/// verified, its verified size and its leaf hashes.
type Holder = (bool, u64, Vec<Hash>);

impl<'a> Others<'a> {
    pub(super) fn new(pins: &'a Pins) -> Self {
        Others { pins, seen: Default::default() }
    }

    /// Why the entry of log `by` at leaf `entry` (row hash `entry_hash`)
    /// does not count for another log; `None` when it does: `by` verifies,
    /// and its verified tree holds that entry at that leaf.
    async fn refuses(
        &self,
        r: &Reader,
        by: &str,
        entry: u64,
        entry_hash: &Hash,
    ) -> Result<Option<String>, ClickHouseError> {
        let known = self.seen.lock().expect("others lock").get(by).cloned();
        let log = match known {
            Some(l) => l,
            None => {
                let l = match r.origin_row(by).await? {
                    Some(o) => {
                        let c = Box::pin(r.check_origin(&o, self.pins.get(by), None)).await?;
                        (c.report.ok, c.report.verified_size, c.hashes)
                    }
                    None => (false, 0, Vec::new()),
                };
                let l = std::sync::Arc::new(l);
                self.seen.lock().expect("others lock").insert(by.to_string(), l.clone());
                l
            }
        };
        let (ok, size, hashes) = (log.0, log.1, &log.2);
        Ok(if !ok {
            Some(format!("log {by} does not verify from ClickHouse"))
        } else if entry >= size {
            Some(format!("it is not under a verified checkpoint of that log (verified size {size})"))
        } else if hashes.get(entry as usize) != Some(entry_hash) {
            Some("that log's signed tree holds another leaf there".into())
        } else {
            None
        })
    }
}

/// One log as ClickHouse holds it, after verification: what proofs and
/// exports from ClickHouse alone are built from.
pub(super) struct Checked {
    /// What verification found.
    pub report: OriginReport,
    /// Recomputed leaf hashes, contiguous from leaf 0.
    pub hashes: Vec<Hash>,
    /// The log's keys, first to current, as its rotation entries prove them.
    pub ring: KeyRing,
    /// Every stored checkpoint, by size.
    pub checkpoints: Vec<CheckpointRow>,
}

/// Checks each row's hash and order as rows arrive in leaf order, keeping
/// the recomputed leaf hashes (a contiguous run from leaf 0) and the rotation
/// entries among them.
#[derive(Default)]
struct RowCheck {
    hashes: Vec<Hash>,
    rotations: Vec<Rotation>,
    /// Leaf index of the last row accepted.
    last: Option<u64>,
    /// Ranges retention deleted, by first leaf (their kept hashes stand in).
    expired: Vec<Expired>,
    /// Leaves whose kept hash stood in, with the leaf of the entry that kept
    /// it, that entry's log when it is another ([`Expired::by`]) and the
    /// entry row's hash.
    stood_in: Vec<(u64, u64, Option<String>, Hash)>,
}

impl RowCheck {
    /// Checks the next row; `false` when the run of leaves is broken (a leaf is
    /// missing) and the rest cannot be checked.
    fn push(&mut self, r: &LeafRow, rep: &mut OriginReport) -> bool {
        rep.bytes += r.leaf.len() as u64;
        if self.last == Some(r.leaf_index) {
            rep.fail(r.leaf_index, "two different rows for this leaf index");
            return true;
        }
        // Leaves retention deleted: the hashes their deletion entry kept.
        self.fill_kept_to(r.leaf_index, rep);
        let i = self.hashes.len() as u64;
        if r.leaf_index != i {
            rep.fail(i, "missing from ClickHouse");
            return false;
        }
        let h = leaf_hash(&r.leaf);
        if self.kept(i).is_some_and(|(k, _)| k != h) {
            rep.fail(i, "row still stored for a deleted leaf differs from the hash its retention_deletion entry kept");
        }
        if h != r.leaf_hash {
            rep.fail(i, "leaf bytes do not hash to the stored leaf hash (row changed)");
        }
        let expected_prev = self.hashes.last().copied().unwrap_or([0u8; 32]);
        if r.prev_hash != expected_prev {
            rep.fail(i, "previous-leaf hash does not match the leaf before it (row moved or order changed)");
        }
        // Entries are rare: only their leaves are decoded. A rotation hidden
        // by a changed `kind` column leaves its new key out of the ring, so
        // the checkpoints it signed fail below.
        if r.kind.strip_prefix("entry:") == Some(KEY_ROTATION) {
            match rotation_of(&r.leaf, i) {
                Ok(rot) => self.rotations.push(rot),
                Err(why) => rep.fail(i, &why),
            }
        }
        self.hashes.push(h);
        self.last = Some(r.leaf_index);
        true
    }
}

impl RowCheck {
    /// Puts the kept hashes of deleted leaves in place, from the next leaf
    /// up to `to` or the first leaf no deletion kept.
    fn fill_kept_to(&mut self, to: u64, rep: &mut OriginReport) {
        while (self.hashes.len() as u64) < to {
            let i = self.hashes.len() as u64;
            let Some((kept, e)) = self.kept(i) else { break };
            let (entry, by, entry_hash) = (e.entry_leaf, e.by.clone(), e.entry_hash);
            self.hashes.push(kept);
            self.stood_in.push((i, entry, by, entry_hash));
            rep.expired += 1;
        }
    }

    /// After the last row: the deleted leaves that follow it.
    fn fill_kept(&mut self, rep: &mut OriginReport) {
        self.fill_kept_to(u64::MAX, rep);
    }

    /// The hash kept for leaf `i` by a retention deletion, and that
    /// deletion (`expired` is disjoint).
    fn kept(&self, i: u64) -> Option<(Hash, &Expired)> {
        let k = self.expired.partition_point(|e| e.first <= i);
        let e = self.expired.get(k.checked_sub(1)?)?;
        e.hash_of(i).map(|h| (*h, e))
    }
}

/// The old and new keys a `key_rotation` entry's leaf names.
fn rotation_of(leaf: &[u8], i: u64) -> Result<Rotation, String> {
    let l = StoredLeaf::decode(leaf).map_err(|e| format!("key_rotation leaf does not decode: {e}"))?;
    let e = l.entry.ok_or("a row marked key_rotation holds a record, not an entry")?;
    let d: serde_json::Value =
        serde_json::from_str(&e.detail_json).map_err(|e| format!("key_rotation detail is not JSON: {e}"))?;
    let key = |k: &str| d[k].as_str().map(String::from).ok_or(format!("key_rotation entry without {k}"));
    Ok(Rotation { entry_index: i, old_key: key("old_key")?, new_key: key("new_key")? })
}

/// The key ring of the log: `first`, then each rotation whose old key is the
/// key in force and whose entry a checkpoint of that key covers.
fn key_ring(first: Verifier, rotations: &[Rotation], cps: &[CheckpointRow], rep: &mut OriginReport) -> KeyRing {
    let mut ring = KeyRing::single(first);
    for r in rotations {
        let old = ring.current().clone();
        if r.old_key != old.key_string() {
            rep.fail(
                r.entry_index,
                &format!("rotation names old key {} but {} is in force", r.old_key, old.key_string()),
            );
            break;
        }
        let after = ring.epochs().last().and_then(|e| e.after).unwrap_or(0);
        let old_last = cps
            .iter()
            .filter(|c| c.size > r.entry_index && c.size > after)
            .filter_map(|c| old.open(&c.note).ok())
            .map(|s| s.checkpoint.size)
            .max();
        let Some(old_last) = old_last else {
            rep.fail(r.entry_index, &format!("no checkpoint by the old key covers the rotation to {}", r.new_key));
            break;
        };
        let pushed = Verifier::parse(&r.new_key).and_then(|new| ring.push(new, r.entry_index, old_last));
        if let Err(e) = pushed {
            rep.fail(r.entry_index, &format!("rotation to {}: {e}", r.new_key));
            break;
        }
        rep.rotations += 1;
    }
    ring
}

/// Checks every stored checkpoint's signature (by the key valid at its size)
/// and, where the rows cover it, its root.
fn check_checkpoints(ring: &KeyRing, cps: &[CheckpointRow], hashes: &[Hash], rep: &mut OriginReport) {
    for c in cps {
        let signed: SignedCheckpoint = match ring.open(&c.note) {
            Ok(s) => s,
            Err(e) => {
                rep.fail(c.size, &format!("checkpoint of size {} does not verify with the log's keys: {e}", c.size));
                continue;
            }
        };
        if signed.checkpoint.size != c.size || signed.checkpoint.root != c.root {
            rep.fail(c.size, &format!("checkpoint row of size {} differs from its signed note", c.size));
            continue;
        }
        if c.size > hashes.len() as u64 {
            rep.uncovered_checkpoints += 1;
            continue;
        }
        if root_of_leaf_hashes(&hashes[..c.size as usize]) != signed.checkpoint.root {
            let first_bad = rep.verified_size;
            // A leaf already named explains it; else the range start is the first suspect.
            let named = rep.first_bad_leaf;
            rep.fail(
                first_bad,
                &format!(
                    "root of leaves [0, {}) differs from the signed checkpoint: a leaf in [{first_bad}, {}) was changed",
                    c.size, c.size
                ),
            );
            if named.is_some() {
                rep.first_bad_leaf = named;
            }
            break;
        }
        rep.verified_size = c.size;
        rep.checkpoints += 1;
    }
}

/// Where a log's first key came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The key the collector registered in ClickHouse (not independent of the
    /// database being verified).
    #[default]
    ClickHouse,
    /// The key the auditor pinned.
    Pinned,
}

/// What verifying one log from ClickHouse found.
#[derive(Debug, Default, Serialize)]
pub struct OriginReport {
    /// The log.
    pub origin: String,
    /// Key id of the first key the log was verified from.
    pub verifier_key_id: String,
    /// Where that key came from (pin it for an independent check).
    pub key_source: KeySource,
    /// Key rotations followed.
    pub rotations: u64,
    /// Leaves read (contiguous from 0), those retention deleted included.
    pub leaves: u64,
    /// Of them, leaves retention deleted: verified by the hash their
    /// `retention_deletion` entry kept.
    pub expired: u64,
    /// Leaf bytes read.
    pub bytes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Largest tree size matching a signed checkpoint.
    pub verified_size: u64,
    /// Checkpoints beyond the leaves stored (not acknowledged leaves, or still arriving).
    pub uncovered_checkpoints: u64,
    /// Of the expired leaves, those whose kept hash came from another log's
    /// entry (a collector that expired this log as an orphan), per log.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub expired_by: BTreeMap<String, u64>,
    /// The first bad leaf, if any.
    pub first_bad_leaf: Option<u64>,
    /// Every finding, "leaf N: what".
    pub problems: Vec<String>,
    /// No problem and at least one checkpoint verified.
    pub ok: bool,
}

impl OriginReport {
    fn fail(&mut self, leaf: u64, what: &str) {
        if self.first_bad_leaf.is_none_or(|f| leaf < f) {
            self.first_bad_leaf = Some(leaf);
        }
        self.problems.push(format!("leaf {leaf}: {what}"));
    }
}
