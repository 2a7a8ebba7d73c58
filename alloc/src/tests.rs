use std::alloc::{GlobalAlloc, Layout};

use proptest::prelude::*;

use super::MiMalloc;

/// Allocates `layout` every way and checks alignment, zeroing and that
/// realloc keeps the bytes, growing and shrinking.
fn exercise(size: usize, align: usize, new_size: usize) {
    let a = MiMalloc;
    let layout = Layout::from_size_align(size, align).expect("valid layout");
    // SAFETY: non-zero sizes (the strategies), pointers from `a` freed with
    // their layouts, bytes written only within the sizes allocated.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0, "alloc({size}, {align}) misaligned");
        for i in 0..size {
            p.add(i).write(i as u8);
        }
        let q = a.realloc(p, layout, new_size);
        assert!(!q.is_null());
        assert_eq!(q as usize % align, 0, "realloc({size} -> {new_size}, {align}) misaligned");
        for i in 0..size.min(new_size) {
            assert_eq!(q.add(i).read(), i as u8, "realloc lost byte {i}");
        }
        a.dealloc(q, Layout::from_size_align(new_size, align).expect("valid layout"));

        let z = a.alloc_zeroed(layout);
        assert!(!z.is_null());
        assert_eq!(z as usize % align, 0, "alloc_zeroed({size}, {align}) misaligned");
        assert!((0..size).all(|i| z.add(i).read() == 0), "alloc_zeroed({size}, {align}) not zeroed");
        a.dealloc(z, layout);
    }
}

/// Every alignment from 1 to 4096 with sizes from 1 byte to 70,000 (below,
/// at and above each alignment), on both paths.
#[test]
fn every_alignment_is_honoured() {
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [1, 3, 7, 8, 9, 15, 16, 17, 24, 48, 100, 1000, 5000, 70_000] {
            for new_size in [1, size / 2 + 1, size * 3 + 5, 300_000] {
                exercise(size, align, new_size);
            }
        }
    }
}

proptest! {
    /// Random layouts and reallocations, many live at once, so blocks come
    /// from page free lists in every state.
    #[test]
    fn random_layouts_are_aligned_and_keep_their_bytes(
        reqs in proptest::collection::vec((1usize..5000, 0u32..8, 1usize..9000), 1..200)
    ) {
        let a = MiMalloc;
        let mut live = Vec::new();
        for (size, shift, new_size) in reqs {
            let align = 1usize << shift;
            let layout = Layout::from_size_align(size, align).expect("valid layout");
            // SAFETY: as in `exercise`.
            unsafe {
                let p = a.alloc(layout);
                prop_assert!(!p.is_null());
                prop_assert_eq!(p as usize % align, 0);
                p.write_bytes(0xa5, size);
                let q = a.realloc(p, layout, new_size);
                prop_assert_eq!(q as usize % align, 0);
                prop_assert!((0..size.min(new_size)).all(|i| q.add(i).read() == 0xa5));
                live.push((q, Layout::from_size_align(new_size, align).expect("valid layout")));
            }
        }
        for (p, layout) in live {
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout) };
        }
    }
}

/// A 48-byte, 8-aligned request gets a 48-byte block every time, also once
/// the first page's free blocks run out: the `mimalloc` crate's allocator
/// gives such requests 64-byte blocks whenever a page's free list is empty
/// (its first request of the size already), which this test catches.
#[test]
fn a_48_byte_request_gets_a_48_byte_block() {
    let a = MiMalloc;
    let layout = Layout::from_size_align(48, 8).expect("valid layout");
    let mut blocks = Vec::new();
    for round in 0..4 {
        for _ in 0..2000 {
            // SAFETY: freed below with the same layout.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live mimalloc block.
            let usable = unsafe { libmimalloc_sys::mi_usable_size(p.cast()) };
            assert_eq!(usable, 48, "round {round}: a 48-byte request got a {usable}-byte block");
            blocks.push(p);
        }
        // Free every other block, so the next round reuses freed ones and
        // refills free lists; keep the rest until the end.
        let kept: Vec<*mut u8> = blocks.iter().copied().skip(1).step_by(2).collect();
        for p in blocks.drain(..).step_by(2) {
            // SAFETY: allocated above with `layout`.
            unsafe { a.dealloc(p, layout) };
        }
        blocks = kept;
    }
    for p in blocks {
        // SAFETY: allocated above with `layout`, not freed yet.
        unsafe { a.dealloc(p, layout) };
    }
}
