//! The `wiretrail.v1.Keys` service: signing key rotation and key history.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wiretrail_proto::v1::keys_server::Keys as KeysApi;
use wiretrail_proto::v1::{KeyHistoryRequest, KeyHistoryResponse, RotateSigningKeyRequest, RotateSigningKeyResponse};

use crate::access::{Access, Logger, Returned};
use crate::authz::{Authz, Rpc};
use crate::error::Error;
use wiretrail_log::entry;
use wiretrail_log::store::Log;

/// Serves key rotation and history.
pub struct KeysService {
    /// The log.
    shared: Arc<Log>,
    /// The role check.
    authz: Authz,
    /// Appends the rotation entry (and access entries) through the commit thread.
    logger: Logger,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl KeysService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Log>, authz: Authz, logger: Logger) -> Self {
        KeysService { shared, authz, logger, rotating: tokio::sync::Mutex::new(()) }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl KeysApi for KeysService {
    async fn rotate_signing_key(
        &self,
        req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::RotateSigningKey)?;
        let _one = self.rotating.lock().await;
        let shared = self.shared.clone();
        let old = shared.verifier();
        let new = blocking(move || Ok(shared.new_signing_key()?)).await?;
        let detail = wiretrail_log::keychain::entry_detail(&old, &new.verifier(), &grant.identity, &grant.role);
        let now = wiretrail_log::store::now_ns();
        let e = entry::new(entry::KEY_ROTATION, now, &grant.identity, detail, Vec::new());
        let entry_index = self.logger.append_entry(e).await.inspect_err(|e| {
            tracing::error!(error = %e, "key_rotation entry not stored; the old key stays in force");
        })?;
        let shared = self.shared.clone();
        let (old_key, by) = (old.key_string(), grant.identity.clone());
        let (r, cp) = blocking(move || Ok(shared.activate_signing_key(new, entry_index, &old_key, &by, now)?)).await?;
        tracing::warn!(
            identity = %wiretrail_log::text::escape(&grant.identity),
            old = %r.old_key, new = %r.new_key, entry_index, "checkpoint signing key rotated"
        );
        Ok(Response::new(RotateSigningKeyResponse {
            old_key: r.old_key,
            new_key: r.new_key,
            entry_index,
            old_key_last_size: r.old_last_size,
            old_key_checkpoint: cp.note,
        }))
    }

    async fn key_history(&self, req: Request<KeyHistoryRequest>) -> Result<Response<KeyHistoryResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::KeyHistory)?;
        let access = Access::of(&req, grant, "key_history")?;
        let shared = self.shared.clone();
        let (first, links) = blocking(move || Ok((shared.keyring().first().key_string(), shared.key_links()?))).await?;
        let one = Returned { count: links.len() as u64, ..Default::default() };
        self.logger.append(&access, serde_json::json!({"rotations": links.len()}), &one).await?;
        Ok(Response::new(KeyHistoryResponse {
            first_key: first,
            links: links.iter().map(wiretrail_log::keychain::link_to_proto).collect(),
        }))
    }
}
