//! Finding marks: by reviewer, item (a record, with its conversation, or a
//! conversation), action and time. Leaves below the indexer's mark are found
//! through the `review_marks` table; the few above it by scanning the log, so
//! a mark is listed as soon as it is durable.

use std::collections::BTreeSet;

use rusqlite::Connection;
use rusqlite::types::Value;
use wiretrail_proto::v1::{Filter, ReviewListRequest, ReviewMarkRecord};

use crate::error::Error;
use crate::index::{self, IndexError};
use crate::query::{DEFAULT_LIMIT, MAX_LIMIT, Query, scan};
use crate::registry::glob_match;
use crate::store::Shared;

/// A validated `ReviewList` request.
#[derive(Debug, Clone)]
pub struct Selector {
    req: ReviewListRequest,
    limit: u64,
}

impl Selector {
    /// Validates `req`.
    pub fn new(req: ReviewListRequest) -> Result<Selector, Error> {
        if !req.action.is_empty() {
            super::check_action(&req.action)?;
        }
        if let Some(c) = &req.conversation {
            super::check_conversation(c)?;
        }
        if req.from_time_ns < 0 || req.to_time_ns < 0 {
            return Err(Error::InvalidArgument("times must be non-negative UTC ns".into()));
        }
        if req.to_time_ns != 0 && req.from_time_ns >= req.to_time_ns {
            return Err(Error::InvalidArgument("from_time_ns must be before to_time_ns".into()));
        }
        if req.limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!("limit {} above {MAX_LIMIT}", req.limit)));
        }
        let limit = if req.limit == 0 { DEFAULT_LIMIT } else { req.limit };
        Ok(Selector { req, limit })
    }

    /// The request as an access entry's detail.
    pub fn detail(&self) -> serde_json::Value {
        let q = &self.req;
        serde_json::json!({"review_filter": {"reviewer": q.reviewer, "leaf": q.leaf,
            "conversation": q.conversation.as_ref().map(super::conv_item), "action": q.action,
            "from_time_ns": q.from_time_ns, "to_time_ns": q.to_time_ns, "limit": self.limit}})
    }

    /// Whether mark `m` matches (`items`: the items asked for, if any).
    fn matches(&self, m: &ReviewMarkRecord, items: &Option<BTreeSet<String>>) -> bool {
        let q = &self.req;
        (q.reviewer.is_empty() || glob_match(&q.reviewer, &m.reviewer))
            && (q.action.is_empty() || m.action == q.action)
            && (q.from_time_ns == 0 || m.time_ns >= q.from_time_ns)
            && (q.to_time_ns == 0 || m.time_ns < q.to_time_ns)
            && items.as_ref().is_none_or(|want| super::items(m).iter().any(|i| want.contains(i)))
    }
}

/// The items a request asks about: leaf `n` and its conversation, and/or a
/// conversation; `None` when it names none.
fn wanted(shared: &Shared, req: &ReviewListRequest) -> Result<Option<BTreeSet<String>>, Error> {
    let mut set = BTreeSet::new();
    if let Some(n) = req.leaf {
        let size = shared.size();
        if n >= size {
            return Err(Error::OutOfRange(format!("leaf {n} beyond the log's size {size}")));
        }
        let l = crate::query::decode(n, &shared.read_leaf(n)?)?;
        set.extend(super::items_of(n, &l));
    }
    if let Some(c) = &req.conversation {
        set.insert(super::conv_item(c));
    }
    Ok((req.leaf.is_some() || req.conversation.is_some()).then_some(set))
}

/// Marks among leaves `[0, upto)` covering any of `items` (all marks when
/// `None`) that `keep` accepts, oldest first, at most `limit`.
pub fn find(
    shared: &Shared,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    items: &Option<BTreeSet<String>>,
    limit: u64,
    mut keep: impl FnMut(&ReviewMarkRecord) -> bool,
) -> Result<Vec<ReviewMarkRecord>, Error> {
    let indexed = indexed.min(upto);
    let path = index::db_path(shared.dir());
    let err = |source| Error::Index(IndexError::Sqlite { path: path.clone(), source });
    let mut leaves: BTreeSet<i64> = BTreeSet::new();
    // Items in groups (SQLite bounds the parameters of one statement).
    let groups: Vec<Vec<String>> = match items {
        None => vec![Vec::new()],
        Some(items) => items.iter().cloned().collect::<Vec<_>>().chunks(500).map(<[String]>::to_vec).collect(),
    };
    for group in groups {
        let mut sql = "SELECT DISTINCT leaf FROM review_marks WHERE leaf < ?1".to_string();
        if items.is_some() {
            let marks: Vec<String> = (0..group.len()).map(|k| format!("?{}", k + 2)).collect();
            sql.push_str(&format!(" AND item IN ({})", marks.join(",")));
        }
        let mut args: Vec<Value> = vec![(indexed as i64).into()];
        args.extend(group.into_iter().map(Value::Text));
        let mut st = conn.prepare_cached(&sql).map_err(err)?;
        for l in st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0)).map_err(err)? {
            leaves.insert(l.map_err(err)?);
        }
    }
    let mut out = Vec::new();
    for i in leaves {
        let i = i as u64;
        let l = crate::query::decode(i, &shared.read_leaf(i)?)?;
        if let Some(m) = l.entry.as_ref().and_then(|e| super::record(i, e))
            && keep(&m)
        {
            out.push(m);
            if out.len() as u64 >= limit {
                return Ok(out);
            }
        }
    }
    let q = Query::new(Filter { entry_kind: crate::entry::REVIEW_MARK.into(), ..Default::default() })?;
    scan(&q, shared, indexed, upto, u64::MAX, |h| {
        if let Some(m) = h.decoded.entry.as_ref().and_then(|e| super::record(h.leaf_index, e))
            && items.as_ref().is_none_or(|want| super::items(&m).iter().any(|i| want.contains(i)))
            && keep(&m)
        {
            out.push(m);
        }
        (out.len() as u64) < limit
    })?;
    Ok(out)
}

/// The marks `sel` asks for among leaves `[0, upto)`.
pub fn list(
    shared: &Shared,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    sel: &Selector,
) -> Result<Vec<ReviewMarkRecord>, Error> {
    let items = wanted(shared, &sel.req)?;
    find(shared, conn, indexed, upto, &items, sel.limit, |m| sel.matches(m, &items))
}

/// The marks covering each of `hits` (records by leaf and conversation), in
/// the order of `hits`.
pub fn covering(
    shared: &Shared,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    hits: &[(u64, &wiretrail_proto::v1::StoredLeaf)],
) -> Result<Vec<Vec<ReviewMarkRecord>>, Error> {
    let per_hit: Vec<Vec<String>> =
        hits.iter().map(|(i, l)| if l.record.is_some() { super::items_of(*i, l) } else { Vec::new() }).collect();
    let all: BTreeSet<String> = per_hit.iter().flatten().cloned().collect();
    if all.is_empty() {
        return Ok(vec![Vec::new(); hits.len()]);
    }
    let marks = find(shared, conn, indexed, upto, &Some(all), u64::MAX, |_| true)?;
    Ok(per_hit
        .iter()
        .map(|items| marks.iter().filter(|m| super::items(m).iter().any(|i| items.contains(i))).cloned().collect())
        .collect())
}
