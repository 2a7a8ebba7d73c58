//! Alerts from policy decision records: `policy_denied` for verdict "deny",
//! `policy_violation` for verdict "audit".

use wiretrail_proto::v1::{Direction, Endpoint, Record, RecordKind};

use super::{Kind, NewAlert};
use crate::inventory::identity_key;

fn endpoint(e: &Option<Endpoint>) -> serde_json::Value {
    match e {
        Some(e) => serde_json::json!({"address": e.address, "port": e.port}),
        None => serde_json::Value::Null,
    }
}

/// The alert a policy decision record raises, if any.
pub fn from_decision(leaf_index: u64, r: &Record) -> Option<NewAlert> {
    if r.kind() != RecordKind::PolicyDecision {
        return None;
    }
    let d = r.decision.as_ref()?;
    let kind = match d.verdict.as_str() {
        "deny" => Kind::PolicyDenied,
        "audit" => Kind::PolicyViolation,
        _ => return None,
    };
    let key = identity_key(&r.identity, &r.host);
    // The destination is the remote end of an egress flow, the local end of an ingress one.
    let inbound = d.direction == "ingress" || r.direction() == Direction::Ingress;
    let (source, destination) = if inbound { (&r.remote, &r.local) } else { (&r.local, &r.remote) };
    let peer_key = (!r.peer_identity.is_empty()).then(|| identity_key(&r.peer_identity, &r.host));
    let detail = serde_json::json!({
        "verdict": d.verdict,
        "rule": d.rule,
        "rule_line": d.rule_line,
        "policy_sha256": d.policy_sha256,
        "local_zone": d.local_zone,
        "peer_zone": d.peer_zone,
        "hook": d.hook,
        "mode": d.mode,
        "direction": d.direction,
        "identity_key": key,
        "identity": r.identity,
        "peer_identity_key": peer_key,
        "peer_identity": r.peer_identity,
        "source": endpoint(source),
        "destination": endpoint(destination),
        "host": r.host,
        "pid": r.pid,
        "comm": r.comm,
    });
    Some(NewAlert { time_ns: r.capture_time_ns, kind, identity_key: key, detail, leaf_index })
}
