//! `wiretrail policy check`: replays recorded connections against a
//! segmentation policy and reports what it would deny or only audit.
//!
//! Flows come from connection-open records, either a file of the agent's
//! JSONL output or the collector's search. Each `connect` is an egress flow
//! of the connecting workload, each `accept` an ingress flow of the accepting
//! one; identical flows are counted once. Decisions are
//! [`Policy::decide`], i.e. the kernel's.
mod render;
mod replay;
mod source;
#[cfg(test)]
mod tests;

use std::io::BufRead;
use std::path::{Path, PathBuf};

pub use render::{json, table};
pub use replay::{Flow, Outcome, Report, replay};
pub use source::{Opened, Role, Workload, from_jsonl, from_record};
use wiretrail_common::policy::{Policy, PolicyError};

/// Why a check could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The policy file is invalid: `FILE: line L, column C: message`.
    #[error("{path}: {source}")]
    Policy { path: PathBuf, source: PolicyError },
    #[error("{path}:{line}: not a JSON record: {msg}")]
    Jsonl { path: PathBuf, line: usize, msg: String },
    #[error("collector: {0}")]
    Collector(String),
    /// The policy is valid but the agent cannot install it (kernel map capacities).
    #[error("{path}: the agent cannot install this policy:{}", .shortfalls.iter().map(|s| format!("\n  - {s}")).collect::<String>())]
    NotInstallable { path: PathBuf, shortfalls: Vec<wiretrail_common::policy::Shortfall> },
}

/// Reads and validates a policy file, including the agent's installability
/// limits (the capacities of its kernel maps).
pub fn load_policy(path: &Path) -> Result<Policy, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read { path: path.into(), source })?;
    let policy = Policy::parse(&text).map_err(|source| CheckError::Policy { path: path.into(), source })?;
    let shortfalls = policy.shortfalls();
    if !shortfalls.is_empty() {
        return Err(CheckError::NotInstallable { path: path.into(), shortfalls });
    }
    Ok(policy)
}

/// The connection opens of an agent JSONL file (other records are skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Opened>, CheckError> {
    let f = std::fs::File::open(path).map_err(|source| CheckError::Read { path: path.into(), source })?;
    let mut out = Vec::new();
    // A long-lived connection has an open record and an end record: once.
    let mut seen = std::collections::HashSet::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| CheckError::Read { path: path.into(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| CheckError::Jsonl {
            path: path.into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        for (conn_id, o) in from_jsonl(&v) {
            if conn_id == 0 || seen.insert((conn_id, o.role)) {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// The connection opens among the records a collector search returns.
pub async fn search(
    channel: tonic::transport::Channel,
    filter: wiretrail_proto::v1::Filter,
) -> Result<Vec<Opened>, CheckError> {
    use tokio_stream::StreamExt;
    use wiretrail_proto::v1::{SearchRequest, query_client::QueryClient};
    let mut q = QueryClient::new(channel);
    let err = |e: tonic::Status| CheckError::Collector(e.message().to_string());
    let mut s = q
        .search(SearchRequest { filter: Some(filter), follow: false, ..Default::default() })
        .await
        .map_err(err)?
        .into_inner();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(r) = s.next().await {
        let r = r.map_err(err)?;
        let Some(l) = r.decoded else { continue };
        let Some(rec) = &l.record else { continue };
        for (key, o) in from_record(rec) {
            // Connection ids are per agent boot.
            let first = key.is_none_or(|(host, conn_id)| {
                seen.insert((l.agent_id.clone(), l.boot_id.clone(), host, conn_id, o.role))
            });
            if first {
                out.push(o);
            }
        }
    }
    Ok(out)
}
