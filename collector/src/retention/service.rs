//! The `Retention` gRPC service (admin role): legal holds and early deletion.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wiretrail_proto::v1 as pb;

use super::{Hold, HoldFilter, Retention, RetentionError, Selector};
use crate::authz::{Authz, Rpc};

/// Serves holds and deletion requests of one store.
pub struct RetentionService {
    retention: Arc<Retention>,
    authz: Authz,
}

impl RetentionService {
    /// A service over `retention`.
    pub fn new(retention: Arc<Retention>, authz: Authz) -> Self {
        RetentionService { retention, authz }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Retention) -> Result<T, RetentionError> + Send + 'static,
    ) -> Result<T, Status> {
        let r = self.retention.clone();
        tokio::task::spawn_blocking(move || f(&r))
            .await
            .map_err(|e| Status::internal(format!("retention task: {e}")))?
            .map_err(Status::from)
    }
}

impl From<RetentionError> for Status {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Store(e) => crate::error::Error::Store(e).into(),
            RetentionError::Invalid(m) => Status::invalid_argument(m),
            RetentionError::NotFound(m) => Status::not_found(m),
            e @ RetentionError::Refused { .. } => Status::failed_precondition(e.to_string()),
            e @ (RetentionError::Append(_) | RetentionError::SharedHolds(_)) => Status::unavailable(e.to_string()),
            e => Status::internal(e.to_string()),
        }
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The filter of a request.
pub fn filter_from(f: Option<pb::HoldFilter>) -> HoldFilter {
    let f = f.unwrap_or_default();
    HoldFilter {
        selector: Selector { identity: opt(f.identity), protocol: opt(f.protocol), agent: opt(f.agent) },
        from_ns: (f.from_ns != 0).then_some(f.from_ns),
        to_ns: (f.to_ns != 0).then_some(f.to_ns),
    }
}

fn to_pb(h: Hold) -> pb::Hold {
    let s = h.filter.selector;
    pb::Hold {
        case_id: h.case,
        filter: Some(pb::HoldFilter {
            identity: s.identity.unwrap_or_default(),
            protocol: s.protocol.unwrap_or_default(),
            agent: s.agent.unwrap_or_default(),
            from_ns: h.filter.from_ns.unwrap_or(0),
            to_ns: h.filter.to_ns.unwrap_or(0),
        }),
        placed_by: h.by,
        placed_ns: h.placed_ns,
        entry_leaf: h.entry_leaf,
        origin: h.origin,
    }
}

#[tonic::async_trait]
impl pb::retention_server::Retention for RetentionService {
    async fn hold_place(&self, req: Request<pb::HoldPlaceRequest>) -> Result<Response<pb::HoldResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::Hold)?;
        let req = req.into_inner();
        let filter = filter_from(req.filter);
        let h = self.blocking(move |r| r.place_hold(&req.case_id, filter, &grant.identity)).await?;
        Ok(Response::new(pb::HoldResponse { hold: Some(to_pb(h)) }))
    }

    async fn hold_lift(&self, req: Request<pb::HoldLiftRequest>) -> Result<Response<pb::HoldResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::Hold)?;
        let case = req.into_inner().case_id;
        let h = self.blocking(move |r| r.lift_hold(&case, &grant.identity)).await?;
        Ok(Response::new(pb::HoldResponse { hold: Some(to_pb(h)) }))
    }

    async fn hold_list(&self, req: Request<pb::HoldListRequest>) -> Result<Response<pb::HoldListResponse>, Status> {
        self.authz.check(&req, Rpc::Hold)?;
        let holds = self.blocking(|r| r.holds()).await?;
        Ok(Response::new(pb::HoldListResponse { holds: holds.into_iter().map(to_pb).collect() }))
    }

    async fn retention_delete(
        &self,
        req: Request<pb::RetentionDeleteRequest>,
    ) -> Result<Response<pb::RetentionDeleteResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::RetentionDelete)?;
        let req = req.into_inner();
        let last = if req.last_leaf == 0 { req.first_leaf } else { req.last_leaf };
        let done = self
            .blocking(move |r| {
                r.check_origin(&req.origin)?;
                r.request_deletion(req.first_leaf, last, &grant.identity)
            })
            .await?;
        let deleted = done
            .into_iter()
            .map(|d| pb::RetentionDeleted {
                segment: d.segment,
                first_leaf: d.first,
                end_leaf: d.end,
                entry_leaf: d.entry_leaf,
            })
            .collect();
        Ok(Response::new(pb::RetentionDeleteResponse { deleted }))
    }
}
