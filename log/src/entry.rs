//! Leaves the collector appends to its own log: a `StoredLeaf` whose `entry`
//! (a `CollectorEntry`) is set instead of `record`. The kinds are documented
//! on `CollectorEntry` in `proto/wiretrail/v1/record.proto`; later features
//! (review marks, retention deletions, key rotations) add
//! kinds here.

use prost::Message;
use wiretrail_proto::v1::{CollectorEntry, StoredLeaf};

/// A certificate identity refused for an agent id owned by another.
pub const AGENT_ID_REFUSED: &str = "agent_id_refused";
/// A batch that reused a stored (agent, boot, seq) with different content.
pub const BATCH_CONFLICT: &str = "batch_conflict";
/// The store refused writes (disk full, I/O errors) for a while.
pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
/// Start-up cut a torn, never acknowledged write.
pub const RECOVERY: &str = "recovery";
/// `wiretrail repair` restored or cut frames.
pub const REPAIR: &str = "repair";

/// Background verification found the log inconsistent with its checkpoints.
pub const VERIFICATION_FAILED: &str = "verification_failed";
/// No heartbeat from an agent for longer than the silence threshold.
pub const AGENT_SILENT: &str = "agent_silent";
/// A silent agent's heartbeats came back (the entry states the hole).
pub const AGENT_RETURNED: &str = "agent_returned";
/// A client read the evidence (see the collector's `access` module).
pub const ACCESS: &str = "access";
/// A reviewer marked records or a conversation as reviewed (see the collector's `review` module).
pub const REVIEW_MARK: &str = "review_mark";

/// The checkpoint signing key was rotated (see [`crate::keychain`]).
pub const KEY_ROTATION: &str = "key_rotation";

/// The server's TLS certificate was reloaded, or a reload was refused.
pub const TLS_RELOAD: &str = "tls_reload";

/// Retention deleted an expired segment (see the collector's `retention` module).
pub const RETENTION_DELETION: &str = "retention_deletion";
/// An early or held deletion was refused.
pub const RETENTION_REFUSED: &str = "retention_refused";
/// An admin placed a legal hold.
pub const HOLD_PLACED: &str = "hold_placed";
/// An admin lifted a legal hold.
pub const HOLD_LIFTED: &str = "hold_lifted";

/// Every kind the collector writes.
pub const KINDS: [&str; 16] = [
    AGENT_ID_REFUSED,
    BATCH_CONFLICT,
    STORAGE_UNAVAILABLE,
    RECOVERY,
    REPAIR,
    VERIFICATION_FAILED,
    AGENT_SILENT,
    AGENT_RETURNED,
    ACCESS,
    REVIEW_MARK,
    KEY_ROTATION,
    TLS_RELOAD,
    RETENTION_DELETION,
    RETENTION_REFUSED,
    HOLD_PLACED,
    HOLD_LIFTED,
];

/// An entry made now.
pub fn new(kind: &str, time_ns: i64, subject: &str, detail: serde_json::Value, content: Vec<u8>) -> CollectorEntry {
    CollectorEntry {
        kind: kind.to_string(),
        time_ns,
        subject: subject.to_string(),
        detail_json: detail.to_string(),
        content,
    }
}

/// The leaf bytes of an entry. `agent_id` is set for entries about an agent
/// (so an agent filter finds them); batch fields stay empty.
pub fn leaf(e: CollectorEntry, agent_id: &str) -> Vec<u8> {
    StoredLeaf { agent_id: agent_id.to_string(), received_time_ns: e.time_ns, entry: Some(e), ..Default::default() }
        .encode_to_vec()
}
