//! Types shared between the kernel programs (`wiretrail-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, built from fixed-width integers with explicit
//! padding, and has a compile-time size assertion: the kernel writes these bytes and
//! user space reads them, so any silent layout drift would corrupt evidence.
#![no_std]

pub mod event;
pub mod offsets;
/// Segmentation policy as the kernel hooks read it (maps, decision events).
pub mod segment;

pub use event::*;
pub use offsets::*;
