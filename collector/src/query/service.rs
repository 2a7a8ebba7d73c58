//! The `wiretrail.v1.Query` service.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use wiretrail_proto::v1::query_server::Query as QueryApi;
use wiretrail_proto::v1::{
    AccessLogRequest, AccessRecord, Alert, AlertsRequest, CheckpointResponse, ConsistencyProofRequest,
    ConsistencyProofResponse, InclusionProofRequest, InclusionProofResponse, InclusionProofsRequest,
    InclusionProofsResponse, InventoryRequest, InventoryResponse, IssueCheckpointRequest, LatestCheckpointRequest,
    SearchRequest, SearchResult, ViewRequest,
};

use super::limits::{Limiter, QueryLimits};
use super::{Hit, scan, search};
use crate::access::{Access, Logger, Returned};
use crate::authz::{Authz, Rpc};
use crate::checkpointer::Checkpointer;
use crate::error::Error;
use crate::index::{self, IndexProgress};
use crate::registry::RegistryHandle;
use wiretrail_log::filter::Query;
use wiretrail_log::merkle::SignedCheckpoint;
use wiretrail_log::store::Log;

/// Serves search, checkpoints and proofs.
pub struct QueryService {
    /// The log.
    shared: Arc<Log>,
    /// The indexer's mark.
    progress: Arc<IndexProgress>,
    /// The identity registry in force (custodians of inventory entries).
    registry: Arc<RegistryHandle>,
    /// The checkpoint thread.
    checkpointer: Checkpointer,
    /// Bounds on follow streams and concurrent blocking work.
    limiter: Arc<Limiter>,
    /// The role check every method makes first.
    authz: Authz,
    /// Where reads are logged (access entries).
    logger: Logger,
    /// Clustered mode: every collector's log, for searches that ask (see [`super::clustered`]).
    clickhouse: Option<Arc<crate::clickhouse::reader::Reader>>,
    /// This log's origin, named by every result.
    origin: String,
}

/// Most leaves one `View` returns.
pub const MAX_VIEW: u64 = 10_000;

/// Most leaves one `InclusionProofs` call proves.
pub const MAX_PROOFS: usize = 10_000;

/// The inclusion proof of leaf `i` in the tree of `size` leaves.
fn prove(shared: &Log, i: u64, size: u64) -> Result<InclusionProofResponse, Error> {
    if i >= size {
        return Err(Error::InvalidArgument(format!("leaf {i} not below tree size {size}")));
    }
    Ok(InclusionProofResponse { hashes: shared.inclusion_proof(i, size)?.iter().map(|h| h.to_vec()).collect() })
}

/// `leaves` as runs of consecutive indexes (`[first, last]`), for an access entry.
fn leaf_runs(leaves: &[u64]) -> Vec<[u64; 2]> {
    let mut runs: Vec<[u64; 2]> = Vec::new();
    for &i in leaves {
        match runs.last_mut() {
            Some(r) if r[1].checked_add(1) == Some(i) => r[1] = i,
            _ => runs.push([i, i]),
        }
    }
    runs
}

impl QueryService {
    /// A service over `shared`.
    pub fn new(
        shared: Arc<Log>,
        progress: Arc<IndexProgress>,
        registry: Arc<RegistryHandle>,
        checkpointer: Checkpointer,
        limits: QueryLimits,
        authz: Authz,
        logger: Logger,
    ) -> Self {
        let limiter = Arc::new(Limiter::new(limits));
        let origin = shared.verifier().name;
        QueryService { shared, progress, registry, checkpointer, limiter, authz, logger, clickhouse: None, origin }
    }

    /// Clustered mode: searches with `all_logs` are answered from every log in ClickHouse.
    pub fn with_clickhouse(mut self, reader: crate::clickhouse::reader::Reader) -> Self {
        self.clickhouse = Some(Arc::new(reader));
        self
    }

    /// Logs an access answered by one item (a proof, a checkpoint).
    async fn log_one(&self, access: &Access, detail: serde_json::Value) -> Result<(), Status> {
        let one = Returned { count: 1, ..Default::default() };
        self.logger.append(access, detail, &one).await?;
        Ok(())
    }

    fn checkpoint_response(&self, cp: SignedCheckpoint) -> CheckpointResponse {
        CheckpointResponse {
            note: cp.note,
            size: cp.checkpoint.size,
            root_hash: cp.checkpoint.root.to_vec(),
            // The key valid at this size (a rotation changes it).
            verifier_key: self.shared.keyring().key_for(cp.checkpoint.size).key_string(),
        }
    }
}

/// `h` of the log `origin` as a result.
pub(super) fn result(h: Hit, origin: &str) -> SearchResult {
    let shipped_by = if h.decoded.entry.is_some() { "collector".into() } else { h.decoded.peer_identity.clone() };
    SearchResult {
        leaf_index: h.leaf_index,
        leaf: h.leaf,
        decoded: Some(h.decoded),
        shipped_by,
        origin: origin.to_string(),
        ..Default::default()
    }
}

/// The hits of `hits` (of the log `origin`) as results, with what they return.
fn results(hits: Vec<Hit>, origin: &str) -> (Vec<Result<SearchResult, Status>>, Returned) {
    let mut returned = Returned::default();
    let out = hits
        .into_iter()
        .map(|h| {
            returned.add(&h.decoded);
            Ok(result(h, origin))
        })
        .collect();
    (out, returned)
}

/// Who a request counts against: its certificate identity, or its IP address
/// when it has no certificate.
fn client_key<T>(req: &Request<T>) -> String {
    let id = crate::ingest::peer_identity(req);
    match req.remote_addr() {
        Some(a) if id.starts_with("unauthenticated") => format!("{id}@{}", a.ip()),
        _ => id,
    }
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<SearchResult, Status>> + Send>>;
type AlertStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;
type AccessStream = Pin<Box<dyn Stream<Item = Result<AccessRecord, Status>> + Send>>;

/// Runs `f` on a blocking thread once the limiter has a slot for it.
pub async fn blocking<T: Send + 'static>(
    limiter: &Limiter,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    let _slot = limiter.work().await;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl QueryApi for QueryService {
    type SearchStream = ResultStream;
    type AlertsStream = AlertStream;
    type ViewStream = ResultStream;
    type AccessLogStream = AccessStream;

    async fn inventory(&self, req: Request<InventoryRequest>) -> Result<Response<InventoryResponse>, Status> {
        self.authz.check(&req, Rpc::Inventory)?;
        let req = req.into_inner();
        let dir = self.shared.dir().to_path_buf();
        let registry = self.registry.clone();
        let resp = blocking(&self.limiter, move || super::inventory::inventory(dir, &registry, req)).await?;
        Ok(Response::new(resp))
    }

    async fn alerts(&self, req: Request<AlertsRequest>) -> Result<Response<AlertStream>, Status> {
        self.authz.check(&req, Rpc::Alerts)?;
        let client = client_key(&req);
        let req = req.into_inner();
        let kind = super::inventory::alerts_kind(&req).map_err(Status::from)?;
        let slot = if req.follow { Some(self.limiter.follow(&client).map_err(Status::from)?) } else { None };
        let (tx, rx) = mpsc::channel::<Result<Alert, Status>>(256);
        let dir = self.shared.dir().to_path_buf();
        tokio::spawn(async move {
            let _slot = slot;
            super::inventory::stream_alerts(dir, req, kind, tx).await
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn search(&self, req: Request<SearchRequest>) -> Result<Response<ResultStream>, Status> {
        let access_entries =
            req.get_ref().filter.as_ref().is_some_and(|f| f.entry_kind == wiretrail_log::entry::ACCESS);
        let grant = self.authz.check(&req, if access_entries { Rpc::SearchAccessEntries } else { Rpc::Search })?;
        let access = Access::of(&req, grant, "search")?;
        let client = client_key(&req);
        let req = req.into_inner();
        if access_entries && req.follow {
            // Each delivery would be an access entry matching the search itself.
            return Err(
                Error::InvalidArgument("follow the access log with AccessLog (wiretrail access-log)".into()).into()
            );
        }
        let filter = req.filter.unwrap_or_default();
        let q = Query::new(filter.clone()).map_err(|e| Status::from(Error::from(e)))?;
        if req.all_logs {
            let ch = match (&self.clickhouse, req.follow, access_entries) {
                (None, _, _) => Err("all_logs: this collector does not write to ClickHouse (clustered mode)"),
                (_, true, _) => Err("all_logs: follow streams one collector's own log"),
                (_, _, true) => Err("all_logs: access entries are read from each collector's own log"),
                (Some(ch), false, false) => Ok(ch.clone()),
            }
            .map_err(|m| Status::from(Error::InvalidArgument(m.into())))?;
            let (logger, filter_json) = (self.logger.clone(), wiretrail_log::bundle::render::filter_json(&filter));
            let out = super::clustered::search(&ch, &self.limiter, &q, &access, &logger, filter_json).await?;
            let stream = tokio_stream::iter(out.into_iter().map(Ok));
            return Ok(Response::new(Box::pin(stream)));
        }
        let follow = if req.follow { Some(self.limiter.follow(&client).map_err(Status::from)?) } else { None };
        let (tx, rx) = mpsc::channel::<Result<SearchResult, Status>>(256);
        let shared = self.shared.clone();
        let progress = self.progress.clone();
        let limiter = self.limiter.clone();
        let logger = self.logger.clone();
        let filter_json = wiretrail_log::bundle::render::filter_json(&filter);
        let origin = self.origin.clone();
        tokio::spawn(async move {
            // The hits below the current size (leaf indices), on a blocking thread.
            let upto = shared.size();
            let found = {
                let (shared, q) = (shared.clone(), q.clone());
                blocking(&limiter, move || {
                    let conn = index::open(shared.dir())?;
                    let indexed = progress.indexed.load(Ordering::Acquire);
                    let (mut leaves, mut returned) = (Vec::new(), Returned::default());
                    search(&q, &shared, &conn, indexed, upto, |h| {
                        returned.add(&h.decoded);
                        leaves.push(h.leaf_index);
                        true
                    })?;
                    Ok((leaves, returned))
                })
                .await
            };
            let (leaves, returned) = match found {
                Ok(f) => f,
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            // Logged (durably) before anything is sent.
            let detail = serde_json::json!({"filter": filter_json, "follow": follow.is_some(), "tree_size": upto});
            if let Err(e) = logger.append(&access, detail, &returned).await {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            let sent = {
                let (shared, tx, origin) = (shared.clone(), tx.clone(), origin.clone());
                blocking(&limiter, move || {
                    for i in leaves {
                        let leaf = shared.read_leaf(i)?;
                        let decoded = super::decode(i, &leaf)?;
                        if tx.blocking_send(Ok(result(Hit { leaf_index: i, leaf, decoded }, &origin))).is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
                .await
            };
            if let Err(s) = sent {
                let _ = tx.send(Err(s)).await;
                return;
            }
            let Some(_follow_slot) = follow else { return };
            // Follow: wait without a thread; scan each new range on a blocking
            // thread; each delivery is logged before it is sent.
            let mut watch = shared.subscribe();
            let mut from = upto;
            loop {
                tokio::select! {
                    r = watch.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
                let to = shared.size();
                let (s2, q2) = (shared.clone(), q.clone());
                let r = blocking(&limiter, move || {
                    let mut hits = Vec::new();
                    scan(&q2, &s2, from, to, u64::MAX, |h| {
                        hits.push(h);
                        true
                    })?;
                    Ok(hits)
                })
                .await;
                let hits = match r {
                    Ok(h) => h,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                from = to;
                if hits.is_empty() {
                    continue;
                }
                let (out, returned) = results(hits, &origin);
                let detail = serde_json::json!({"filter": filter_json, "follow": true,
                    "first_leaf": out.first().and_then(|r| r.as_ref().ok()).map(|r| r.leaf_index),
                    "last_leaf": out.last().and_then(|r| r.as_ref().ok()).map(|r| r.leaf_index)});
                if let Err(e) = logger.append(&access, detail, &returned).await {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                for r in out {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn view(&self, req: Request<ViewRequest>) -> Result<Response<ResultStream>, Status> {
        let grant = self.authz.check(&req, Rpc::View)?;
        let access = Access::of(&req, grant, "view")?;
        let r = req.into_inner();
        let (first, last) = (r.first_leaf, r.last_leaf);
        if first > last || last - first >= MAX_VIEW {
            return Err(Error::InvalidArgument(format!(
                "leaves {first}..={last}: first must not exceed last, at most {MAX_VIEW} leaves"
            ))
            .into());
        }
        let (shared, progress) = (self.shared.clone(), self.progress.clone());
        let (hits, marks) = blocking(&self.limiter, move || {
            let size = shared.size();
            if last >= size {
                return Err(Error::OutOfRange(format!("leaf {last} beyond the log's size {size}")));
            }
            let mut hits = Vec::new();
            for i in first..=last {
                let leaf = shared.read_leaf(i)?;
                let decoded = super::decode(i, &leaf)?;
                // Access entries are the auditors' (AccessLog).
                if decoded.entry.as_ref().is_some_and(|e| e.kind == wiretrail_log::entry::ACCESS) {
                    continue;
                }
                hits.push(Hit { leaf_index: i, leaf, decoded });
            }
            // The review marks on each record (by leaf or conversation).
            let conn = index::open(shared.dir())?;
            let indexed = progress.indexed.load(Ordering::Acquire);
            let refs: Vec<_> = hits.iter().map(|h| (h.leaf_index, &h.decoded)).collect();
            let marks = crate::review::list::covering(&shared, &conn, indexed, size, &refs)?;
            Ok((hits, marks))
        })
        .await?;
        let (mut out, returned) = results(hits, &self.origin);
        for (r, m) in out.iter_mut().zip(marks) {
            if let Ok(r) = r {
                r.review_marks = m;
            }
        }
        let detail = serde_json::json!({"first_leaf": first, "last_leaf": last});
        self.logger.append(&access, detail, &returned).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn access_log(&self, req: Request<AccessLogRequest>) -> Result<Response<AccessStream>, Status> {
        let grant = self.authz.check(&req, Rpc::AccessLog)?;
        let access = Access::of(&req, grant, "access_log")?;
        let client = client_key(&req);
        let sel = crate::access::list::Selector::new(req.into_inner())?;
        let follow = if sel.follow() { Some(self.limiter.follow(&client).map_err(Status::from)?) } else { None };
        let (tx, rx) = mpsc::channel::<Result<AccessRecord, Status>>(256);
        let ctx = crate::access::list::Ctx {
            shared: self.shared.clone(),
            progress: self.progress.clone(),
            limiter: self.limiter.clone(),
            logger: self.logger.clone(),
        };
        tokio::spawn(async move {
            let _slot = follow;
            crate::access::list::stream(ctx, access, sel, tx).await
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn issue_checkpoint(
        &self,
        req: Request<IssueCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::IssueCheckpoint)?;
        let access = Access::of(&req, grant, "issue_checkpoint")?;
        let cp = self.checkpointer.issue().await.map_err(Status::from)?;
        self.log_one(&access, serde_json::json!({"tree_size": cp.checkpoint.size})).await?;
        Ok(Response::new(self.checkpoint_response(cp)))
    }

    async fn latest_checkpoint(
        &self,
        req: Request<LatestCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::LatestCheckpoint)?;
        let access = Access::of(&req, grant, "latest_checkpoint")?;
        let cp = self
            .shared
            .latest_checkpoint()
            .ok_or_else(|| Status::from(Error::NotFound("no checkpoint issued yet".into())))?;
        self.log_one(&access, serde_json::json!({"tree_size": cp.checkpoint.size})).await?;
        Ok(Response::new(self.checkpoint_response(cp)))
    }

    async fn inclusion_proof(
        &self,
        req: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProofResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::InclusionProof)?;
        let access = Access::of(&req, grant, "inclusion_proof")?;
        let r = req.into_inner();
        let shared = self.shared.clone();
        let proof = blocking(&self.limiter, move || prove(&shared, r.leaf_index, r.tree_size)).await?;
        self.log_one(&access, serde_json::json!({"leaf_index": r.leaf_index, "tree_size": r.tree_size})).await?;
        Ok(Response::new(proof))
    }

    async fn inclusion_proofs(
        &self,
        req: Request<InclusionProofsRequest>,
    ) -> Result<Response<InclusionProofsResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::InclusionProof)?;
        let access = Access::of(&req, grant, "inclusion_proof")?;
        let r = req.into_inner();
        if r.leaf_indexes.len() > MAX_PROOFS {
            return Err(Error::InvalidArgument(format!(
                "{} leaves: at most {MAX_PROOFS} per call",
                r.leaf_indexes.len()
            ))
            .into());
        }
        let (shared, size) = (self.shared.clone(), r.tree_size);
        let leaves = r.leaf_indexes.clone();
        let proofs: Vec<InclusionProofResponse> =
            blocking(&self.limiter, move || leaves.iter().map(|&i| prove(&shared, i, size)).collect()).await?;
        let detail = serde_json::json!({"tree_size": size, "leaves": r.leaf_indexes.len(),
            "leaf_runs": leaf_runs(&r.leaf_indexes)});
        let returned = Returned { count: proofs.len() as u64, ..Default::default() };
        self.logger.append(&access, detail, &returned).await?;
        Ok(Response::new(InclusionProofsResponse { proofs }))
    }

    async fn consistency_proof(
        &self,
        req: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProofResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::ConsistencyProof)?;
        let access = Access::of(&req, grant, "consistency_proof")?;
        let r = req.into_inner();
        let shared = self.shared.clone();
        let hashes = blocking(&self.limiter, move || {
            if r.from_size > r.to_size {
                return Err(Error::InvalidArgument(format!("from_size {} > to_size {}", r.from_size, r.to_size)));
            }
            Ok(shared.consistency_proof(r.from_size, r.to_size)?)
        })
        .await?;
        self.log_one(&access, serde_json::json!({"from_size": r.from_size, "to_size": r.to_size})).await?;
        Ok(Response::new(ConsistencyProofResponse { hashes: hashes.iter().map(|h| h.to_vec()).collect() }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn leaf_runs_are_consecutive_ranges() {
        assert_eq!(super::leaf_runs(&[1, 2, 3, 7, 9, 10]), vec![[1, 3], [7, 7], [9, 10]]);
        assert!(super::leaf_runs(&[]).is_empty());
        assert_eq!(super::leaf_runs(&[u64::MAX, 0]), vec![[u64::MAX, u64::MAX], [0, 0]]);
    }
}
