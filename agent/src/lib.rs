//! wiretrail node agent: captures every INET socket conversation on the host with
//! eBPF, accounts for every byte (gaps are explicit), and outputs records.
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod output;
pub mod pipeline;
