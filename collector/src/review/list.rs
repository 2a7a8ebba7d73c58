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
use crate::query::scan;
use crate::registry::glob_match;
use wiretrail_log::filter::{DEFAULT_LIMIT, MAX_LIMIT, Query};
use wiretrail_log::store::Log;

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
fn wanted(shared: &Log, req: &ReviewListRequest) -> Result<Option<BTreeSet<String>>, Error> {
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

/// Conditions the index answers before any leaf is read (`keep` still
/// decides): action, time bounds, reviewer glob.
#[derive(Debug, Default, Clone)]
pub struct Narrow {
    /// Only this action ("" = any).
    pub action: String,
    /// Inclusive lower bound of the mark's time (0 = open).
    pub from_time_ns: i64,
    /// Exclusive upper bound (0 = open).
    pub to_time_ns: i64,
    /// Reviewer glob (`*`, `?`); "" = any.
    pub reviewer: String,
}

impl Narrow {
    /// SQL conditions on `review_marks` and their values.
    fn sql(&self) -> (Vec<&'static str>, Vec<Value>) {
        let (mut conds, mut args) = (Vec::new(), Vec::new());
        if !self.action.is_empty() {
            conds.push("action = ?");
            args.push(Value::Text(self.action.clone()));
        }
        if self.from_time_ns != 0 {
            conds.push("t >= ?");
            args.push(Value::Integer(self.from_time_ns));
        }
        if self.to_time_ns != 0 {
            conds.push("t < ?");
            args.push(Value::Integer(self.to_time_ns));
        }
        // SQLite's GLOB has the same `*` and `?`, but `[` opens a class: such
        // patterns are left to `keep`.
        if !self.reviewer.is_empty() && !self.reviewer.contains('[') {
            conds.push("reviewer GLOB ?");
            args.push(Value::Text(self.reviewer.clone()));
        }
        (conds, args)
    }
}

/// Marks among leaves `[0, upto)` covering any of `items` (all marks when
/// `None`) that `keep` accepts, oldest first, at most `limit`; `narrow`
/// lets the index skip marks `keep` would refuse.
#[allow(clippy::too_many_arguments)]
pub fn find(
    shared: &Log,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    items: &Option<BTreeSet<String>>,
    narrow: &Narrow,
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
    let (conds, narrow_args) = narrow.sql();
    for group in groups {
        let mut sql = "SELECT DISTINCT leaf FROM review_marks WHERE leaf < ?".to_string();
        for c in &conds {
            sql.push_str(" AND ");
            sql.push_str(c);
        }
        if items.is_some() {
            sql.push_str(&format!(" AND item IN ({})", vec!["?"; group.len()].join(",")));
        }
        let mut args: Vec<Value> = vec![(indexed as i64).into()];
        args.extend(narrow_args.iter().cloned());
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
    let q = Query::new(Filter { entry_kind: wiretrail_log::entry::REVIEW_MARK.into(), ..Default::default() })?;
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
    shared: &Log,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    sel: &Selector,
) -> Result<Vec<ReviewMarkRecord>, Error> {
    let items = wanted(shared, &sel.req)?;
    let q = &sel.req;
    let narrow = Narrow {
        action: q.action.clone(),
        from_time_ns: q.from_time_ns,
        to_time_ns: q.to_time_ns,
        reviewer: q.reviewer.clone(),
    };
    find(shared, conn, indexed, upto, &items, &narrow, sel.limit, |m| sel.matches(m, &items))
}

/// The marks covering each of `hits` (records by leaf and conversation), in
/// the order of `hits`.
pub fn covering(
    shared: &Log,
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
    let marks = find(shared, conn, indexed, upto, &Some(all), &Narrow::default(), u64::MAX, |_| true)?;
    Ok(per_hit
        .iter()
        .map(|items| marks.iter().filter(|m| super::items(m).iter().any(|i| items.contains(i))).cloned().collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use wiretrail_proto::v1::{Record, ReviewConversation, StoredLeaf};

    use super::*;
    use crate::authz::Grant;
    use wiretrail_log::store::{StoreConfig, Writer};

    fn rec(conn_id: u64) -> Vec<u8> {
        let record = Record { conn_id, ..Default::default() };
        StoredLeaf { agent_id: "a".into(), boot_id: "b".into(), record: Some(record), ..Default::default() }
            .encode_to_vec()
    }

    fn mark(leaves: &[u64], conv: Option<ReviewConversation>, action: &str, t: i64) -> Vec<u8> {
        let g = Grant { identity: "CN=r".into(), role: "reviewer".into() };
        let d = crate::review::detail(&g, action, "c", "", leaves, conv.as_ref());
        wiretrail_log::entry::leaf(
            wiretrail_log::entry::new(wiretrail_log::entry::REVIEW_MARK, t, "CN=r", d, vec![]),
            "",
        )
    }

    /// The same answers from the log's tail (nothing indexed) and from the index.
    #[test]
    fn marks_are_found_by_scan_and_by_index_alike() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, shared) = Writer::open(dir.path(), StoreConfig::default()).unwrap();
        let conv = ReviewConversation { agent_id: "a".into(), boot_id: "b".into(), conn_id: 5 };
        // 0: conn 5, 1: conn 6, 2: mark leaf 1, 3: mark conversation 5, 4: conn 5.
        w.append(&[rec(5), rec(6), mark(&[1], None, "closed", 100), mark(&[], Some(conv.clone()), "escalated", 200)])
            .unwrap();
        w.append(&[rec(5)]).unwrap();
        w.commit().unwrap();
        let size = shared.size();
        let mut conn = crate::index::open(dir.path()).unwrap();
        let ask = |c: &Connection, indexed: u64, req: ReviewListRequest| -> Vec<u64> {
            let sel = Selector::new(req).unwrap();
            list(&shared, c, indexed, size, &sel).unwrap().iter().map(|m| m.leaf_index).collect()
        };
        let cases = [
            (ReviewListRequest::default(), vec![2, 3]),
            (ReviewListRequest { leaf: Some(4), ..Default::default() }, vec![3]),
            (ReviewListRequest { leaf: Some(1), ..Default::default() }, vec![2]),
            (ReviewListRequest { leaf: Some(0), action: "closed".into(), ..Default::default() }, vec![]),
            (ReviewListRequest { conversation: Some(conv), ..Default::default() }, vec![3]),
            (ReviewListRequest { from_time_ns: 150, ..Default::default() }, vec![3]),
            (ReviewListRequest { to_time_ns: 150, ..Default::default() }, vec![2]),
            (ReviewListRequest { reviewer: "CN=x*".into(), ..Default::default() }, vec![]),
            (ReviewListRequest { reviewer: "CN=?".into(), action: "escalated".into(), ..Default::default() }, vec![3]),
        ];
        for (req, want) in cases.clone() {
            assert_eq!(ask(&conn, 0, req.clone()), want, "scan: {req:?}");
        }
        let registry = Arc::new(crate::registry::RegistryHandle::open(None).unwrap());
        let mut tracker = crate::inventory::Tracker::new(registry);
        crate::index::index_range(&mut conn, &shared, &mut tracker, 0, size).unwrap();
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM review_marks", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2, "one row per marked item");
        for (req, want) in cases {
            assert_eq!(ask(&conn, size, req.clone()), want, "index: {req:?}");
        }
        // The index narrows by action, time and reviewer before any leaf is read.
        let mut read = 0;
        let narrow = Narrow { action: "closed".into(), from_time_ns: 50, to_time_ns: 150, reviewer: "CN=*".into() };
        let found = find(&shared, &conn, size, size, &None, &narrow, 10, |_| {
            read += 1;
            true
        })
        .unwrap();
        assert_eq!((found.len(), read), (1, 1));
        let l4 = crate::query::decode(4, &shared.read_leaf(4).unwrap()).unwrap();
        let l0 = crate::query::decode(0, &shared.read_leaf(0).unwrap()).unwrap();
        let per = covering(&shared, &conn, size, size, &[(4, &l4), (0, &l0)]).unwrap();
        assert_eq!(
            per.iter().map(|v| v.iter().map(|m| m.leaf_index).collect::<Vec<_>>()).collect::<Vec<_>>(),
            [vec![3], vec![3]]
        );
    }
}
