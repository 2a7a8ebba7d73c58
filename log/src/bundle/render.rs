//! Exported records as `records.jsonl` lines and rendered for people
//! (`records.txt`), and the filter as JSON (`query.json`). Both are deterministic functions of their
//! input so the offline verifier can regenerate and compare them.

use std::fmt::Write;

use base64::Engine;

use wiretrail_proto::v1::{Filter, StoredLeaf};

/// One record of the bundle, as `records.jsonl` line.
pub fn record_line(leaf_index: u64, leaf: &[u8], decoded: &StoredLeaf) -> serde_json::Value {
    let mut v = crate::record_json::to_json(leaf_index, decoded);
    v["leaf_base64"] = base64::engine::general_purpose::STANDARD.encode(leaf).into();
    v
}

/// Text block for one record.
pub fn record_text(leaf_index: u64, l: &StoredLeaf) -> String {
    let r = l.record.clone().unwrap_or_default();
    let ep = |e: Option<wiretrail_proto::v1::Endpoint>| {
        e.map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_else(|| "-".into())
    };
    let mut s = String::new();
    if let Some(e) = &l.entry {
        let _ = writeln!(s, "=== record {leaf_index}  COLLECTOR_ENTRY {}  at {} ns UTC", e.kind, e.time_ns);
        let _ = writeln!(s, "subject {:?}  agent {:?}", e.subject, l.agent_id);
        let _ = writeln!(s, "detail {}", e.detail_json);
        let _ = writeln!(s, "content {} bytes", e.content.len());
        s.push('\n');
        return s;
    }
    let _ = writeln!(
        s,
        "=== record {leaf_index}  {}  capture {} ns UTC ({}, error {} ns)",
        r.kind().as_str_name(),
        r.capture_time_ns,
        r.clock_source().as_str_name(),
        r.clock_error_ns
    );
    let _ = writeln!(
        s,
        "agent {} boot {} batch {} #{}  received {} ns  shipped by certificate {:?}",
        l.agent_id, l.boot_id, l.seq, l.index_in_batch, l.received_time_ns, l.peer_identity
    );
    let _ = writeln!(
        s,
        "host {}  {} {} -> {} {}  {}  conn {} pos {}",
        r.host,
        r.transport().as_str_name(),
        ep(r.local.clone()),
        ep(r.remote.clone()),
        r.direction().as_str_name(),
        r.app_protocol,
        r.conn_id,
        r.stream_pos
    );
    let _ = writeln!(
        s,
        "process pid {} tid {} uid {} comm {:?} cgroup {} netns {}",
        r.pid, r.tid, r.uid, r.comm, r.cgroup_id, r.netns
    );
    let mut ids: Vec<_> = r.identity.iter().collect();
    ids.sort();
    for (k, v) in ids {
        let _ = writeln!(s, "identity {k}={v:?}");
    }
    if !r.parsed_json.is_empty() {
        let _ = writeln!(s, "parsed {}", r.parsed_json);
    }
    if let Some(g) = &r.gap {
        let _ = writeln!(
            s,
            "gap {} pos {} len {} from {} to {}: {}",
            g.reason().as_str_name(),
            g.pos,
            g.len,
            g.first_time_ns,
            g.last_time_ns,
            g.detail
        );
    }
    let _ = writeln!(s, "payload {} bytes:", r.payload.len());
    for chunk in r.payload.chunks(96) {
        let _ = writeln!(s, "  {}", chunk.escape_ascii());
    }
    s.push('\n');
    s
}

/// The filter as a JSON object (all fields, fixed order).
pub fn filter_json(f: &Filter) -> serde_json::Value {
    serde_json::json!({
        "from_time_ns": f.from_time_ns, "to_time_ns": f.to_time_ns,
        "agent_id": f.agent_id, "host": f.host, "identity": f.identity,
        "peer_address": f.peer_address, "peer_port": f.peer_port,
        "app_protocol": f.app_protocol, "payload_text": f.payload_text, "limit": f.limit,
        "entry_kind": f.entry_kind,
    })
}

/// Parses [`filter_json`]'s output.
pub fn filter_from_json(v: &serde_json::Value) -> Result<Filter, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct F {
        from_time_ns: i64,
        to_time_ns: i64,
        agent_id: String,
        host: String,
        identity: Vec<String>,
        peer_address: String,
        peer_port: u32,
        app_protocol: String,
        payload_text: String,
        limit: u64,
        #[serde(default)]
        entry_kind: String,
    }
    let f: F = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    Ok(Filter {
        from_time_ns: f.from_time_ns,
        to_time_ns: f.to_time_ns,
        agent_id: f.agent_id,
        host: f.host,
        identity: f.identity,
        peer_address: f.peer_address,
        peer_port: f.peer_port,
        app_protocol: f.app_protocol,
        payload_text: f.payload_text,
        limit: f.limit,
        entry_kind: f.entry_kind,
    })
}
