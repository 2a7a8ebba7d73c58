//! The allocator of the agent, the collector and `xtask`: mimalloc, called
//! the way its C API is meant to be called.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every request through
//! `mi_malloc_aligned(size, align)`, because a Rust allocation always carries
//! an alignment. In mimalloc v3 that call takes the plain allocation only
//! while the size class's page has a free block at hand; otherwise (each
//! time a page's free list has to be refilled) it takes the over-allocating
//! path for every size class that is not a power of two: `size + align - 1`
//! bytes, so a 48-byte request lands in a 64-byte block, and ~100 more
//! instructions per call. Measured with callgrind on `bench_flows --only
//! redis` (BENCHMARKS.md, issue 13): 75,234 of the connection table's 291,018
//! allocations took the slow path, 71,508 of them over-allocated, and the
//! allocator was 8.7 % of the table's instructions. The same finding, with
//! the same fix: mimalloc_rust pull request 170 (open) and
//! reussir-lang/reussir pull request 339.
//!
//! The fix is the rule Rust's own `System` allocator uses for `malloc`:
//! when `align <= 16` and `align <= size`, plain `mi_malloc` already returns
//! memory aligned enough. mimalloc v3 puts every block of 16 bytes or more
//! on a 16-byte boundary (`MI_MAX_ALIGN_SIZE`; asserted in its `alloc.c`),
//! and blocks under 16 bytes are 8-byte blocks on an 8-byte boundary or
//! 16-byte blocks; with `align <= size` the request is never smaller than
//! its alignment. Anything else keeps the aligned calls. Freeing is the same
//! `mi_free` for both (it finds the block of an aligned pointer itself).
//! The tests check the alignment of every path and that a 48-byte request
//! gets a 48-byte block.
//!
//! The 16-byte claim holds for mimalloc v3 as `libmimalloc-sys` builds it by
//! default. Re-check it before enabling its `debug`/`debug_in_debug`
//! features (guarded pages: with `MIMALLOC_GUARDED_PRECISE=1` a guarded
//! block ends at its guard page, so a 24-byte block can start 8-aligned) or
//! its `v2` feature (another block layout).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment every mimalloc block of at least this many bytes has
/// (`MI_MAX_ALIGN_SIZE`, i.e. `alignof(max_align_t)` on x86-64 and aarch64).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the crate docs): a binary declares
/// `#[global_allocator] static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;`.
pub struct MiMalloc;

/// True when plain `mi_malloc(size)` is aligned enough for `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every pointer handed out comes from mimalloc and satisfies the
// layout's alignment (crate docs); `dealloc` and `realloc` get only pointers
// this allocator returned, which `mi_free` and `mi_realloc*` accept whichever
// call made them.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls have no preconditions.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; mimalloc's realloc accepts
        // blocks from its aligned calls too (it finds the block's start).
        unsafe {
            if plain(new_size, layout.align()) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests;
