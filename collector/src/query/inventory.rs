//! The inventory and alerts queries of the `Query` service.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc;
use tonic::Status;
use wiretrail_proto::v1::{Alert, AlertsRequest, InventoryRequest, InventoryResponse};

use crate::alerts::{self, Kind};
use crate::error::Error;
use crate::index::{self, IndexError};
use crate::registry::RegistryHandle;

/// Alerts read from the database per query.
const ALERT_PAGE: u64 = 1_000;
/// How often a follower looks for new alerts.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

fn sqlite(dir: &std::path::Path) -> impl Fn(rusqlite::Error) -> Error {
    let path = index::db_path(dir);
    move |source| Error::Index(IndexError::Sqlite { path: path.clone(), source })
}

/// The inventory as of the index mark, resolved against the registry in force.
pub fn inventory(dir: PathBuf, registry: &RegistryHandle, req: InventoryRequest) -> Result<InventoryResponse, Error> {
    let c = index::open(&dir)?;
    let err = sqlite(&dir);
    // Read the mark and the rows in one read transaction so they agree.
    c.execute_batch("BEGIN").map_err(&err)?;
    let indexed = index::indexed(&c).map_err(&err)?;
    let entries = crate::inventory::list(&c, &registry.get(), req.shadow_only).map_err(&err);
    c.execute_batch("COMMIT").map_err(&err)?;
    Ok(InventoryResponse { entries: entries?, indexed })
}

/// Validates an alerts request; returns the kind filter.
pub fn alerts_kind(req: &AlertsRequest) -> Result<Option<Kind>, Error> {
    if req.kind.is_empty() {
        return Ok(None);
    }
    Kind::parse(&req.kind).map(Some).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        Error::InvalidArgument(format!("unknown alert kind {:?}; one of {}", req.kind, known.join(", ")))
    })
}

/// Streams alerts after `req.since_id` into `tx`, then (with follow) new ones
/// as the indexer stores them, until the client goes away.
pub async fn stream_alerts(
    dir: PathBuf,
    req: AlertsRequest,
    kind: Option<Kind>,
    tx: mpsc::Sender<Result<Alert, Status>>,
) {
    let mut since = req.since_id;
    let mut conn: Option<Connection> = None;
    loop {
        let d = dir.clone();
        let page = tokio::task::spawn_blocking(move || -> Result<(Connection, Vec<Alert>), Error> {
            let c = match conn {
                Some(c) => c,
                None => index::open(&d)?,
            };
            let v = alerts::list(&c, since, kind, ALERT_PAGE).map_err(sqlite(&d))?;
            Ok((c, v))
        })
        .await;
        let (c, page) = match page {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("worker failed: {e}")))).await;
                return;
            }
        };
        conn = Some(c);
        let full = page.len() as u64 == ALERT_PAGE;
        for a in page {
            since = a.id;
            if tx.send(Ok(a)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        if !req.follow {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}
