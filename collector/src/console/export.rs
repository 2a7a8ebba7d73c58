//! Export of the current search as an evidence bundle (a tar download) built
//! by the same code as `wiretrail export`, so it passes `wiretrail verify-bundle`.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Console;
use super::fail::Failure;
use super::principal::Principal;
use super::search::Params;

/// Most records one console export holds.
pub const MAX_RECORDS: u64 = 100_000;

/// `GET /export?<search>`.
pub async fn download(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Response, Failure> {
    let now = wiretrail_log::store::now_ns();
    let filter = p.filter(now, MAX_RECORDS)?;
    let case = Some(p.case.trim()).filter(|c| !c.is_empty());
    let meta = crate::access::meta::Meta::case(case).map_err(Failure::Input)?.export();
    let channel = c.backend.channel(&who).await?;
    let files = crate::export::export_as(channel, meta, filter, |_| {}).await.map_err(|e| match e {
        crate::export::ExportError::Rpc { source, .. } => Failure::Api(source),
        other => Failure::Api(tonic::Status::internal(other.to_string())),
    })?;
    let name = format!("wiretrail-export-{}.tar", crate::when::fmt_ns(now).replace(':', ""));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        wiretrail_log::bundle::tar::write(&files),
    )
        .into_response())
}
