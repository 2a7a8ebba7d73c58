//! Per-socket connection ids and stream positions.
// SeqCst on purpose: with Relaxed, LLVM 22 emits a non-fetching BPF atomic add
// even though the old value is used, so every position came out wrong.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use wiretrail_common::{ConnState, STAT_TRACK_FULL};

use crate::maps::{CONNS, NEXT_CONN_ID, stat_add};

/// The tracking entry of `sk`, created if missing. The bool is true when the
/// entry was created by this call.
#[inline(always)]
pub fn get_or_create(sk: u64) -> Option<(*mut ConnState, bool)> {
    if let Some(p) = CONNS.get_ptr_mut(&sk) {
        return Some((p, false));
    }
    let id_slot = NEXT_CONN_ID.get_ptr_mut(0)?;
    let id = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(id_slot, 1) } + 1;
    let fresh = ConnState { conn_id: id, ..unsafe { core::mem::zeroed() } };
    // BPF_NOEXIST: another CPU may have raced us; its entry wins.
    let _ = CONNS.insert(&sk, &fresh, 1);
    match CONNS.get_ptr_mut(&sk) {
        Some(p) => Some((p, unsafe { (*p).conn_id } == id)),
        None => {
            stat_add(STAT_TRACK_FULL, 1);
            None
        }
    }
}

/// Reserves `n` bytes of the direction's stream and returns their start position.
#[inline(always)]
pub fn reserve(pos: *mut u64, n: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(pos, n) }
}
