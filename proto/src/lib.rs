//! wiretrail protocol definitions (package `wiretrail.v1`).
//!
//! The messages are always built (prost); the tonic clients and services only
//! with the `grpc` feature (on by default).

/// Version 1 of the agent ↔ collector and query protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/wiretrail.v1.rs"));
}
