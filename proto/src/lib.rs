//! wiretrail protocol definitions (package `wiretrail.v1`).

/// Version 1 of the agent ↔ collector and query protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("wiretrail.v1");
}
