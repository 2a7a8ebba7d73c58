//! Connection tracking: per-connection, per-direction byte accounting that turns
//! missing byte ranges into explicit gap records.
pub mod stream;
pub mod tracker;

pub use tracker::{Gap, Tracker, TrackerConfig};
