//! `gap` alerts: every gap record an agent ships (ring buffer loss, spool
//! full or lost batches, agent restart, caps and truncation, unreadable
//! memory...) raises one alert naming the reason, the range and the record.

use wiretrail_proto::v1::{Endpoint, GapReason, Record, RecordKind};

use super::{Kind, NewAlert};

fn endpoint(e: &Option<Endpoint>) -> serde_json::Value {
    match e {
        Some(e) if !e.address.is_empty() => serde_json::json!({"address": e.address, "port": e.port}),
        _ => serde_json::Value::Null,
    }
}

/// The reason's short name ("ring_full", "spool_full", "agent_restart"...).
pub fn reason_name(r: GapReason) -> String {
    r.as_str_name().trim_start_matches("GAP_REASON_").to_ascii_lowercase()
}

/// The alert a gap record raises (`None` for other records).
pub fn from_gap(leaf_index: u64, agent_id: &str, r: &Record) -> Option<NewAlert> {
    if r.kind() != RecordKind::Gap {
        return None;
    }
    let g = r.gap.clone().unwrap_or_default();
    let detail = serde_json::json!({
        "agent_id": agent_id,
        "host": r.host,
        "reason": reason_name(g.reason()),
        "pos": g.pos,
        "len": g.len,
        "detail": g.detail,
        "first_time_ns": g.first_time_ns,
        "last_time_ns": g.last_time_ns,
        "conn_id": r.conn_id,
        "local": endpoint(&r.local),
        "remote": endpoint(&r.remote),
        "app_protocol": r.app_protocol,
    });
    Some(NewAlert {
        time_ns: r.capture_time_ns,
        kind: Kind::Gap,
        identity_key: agent_id.to_string(),
        detail,
        leaf_index,
    })
}

#[cfg(test)]
mod tests {
    use wiretrail_proto::v1::Gap;

    use super::*;

    #[test]
    fn every_gap_record_raises_an_alert_with_its_reason() {
        for reason in [GapReason::RingFull, GapReason::SpoolFull, GapReason::AgentRestart, GapReason::Cap] {
            let mut r = Record {
                capture_time_ns: 7,
                gap: Some(Gap { pos: 10, len: 20, reason: reason as i32, ..Default::default() }),
                ..Default::default()
            };
            r.set_kind(RecordKind::Gap);
            let a = from_gap(3, "node-a", &r).expect("a gap alert");
            assert_eq!((a.kind, a.leaf_index, a.identity_key.as_str()), (Kind::Gap, 3, "node-a"));
            assert_eq!(a.detail["reason"], reason_name(reason));
            assert_eq!((a.detail["pos"].as_u64(), a.detail["len"].as_u64()), (Some(10), Some(20)));
        }
        assert_eq!(reason_name(GapReason::SpoolFull), "spool_full");
        let mut r = Record::default();
        r.set_kind(RecordKind::Exchange);
        assert!(from_gap(1, "a", &r).is_none());
    }
}
