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

use super::{Hit, Query, scan, search};
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
}

impl QueryService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>, progress: Arc<IndexProgress>, registry: Arc<RegistryHandle>) -> Self {
        QueryService { shared, progress, registry }
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

type ResultStream = Pin<Box<dyn Stream<Item = Result<SearchResult, Status>> + Send>>;
type AlertStream = Pin<Box<dyn Stream<Item = Result<Alert, Status>> + Send>>;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Status> {
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
        let resp = blocking(move || super::inventory::inventory(dir, &registry, req)).await?;
        Ok(Response::new(resp))
    }

    async fn alerts(&self, req: Request<AlertsRequest>) -> Result<Response<AlertStream>, Status> {
        let req = req.into_inner();
        let kind = super::inventory::alerts_kind(&req).map_err(Status::from)?;
        let (tx, rx) = mpsc::channel::<Result<Alert, Status>>(256);
        tokio::spawn(super::inventory::stream_alerts(self.shared.dir().to_path_buf(), req, kind, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn search(&self, req: Request<SearchRequest>) -> Result<Response<ResultStream>, Status> {
        let req = req.into_inner();
        let q = Query::new(req.filter.unwrap_or_default()).map_err(Status::from)?;
        let (tx, rx) = mpsc::channel::<Result<SearchResult, Status>>(256);
        let shared = self.shared.clone();
        let progress = self.progress.clone();
        let follow = req.follow;
        tokio::task::spawn_blocking(move || {
            let run = || -> Result<(), Error> {
                let conn = index::open(shared.dir())?;
                let upto = shared.size();
                let indexed = progress.indexed.load(Ordering::Acquire);
                search(&q, &shared, &conn, indexed, upto, |h| tx.blocking_send(Ok(result(h))).is_ok())?;
                if !follow {
                    return Ok(());
                }
                let mut watch = shared.subscribe();
                let mut from = upto;
                let handle = tokio::runtime::Handle::current();
                loop {
                    // Wake on a commit, or stop as soon as the client goes away
                    // (a quiet log must not hold the thread or the shutdown).
                    let changed = handle.block_on(async {
                        tokio::select! {
                            r = watch.changed() => r.is_ok(),
                            _ = tx.closed() => false,
                        }
                    });
                    if !changed || tx.is_closed() {
                        return Ok(());
                    }
                    let to = shared.size();
                    let mut open = true;
                    scan(&q, &shared, from, to, u64::MAX, |h| {
                        open = tx.blocking_send(Ok(result(h))).is_ok();
                        open
                    })?;
                    if !open {
                        return Ok(());
                    }
                    from = to;
                }
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn issue_checkpoint(
        &self,
        _: Request<IssueCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let shared = self.shared.clone();
        let cp = blocking(move || Ok(shared.issue_checkpoint()?)).await?;
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
        let hashes = blocking(move || {
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
        let hashes = blocking(move || {
            if r.from_size > r.to_size {
                return Err(Error::InvalidArgument(format!("from_size {} > to_size {}", r.from_size, r.to_size)));
            }
            Ok(shared.consistency_proof(r.from_size, r.to_size)?)
        })
        .await?;
        Ok(Response::new(ConsistencyProofResponse { hashes: hashes.iter().map(|h| h.to_vec()).collect() }))
    }
}
