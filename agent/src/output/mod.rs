//! The local output: records as JSON lines or as text lines (or counted and
//! discarded, for benchmarks). Both render the one record type
//! (`crate::record`); the collector's form is `crate::record::wire`.
pub mod sink;

pub use sink::{Sink, SinkError};
