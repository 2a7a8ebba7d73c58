//! wiretrail agent library: flow reassembly and protocol records.
pub mod flow;
pub mod proto;
