//! wiretrail agent library: the parts of the agent usable and testable without root.

pub mod ship;
pub mod spool;
