//! The `wiretrail.v1.Query` service.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use wiretrail_proto::v1::query_server::Query as QueryApi;
use wiretrail_proto::v1::{
    Alert, AlertsRequest, CheckpointResponse, ConsistencyProofRequest, ConsistencyProofResponse, InclusionProofRequest,
    InclusionProofResponse, InventoryRequest, InventoryResponse, IssueCheckpointRequest, LatestCheckpointRequest,
    SearchRequest, SearchResult,
};

use super::limits::{Limiter, QueryLimits};
use super::{Hit, Query, scan, search};
use crate::checkpointer::Checkpointer;
use crate::error::Error;
use crate::index::{self, IndexProgress};
use crate::merkle::SignedCheckpoint;
use crate::registry::RegistryHandle;
use crate::store::Shared;

/// Serves search, checkpoints and proofs.
pub struct QueryService {
    /// The log.
    shared: Arc<Shared>,
    /// The indexer's mark.
    progress: Arc<IndexProgress>,
    /// The identity registry in force (custodians of inventory entries).
    registry: Arc<RegistryHandle>,
    /// The checkpoint thread.
    checkpointer: Checkpointer,
    /// Bounds on follow streams and concurrent blocking work.
    limiter: Arc<Limiter>,
}

impl QueryService {
    /// A service over `shared`.
    pub fn new(
        shared: Arc<Shared>,
        progress: Arc<IndexProgress>,
        registry: Arc<RegistryHandle>,
        checkpointer: Checkpointer,
        limits: QueryLimits,
    ) -> Self {
        QueryService { shared, progress, registry, checkpointer, limiter: Arc::new(Limiter::new(limits)) }
    }

    fn checkpoint_response(&self, cp: SignedCheckpoint) -> CheckpointResponse {
        CheckpointResponse {
            note: cp.note,
            size: cp.checkpoint.size,
            root_hash: cp.checkpoint.root.to_vec(),
            verifier_key: self.shared.verifier().key_string(),
        }
    }
}

fn result(h: Hit) -> SearchResult {
    SearchResult { leaf_index: h.leaf_index, leaf: h.leaf, decoded: Some(h.decoded) }
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

/// Runs `f` on a blocking thread once the limiter has a slot for it.
async fn blocking<T: Send + 'static>(
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

    async fn inventory(&self, req: Request<InventoryRequest>) -> Result<Response<InventoryResponse>, Status> {
        let req = req.into_inner();
        let dir = self.shared.dir().to_path_buf();
        let registry = self.registry.clone();
        let resp = blocking(&self.limiter, move || super::inventory::inventory(dir, &registry, req)).await?;
        Ok(Response::new(resp))
    }

    async fn alerts(&self, req: Request<AlertsRequest>) -> Result<Response<AlertStream>, Status> {
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
        let client = client_key(&req);
        let req = req.into_inner();
        let q = Query::new(req.filter.unwrap_or_default()).map_err(Status::from)?;
        let follow = if req.follow { Some(self.limiter.follow(&client).map_err(Status::from)?) } else { None };
        let (tx, rx) = mpsc::channel::<Result<SearchResult, Status>>(256);
        let shared = self.shared.clone();
        let progress = self.progress.clone();
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            // The search below the current size, on a blocking thread.
            let upto = shared.size();
            let first = {
                let (shared, q, tx) = (shared.clone(), q.clone(), tx.clone());
                blocking(&limiter, move || {
                    let conn = index::open(shared.dir())?;
                    let indexed = progress.indexed.load(Ordering::Acquire);
                    search(&q, &shared, &conn, indexed, upto, |h| tx.blocking_send(Ok(result(h))).is_ok())?;
                    Ok(())
                })
                .await
            };
            if let Err(s) = first {
                let _ = tx.send(Err(s)).await;
                return;
            }
            let Some(_follow_slot) = follow else { return };
            // Follow: wait without a thread; scan each new range on a blocking thread.
            let mut watch = shared.subscribe();
            let mut from = upto;
            loop {
                tokio::select! {
                    r = watch.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
                let to = shared.size();
                let (s2, q2, tx2) = (shared.clone(), q.clone(), tx.clone());
                let r = blocking(&limiter, move || {
                    scan(&q2, &s2, from, to, u64::MAX, |h| tx2.blocking_send(Ok(result(h))).is_ok())?;
                    Ok(())
                })
                .await;
                if let Err(s) = r {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
                from = to;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn issue_checkpoint(
        &self,
        _: Request<IssueCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let cp = self.checkpointer.issue().await.map_err(Status::from)?;
        Ok(Response::new(self.checkpoint_response(cp)))
    }

    async fn latest_checkpoint(
        &self,
        _: Request<LatestCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let cp = self
            .shared
            .latest_checkpoint()
            .ok_or_else(|| Status::from(Error::NotFound("no checkpoint issued yet".into())))?;
        Ok(Response::new(self.checkpoint_response(cp)))
    }

    async fn inclusion_proof(
        &self,
        req: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProofResponse>, Status> {
        let r = req.into_inner();
        let shared = self.shared.clone();
        let hashes = blocking(&self.limiter, move || {
            if r.leaf_index >= r.tree_size {
                return Err(Error::InvalidArgument(format!(
                    "leaf {} not below tree size {}",
                    r.leaf_index, r.tree_size
                )));
            }
            Ok(shared.inclusion_proof(r.leaf_index, r.tree_size)?)
        })
        .await?;
        Ok(Response::new(InclusionProofResponse { hashes: hashes.iter().map(|h| h.to_vec()).collect() }))
    }

    async fn consistency_proof(
        &self,
        req: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProofResponse>, Status> {
        let r = req.into_inner();
        let shared = self.shared.clone();
        let hashes = blocking(&self.limiter, move || {
            if r.from_size > r.to_size {
                return Err(Error::InvalidArgument(format!("from_size {} > to_size {}", r.from_size, r.to_size)));
            }
            Ok(shared.consistency_proof(r.from_size, r.to_size)?)
        })
        .await?;
        Ok(Response::new(ConsistencyProofResponse { hashes: hashes.iter().map(|h| h.to_vec()).collect() }))
    }
}
