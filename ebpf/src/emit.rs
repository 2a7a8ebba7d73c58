//! Building events in the per-CPU scratch slot and writing them to `EVENTS`.
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_loop, bpf_probe_read_user,
    },
};
use wiretrail_common::{
    CHUNK_MAX, ConnState, EVENT_HEADER_SIZE, FLAG_NOT_KEPT, FLAG_UNREADABLE, KIND_DATA, KIND_TRUNCATED,
    MAX_CHUNKS_PER_CALL, MAX_IOVECS, STAT_EVENTS, STAT_INTERNAL_ERRORS, STAT_LOST_BYTES, STAT_LOST_EVENTS,
    STAT_NOT_KEPT_BYTES, STAT_TRUNCATED_BYTES, ScratchEvent,
};

use crate::{
    kernel::read_tuple,
    maps::{AGENT_ENDPOINTS, CURSOR, EVENTS, EXECS, SCRATCH, config, stat_add},
};

/// Fills the header fields common to every event of the current syscall and
/// returns the scratch slot. The tuple comes from `cs`'s cache when complete,
/// else from `sk` (and is cached once complete).
#[inline(always)]
pub fn begin(
    kind: u8,
    syscall: u8,
    fd: i32,
    sk: u64,
    family: u8,
    protocol: u8,
    cs: *mut ConnState,
) -> Option<*mut ScratchEvent> {
    let s = scratch()?;
    let h = unsafe { &mut (*s).header };
    unsafe {
        h.ts_ns = bpf_ktime_get_boot_ns();
        let pid_tgid = bpf_get_current_pid_tgid();
        h.pid = (pid_tgid >> 32) as u32;
        h.tid = pid_tgid as u32;
        h.uid = bpf_get_current_uid_gid() as u32;
        h.cgroup_id = bpf_get_current_cgroup_id();
        bpf_get_current_comm(h.comm.as_mut_ptr().cast(), 16);
    }
    h.kind = kind;
    h.syscall = syscall;
    h.fd = fd;
    h.family = family;
    h.protocol = protocol;
    h.direction = 0;
    h.flags = 0;
    h.len = 0;
    h.pos = 0;
    h.conn_id = 0;
    h.tx_total = 0;
    h.rx_total = 0;
    let c = unsafe { &mut *cs };
    if c.tuple_ok == 1 {
        h.laddr = c.laddr;
        h.raddr = c.raddr;
        h.lport = c.lport;
        h.rport = c.rport;
        h.netns = c.netns;
        if c.peer_ok == 0 {
            if is_agent_peer(h) {
                return None;
            }
            if c.tx_pos > 0 && c.rx_pos > 0 {
                c.peer_ok = 1;
            }
        }
    } else {
        read_tuple(sk, family, h);
        if is_agent_peer(h) {
            return None;
        }
        // Unconnected UDP has no fixed remote: never cache it.
        if h.lport != 0 && h.rport != 0 {
            c.laddr = h.laddr;
            c.raddr = h.raddr;
            c.lport = h.lport;
            c.rport = h.rport;
            c.netns = h.netns;
            c.tuple_ok = 1;
        }
    }
    Some(s)
}

/// True (and counted) when the socket's peer is one of the agent's own sockets.
#[inline(always)]
fn is_agent_peer(h: &wiretrail_common::EventHeader) -> bool {
    if h.rport == 0 {
        return false;
    }
    let key = wiretrail_common::Endpoint { addr: h.raddr, port: h.rport, _pad: [0; 6] };
    if unsafe { AGENT_ENDPOINTS.get(&key) }.is_some() {
        stat_add(wiretrail_common::STAT_SELF_PEER, 1);
        return true;
    }
    false
}

/// Wake the agent only once this much is waiting; it also polls every few ms.
/// One wakeup per event would cost more than the event at high rates.
const WAKEUP_BYTES: u64 = 256 * 1024;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP }
}

/// Writes an exec notification to its own ring and wakes the agent at once:
/// discovery of statically linked TLS in a new process races with its first
/// connection, and must not wait behind data events.
#[inline(always)]
pub fn submit_exec(s: *mut ScratchEvent) {
    let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, EVENT_HEADER_SIZE) };
    match EXECS.output::<[u8]>(bytes, BPF_RB_FORCE_WAKEUP) {
        Ok(()) => stat_add(STAT_EVENTS, 1),
        Err(_) => stat_add(STAT_LOST_EVENTS, 1),
    }
}

/// Writes the header alone (lifecycle and truncation events).
#[inline(always)]
pub fn submit_header(s: *mut ScratchEvent) {
    let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, EVENT_HEADER_SIZE) };
    match EVENTS.output::<[u8]>(bytes, wakeup_flags()) {
        Ok(()) => stat_add(STAT_EVENTS, 1),
        Err(_) => stat_add(STAT_LOST_EVENTS, 1),
    }
}

/// Emits a `KIND_TRUNCATED` event for `len` bytes at `pos` that were transferred
/// but not captured: over a cap, unreadable ([`FLAG_UNREADABLE`]) or TLS
/// ciphertext counted and timed, not copied, because the socket's plaintext
/// of that direction is captured ([`FLAG_NOT_KEPT`], counted apart).
#[inline(always)]
pub fn truncated(s: *mut ScratchEvent, pos: u64, len: u64, flags: u8) {
    let h = unsafe { &mut (*s).header };
    let kind = h.kind;
    h.kind = KIND_TRUNCATED;
    h.pos = pos;
    h.len = if len > u32::MAX as u64 { u32::MAX } else { len as u32 };
    h.flags |= flags;
    stat_add(if flags & FLAG_NOT_KEPT != 0 { STAT_NOT_KEPT_BYTES } else { STAT_TRUNCATED_BYTES }, len);
    submit_header(s);
    h.kind = kind;
    h.flags &= !flags;
}

/// Copies `n` (≤ CHUNK_MAX) bytes from user memory at `src` and emits them at `pos`.
#[inline(always)]
fn chunk(s: *mut ScratchEvent, src: u64, n: u64, pos: u64) {
    let n = if n > CHUNK_MAX as u64 { CHUNK_MAX as u64 } else { n };
    // Round-trip the length through the map value: the verifier cannot know what
    // a map holds, so it stops tracking `n` back into the loop state (which would
    // make every bpf_loop iteration a distinct state and never converge). The mask
    // is a no-op for n ≤ CHUNK_MAX and proves the bound.
    let n = unsafe {
        core::ptr::write_volatile(&mut (*s).header.len, n as u32);
        core::ptr::read_volatile(&(*s).header.len) & (2 * CHUNK_MAX as u32 - 1)
    };
    let r = unsafe { bpf_probe_read_user((*s).data.as_mut_ptr().cast(), n, src as *const c_void) };
    if r != 0 {
        stat_add(STAT_INTERNAL_ERRORS, 1);
        truncated(s, pos, n as u64, FLAG_UNREADABLE);
        return;
    }
    output_data(s, n, pos);
}

/// Emits the scratch slot's first `n` (< 2 * CHUNK_MAX) data bytes at `pos`.
#[inline(always)]
fn output_data(s: *mut ScratchEvent, n: u32, pos: u64) {
    let n = n & (2 * CHUNK_MAX as u32 - 1);
    let h = unsafe { &mut (*s).header };
    h.kind = KIND_DATA;
    h.pos = pos;
    h.len = n;
    let total = EVENT_HEADER_SIZE as u32 + n;
    let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, total as usize) };
    match EVENTS.output::<[u8]>(bytes, wakeup_flags()) {
        Ok(()) => stat_add(STAT_EVENTS, 1),
        Err(_) => {
            stat_add(STAT_LOST_EVENTS, 1);
            stat_add(STAT_LOST_BYTES, n as u64);
        }
    }
}

/// State of one [`stream`] walk over a buffer or an iovec array.
///
/// It lives in a per-CPU map, not on the stack: the verifier cannot know map
/// contents, so every `bpf_loop` iteration looks alike and verification
/// converges, instead of unrolling thousands of iterations with known values.
#[repr(C)]
pub struct Cursor {
    /// iovec array (user pointer), or 0 for a single buffer in `base`/`left`.
    pub iov: u64,
    pub iovcnt: u64,
    /// Next iovec to read.
    pub idx: u64,
    /// User address of the next byte to copy.
    pub base: u64,
    /// Bytes left in the current buffer/iovec (within `limit`).
    pub left: u64,
    /// Bytes emitted so far.
    pub done: u64,
    /// Bytes to emit in total.
    pub limit: u64,
    /// Stream position of the first byte.
    pub pos0: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

#[inline(always)]
fn scratch() -> Option<*mut ScratchEvent> {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    SCRATCH.get_ptr_mut(cpu)
}

#[inline(never)]
extern "C" fn step(_i: u64, _ctx: *mut c_void) -> i64 {
    let (Some(c), Some(s)) = (CURSOR.get_ptr_mut(0), scratch()) else {
        return 1;
    };
    let c = unsafe { &mut *c };
    if c.done >= c.limit {
        return 1;
    }
    if c.left == 0 {
        if c.iov == 0 || c.idx >= c.iovcnt || c.idx >= MAX_IOVECS as u64 {
            return 1;
        }
        let mut v = Iovec { base: 0, len: 0 };
        let r =
            unsafe { bpf_probe_read_user((&mut v as *mut Iovec).cast(), 16, (c.iov + c.idx * 16) as *const c_void) };
        if r != 0 {
            stat_add(STAT_INTERNAL_ERRORS, 1);
            return 1;
        }
        c.idx += 1;
        c.base = v.base;
        let rest = c.limit - c.done;
        c.left = if v.len < rest { v.len } else { rest };
        return 0;
    }
    let n = if c.left < CHUNK_MAX as u64 { c.left } else { CHUNK_MAX as u64 };
    chunk(s, c.base, n, c.pos0 + c.done);
    c.base += n;
    c.left -= n;
    c.done += n;
    0
}

/// Emits `total` bytes transferred at stream position `pos0` from a single
/// buffer (`buf`, with `iov == 0`) or an iovec array, honoring the per-connection
/// cap; whatever is not captured is reported as truncated.
#[inline(always)]
pub fn stream(s: *mut ScratchEvent, iov: u64, iovcnt: u64, buf: u64, total: u64, pos0: u64) {
    walk(s, iov, iovcnt, buf, total, pos0, true);
}

/// [`stream`] of an iovec array without gathering short arrays into one event.
#[inline(always)]
pub fn stream_iovecs(s: *mut ScratchEvent, iov: u64, iovcnt: u64, total: u64, pos0: u64) {
    walk(s, iov, iovcnt, 0, total, pos0, false);
}

#[inline(always)]
fn walk(s: *mut ScratchEvent, iov: u64, iovcnt: u64, buf: u64, total: u64, pos0: u64, gather: bool) {
    let cap = config().conn_cap_bytes;
    let limit = if cap == 0 {
        total
    } else if pos0 >= cap {
        0
    } else if cap - pos0 < total {
        cap - pos0
    } else {
        total
    };
    let max = CHUNK_MAX as u64 * MAX_CHUNKS_PER_CALL as u64;
    let limit = if limit > max { max } else { limit };
    if iov == 0 && limit > 0 && limit <= CHUNK_MAX as u64 {
        // One chunk from one buffer (most calls): no loop, no cursor.
        chunk(s, buf, limit, pos0);
        if limit < total {
            truncated(s, pos0 + limit, total - limit, 0);
        }
        return;
    }
    if gather && iov != 0 && gather_small(s, iov, iovcnt, limit, pos0) {
        if limit < total {
            truncated(s, pos0 + limit, total - limit, 0);
        }
        return;
    }
    let Some(c) = CURSOR.get_ptr_mut(0) else {
        truncated(s, pos0, total, FLAG_UNREADABLE);
        return;
    };
    unsafe {
        *c = Cursor { iov, iovcnt, idx: 0, base: buf, left: if iov == 0 { limit } else { 0 }, done: 0, limit, pos0 };
        if limit > 0 {
            bpf_loop(
                (MAX_CHUNKS_PER_CALL + MAX_IOVECS) as u32,
                step as *const () as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
    }
    let done = unsafe { (*c).done };
    if done < total {
        truncated(s, pos0 + done, total - done, 0);
    }
}

/// Iovec arrays up to this long whose bytes fit in one chunk are gathered
/// into one event (e.g. a response's header and body from one writev).
const GATHER_IOVECS: usize = 4;

/// Copies the first `limit` (< CHUNK_MAX) bytes of a short iovec array into
/// the scratch slot and emits them as one event. False (nothing emitted) when
/// the array is too long or the bytes too many, or a read fails: the caller
/// then walks the array chunk by chunk.
#[inline(always)]
fn gather_small(s: *mut ScratchEvent, iov: u64, iovcnt: u64, limit: u64, pos0: u64) -> bool {
    if iovcnt == 0 || iovcnt > GATHER_IOVECS as u64 || limit == 0 || limit >= CHUNK_MAX as u64 {
        return false;
    }
    let mut vs = [Iovec { base: 0, len: 0 }; GATHER_IOVECS];
    let size = iovcnt * 16;
    if size > (GATHER_IOVECS * 16) as u64 {
        return false;
    }
    let r = unsafe { bpf_probe_read_user(vs.as_mut_ptr().cast(), size as u32, iov as *const c_void) };
    if r != 0 {
        return false;
    }
    let mut off = 0u64;
    for v in vs.iter().take(GATHER_IOVECS) {
        if off >= limit {
            break;
        }
        let rest = limit - off;
        let n = if v.len < rest { v.len } else { rest };
        // Both below CHUNK_MAX (limit is): the masks are no-ops that prove
        // off + n stays inside the 2 * CHUNK_MAX data area.
        // Volatile reads so the compiler cannot drop masks it knows are no-ops.
        let o = unsafe { core::ptr::read_volatile(&off) } as usize & (CHUNK_MAX - 1);
        let n = unsafe { core::ptr::read_volatile(&n) } as u32 & (CHUNK_MAX as u32 - 1);
        if n == 0 {
            continue;
        }
        let dst = unsafe { (*s).data.as_mut_ptr().add(o) };
        if unsafe { bpf_probe_read_user(dst.cast(), n, v.base as *const c_void) } != 0 {
            return false;
        }
        off += n as u64;
    }
    if off != limit {
        return false;
    }
    output_data(s, limit as u32, pos0);
    true
}
