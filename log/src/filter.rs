//! The in-memory record filter: a validated [`Filter`] and whether a stored
//! leaf matches it. The collector's search narrows candidates with its index
//! and decides with [`Query::matches`]; bundle verification checks every
//! exported record against the bundle's `query.json` with it.

use wiretrail_proto::v1::{Filter, StoredLeaf};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The filter is invalid (the message says why).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Most results one search may return.
pub const MAX_LIMIT: u64 = 1_000_000;
/// Results returned when the request sets no limit.
pub const DEFAULT_LIMIT: u64 = 1_000;

/// A validated filter.
#[derive(Debug, Clone)]
pub struct Query {
    /// The request's filter.
    pub f: Filter,
    /// `identity` split into (key, value).
    pub identity: Vec<(String, String)>,
    /// Effective result limit.
    pub limit: u64,
}

impl Query {
    /// Validates `f`.
    pub fn new(f: Filter) -> Result<Self, FilterError> {
        if f.from_time_ns < 0 || f.to_time_ns < 0 {
            return Err(FilterError::Invalid("times must be non-negative UTC ns".into()));
        }
        if f.to_time_ns != 0 && f.from_time_ns >= f.to_time_ns {
            return Err(FilterError::Invalid("from_time_ns must be before to_time_ns".into()));
        }
        if f.peer_port > 65535 {
            return Err(FilterError::Invalid(format!("peer_port {} is not a port", f.peer_port)));
        }
        if f.peer_port != 0 && f.peer_address.is_empty() {
            return Err(FilterError::Invalid("peer_port needs peer_address".into()));
        }
        if f.limit > MAX_LIMIT {
            return Err(FilterError::Invalid(format!("limit {} above {MAX_LIMIT}", f.limit)));
        }
        let identity: Vec<(String, String)> = f
            .identity
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(FilterError::Invalid(format!("identity filter {kv:?} is not key=value"))),
            })
            .collect::<Result<_, _>>()?;
        if !f.entry_kind.is_empty() {
            if f.entry_kind != "*" && !crate::entry::KINDS.contains(&f.entry_kind.as_str()) {
                return Err(FilterError::Invalid(format!(
                    "unknown entry kind {:?}; one of *, {}",
                    f.entry_kind,
                    crate::entry::KINDS.join(", ")
                )));
            }
            if !(f.host.is_empty()
                && identity.is_empty()
                && f.peer_address.is_empty()
                && f.app_protocol.is_empty()
                && f.payload_text.is_empty())
            {
                return Err(FilterError::Invalid(
                    "entry_kind selects collector entries: host, identity, peer, protocol and text do not apply".into(),
                ));
            }
        }
        let limit = if f.limit == 0 { DEFAULT_LIMIT } else { f.limit };
        Ok(Query { f, identity, limit })
    }

    /// Whether a stored leaf matches every condition. A two-witness record
    /// matches when either end does (identity, and the peer it talks to).
    pub fn matches(&self, l: &StoredLeaf) -> bool {
        let f = &self.f;
        if !f.entry_kind.is_empty() {
            let Some(e) = &l.entry else { return false };
            // "*" leaves out access entries: only auditors read those (entry_kind "access").
            return (if f.entry_kind == "*" { e.kind != crate::entry::ACCESS } else { e.kind == f.entry_kind })
                && (f.from_time_ns == 0 || e.time_ns >= f.from_time_ns)
                && (f.to_time_ns == 0 || e.time_ns < f.to_time_ns)
                && (f.agent_id.is_empty() || l.agent_id == f.agent_id);
        }
        let Some(r) = &l.record else { return false };
        let side_matches = |s: &crate::sides::SideView<'_>| {
            let remote = s.remote.cloned().unwrap_or_default();
            (f.peer_address.is_empty() || remote.address == f.peer_address)
                && (f.peer_port == 0 || remote.port == f.peer_port)
                && self.identity.iter().all(|(k, v)| s.identity.get(k) == Some(v))
        };
        (f.from_time_ns == 0 || r.capture_time_ns >= f.from_time_ns)
            && (f.to_time_ns == 0 || r.capture_time_ns < f.to_time_ns)
            && (f.agent_id.is_empty() || l.agent_id == f.agent_id)
            && (f.host.is_empty() || r.host == f.host)
            && (f.app_protocol.is_empty() || r.app_protocol == f.app_protocol)
            && crate::sides::sides(r).iter().any(side_matches)
            && (f.payload_text.is_empty() || contains(&r.payload, f.payload_text.as_bytes()))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
