//! wiretrail node agent: captures every INET socket conversation on the host
//! with eBPF (plain sockets and TLS plaintext), accounts for every byte (gaps
//! are explicit), and turns each conversation into records: one per
//! application exchange, with the raw bytes once and where they came from.
//!
//! Stages: `capture` (kernel programs, ring buffer → events) → `conn` (one
//! connection model: reassembly, parsing with `proto`, exchanges, the two
//! ends of local conversations) → `record` (the one record type and its wire
//! form) → `output` (JSON or text lines) and `ship` (spool, gRPC to the
//! collector). `pipeline` wires them; `identity` names the workloads;
//! `segment` enforces the segmentation policy.
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod heartbeat;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod proto;
pub mod record;
pub mod redact;
pub mod segment;
pub mod ship;
pub mod spool;
pub mod types;
