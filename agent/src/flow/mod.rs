//! Flow reassembly: capture events in, ordered per-direction streams with
//! explicit gaps, protocol detection, and records out.

#![warn(missing_docs)]

pub mod config;
pub mod conn;
pub mod detect;
pub mod engine;
pub mod feed;
pub mod input;
pub mod stats;
pub mod stream;
pub mod table;

pub use config::FlowConfig;
pub use engine::FlowEngine;
pub use input::FlowEvent;
pub use stats::FlowStats;

#[cfg(test)]
mod tests;
