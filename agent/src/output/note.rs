//! Records that are not captured socket events: policy decisions, policy
//! load/reject notices, losses reported by other kernel rings. Each is written
//! to the local output and shipped like any record.
use wiretrail_proto::v1 as pb;

/// One such record, in both forms.
#[derive(Debug, Clone)]
pub struct AgentNote {
    /// The JSON line for the local output (has a `type`).
    pub json: serde_json::Value,
    /// The collector record; the pipeline stamps the host on it.
    pub wire: pb::Record,
}

impl AgentNote {
    /// A notice about the agent itself (kind AGENT_NOTICE, details as JSON).
    pub fn notice(json: serde_json::Value, utc_ns: i128) -> AgentNote {
        let mut wire =
            pb::Record { capture_time_ns: utc_ns as i64, parsed_json: json.to_string(), ..Default::default() };
        wire.set_kind(pb::RecordKind::AgentNotice);
        wire.set_clock_source(pb::ClockSource::Realtime);
        AgentNote { json, wire }
    }
}

impl AgentNote {
    /// A TLS library that carries TLS but cannot be hooked (named, never silent).
    pub fn tls_unsupported(n: &crate::capture::tls::TlsNotice, utc_ns: i128) -> AgentNote {
        let json = serde_json::json!({
            "type": "tls_unsupported",
            "ts": crate::clock::rfc3339(utc_ns),
            "path": n.path,
            "pid": n.pid,
            "library": n.library,
            "reason": n.reason,
        });
        let mut note = AgentNote::notice(json, utc_ns);
        note.wire.pid = n.pid;
        note
    }
}

/// Current UTC time in ns (CLOCK_REALTIME), for agent-generated records.
pub fn now_utc_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}
