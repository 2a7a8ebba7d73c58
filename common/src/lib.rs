//! Types shared between the kernel programs (`wiretrail-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, built from fixed-width integers with explicit
//! padding, and has a compile-time size assertion: the kernel writes these bytes and
//! user space reads them, so any silent layout drift would corrupt evidence.
#![no_std]

pub mod event;
pub mod offsets;
/// The segmentation policy file: parsing, the reference decision, compilation
/// into the kernel's map entries (user space only).
#[cfg(feature = "policy")]
pub mod policy;
/// Segmentation policy as the kernel hooks read it (maps, decision events).
pub mod segment;
// The policy model needs std (at the crate root, so that its submodules see it).
#[cfg(feature = "policy")]
extern crate std;

pub use event::*;
pub use offsets::*;
