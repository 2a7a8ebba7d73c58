//! `clock` alerts from heartbeats: an agent's time is trusted only when its
//! kernel clock is synchronized (adjtimex: STA_UNSYNC clear, state not
//! TIME_ERROR) and the error bound of its timestamps is at most 50 ms
//! (FINRA 4590 / CAT). The bound is the agent's own offset measurement error
//! plus, when synchronized, the kernel's maximum error against its time
//! source. An alert is raised when an agent's clock turns bad or the reasons
//! change, not on every heartbeat; the per-agent state is kept in the index
//! (`clock_state`), so it is rebuilt from the log like the alerts.

use rusqlite::{Connection, OptionalExtension};
use wiretrail_proto::v1::{Heartbeat, Record, RecordKind};

use super::{Kind, NewAlert};

/// Largest clock error accepted (ns).
pub const MAX_ERROR_NS: u64 = 50_000_000;

/// The error bound of an agent's timestamps (ns) according to its heartbeat.
pub fn error_bound_ns(hb: &Heartbeat) -> u64 {
    let kernel = if hb.kernel_clock_synced { hb.kernel_max_error_us.max(0) as u64 * 1_000 } else { 0 };
    hb.clock_error_ns.saturating_add(kernel)
}

/// Why a heartbeat's clock is not acceptable (empty: it is).
pub fn reasons(hb: &Heartbeat) -> Vec<&'static str> {
    let mut v = Vec::new();
    if !hb.kernel_clock_synced {
        v.push("kernel_clock_unsynchronized");
    }
    if error_bound_ns(hb) > MAX_ERROR_NS {
        v.push("error_above_50ms");
    }
    v
}

/// The alert a heartbeat raises when its agent's clock turned bad (or the
/// reasons changed) since the previous heartbeat; updates `clock_state`.
pub fn from_heartbeat(
    c: &Connection,
    leaf_index: u64,
    agent_id: &str,
    r: &Record,
) -> rusqlite::Result<Option<NewAlert>> {
    if r.kind() != RecordKind::Heartbeat {
        return Ok(None);
    }
    let Some(hb) = &r.heartbeat else { return Ok(None) };
    let now = reasons(hb).join(",");
    let before: Option<String> = c
        .prepare_cached("SELECT reasons FROM clock_state WHERE agent = ?")?
        .query_row([agent_id], |row| row.get(0))
        .optional()?;
    if before.as_deref() == Some(now.as_str()) {
        return Ok(None);
    }
    c.prepare_cached("INSERT OR REPLACE INTO clock_state(agent, reasons) VALUES (?, ?)")?
        .execute(rusqlite::params![agent_id, now])?;
    if now.is_empty() {
        if before.is_some_and(|b| !b.is_empty()) {
            tracing::info!(agent = %wiretrail_log::text::escape(agent_id), "agent clock acceptable again");
        }
        return Ok(None);
    }
    let detail = serde_json::json!({
        "agent_id": agent_id,
        "host": r.host,
        "reasons": reasons(hb),
        "error_bound_ns": error_bound_ns(hb),
        "limit_ns": MAX_ERROR_NS,
        "clock_error_ns": hb.clock_error_ns,
        "clock_offset_ns": hb.clock_offset_ns,
        "kernel_clock_synced": hb.kernel_clock_synced,
        "kernel_clock_state": hb.kernel_clock_state,
        "kernel_clock_status": hb.kernel_clock_status,
        "kernel_max_error_us": hb.kernel_max_error_us,
        "kernel_est_error_us": hb.kernel_est_error_us,
        "previous_reasons": before.unwrap_or_default(),
    });
    Ok(Some(NewAlert {
        time_ns: r.capture_time_ns,
        kind: Kind::Clock,
        identity_key: agent_id.to_string(),
        detail,
        leaf_index,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(synced: bool, error_ns: u64, max_error_us: i64) -> Record {
        let mut r = Record {
            heartbeat: Some(Heartbeat {
                kernel_clock_synced: synced,
                clock_error_ns: error_ns,
                kernel_max_error_us: max_error_us,
                ..Default::default()
            }),
            ..Default::default()
        };
        r.set_kind(RecordKind::Heartbeat);
        r
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(super::super::SCHEMA).unwrap();
        c
    }

    #[test]
    fn rules_error_above_50ms_and_unsynchronized() {
        let hb = |r: Record| r.heartbeat.unwrap();
        assert!(reasons(&hb(heartbeat(true, 1_000, 40_000))).is_empty());
        // 50 ms exactly is accepted; one ns more is not.
        assert!(reasons(&hb(heartbeat(true, 50_000_000, 0))).is_empty());
        assert_eq!(reasons(&hb(heartbeat(true, 50_000_001, 0))), ["error_above_50ms"]);
        // The kernel's maximum error counts when synchronized.
        assert_eq!(reasons(&hb(heartbeat(true, 20_000_000, 31_000))), ["error_above_50ms"]);
        // Unsynchronized: the kernel's numbers mean nothing (16 s); the state is the reason.
        assert_eq!(reasons(&hb(heartbeat(false, 1_000, 16_000_000))), ["kernel_clock_unsynchronized"]);
        assert_eq!(
            reasons(&hb(heartbeat(false, 80_000_000, 16_000_000))),
            ["kernel_clock_unsynchronized", "error_above_50ms"]
        );
    }

    #[test]
    fn alert_on_transition_not_on_every_heartbeat() {
        let c = db();
        assert!(from_heartbeat(&c, 1, "a", &heartbeat(true, 1_000, 0)).unwrap().is_none());
        let a = from_heartbeat(&c, 2, "a", &heartbeat(true, 80_000_000, 0)).unwrap().expect("alert");
        assert_eq!((a.kind, a.leaf_index), (Kind::Clock, 2));
        assert_eq!(a.detail["error_bound_ns"], 80_000_000);
        assert_eq!(a.detail["reasons"][0], "error_above_50ms");
        assert!(from_heartbeat(&c, 3, "a", &heartbeat(true, 90_000_000, 0)).unwrap().is_none());
        // Another agent has its own state.
        assert!(from_heartbeat(&c, 4, "b", &heartbeat(true, 90_000_000, 0)).unwrap().is_some());
        // Reasons change: alert again; back to good: none; bad again: alert.
        assert!(from_heartbeat(&c, 5, "a", &heartbeat(false, 90_000_000, 0)).unwrap().is_some());
        assert!(from_heartbeat(&c, 6, "a", &heartbeat(true, 1_000, 0)).unwrap().is_none());
        assert!(from_heartbeat(&c, 7, "a", &heartbeat(true, 60_000_000, 0)).unwrap().is_some());
    }
}
