//! Alerts raised while indexing: shadow identities, identity anomalies (a
//! new peer, talk outside declared hours, a retired identity talking),
//! policy denials and violations, capture gaps, agents' clocks, and the
//! collector's own entries that need a person (agent id refusals, batch
//! conflicts, storage outages, recovery cuts, repairs, failed background
//! verification, agents gone silent and back). Stored in the index database
//! (derived from the log like the rest of the index), each with the leaf
//! index of the record that raised it.
//!
//! Silence is the one alert not raised by a record an agent sent: the
//! [`monitor`] watches heartbeat arrivals on a timer and appends
//! `agent_silent` / `agent_returned` entries to the log, which then raise
//! their alerts like every other entry. [`delivery`] pushes stored alerts to
//! webhooks and syslog.

pub mod clock;
pub mod delivery;
pub mod gap;
pub mod monitor;
mod policy;
pub mod silence;

use rusqlite::{Connection, params};
use wiretrail_proto::v1::Alert;

pub use policy::from_decision;

/// Alert kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An identity that no registry entry matches talked.
    ShadowIdentity,
    /// A policy decision denied a flow.
    PolicyDenied,
    /// A flow no rule allowed went through a zone in audit mode.
    PolicyViolation,
    /// A certificate shipped for an agent id it does not own.
    AgentIdRefused,
    /// A batch reused a stored (agent, boot, seq) with different content.
    BatchConflict,
    /// The store could not write for a while (disk full, I/O errors).
    StorageUnavailable,
    /// Start-up cut a torn write at the end of the log.
    Recovery,
    /// The log was repaired by an operator.
    Repair,
    /// Background verification found the log inconsistent with its checkpoints.
    VerificationFailed,
    /// An identity past its learning period talked to a peer it never talked to.
    NewPeer,
    /// An identity talked outside the hours its registry entry declares.
    OutsideHours,
    /// An identity its registry entry declares retired talked.
    RetiredActive,
    /// No heartbeat from an agent for longer than the silence threshold.
    AgentSilent,
    /// A silent agent is back (the alert states the hole).
    AgentReturned,
    /// A gap record: bytes or records known missing.
    Gap,
    /// An agent's clock error is above 50 ms or its kernel clock is not synchronized.
    Clock,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 16] = [
        Kind::ShadowIdentity,
        Kind::PolicyDenied,
        Kind::PolicyViolation,
        Kind::AgentIdRefused,
        Kind::BatchConflict,
        Kind::StorageUnavailable,
        Kind::Recovery,
        Kind::Repair,
        Kind::VerificationFailed,
        Kind::NewPeer,
        Kind::OutsideHours,
        Kind::RetiredActive,
        Kind::AgentSilent,
        Kind::AgentReturned,
        Kind::Gap,
        Kind::Clock,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ShadowIdentity => "shadow_identity",
            Kind::PolicyDenied => "policy_denied",
            Kind::PolicyViolation => "policy_violation",
            Kind::AgentIdRefused => wiretrail_log::entry::AGENT_ID_REFUSED,
            Kind::BatchConflict => wiretrail_log::entry::BATCH_CONFLICT,
            Kind::StorageUnavailable => wiretrail_log::entry::STORAGE_UNAVAILABLE,
            Kind::Recovery => wiretrail_log::entry::RECOVERY,
            Kind::Repair => wiretrail_log::entry::REPAIR,
            Kind::VerificationFailed => wiretrail_log::entry::VERIFICATION_FAILED,
            Kind::NewPeer => "new_peer",
            Kind::OutsideHours => "outside_hours",
            Kind::RetiredActive => "retired_identity_active",
            Kind::AgentSilent => wiretrail_log::entry::AGENT_SILENT,
            Kind::AgentReturned => wiretrail_log::entry::AGENT_RETURNED,
            Kind::Gap => "gap",
            Kind::Clock => "clock",
        }
    }

    /// Whether collector entries of this kind's name raise it (the others
    /// are raised from records by the inventory).
    fn raised_by_entries(self) -> bool {
        !matches!(
            self,
            Kind::ShadowIdentity | Kind::NewPeer | Kind::OutsideHours | Kind::RetiredActive | Kind::Gap | Kind::Clock
        )
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Severity of alerts of this kind.
    pub fn severity(self) -> &'static str {
        match self {
            Kind::ShadowIdentity
            | Kind::PolicyViolation
            | Kind::Recovery
            | Kind::NewPeer
            | Kind::OutsideHours
            | Kind::AgentReturned
            | Kind::Gap => "medium",
            Kind::AgentSilent
            | Kind::Clock
            | Kind::PolicyDenied
            | Kind::AgentIdRefused
            | Kind::BatchConflict
            | Kind::StorageUnavailable
            | Kind::Repair
            | Kind::VerificationFailed
            | Kind::RetiredActive => "high",
        }
    }
}

/// The alert a collector entry raises, if any.
pub fn from_entry(leaf_index: u64, e: &wiretrail_proto::v1::CollectorEntry) -> Option<NewAlert> {
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == e.kind && k.raised_by_entries())?;
    let mut detail: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
    if let Some(m) = detail.as_object_mut() {
        m.insert("subject".into(), e.subject.clone().into());
    }
    Some(NewAlert { time_ns: e.time_ns, kind, identity_key: e.subject.clone(), detail, leaf_index })
}

/// An alert about to be stored.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// capture_time_ns of the raising record.
    pub time_ns: i64,
    /// What happened.
    pub kind: Kind,
    /// Identity key of the workload concerned.
    pub identity_key: String,
    /// Details (a JSON object).
    pub detail: serde_json::Value,
    /// Leaf index of the raising record.
    pub leaf_index: u64,
}

/// Tables of the alerts (created with the index).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT, t INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
  identity TEXT NOT NULL, detail TEXT NOT NULL, leaf INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_kind ON alerts(kind, id);
CREATE TABLE IF NOT EXISTS clock_state(agent TEXT PRIMARY KEY, reasons TEXT NOT NULL);
";

/// Stores `a` (inside the caller's transaction).
pub fn insert(c: &Connection, a: &NewAlert) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO alerts(t,kind,severity,identity,detail,leaf) VALUES (?,?,?,?,?,?)")?.execute(
        params![
            a.time_ns,
            a.kind.as_str(),
            a.kind.severity(),
            a.identity_key,
            a.detail.to_string(),
            a.leaf_index as i64
        ],
    )?;
    Ok(())
}

/// Logs a newly stored alert.
pub fn log(a: &NewAlert) {
    tracing::warn!(
        kind = a.kind.as_str(),
        severity = a.kind.severity(),
        identity = %wiretrail_log::text::escape(&a.identity_key),
        leaf = a.leaf_index,
        detail = %a.detail,
        "alert"
    );
}

/// Up to `limit` alerts with id above `since_id`, of `kind` (all when `None`), oldest first.
pub fn list(c: &Connection, since_id: u64, kind: Option<Kind>, limit: u64) -> rusqlite::Result<Vec<Alert>> {
    let mut stmt = c.prepare_cached(
        "SELECT id,t,kind,severity,identity,detail,leaf FROM alerts
         WHERE id > ?1 AND (?2 = '' OR kind = ?2) ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![since_id.min(i64::MAX as u64) as i64, kind.map(Kind::as_str).unwrap_or(""), limit as i64],
        |r| {
            Ok(Alert {
                id: r.get::<_, i64>(0)? as u64,
                time_ns: r.get(1)?,
                kind: r.get(2)?,
                severity: r.get(3)?,
                identity_key: r.get(4)?,
                detail_json: r.get(5)?,
                leaf_index: r.get::<_, i64>(6)? as u64,
            })
        },
    )?;
    rows.collect()
}
