//! Gap records the shipper creates for records it could not keep.

use prost::Message;
use wiretrail_proto::v1::{Batch, ClockSource, Gap, GapReason, Record, RecordKind};

use crate::spool::Quarantined;

/// Current UTC time in ns.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Records not kept during one episode of a full (or failing) spool.
#[derive(Debug, Clone)]
pub struct PendingGap {
    /// Number (within this boot) of the first record not kept.
    pub first_record: u64,
    /// Records not kept.
    pub records: u64,
    /// Their serialized bytes.
    pub bytes: u64,
    /// Earliest capture time among them (UTC ns).
    pub first_time_ns: i64,
    /// Latest capture time among them (UTC ns).
    pub last_time_ns: i64,
    /// Why: spool full, or another spool failure.
    pub reason: GapReason,
    /// The error that started the episode.
    pub cause: String,
}

impl PendingGap {
    /// A new episode starting at record number `first_record`.
    pub fn new(first_record: u64, reason: GapReason, cause: String) -> Self {
        PendingGap {
            first_record,
            records: 0,
            bytes: 0,
            first_time_ns: i64::MAX,
            last_time_ns: i64::MIN,
            reason,
            cause,
        }
    }

    /// Accounts for one record not kept.
    pub fn add(&mut self, r: &Record, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
        self.first_time_ns = self.first_time_ns.min(r.capture_time_ns);
        self.last_time_ns = self.last_time_ns.max(r.capture_time_ns);
    }

    /// The gap record describing the episode.
    pub fn record(&self, host: &str) -> Record {
        let why = match self.reason {
            GapReason::SpoolFull => "spool_full",
            _ => "spool_error",
        };
        Record {
            kind: RecordKind::Gap as i32,
            capture_time_ns: now_ns(),
            clock_source: ClockSource::Realtime as i32,
            host: host.to_string(),
            parsed_json: serde_json::json!({
                "reason": why,
                "records": self.records,
                "bytes": self.bytes,
                "first_time_ns": self.first_time_ns,
                "last_time_ns": self.last_time_ns,
                "cause": self.cause,
            })
            .to_string(),
            gap: Some(Gap {
                pos: self.first_record,
                len: self.records,
                reason: self.reason as i32,
                detail: format!(
                    "{why}: {} records ({} bytes) captured from {} to {} (UTC ns) were not kept: {}",
                    self.records, self.bytes, self.first_time_ns, self.last_time_ns, self.cause
                ),
                first_time_ns: self.first_time_ns,
                last_time_ns: self.last_time_ns,
            }),
            ..Default::default()
        }
    }
}

/// The batch written in place of a spooled batch file found corrupt.
pub fn corrupt_batch(agent_id: &str, host: &str, q: &Quarantined) -> Batch {
    let now = now_ns();
    Batch {
        agent_id: agent_id.to_string(),
        boot_id: q.boot_id.clone(),
        seq: q.key.seq,
        records: vec![Record {
            kind: RecordKind::Gap as i32,
            capture_time_ns: now,
            clock_source: ClockSource::Realtime as i32,
            host: host.to_string(),
            parsed_json: serde_json::json!({
                "reason": "spool_corrupt",
                "file": q.path.display().to_string(),
                "error": q.why,
            })
            .to_string(),
            gap: Some(Gap {
                pos: q.key.seq,
                len: 0,
                reason: GapReason::Other as i32,
                detail: format!(
                    "spooled batch {} of boot {} was corrupt on disk ({}); its records (count unknown) are lost, file kept as {}",
                    q.key.seq,
                    q.boot_id,
                    q.why,
                    q.path.display()
                ),
                first_time_ns: 0,
                last_time_ns: 0,
            }),
            ..Default::default()
        }],
        covers_through_seq: 0,
    }
}

/// The batch standing for seqs `from..=to` of a boot that are missing from
/// the spool (the collector expects `from` but the spool's next is `to + 1`).
pub fn lost_batches(agent_id: &str, boot_id: &str, host: &str, from: u64, to: u64, why: &str) -> Batch {
    let n = to - from + 1;
    Batch {
        agent_id: agent_id.to_string(),
        boot_id: boot_id.to_string(),
        seq: from,
        records: vec![Record {
            kind: RecordKind::Gap as i32,
            capture_time_ns: now_ns(),
            clock_source: ClockSource::Realtime as i32,
            host: host.to_string(),
            parsed_json: serde_json::json!({
                "reason": "spool_lost", "boot_id": boot_id, "first_seq": from, "last_seq": to, "cause": why,
            })
            .to_string(),
            gap: Some(Gap {
                pos: from,
                len: n,
                reason: GapReason::SpoolLost as i32,
                detail: format!(
                    "batches {from}..={to} of boot {boot_id} ({n}) are missing from the agent's spool ({why}); \
                     their records (count unknown) are lost"
                ),
                first_time_ns: 0,
                last_time_ns: 0,
            }),
            ..Default::default()
        }],
        covers_through_seq: if to > from { to } else { 0 },
    }
}

/// A record the collector refused as too large, as a gap record: its
/// metadata is kept, its payload and parsed fields are not.
pub fn too_large(r: &Record, why: &str) -> Record {
    let bytes = r.encoded_len() as u64;
    Record {
        kind: RecordKind::Gap as i32,
        payload: Vec::new(),
        parsed_json: serde_json::json!({
            "reason": "too_large", "kind": r.kind().as_str_name(), "encoded_bytes": bytes,
            "payload_bytes": r.payload.len(), "cause": why,
        })
        .to_string(),
        gap: Some(Gap {
            pos: r.stream_pos,
            len: r.payload.len() as u64,
            reason: GapReason::TooLarge as i32,
            detail: format!(
                "a {} record of {bytes} bytes ({} payload bytes) was too large for the collector ({why}); \
                 its payload is not kept",
                r.kind().as_str_name(),
                r.payload.len()
            ),
            first_time_ns: r.capture_time_ns,
            last_time_ns: r.capture_time_ns,
        }),
        decision: None,
        ..r.clone()
    }
}
