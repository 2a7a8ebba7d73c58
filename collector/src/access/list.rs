//! `Query.AccessLog`: the access entries matching a request (reader identity,
//! time, workload whose records were returned, action, case), oldest first,
//! then with `follow` each new one. The read is itself an access entry,
//! appended before anything is sent (a follow stream is logged once, at its
//! start, with `follow: true`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tonic::Status;
use wiretrail_proto::v1::{AccessLogRequest, AccessRecord, CollectorEntry, Filter, StoredLeaf};

use super::{Access, Logger, Returned};
use crate::error::Error;
use crate::index::{self, IndexProgress};
use crate::query::limits::Limiter;
use crate::query::service::blocking;
use crate::query::{scan, search};
use crate::registry::glob_match;
use wiretrail_log::filter::{DEFAULT_LIMIT, MAX_LIMIT, Query};
use wiretrail_log::store::Log;

/// Actions an access entry may name.
pub const ACTIONS: [&str; 9] = [
    "search",
    "view",
    "inclusion_proof",
    "consistency_proof",
    "issue_checkpoint",
    "latest_checkpoint",
    "access_log",
    "review_list",
    "export_seal",
];

/// The access record of entry `e` stored at `leaf_index`.
pub fn record(leaf_index: u64, e: &CollectorEntry) -> AccessRecord {
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    AccessRecord {
        leaf_index,
        time_ns: e.time_ns,
        identity: s("identity"),
        role: s("role"),
        action: s("action"),
        case_id: s("case_id"),
        purpose: s("purpose"),
        returned: d.get("returned").and_then(|v| v.as_u64()).unwrap_or(0),
        workloads: d
            .get("workloads")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|w| w.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        detail_json: e.detail_json.clone(),
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Selector {
    req: AccessLogRequest,
    /// The entry query (kind, time bounds).
    query: Query,
    limit: u64,
}

impl Selector {
    /// Validates `req`.
    pub fn new(req: AccessLogRequest) -> Result<Selector, Error> {
        if !req.action.is_empty() && !ACTIONS.contains(&req.action.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "unknown action {:?}; one of {}",
                req.action,
                ACTIONS.join(", ")
            )));
        }
        if req.limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!("limit {} above {MAX_LIMIT}", req.limit)));
        }
        let query = Query::new(Filter {
            from_time_ns: req.from_time_ns,
            to_time_ns: req.to_time_ns,
            entry_kind: wiretrail_log::entry::ACCESS.into(),
            limit: MAX_LIMIT,
            ..Default::default()
        })?;
        let limit = if req.limit == 0 { DEFAULT_LIMIT } else { req.limit };
        Ok(Selector { req, query, limit })
    }

    /// The access record of leaf `l` when it matches.
    pub fn select(&self, leaf_index: u64, l: &StoredLeaf) -> Option<AccessRecord> {
        if !self.query.matches(l) {
            return None;
        }
        let r = record(leaf_index, l.entry.as_ref()?);
        let q = &self.req;
        let ok = (q.identity.is_empty() || glob_match(&q.identity, &r.identity))
            && (q.workload.is_empty() || r.workloads.iter().any(|w| glob_match(&q.workload, w)))
            && (q.action.is_empty() || r.action == q.action)
            && (q.case_id.is_empty() || r.case_id == q.case_id);
        ok.then_some(r)
    }

    /// Whether the request follows new entries.
    pub fn follow(&self) -> bool {
        self.req.follow
    }

    /// The request as the access entry's detail.
    fn detail(&self) -> serde_json::Value {
        let q = &self.req;
        serde_json::json!({"filter": {"identity": q.identity, "from_time_ns": q.from_time_ns,
            "to_time_ns": q.to_time_ns, "workload": q.workload, "action": q.action, "case_id": q.case_id,
            "limit": self.limit}, "follow": q.follow})
    }
}

/// What a stream task needs.
pub struct Ctx {
    /// The log.
    pub shared: Arc<Log>,
    /// The indexer's mark.
    pub progress: Arc<IndexProgress>,
    /// Blocking-work bounds.
    pub limiter: Arc<Limiter>,
    /// Where the read is logged.
    pub logger: Logger,
}

/// Sends the matching access records on `tx`: the read is logged first; on
/// `follow`, new entries follow until the client goes.
pub async fn stream(ctx: Ctx, access: Access, sel: Selector, tx: mpsc::Sender<Result<AccessRecord, Status>>) {
    let Ctx { shared, progress, limiter, logger } = ctx;
    let upto = shared.size();
    let found = {
        let (shared, sel) = (shared.clone(), sel.clone());
        blocking(&limiter, move || {
            let conn = index::open(shared.dir())?;
            let indexed = progress.indexed.load(Ordering::Acquire);
            let mut out = Vec::new();
            search(&sel.query, &shared, &conn, indexed, upto, |h| {
                if let Some(r) = sel.select(h.leaf_index, &h.decoded) {
                    out.push(r);
                }
                (out.len() as u64) < sel.limit
            })?;
            Ok(out)
        })
        .await
    };
    let found = match found {
        Ok(f) => f,
        Err(s) => {
            let _ = tx.send(Err(s)).await;
            return;
        }
    };
    let returned = Returned { count: found.len() as u64, ..Default::default() };
    if let Err(e) = logger.append(&access, sel.detail(), &returned).await {
        let _ = tx.send(Err(e.into())).await;
        return;
    }
    for r in found {
        if tx.send(Ok(r)).await.is_err() {
            return;
        }
    }
    if !sel.req.follow {
        return;
    }
    let mut watch = shared.subscribe();
    let mut from = upto;
    loop {
        let to = shared.size();
        if to > from {
            let (s2, sel2, tx2) = (shared.clone(), sel.clone(), tx.clone());
            let r = blocking(&limiter, move || {
                scan(&sel2.query, &s2, from, to, u64::MAX, |h| match sel2.select(h.leaf_index, &h.decoded) {
                    Some(r) => tx2.blocking_send(Ok(r)).is_ok(),
                    None => true,
                })?;
                Ok(())
            })
            .await;
            if let Err(s) = r {
                let _ = tx.send(Err(s)).await;
                return;
            }
            from = to;
        }
        tokio::select! {
            r = watch.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}
