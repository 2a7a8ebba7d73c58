//! Checkpoint signing key rotation as a gRPC service ([`service`]); the
//! rotation's steps and the chain of trust across rotations are in
//! [`wiretrail_log::keychain`].

pub mod service;
