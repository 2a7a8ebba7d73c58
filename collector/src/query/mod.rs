//! Search: filters validated once, answered from the index below its mark and
//! from a scan of the log above it.

pub mod inventory;
pub mod limits;
pub mod service;
#[cfg(test)]
mod tests;

use prost::Message;
use rusqlite::Connection;
use wiretrail_proto::v1::{Filter, StoredLeaf};

use crate::error::Error;
use crate::index::{self, IndexError};
use wiretrail_log::store::{Log, StoreError};

/// Most results one search may return.
pub const MAX_LIMIT: u64 = 1_000_000;
/// Results returned when the request sets no limit.
pub const DEFAULT_LIMIT: u64 = 1_000;

/// A validated filter.
#[derive(Debug, Clone)]
pub struct Query {
    /// The request's filter.
    pub f: Filter,
    /// `identity` split into (key, value).
    pub identity: Vec<(String, String)>,
    /// Effective result limit.
    pub limit: u64,
}

impl Query {
    /// Validates `f`.
    pub fn new(f: Filter) -> Result<Self, Error> {
        if f.from_time_ns < 0 || f.to_time_ns < 0 {
            return Err(Error::InvalidArgument("times must be non-negative UTC ns".into()));
        }
        if f.to_time_ns != 0 && f.from_time_ns >= f.to_time_ns {
            return Err(Error::InvalidArgument("from_time_ns must be before to_time_ns".into()));
        }
        if f.peer_port > 65535 {
            return Err(Error::InvalidArgument(format!("peer_port {} is not a port", f.peer_port)));
        }
        if f.peer_port != 0 && f.peer_address.is_empty() {
            return Err(Error::InvalidArgument("peer_port needs peer_address".into()));
        }
        if f.limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!("limit {} above {MAX_LIMIT}", f.limit)));
        }
        let identity: Vec<(String, String)> = f
            .identity
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(Error::InvalidArgument(format!("identity filter {kv:?} is not key=value"))),
            })
            .collect::<Result<_, _>>()?;
        if !f.entry_kind.is_empty() {
            if f.entry_kind != "*" && !wiretrail_log::entry::KINDS.contains(&f.entry_kind.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "unknown entry kind {:?}; one of *, {}",
                    f.entry_kind,
                    wiretrail_log::entry::KINDS.join(", ")
                )));
            }
            if !(f.host.is_empty()
                && identity.is_empty()
                && f.peer_address.is_empty()
                && f.app_protocol.is_empty()
                && f.payload_text.is_empty())
            {
                return Err(Error::InvalidArgument(
                    "entry_kind selects collector entries: host, identity, peer, protocol and text do not apply".into(),
                ));
            }
        }
        let limit = if f.limit == 0 { DEFAULT_LIMIT } else { f.limit };
        Ok(Query { f, identity, limit })
    }

    /// Whether a stored leaf matches every condition. A two-witness record
    /// matches when either end does (identity, and the peer it talks to).
    pub fn matches(&self, l: &StoredLeaf) -> bool {
        let f = &self.f;
        if !f.entry_kind.is_empty() {
            let Some(e) = &l.entry else { return false };
            // "*" leaves out access entries: only auditors read those (entry_kind "access").
            return (if f.entry_kind == "*" { e.kind != wiretrail_log::entry::ACCESS } else { e.kind == f.entry_kind })
                && (f.from_time_ns == 0 || e.time_ns >= f.from_time_ns)
                && (f.to_time_ns == 0 || e.time_ns < f.to_time_ns)
                && (f.agent_id.is_empty() || l.agent_id == f.agent_id);
        }
        let Some(r) = &l.record else { return false };
        let side_matches = |s: &crate::sides::SideView<'_>| {
            let remote = s.remote.cloned().unwrap_or_default();
            (f.peer_address.is_empty() || remote.address == f.peer_address)
                && (f.peer_port == 0 || remote.port == f.peer_port)
                && self.identity.iter().all(|(k, v)| s.identity.get(k) == Some(v))
        };
        (f.from_time_ns == 0 || r.capture_time_ns >= f.from_time_ns)
            && (f.to_time_ns == 0 || r.capture_time_ns < f.to_time_ns)
            && (f.agent_id.is_empty() || l.agent_id == f.agent_id)
            && (f.host.is_empty() || r.host == f.host)
            && (f.app_protocol.is_empty() || r.app_protocol == f.app_protocol)
            && crate::sides::sides(r).iter().any(side_matches)
            && (f.payload_text.is_empty() || contains(&r.payload, f.payload_text.as_bytes()))
    }

    /// SQL selecting candidate leaves `> ?1` and `< ?2` in order (limit ?3).
    fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let f = &self.f;
        let mut args: Vec<Value> = Vec::new();
        let mut conds = vec!["r.leaf > ?1".to_string(), "r.leaf < ?2".to_string()];
        let mut from = "records r".to_string();
        let mut n = 4;
        let mut arg = |v: Value, args: &mut Vec<Value>| {
            args.push(v);
            n += 1;
            format!("?{}", n - 1)
        };
        // The window's bounds, as parameters every table's time column is compared with.
        let t_from = (f.from_time_ns != 0).then(|| arg(Value::Integer(f.from_time_ns), &mut args));
        let t_to = (f.to_time_ns != 0).then(|| arg(Value::Integer(f.to_time_ns), &mut args));
        // `identity` and `endpoints` are keyed (generation, key, time, leaf): one seek
        // per generation with leaves in the bounds and times in the window.
        let window = |table: &str, conds: &mut Vec<String>| {
            conds.push(index::gens::filter(&format!("{table}.g"), t_from.as_deref(), t_to.as_deref()));
            if let Some(p) = &t_from {
                conds.push(format!("{table}.t >= {p}"));
            }
            if let Some(p) = &t_to {
                conds.push(format!("{table}.t < {p}"));
            }
        };
        if let Some((k, v)) = self.identity.first() {
            from = "identity i JOIN records r ON r.leaf = i.leaf".into();
            conds.push(format!("i.kv = {}", arg(Value::Text(format!("{k}={v}")), &mut args)));
            window("i", &mut conds);
        }
        if let Some(p) = &t_from {
            conds.push(format!("r.t >= {p}"));
        }
        if let Some(p) = &t_to {
            conds.push(format!("r.t < {p}"));
        }
        // Agent, host, protocol and entry kind are columns of `dims`; records keep its id.
        let mut dims: Vec<String> = Vec::new();
        for (col, val) in [("agent", &f.agent_id), ("host", &f.host), ("proto", &f.app_protocol)] {
            if !val.is_empty() {
                dims.push(format!("{col} = {}", arg(Value::Text(val.clone()), &mut args)));
            }
        }
        if !f.peer_address.is_empty() {
            // Either end's peer (two-witness records index both); `matches` decides.
            from = format!("{from} JOIN endpoints e ON e.leaf = r.leaf");
            conds.push(format!("e.addr = {}", arg(Value::Text(f.peer_address.clone()), &mut args)));
            if f.peer_port != 0 {
                conds.push(format!("e.port = {}", arg(Value::Integer(f.peer_port as i64), &mut args)));
            }
            window("e", &mut conds);
        }
        match f.entry_kind.as_str() {
            "" => {}
            "*" => dims.push(format!("proto LIKE 'entry:%' AND proto != 'entry:{}'", wiretrail_log::entry::ACCESS)),
            k => dims.push(format!("proto = {}", arg(Value::Text(format!("entry:{k}")), &mut args))),
        }
        if !dims.is_empty() {
            conds.push(index::dims::filter("r.dim", &dims));
        }
        let sql = format!("SELECT DISTINCT r.leaf FROM {from} WHERE {} ORDER BY r.leaf LIMIT ?3", conds.join(" AND "));
        (sql, args)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// One search hit.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Leaf index in the log.
    pub leaf_index: u64,
    /// The stored leaf bytes.
    pub leaf: Vec<u8>,
    /// The decoded leaf.
    pub decoded: StoredLeaf,
}

/// Decodes leaf `i`'s bytes.
pub fn decode(i: u64, bytes: &[u8]) -> Result<StoredLeaf, StoreError> {
    StoredLeaf::decode(bytes).map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))
}

/// Runs `q` over leaves `[0, upto)`, calling `emit` per hit in leaf order until
/// the limit; returns the number of hits. `indexed` is the index's mark.
pub fn search(
    q: &Query,
    shared: &Log,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    mut emit: impl FnMut(Hit) -> bool,
) -> Result<u64, Error> {
    let mut hits = 0u64;
    let indexed = indexed.min(upto);
    let (sql, args) = q.sql();
    let path = index::db_path(shared.dir());
    let err = |source| Error::Index(IndexError::Sqlite { path: path.clone(), source });
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let mut after: i64 = -1;
    'index: loop {
        let mut params: Vec<rusqlite::types::Value> = vec![after.into(), (indexed as i64).into(), 10_000i64.into()];
        params.extend(args.iter().cloned());
        let leaves: Vec<i64> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if leaves.is_empty() {
            break;
        }
        after = *leaves.last().expect("non-empty");
        for i in leaves {
            let i = i as u64;
            let bytes = match shared.read_leaf(i) {
                // Deleted by retention after the index was read (its rows go with it).
                Err(wiretrail_log::store::StoreError::Deleted { .. }) => continue,
                r => r?,
            };
            let decoded = decode(i, &bytes)?;
            if q.matches(&decoded) {
                hits += 1;
                if !emit(Hit { leaf_index: i, leaf: bytes, decoded }) || hits >= q.limit {
                    return Ok(hits);
                }
            }
        }
        if hits >= q.limit {
            break 'index;
        }
    }
    hits += scan(q, shared, indexed, upto, q.limit - hits, emit)?;
    Ok(hits)
}

/// Scans leaves `from..to` of the log, emitting up to `limit` hits.
pub fn scan(
    q: &Query,
    shared: &Log,
    from: u64,
    to: u64,
    limit: u64,
    mut emit: impl FnMut(Hit) -> bool,
) -> Result<u64, Error> {
    let mut hits = 0;
    if limit == 0 {
        return Ok(0);
    }
    for item in shared.iter(from, to)? {
        let (i, bytes) = item?;
        let decoded = decode(i, &bytes)?;
        if q.matches(&decoded) {
            hits += 1;
            if !emit(Hit { leaf_index: i, leaf: bytes, decoded }) || hits >= limit {
                break;
            }
        }
    }
    Ok(hits)
}

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
    v["heartbeat"] = r.heartbeat.as_ref().map(crate::alerts::silence::heartbeat_json).unwrap_or_default();
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
        Some(t) => serde_json::json!({"captured": t.captured, "gap": t.gap,
            "kernel_total": t.kernel_total_known.then_some(t.kernel_total)}),
        None => serde_json::Value::Null,
    }
}
