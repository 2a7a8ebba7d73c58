//! Search in clustered mode across every collector's log, read from ClickHouse
//! (`SearchRequest.all_logs`).
//!
//! Collectors behind one Service each keep their own log; a search answered
//! from the one that happens to take the call holds only the records it
//! acknowledged. With `all_logs` a collector that writes to ClickHouse answers
//! from every log there, each result naming its log (`origin`). Other reads
//! (exports, completeness, policy checks, the console, follow) stay on the
//! collector's own log, whose leaves they prove and view. ClickHouse's text and
//! identity tests are looser than the filter's: its rows are candidates, read
//! page by page until the limit of results the filter matches as every
//! verifier reads it (`filter::Query`, as the ClickHouse export selects them),
//! or an error when too many candidates do not match
//! (`Reader::search_matching`). The search takes one of the collector's query
//! work slots (`Limiter`), as a search of its own log does. The ClickHouse copy is not
//! expired by retention (see docs/clickhouse.md): it can hold records the
//! collector's own log deleted. The access is logged in this collector's own
//! log, before anything is sent, naming the logs read.
use std::collections::BTreeSet;

use tonic::Status;
use wiretrail_proto::v1::SearchResult;

use crate::access::{Access, Logger, Returned};
use crate::clickhouse::reader::Reader;
use crate::error::Error;
use crate::query::limits::Limiter;
use wiretrail_log::filter::Query;

/// The results of `q` across every log in ClickHouse, oldest first, after
/// logging the access (`filter_json`: the filter as access entries show it).
pub async fn search(
    reader: &Reader,
    limiter: &Limiter,
    q: &Query,
    access: &Access,
    logger: &Logger,
    filter_json: serde_json::Value,
) -> Result<Vec<SearchResult>, Status> {
    let hits = {
        let _slot = limiter.work().await;
        reader.search_matching(q).await.map_err(Error::from)?
    };
    let (mut returned, mut origins, mut out) = (Returned::default(), BTreeSet::new(), Vec::new());
    for h in hits {
        returned.add(&h.leaf);
        origins.insert(h.origin.clone());
        let hit = super::Hit { leaf_index: h.leaf_index, leaf: h.bytes, decoded: h.leaf };
        out.push(super::service::result(hit, &h.origin));
    }
    let detail = serde_json::json!({"filter": filter_json, "follow": false, "store": "clickhouse", "origins": origins});
    logger.append(access, detail, &returned).await?;
    Ok(out)
}
