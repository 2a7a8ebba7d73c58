//! wiretrail node agent: captures every INET socket conversation on the host with
//! eBPF (plain sockets and TLS plaintext), accounts for every byte (gaps are
//! explicit), reassembles flows and parses protocols into records.
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod flow;
pub mod identity;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod proto;
pub mod segment;
pub mod ship;
pub mod spool;
