//! Records as JSON: one object per stored leaf with every field, the raw
//! payload in base64 (`wiretrail query --json`, the console, and a bundle's
//! `records.jsonl`, which the offline verifier regenerates and compares).

use wiretrail_proto::v1::{Heartbeat, StoredLeaf};

/// A record as one JSON object (raw payload in base64).
pub fn to_json(leaf_index: u64, l: &StoredLeaf) -> serde_json::Value {
    use base64::Engine;
    let r = l.record.clone().unwrap_or_default();
    let ep =
        |e: Option<wiretrail_proto::v1::Endpoint>| e.map(|e| serde_json::json!({"address": e.address, "port": e.port}));
    let mut v = serde_json::json!({
        "leaf_index": leaf_index,
        "agent_id": l.agent_id, "boot_id": l.boot_id, "seq": l.seq, "index_in_batch": l.index_in_batch,
        "peer_identity": l.peer_identity, "shipped_by": l.peer_identity, "received_time_ns": l.received_time_ns,
        "kind": r.kind().as_str_name(), "capture_time_ns": r.capture_time_ns,
        "clock_source": r.clock_source().as_str_name(), "clock_error_ns": r.clock_error_ns,
        "kernel_time_ns": r.kernel_time_ns, "conn_id": r.conn_id, "direction": r.direction().as_str_name(),
        "role": r.role().as_str_name(),
        "local": ep(r.local.clone()), "remote": ep(r.remote.clone()), "transport": r.transport().as_str_name(),
        "app_protocol": r.app_protocol, "pid": r.pid, "tid": r.tid, "comm": r.comm, "uid": r.uid,
        "cgroup_id": r.cgroup_id, "netns": r.netns, "identity": r.identity, "parsed_json": r.parsed_json,
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&r.payload),
        "stream_pos": r.stream_pos, "host": r.host,
        "peer_workload_identity": r.peer_identity,
        "decision": r.decision.map(|d| serde_json::json!({"verdict": d.verdict, "rule": d.rule, "rule_line": d.rule_line,
            "policy_sha256": d.policy_sha256, "local_zone": d.local_zone, "peer_zone": d.peer_zone, "hook": d.hook,
            "mode": d.mode, "direction": d.direction})),
        "gap": r.gap.map(|g| serde_json::json!({"pos": g.pos, "len": g.len, "reason": g.reason().as_str_name(), "detail": g.detail, "first_time_ns": g.first_time_ns, "last_time_ns": g.last_time_ns})),
        "parts": r.parts.iter().map(part_json).collect::<Vec<_>>(),
        "witness": r.witness.as_ref().map(|w| serde_json::json!({"conn_id": w.conn_id, "pid": w.pid, "tid": w.tid,
            "comm": w.comm, "uid": w.uid, "cgroup_id": w.cgroup_id, "netns": w.netns, "local": ep(w.local.clone()),
            "remote": ep(w.remote.clone()), "role": w.role().as_str_name()})),
        "connection": r.connection.as_ref().map(|c| serde_json::json!({"role": c.role().as_str_name(),
            "open_kernel_ns": c.open_kernel_ns, "close_kernel_ns": c.close_kernel_ns, "open_seen": c.open_seen,
            "end": c.end, "egress": totals_json(&c.egress), "ingress": totals_json(&c.ingress),
            "tls_egress": totals_json(&c.tls_egress), "tls_ingress": totals_json(&c.tls_ingress),
            "exchanges": c.exchanges, "segments": c.segments, "witness_egress": totals_json(&c.witness_egress),
            "witness_ingress": totals_json(&c.witness_ingress), "witness_close_kernel_ns": c.witness_close_kernel_ns})),
        "faults": r.faults.iter().map(|f| serde_json::json!({"kind": f.kind, "part": f.part, "offset": f.offset,
            "len": f.len, "detail": f.detail})).collect::<Vec<_>>(),
    });
    v["heartbeat"] = r.heartbeat.as_ref().map(heartbeat_json).unwrap_or_default();
    v["batch_records"] = l.batch_records.into();
    v["batch_sha256"] = hex::encode(&l.batch_sha256).into();
    v["entry"] = match &l.entry {
        None => serde_json::Value::Null,
        Some(e) => serde_json::json!({"kind": e.kind, "time_ns": e.time_ns, "subject": e.subject,
            "detail": serde_json::from_str::<serde_json::Value>(&e.detail_json)
                .unwrap_or(serde_json::Value::String(e.detail_json.clone())),
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&e.content)}),
    };
    v
}

fn observation_json(o: &Option<wiretrail_proto::v1::Observation>) -> serde_json::Value {
    let Some(o) = o else { return serde_json::Value::Null };
    serde_json::json!({
        "first_kernel_ns": o.first_kernel_ns, "last_kernel_ns": o.last_kernel_ns, "unseen": o.unseen,
        "calls": o.calls.iter().map(|c| serde_json::json!({"offset": c.offset, "kernel_ns": c.kernel_ns,
            "call": c.call().as_str_name()})).collect::<Vec<_>>(),
        "gaps": o.gaps.iter().map(|g| serde_json::json!({"offset": g.offset, "len": g.len,
            "reason": g.reason().as_str_name()})).collect::<Vec<_>>(),
    })
}

fn part_json(p: &wiretrail_proto::v1::Part) -> serde_json::Value {
    use base64::Engine;
    serde_json::json!({
        "direction": p.direction().as_str_name(), "role": p.role, "payload_offset": p.payload_offset,
        "payload_len": p.payload_len, "stream_pos": p.stream_pos, "stream_len": p.stream_len,
        "seen": observation_json(&p.seen), "witness": observation_json(&p.witness),
        "witness_payload_base64": (!p.witness_payload.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&p.witness_payload)),
        "tls": p.tls, "peer": p.peer.as_ref().map(|e| serde_json::json!({"address": e.address, "port": e.port})),
    })
}

fn totals_json(t: &Option<wiretrail_proto::v1::DirTotals>) -> serde_json::Value {
    match t {
        Some(t) => {
            let mut v = serde_json::json!({"captured": t.captured, "gap": t.gap,
                "kernel_total": t.kernel_total_known.then_some(t.kernel_total)});
            if let Some(n) = &t.not_kept {
                v["not_kept"] = serde_json::json!({"bytes": n.bytes, "calls": n.calls,
                    "first_kernel_ns": n.first_kernel_ns, "last_kernel_ns": n.last_kernel_ns});
            }
            v
        }
        None => serde_json::Value::Null,
    }
}

/// A heartbeat's fields as a JSON object.
pub fn heartbeat_json(h: &Heartbeat) -> serde_json::Value {
    serde_json::json!({
        "number": h.number, "interval_ms": h.interval_ms, "boot_start_ns": h.boot_start_ns,
        "kernel_events": h.kernel_events, "kernel_lost_events": h.kernel_lost_events,
        "kernel_lost_bytes": h.kernel_lost_bytes, "data_bytes": h.data_bytes, "data_events": h.data_events,
        "records": h.records, "record_payload_bytes": h.record_payload_bytes,
        "gap_records": h.gap_records, "gap_bytes": h.gap_bytes,
        "spool_bytes": h.spool_bytes, "spool_batches": h.spool_batches, "spool_oldest_ns": h.spool_oldest_ns,
        "batches_acked": h.batches_acked, "spool_records_dropped": h.spool_records_dropped,
        "clock_offset_ns": h.clock_offset_ns, "clock_error_ns": h.clock_error_ns,
        "kernel_clock_synced": h.kernel_clock_synced, "kernel_clock_state": h.kernel_clock_state,
        "kernel_clock_status": h.kernel_clock_status, "kernel_max_error_us": h.kernel_max_error_us,
        "kernel_est_error_us": h.kernel_est_error_us,
    })
}
