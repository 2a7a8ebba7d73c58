//! wiretrail collector: ingest, tamper-evident store, query, verify, export.

pub mod merkle;
