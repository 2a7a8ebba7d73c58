//! Search: filters validated once, answered from the index below its mark and
//! from a scan of the log above it.

pub mod clustered;
pub mod inventory;
pub mod limits;
pub mod service;
#[cfg(test)]
mod tests;

use prost::Message;
use rusqlite::Connection;
use wiretrail_proto::v1::StoredLeaf;

use crate::error::Error;
use crate::index::{self, IndexError};
use wiretrail_log::filter::Query;
use wiretrail_log::store::{Log, StoreError};

/// SQL selecting `q`'s candidate leaves `> ?1` and `< ?2` in order (limit ?3).
fn candidate_sql(q: &Query) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let f = &q.f;
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
    if let Some((k, v)) = q.identity.first() {
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
    let (sql, args) = candidate_sql(q);
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
