//! wiretrail collector: ingest, tamper-evident store, query, verify, export.
#![recursion_limit = "256"]

pub mod access;
pub mod alerts;
pub mod authz;
pub mod checkpointer;
pub mod cli;
pub mod clickhouse;
pub mod completeness;
pub mod console;
pub mod error;
pub mod export;
pub mod index;
pub mod ingest;
pub mod inventory;
pub mod keys;
pub mod metrics;
pub mod policy_check;
pub mod query;
pub mod registry;
pub mod retention;
pub mod review;
pub mod roles;
pub mod server;
pub mod tls;
pub mod when;

pub use error::Error;
pub use server::{ServeConfig, run};
