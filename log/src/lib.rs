//! wiretrail's evidence format and its verification: everything needed to
//! write, read, prove and check a collector's tamper-evident log, and to
//! verify it offline.
//!
//! What it holds:
//! - [`merkle`]: the Merkle math (RFC 9162 hashing, inclusion and
//!   consistency proofs), C2SP signed-note checkpoints and the key ring of
//!   rotated signing keys;
//! - [`frame`]: the leaf framing of segment files (with zstd bodies);
//! - [`entry`]: the leaves a collector appends to its own log;
//! - [`keychain`]: the chain of trust across signing key rotations;
//! - [`store`]: a data directory's log: segments, derived files, signed
//!   checkpoints, key history, recovery and repair, retention's kept hashes,
//!   the single [`Writer`] and the read handle [`Log`];
//! - [`text`]: text from agents made safe for log lines;
//! - [`verify`]: full (and background) verification of a data directory
//!   against its signed checkpoints, from the log's first key;
//! - [`bundle`]: the evidence bundle format (manifest, tar archive, record
//!   rendering, the manifest's signed statement) and its offline
//!   verification (`wiretrail verify-bundle`);
//! - [`filter`]: the in-memory record filter (a validated `Filter` and
//!   whether a stored leaf matches it), with [`sides`], the ends of a
//!   conversation a record speaks for;
//! - [`record_json`]: a stored leaf as one JSON object (`records.jsonl`).
//!
//! What it does not hold: ingest, the search index and its SQL candidates,
//! the query and review services, alerts, building and sealing exports, and
//! the gRPC and HTTP servers (the collector).
//!
//! Dependency rule: this crate depends on no gRPC (tonic), SQLite
//! (rusqlite), async runtime (tokio), HTTP (hyper, axum) or ClickHouse
//! crate, and on `wiretrail-proto` without its `grpc` feature (the prost
//! messages only), so an auditor's offline verifier needs nothing else.
//! Check with
//! `cargo tree -p wiretrail-log -e normal | grep -E "tonic|rusqlite|tokio|hyper|axum|clickhouse"`
//! (prints nothing).
// `record_json::to_json` is one large `serde_json::json!`.
#![recursion_limit = "256"]

pub mod bundle;
pub mod entry;
pub mod filter;
pub mod frame;
pub mod keychain;
pub mod merkle;
pub mod record_json;
pub mod sides;
pub mod store;
pub mod text;
pub mod verify;

pub use store::{Log, Writer};
