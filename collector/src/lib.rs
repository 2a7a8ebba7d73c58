//! wiretrail collector: ingest, tamper-evident store, query, verify, export.

pub mod alerts;
pub mod cli;
pub mod error;
pub mod export;
pub mod index;
pub mod ingest;
pub mod inventory;
pub mod merkle;
pub mod policy_check;
pub mod query;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod verify;

pub use error::Error;
pub use server::{ServeConfig, run};
