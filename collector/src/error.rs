//! The collector's request-level error and its gRPC status mapping.

use crate::store::StoreError;

/// Errors returned to API and ingest clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a filter is invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A batch is larger than allowed.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A batch arrived out of sequence.
    #[error("out of sequence: {0}")]
    OutOfSequence(String),
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
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::OutOfSequence(_) => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::NotFound(_) => Code::NotFound,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Store(StoreError::OutOfRange(_)) => Code::OutOfRange,
            Error::Store(StoreError::Proof(crate::merkle::ProofError::OutOfRange(_))) => Code::OutOfRange,
            Error::Store(StoreError::Poisoned(_)) => Code::Unavailable,
            Error::Store(StoreError::Inconsistent(_)) => Code::DataLoss,
            Error::Store(_) | Error::Index(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
