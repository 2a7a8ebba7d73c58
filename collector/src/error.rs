//! The collector's request-level error and its gRPC status mapping.

use wiretrail_log::store::StoreError;

/// Status metadata key carrying the seq the collector expects next (on
/// FAILED_PRECONDITION "out of sequence"), so an agent can record the batches
/// missing from its spool as a gap.
pub const EXPECTED_SEQ: &str = "x-wiretrail-expected-seq";

/// Errors returned to API and ingest clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a filter is invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A batch is larger than allowed.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A batch arrived out of sequence; the collector expects `expected`
    /// (also sent as the `x-wiretrail-expected-seq` status metadata).
    #[error("out of sequence: {message}")]
    OutOfSequence {
        /// What arrived and what was expected.
        message: String,
        /// The seq the collector expects next for that (agent, boot).
        expected: u64,
    },
    /// The client's certificate may not do this (e.g. ship for an agent id owned by another).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Too many concurrent requests of this kind (per client or overall).
    #[error("busy: {0}")]
    Busy(String),
    /// A leaf or tree size beyond the log.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Something is not there (e.g. no checkpoint yet).
    #[error("not found: {0}")]
    NotFound(String),
    /// The collector is shutting down or its writer has stopped.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The search index failed.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// ClickHouse (clustered mode) failed to answer.
    #[error(transparent)]
    ClickHouse(#[from] crate::clickhouse::ClickHouseError),
}

impl From<wiretrail_log::filter::FilterError> for Error {
    fn from(e: wiretrail_log::filter::FilterError) -> Self {
        match e {
            wiretrail_log::filter::FilterError::Invalid(m) => Error::InvalidArgument(m),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::OutOfSequence { .. } => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Busy(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::NotFound(_) => Code::NotFound,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Store(StoreError::OutOfRange(_)) => Code::OutOfRange,
            Error::Store(StoreError::Proof(wiretrail_log::merkle::ProofError::OutOfRange(_))) => Code::OutOfRange,
            Error::Store(StoreError::Poisoned(_)) => Code::Unavailable,
            Error::Store(StoreError::LeafTooLarge(_)) => Code::ResourceExhausted,
            Error::Store(e) if e.is_disk_full() => Code::Unavailable,
            Error::Store(StoreError::Inconsistent(_)) => Code::DataLoss,
            Error::Store(StoreError::Deleted { .. }) => Code::NotFound,
            Error::Store(_) | Error::Index(_) => Code::Internal,
            Error::ClickHouse(crate::clickhouse::ClickHouseError::TooBroad { .. }) => Code::ResourceExhausted,
            Error::ClickHouse(_) => Code::Unavailable,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Error::OutOfSequence { expected, .. } = &e
            && let Ok(v) = expected.to_string().parse()
        {
            status.metadata_mut().insert(EXPECTED_SEQ, v);
        }
        status
    }
}
