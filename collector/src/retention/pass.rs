//! Judging segments and deleting the expired ones.
//!
//! The deletion unit is a whole closed segment (`log/seg-<first>.wtl`): it
//! goes only when every leaf in it is expired under its class (its received
//! time plus the class duration is not after now) and no legal hold covers
//! any of them. A segment
//! with one long-lived record therefore stays whole. The segment being
//! appended to and any leaf beyond the latest signed checkpoint are never
//! deleted.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use sha2::Digest;
use wiretrail_proto::v1::StoredLeaf;

use super::holds::Holds;
use super::policy::Policy;
use super::{Append, RetentionError};
use wiretrail_log::entry;
use wiretrail_log::store::{Deleted, Log, StoreError};

/// What retention thinks of one closed segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// First leaf.
    pub first: u64,
    /// End (exclusive).
    pub end: u64,
    /// Whether it may be deleted now.
    pub deletable: bool,
    /// Why not (empty when deletable).
    pub reason: String,
    /// Classes of its leaves.
    pub classes: BTreeSet<String>,
    /// When its last leaf expires (UTC ns).
    pub expires_ns: i64,
    /// Cases whose holds cover a leaf of it.
    pub held_by: BTreeSet<String>,
}

/// Judges the closed segment `first..end` at `now_ns`.
pub fn judge(
    shared: &Log,
    first: u64,
    end: u64,
    policy: &Policy,
    holds: &Holds,
    now_ns: i64,
) -> Result<Verdict, RetentionError> {
    let mut v = Verdict {
        first,
        end,
        deletable: false,
        reason: String::new(),
        classes: BTreeSet::new(),
        expires_ns: i64::MIN,
        held_by: BTreeSet::new(),
    };
    let mut unexpired = None;
    for item in shared.iter(first, end)? {
        let (i, bytes) = item?;
        let leaf = StoredLeaf::decode(bytes.as_slice())
            .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
        let (class, dur) = policy.classify(&leaf);
        v.classes.insert(class.to_string());
        let exp = leaf.received_time_ns.saturating_add(dur);
        v.expires_ns = v.expires_ns.max(exp);
        if exp > now_ns && unexpired.is_none() {
            unexpired = Some((i, class.to_string(), exp));
        }
        v.held_by.extend(holds.covering(&leaf));
    }
    let signed = shared.latest_checkpoint().map(|c| c.checkpoint.size).unwrap_or(0);
    v.reason = if end > signed {
        format!("leaves {first}..{end} are not all covered by the latest signed checkpoint ({signed})")
    } else if let Some((i, class, exp)) = unexpired {
        format!("leaf {i} (class {class}) expires only at {exp} ns, after now ({now_ns} ns)")
    } else if !v.held_by.is_empty() {
        format!("under legal hold: {}", v.held_by.iter().cloned().collect::<Vec<_>>().join(", "))
    } else {
        String::new()
    };
    v.deletable = v.reason.is_empty();
    Ok(v)
}

/// Deletes the segment `v` judged deletable: kept hashes written, the
/// `retention_deletion` entry appended and durable, then the segment
/// unlinked and its index rows removed.
pub fn delete(
    shared: &Log,
    app: &dyn Append,
    v: &Verdict,
    trigger: &str,
    now_ns: i64,
) -> Result<Deleted, RetentionError> {
    let p = shared.begin_deletion(v.first)?;
    let mut content = Vec::with_capacity(p.hashes.len() * 32);
    for h in &p.hashes {
        content.extend_from_slice(h);
    }
    let detail = serde_json::json!({
        "segment": p.segment,
        "first_leaf": p.first,
        "end_leaf": p.end,
        "leaves": p.end - p.first,
        "classes": v.classes,
        "expired_at_ns": v.expires_ns,
        "trigger": trigger,
        "kept_hashes_sha256": hex::encode(sha2::Sha256::digest(&content)),
    });
    let e = entry::new(entry::RETENTION_DELETION, now_ns, &p.segment, detail, content);
    // On failure the kept file stays pending: the entry may be durable even
    // though no answer came (the collector stopping); opening the store
    // finishes the deletion if the entry is in the log and drops it if not.
    let entry_leaf = app.append(e)?;
    let d = shared.finish_deletion(&p, entry_leaf)?;
    if let Err(e) = drop_index_rows(shared, d.first, d.end) {
        // The index is derived; rows of deleted leaves read as deleted anyway.
        tracing::warn!(error = %e, first = d.first, end = d.end, "removing index rows of deleted leaves failed");
    }
    tracing::info!(segment = %d.segment, first = d.first, end = d.end, entry = entry_leaf, trigger,
        "retention deleted a segment");
    Ok(d)
}

fn drop_index_rows(shared: &Log, first: u64, end: u64) -> Result<(), RetentionError> {
    let c = crate::index::open(shared.dir()).map_err(|e| RetentionError::Index(e.to_string()))?;
    // `identity` and `endpoints` lead their keys with the generation: name the
    // generations so the deletion reads only theirs, not the whole table.
    let gens =
        format!("g BETWEEN {} AND {} AND ", crate::index::gens::of(first), crate::index::gens::of(end.max(1) - 1));
    for (t, narrow) in [("records", ""), ("identity", gens.as_str()), ("endpoints", gens.as_str())] {
        c.execute(&format!("DELETE FROM {t} WHERE {narrow}leaf >= ?1 AND leaf < ?2"), (first as i64, end as i64))
            .map_err(|e| RetentionError::Index(e.to_string()))?;
    }
    Ok(())
}

/// What one pass did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PassReport {
    /// Closed segments judged.
    pub judged: u64,
    /// Deleted now.
    pub deleted: Vec<Deleted>,
    /// Kept because a leaf is not expired.
    pub unexpired: u64,
    /// Kept because a hold covers them.
    pub held: u64,
    /// Kept because the latest checkpoint does not cover them yet.
    pub unsigned: u64,
}

/// When each closed segment's last leaf expires under one policy (closed
/// segments never change), so a pass reads a segment again only once it may
/// have expired, not at every pass.
#[derive(Debug, Default)]
pub struct ExpiryCache {
    /// The policy the times were computed under.
    policy: String,
    /// First leaf of a segment -> when its last leaf expires (UTC ns).
    expires: HashMap<u64, i64>,
}

/// One retention pass at `now_ns` under `holds`; with `recheck`, the holds
/// are read again just before each deletion and the segment judged again
/// under them (clustered mode: another collector may have placed one).
pub fn run_pass(
    shared: &Log,
    app: &dyn Append,
    policy: &Policy,
    mut holds: Holds,
    recheck: Option<&dyn Fn() -> Result<Holds, RetentionError>>,
    now_ns: i64,
    cache: &mut ExpiryCache,
) -> Result<PassReport, RetentionError> {
    let mut r = PassReport::default();
    let fingerprint = format!("{policy:?}");
    if cache.policy != fingerprint {
        *cache = ExpiryCache { policy: fingerprint, expires: HashMap::new() };
    }
    let closed = shared.closed_segments();
    cache.expires.retain(|f, _| closed.iter().any(|c| c.0 == *f));
    for (first, end) in closed {
        r.judged += 1;
        if cache.expires.get(&first).is_some_and(|&e| e > now_ns) {
            r.unexpired += 1;
            continue;
        }
        let mut v = judge(shared, first, end, policy, &holds, now_ns)?;
        cache.expires.insert(first, v.expires_ns);
        if v.deletable
            && let Some(read) = recheck
        {
            holds = read()?;
            v = judge(shared, first, end, policy, &holds, now_ns)?;
        }
        if v.deletable {
            r.deleted.push(delete(shared, app, &v, "expiry", now_ns)?);
        } else if v.reason.starts_with("leaves") {
            r.unsigned += 1;
        } else if v.reason.starts_with("under legal hold") {
            r.held += 1;
        } else {
            r.unexpired += 1;
        }
    }
    tracing::info!(
        judged = r.judged,
        deleted = r.deleted.len(),
        unexpired = r.unexpired,
        held = r.held,
        unsigned = r.unsigned,
        "retention pass done"
    );
    Ok(r)
}

/// An admin's request to delete leaves `first..=last` now: every closed
/// segment overlapping the range goes, all or none. Done only when each of
/// them is expired, signed and not held (and no leaf of the range is in the
/// open segment); otherwise refused, and the refusal (who, what, why) is
/// recorded as a `retention_refused` entry.
#[allow(clippy::too_many_arguments)]
pub fn request_deletion(
    shared: &Log,
    app: &dyn Append,
    policy: &Policy,
    holds: &Holds,
    first: u64,
    last: u64,
    by: &str,
    now_ns: i64,
) -> Result<Vec<Deleted>, RetentionError> {
    if last < first {
        return Err(RetentionError::Invalid(format!("last leaf {last} before first leaf {first}")));
    }
    if last >= shared.size() {
        return Err(RetentionError::NotFound(format!("leaf {last} is beyond the log's size {}", shared.size())));
    }
    let segs: Vec<(u64, u64)> = shared.closed_segments().into_iter().filter(|s| s.0 <= last && first < s.1).collect();
    let mut why = Vec::new();
    if segs.last().is_none_or(|s| s.1 <= last) && shared.deleted_at(last).is_none() {
        why.push(format!("leaf {last} is in the segment being appended to"));
    }
    let mut verdicts = Vec::new();
    for (f, e) in &segs {
        let v = judge(shared, *f, *e, policy, holds, now_ns)?;
        if !v.deletable {
            why.push(format!("segment {}: {}", wiretrail_log::store::segment_name(*f), v.reason));
        }
        verdicts.push(v);
    }
    if why.is_empty() {
        if verdicts.is_empty() {
            return Err(RetentionError::Invalid(format!("leaves {first}..={last} are already deleted")));
        }
        let trigger = format!("request by {by}");
        return verdicts.iter().map(|v| delete(shared, app, v, &trigger, now_ns)).collect();
    }
    let why = why.join("; ");
    let segments: Vec<String> = segs.iter().map(|s| wiretrail_log::store::segment_name(s.0)).collect();
    let detail = serde_json::json!({ "by": by, "first_leaf": first, "last_leaf": last, "segments": segments,
        "why": why });
    let subject = format!("leaves {first}..={last}");
    let entry = app.append(entry::new(entry::RETENTION_REFUSED, now_ns, &subject, detail, Vec::new()))?;
    tracing::warn!(by, first, last, %why, entry, "early retention deletion refused");
    Err(RetentionError::Refused { why, entry })
}
