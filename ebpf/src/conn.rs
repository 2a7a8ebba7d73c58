//! Per-socket connection ids and stream positions.
// SeqCst on purpose: with Relaxed, LLVM 22 emits a non-fetching BPF atomic add
// even though the old value is used, so every position came out wrong.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use wiretrail_common::{ConnState, STAT_TRACK_FULL};

use crate::maps::{CONNS, NEXT_CONN_ID, stat_add};

/// The tracking entry of `sk`, created if missing. The bool is true when the
/// entry was created by this call.
///
/// `ino` is the socket's inode number when the caller came from an fd (0
/// from the TLS path, which learns `sk` from such a call). An entry holding
/// another inode number belongs to a dead socket whose memory `sk` now is (it
/// was freed without a close(2), e.g. by its process exiting): it is replaced,
/// so the new socket gets its own connection id, positions and tuple. (Two
/// CPUs replacing the same dead entry at once may each make one; the second
/// wins and the first CPU's event keeps the id it saw.)
#[inline(always)]
pub fn get_or_create(sk: u64, ino: u64) -> Option<(*mut ConnState, bool)> {
    if let Some(p) = CONNS.get_ptr_mut(&sk) {
        let known = unsafe { (*p).ino };
        if ino == 0 || known == ino {
            return Some((p, false));
        }
        if known == 0 {
            unsafe { (*p).ino = ino };
            return Some((p, false));
        }
        let _ = CONNS.remove(&sk);
    }
    let id_slot = NEXT_CONN_ID.get_ptr_mut(0)?;
    let id = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(id_slot, 1) } + 1;
    let fresh = ConnState { conn_id: id, ino, ..unsafe { core::mem::zeroed() } };
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
