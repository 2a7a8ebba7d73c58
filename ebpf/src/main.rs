//! wiretrail kernel programs: syscall tracepoints that capture the bytes of every
//! INET socket (TCP and UDP, IPv4 and IPv6) with kernel timestamps.
//!
//! Each data syscall stashes its arguments at `sys_enter_*` (per thread) and emits
//! the bytes actually transferred at `sys_exit_*`. Every failure inside a program
//! bumps a counter in `STATS` and returns: the traffic itself is never affected.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic fetch-add: core's atomic types have no RMW ops on the bpf target.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod conn;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod segment;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod task;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (clippy, `cargo check --workspace`) compile this empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
