//! The `wiretrail.v1.Review` service: `ReviewMark` (reviewer role) appends a
//! `review_mark` entry once the request is checked; `ReviewList` (reviewer or
//! auditor) lists marks and is logged as an access (`review_list`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use wiretrail_proto::v1::review_server::Review as ReviewApi;
use wiretrail_proto::v1::{
    ReviewListRequest, ReviewMarkRecord, ReviewMarkRequest, ReviewMarkResponse, SealExportRequest, SealExportResponse,
};

use super::list::Selector;
use super::{MAX_COMMENT, MAX_LEAVES};
use crate::access::{Access, Logger, Returned};
use crate::authz::{Authz, Rpc};
use crate::error::Error;
use crate::index::{self, IndexProgress};
use crate::ingest::commit::Work;
use crate::query::limits::{Limiter, QueryLimits};
use crate::query::service::blocking;
use wiretrail_log::store::Log;

/// Serves review marks.
pub struct ReviewService {
    shared: Arc<Log>,
    progress: Arc<IndexProgress>,
    limiter: Arc<Limiter>,
    authz: Authz,
    /// The commit queue (weak: never keeps the commit thread from stopping).
    jobs: mpsc::WeakSender<Work>,
    logger: Logger,
}

impl ReviewService {
    /// A service over `shared` appending through `jobs`.
    pub fn new(
        shared: Arc<Log>,
        progress: Arc<IndexProgress>,
        limits: QueryLimits,
        authz: Authz,
        jobs: &mpsc::Sender<Work>,
    ) -> Self {
        let logger = Logger::new(jobs);
        ReviewService {
            shared,
            progress,
            limiter: Arc::new(Limiter::new(limits)),
            authz,
            jobs: jobs.downgrade(),
            logger,
        }
    }

    /// Appends `leaf` and waits until it is durable; its leaf index.
    async fn append(&self, leaf: Vec<u8>) -> Result<u64, Error> {
        let gone = || Error::Unavailable("collector is shutting down; mark not stored".into());
        let (reply, rx) = oneshot::channel();
        let jobs = self.jobs.upgrade().ok_or_else(gone)?;
        jobs.send(Work::Entry { leaf, reply }).await.map_err(|_| gone())?;
        drop(jobs);
        rx.await.map_err(|_| gone())?
    }
}

/// Checks the comment: present, bounded, no control characters but newlines and tabs.
fn check_comment(c: &str) -> Result<(), Error> {
    if c.trim().is_empty() {
        return Err(Error::InvalidArgument("a review mark needs a comment".into()));
    }
    if c.chars().count() > MAX_COMMENT || c.chars().any(|ch| ch.is_control() && ch != '\n' && ch != '\t') {
        return Err(Error::InvalidArgument(format!(
            "the comment must be at most {MAX_COMMENT} characters without control characters"
        )));
    }
    Ok(())
}

type MarkStream = Pin<Box<dyn Stream<Item = Result<ReviewMarkRecord, Status>> + Send>>;

#[tonic::async_trait]
impl ReviewApi for ReviewService {
    type ReviewListStream = MarkStream;

    async fn review_mark(&self, req: Request<ReviewMarkRequest>) -> Result<Response<ReviewMarkResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::ReviewMark)?;
        let case_id = Access::of(&req, grant.clone(), "review_mark")?.case_id;
        let r = req.into_inner();
        super::check_action(&r.action)?;
        check_comment(&r.comment)?;
        let mut leaves = r.leaves.clone();
        leaves.sort_unstable();
        leaves.dedup();
        match (&r.conversation, leaves.len()) {
            (Some(_), n) if n > 0 => {
                return Err(Error::InvalidArgument("mark either leaves or a conversation, not both".into()).into());
            }
            (None, 0) => {
                return Err(Error::InvalidArgument("name the leaves or the conversation reviewed".into()).into());
            }
            (None, n) if n > MAX_LEAVES => {
                return Err(Error::InvalidArgument(format!("{n} leaves: at most {MAX_LEAVES} per mark")).into());
            }
            (Some(c), _) => super::check_conversation(c)?,
            (None, _) => {}
        }
        if !leaves.is_empty() {
            // Each leaf must be a record in the log (not a collector entry).
            let (shared, leaves) = (self.shared.clone(), leaves.clone());
            blocking(&self.limiter, move || {
                let size = shared.size();
                for &i in &leaves {
                    if i >= size {
                        return Err(Error::OutOfRange(format!("leaf {i} beyond the log's size {size}")));
                    }
                    let l = crate::query::decode(i, &shared.read_leaf(i)?)?;
                    if l.record.is_none() {
                        return Err(Error::InvalidArgument(format!("leaf {i} is a collector entry, not a record")));
                    }
                }
                Ok(())
            })
            .await?;
        }
        let detail = super::detail(&grant, &r.action, &r.comment, &case_id, &leaves, r.conversation.as_ref());
        let time_ns = wiretrail_log::store::now_ns();
        let e =
            wiretrail_log::entry::new(wiretrail_log::entry::REVIEW_MARK, time_ns, &grant.identity, detail, Vec::new());
        let agent = r.conversation.as_ref().map(|c| c.agent_id.as_str()).unwrap_or("");
        let leaf_index = self.append(wiretrail_log::entry::leaf(e, agent)).await?;
        tracing::info!(leaf_index, action = %r.action, reviewer = %wiretrail_log::text::escape(&grant.identity),
            leaves = leaves.len(), conversation = r.conversation.is_some(), "review mark stored");
        Ok(Response::new(ReviewMarkResponse { leaf_index, time_ns, reviewer: grant.identity }))
    }

    async fn review_list(&self, req: Request<ReviewListRequest>) -> Result<Response<MarkStream>, Status> {
        let grant = self.authz.check(&req, Rpc::ReviewList)?;
        let access = Access::of(&req, grant, "review_list")?;
        let sel = Selector::new(req.into_inner())?;
        let (shared, progress, s2) = (self.shared.clone(), self.progress.clone(), sel.clone());
        let marks = blocking(&self.limiter, move || {
            let conn = index::open(shared.dir())?;
            let indexed = progress.indexed.load(Ordering::Acquire);
            super::list::list(&shared, &conn, indexed, shared.size(), &s2)
        })
        .await?;
        let returned = Returned { count: marks.len() as u64, ..Default::default() };
        self.logger.append(&access, sel.detail(), &returned).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(marks.into_iter().map(Ok)))))
    }

    async fn seal_export(&self, req: Request<SealExportRequest>) -> Result<Response<SealExportResponse>, Status> {
        let grant = self.authz.check(&req, Rpc::SealExport)?;
        let access = Access::of(&req, grant.clone(), "export_seal")?;
        let r = req.into_inner();
        let (shared, progress) = (self.shared.clone(), self.progress.clone());
        let identity = grant.identity.clone();
        let sealed = blocking(&self.limiter, move || {
            let conn = index::open(shared.dir())?;
            let indexed = progress.indexed.load(Ordering::Acquire);
            crate::export::seal::seal(&shared, &conn, indexed, &identity, &r.manifest, &r.query_json)
        })
        .await?;
        let m: wiretrail_log::bundle::Manifest =
            serde_json::from_slice(&sealed.manifest).expect("sealed manifest parses");
        let detail = serde_json::json!({"manifest_sha256": wiretrail_log::bundle::sha256_hex(&sealed.manifest),
            "tree_size": m.tree_size, "records": m.records,
            "export_access_leaf": m.access.as_ref().map(|a| a.leaf_index)});
        self.logger.append(&access, detail, &Returned { count: 1, ..Default::default() }).await?;
        Ok(Response::new(SealExportResponse {
            manifest: sealed.manifest,
            manifest_sig: sealed.sig,
            access_json: sealed.access,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::check_comment;

    #[test]
    fn comments_are_required_bounded_and_printable() {
        check_comment("reviewed; nothing to report\nsecond line").unwrap();
        assert!(check_comment("  ").unwrap_err().to_string().contains("needs a comment"));
        assert!(check_comment("a\u{1b}[31m").is_err());
        assert!(check_comment(&"x".repeat(super::MAX_COMMENT + 1)).is_err());
    }
}
