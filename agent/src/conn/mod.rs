//! Connections: the one model of a socket conversation in the agent, and the
//! stage that turns capture events into records.
//!
//! - [`table::ConnTable`]: one entry per socket ([`connection::Connection`]),
//!   one clock (kernel CLOCK_BOOTTIME), one idle timeout, one bound; events
//!   in, records out.
//! - [`streams::Streams`]: one position space (socket bytes, or the TLS
//!   plaintext on them) with both directions' reassembly
//!   ([`reassembly::DirStream`]: order, holes, gaps), protocol detection
//!   ([`detect`]), the parser pump and the [`assemble::Assembler`] that pairs
//!   messages into exchanges and coalesces unparsed bytes into segments.
//! - [`witness`]: the other end of a conversation captured on this host too,
//!   whose observation joins the primary's records.
//!
//! Every byte ends in exactly one record of its end — an exchange, a segment,
//! or a gap when missing — or in the one record of both ends of a pair.

pub mod assemble;
pub mod config;
pub mod connection;
pub mod detect;
mod finalize;
pub mod peers;
mod pump;
pub mod reassembly;
mod span;
pub mod stats;
pub mod streams;
pub mod table;
pub mod witness;

pub use config::ConnConfig;
pub use stats::ConnStats;
pub use table::ConnTable;

#[cfg(test)]
mod tests;
