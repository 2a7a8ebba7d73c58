//! TLS plaintext inside the libraries, with uprobes.
//!
//! Entry probes stash the buffer of `SSL_write`/`SSL_read` (and `_ex`),
//! `gnutls_record_send`/`_recv`, and Go's `crypto/tls.(*Conn).Write`/`Read`;
//! return probes emit the bytes actually transferred. The socket is learned from
//! the socket syscall the library makes on the same thread inside the call
//! (`syscalls::enter` fills `TlsCall::sock`), and cached per TLS object so calls
//! served from the library's buffer still find their connection.
//!
//! Go: return values come from probes on every RET instruction of the function
//! (uretprobes break Go's moving stacks); calls are keyed by the goroutine
//! pointer, which Go's register ABI keeps in R14.
//!
//! rustls makes no socket syscall inside its plaintext calls: the application
//! moves the TLS records itself (`read_tls`/`write_tls`, which rustls's own
//! `Stream`, tokio-rustls and hyper-rustls call right around them). So a
//! `Reader::read` is tied to the thread's last TCP read before it (the
//! `read_tls` that received the records, kept in `PENDING`'s `rx_sock`), and a
//! `Writer::write` is held, by thread, until the thread's next TCP write that
//! carries TLS records (the `write_tls` that sends it): that syscall's enter
//! tail-calls [`rustls_flush`], which emits the plaintext from the caller's
//! buffer. A held write still waiting when the thread's next `Writer::write`
//! returns is emitted then, without a connection (`FLAG_UNTRACKED`), never
//! dropped. The attribution is by thread: exact when the records are moved
//! right around the call, as those wrappers do; a thread that hands plaintext
//! to one connection and then writes another's records first would have it
//! attributed to the other (README, TLS limits). The return value
//! `io::Result<usize>` comes back in RAX (0 = Ok) and RDX (count).
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::generated::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use wiretrail_common::*;

use crate::{
    conn::{get_or_create, reserve},
    emit::{begin, stream},
    kernel::inet_kind,
    maps::{PENDING, config, stat_add},
};

/// An in-flight TLS call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// SSL*, gnutls_session_t or Go *tls.Conn: identifies the TLS session.
    pub session: u64,
    /// Plaintext buffer.
    pub buf: u64,
    /// `size_t *` of the `_ex` variants (bytes written/read), else 0.
    pub len_ptr: u64,
    /// `struct sock *` seen in a nested socket syscall (0 until then).
    pub sock: u64,
    /// Attach cookie: the agent's library id.
    pub lib: u64,
    /// fd of the nested socket syscall (-1 until then).
    pub fd: i32,
    /// `buf` is an array of this many iovecs (rustls `write_vectored`), else 0.
    pub iovcnt: u32,
    /// A rustls write held for its socket: the byte count it accepted (else 0).
    pub held: u64,
}

/// In-flight calls by `TlsKey`.
#[map]
pub static TLS_PENDING: HashMap<TlsKey, TlsCall> = HashMap::with_max_entries(65536, 0);

/// Thread (pid_tgid) → key of the TLS call it is inside, for `syscalls::enter`.
#[map]
pub static TLS_ACTIVE: HashMap<u64, TlsKey> = HashMap::with_max_entries(65536, 0);

/// (tgid, session) → `struct sock *`, learned from nested syscalls.
#[map]
pub static TLS_SOCK: LruHashMap<TlsKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// The stand-in state of a call whose socket is not tracked (per CPU: off the
/// 512-byte stack, which the emitting code nearly fills).
#[map]
pub static TLS_UNTRACKED: PerCpuArray<ConnState> = PerCpuArray::with_max_entries(1, 0);

/// `rustls_flush`, the tail call of a TCP write's enter that meets a held rustls write.
#[map]
pub static TLS_FLUSH: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Called from the syscall enter path for socket fds: ties the socket to the
/// TLS call this thread is inside, if any. True when that call is a held
/// rustls write and this is a TCP write of TLS records (`buf`: the syscall's
/// second argument): the caller then calls [`flush_held`].
#[inline(always)]
pub fn note_socket(pid_tgid: u64, sk: u64, fd: i32, syscall: u8, protocol: u8, buf: u64) -> bool {
    if config().enabled & wiretrail_common::CONFIG_TLS == 0 {
        return false;
    }
    let Some(key) = (unsafe { TLS_ACTIVE.get(&pid_tgid) }) else { return false };
    let Some(call) = TLS_PENDING.get_ptr_mut(key) else { return false };
    unsafe {
        if (*call).held != 0 && (protocol != PROTO_TCP || !writes_tls_records(syscall, buf)) {
            return false;
        }
        (*call).sock = sk;
        (*call).fd = fd;
        (*call).held != 0
    }
}

/// Whether a write-family syscall's bytes open with a TLS record header
/// (content type 20–23, version 3.x): the guard that keeps a held rustls write
/// from being emitted on a socket that carries no TLS (say, a log shipper's).
#[inline(always)]
fn writes_tls_records(syscall: u8, arg: u64) -> bool {
    matches!(syscall, SYS_WRITE | SYS_SENDTO | SYS_WRITEV | SYS_SENDMSG | SYS_SENDMMSG)
        && first_bytes(syscall, arg).is_some_and(|h| (0x14..=0x17).contains(&h[0]) && h[1] == 3 && h[2] <= 4)
}

/// Whether a data syscall's bytes (at its exit, for reads) open with a TLS
/// handshake record (type 22, version 3.x): on a socket's first bytes, the
/// mark that its ciphertext may be counted instead of copied once its
/// plaintext is captured.
#[inline(always)]
pub fn starts_tls_handshake(syscall: u8, arg: u64) -> bool {
    first_bytes(syscall, arg).is_some_and(|h| h[0] == 0x16 && h[1] == 3 && h[2] <= 4)
}

/// The first three bytes a data syscall moved (`arg`: its second argument).
#[inline(always)]
fn first_bytes(syscall: u8, arg: u64) -> Option<[u8; 3]> {
    let read = |at: u64| -> u64 {
        let mut v = 0u64;
        let r = unsafe { bpf_probe_read_user((&mut v as *mut u64).cast(), 8, at as *const _) };
        if r == 0 { v } else { 0 }
    };
    // The address of the first byte moved.
    let first = match syscall {
        SYS_WRITE | SYS_SENDTO | SYS_READ | SYS_RECVFROM => arg,
        SYS_WRITEV | SYS_READV => read(arg),
        // msghdr (or the first mmsghdr's): msg_iov at 16, then iov_base.
        SYS_SENDMSG | SYS_SENDMMSG | SYS_RECVMSG | SYS_RECVMMSG => read(read(arg + 16)),
        _ => return None,
    };
    if first == 0 {
        return None;
    }
    let mut h = [0u8; 3];
    let r = unsafe { bpf_probe_read_user(h.as_mut_ptr().cast(), 3, first as *const _) };
    (r == 0).then_some(h)
}

/// Tail-calls [`rustls_flush`] (does not return unless the call fails).
#[inline(always)]
pub fn flush_held(ctx: &TracePointContext) {
    unsafe { TLS_FLUSH.tail_call(ctx, 0) };
    stat_add(STAT_INTERNAL_ERRORS, 1);
}

/// Records an in-flight call; `active` if socket syscalls inside it name its socket.
#[inline(always)]
fn start(key: TlsKey, pid_tgid: u64, call: TlsCall, active: bool) {
    if config().enabled == 0 || (pid_tgid >> 32) as u32 == config().agent_tgid {
        return;
    }
    if TLS_PENDING.insert(&key, &call, 0).is_err() || (active && TLS_ACTIVE.insert(&pid_tgid, &key, 0).is_err()) {
        stat_add(STAT_PENDING_FULL, 1);
    }
}

#[inline(always)]
fn call(session: u64, buf: u64, len_ptr: u64, lib: u64) -> TlsCall {
    TlsCall { session, buf, len_ptr, sock: 0, lib, fd: -1, iovcnt: 0, held: 0 }
}

#[inline(always)]
fn finish(key: TlsKey, pid_tgid: u64, n: i64, syscall: u8, dir: u8) {
    let Some(call) = (unsafe { TLS_PENDING.get(&key) }).copied() else { return };
    let _ = TLS_PENDING.remove(&key);
    if let Some(active) = unsafe { TLS_ACTIVE.get(&pid_tgid) }
        && active.a == key.a
        && active.b == key.b
    {
        let _ = TLS_ACTIVE.remove(&pid_tgid);
    }
    let mut n = n;
    if call.len_ptr != 0 {
        // _ex variants return 1 on success and the count through a pointer.
        if n != 1 {
            return;
        }
        let mut v = 0u64;
        let r = unsafe { bpf_probe_read_user((&mut v as *mut u64).cast(), 8, call.len_ptr as *const _) };
        if r != 0 {
            return;
        }
        n = v as i64;
    }
    if n <= 0 {
        return;
    }
    let tgid = pid_tgid >> 32;
    let skey = TlsKey { a: tgid, b: call.session };
    // rustls calls carry no session (0): no per-session socket is kept for them.
    let sock = if call.sock != 0 {
        if call.session != 0 {
            let _ = TLS_SOCK.insert(&skey, &call.sock, 0);
        }
        call.sock
    } else if call.session != 0 {
        unsafe { TLS_SOCK.get(&skey) }.copied().unwrap_or(0)
    } else {
        0
    };
    let mut flags = FLAG_TLS;
    let (family, protocol) = if sock != 0 { inet_kind(sock).unwrap_or((0, 0)) } else { (0, 0) };
    let cs: *mut ConnState = match (sock != 0 && family != 0).then(|| get_or_create(sock, 0)).flatten() {
        Some((p, created)) => {
            if created {
                flags |= FLAG_MIDSTREAM;
            }
            p
        }
        None => {
            flags |= FLAG_UNTRACKED;
            let Some(local) = TLS_UNTRACKED.get_ptr_mut(0) else { return };
            unsafe {
                core::ptr::write_bytes(local, 0, 1);
                (*local).tuple_ok = 1;
            }
            local
        }
    };
    let Some(s) = begin(KIND_DATA, syscall, call.fd, sock, family, protocol, cs) else { return };
    let h = unsafe { &mut (*s).header };
    h.direction = dir;
    h.flags = flags;
    h.tls_lib = call.lib as u16;
    h.conn_id = unsafe { (*cs).conn_id };
    let pos_ptr = unsafe {
        if dir == DIR_EGRESS { &mut (*cs).tls_tx_pos as *mut u64 } else { &mut (*cs).tls_rx_pos as *mut u64 }
    };
    let pos0 = reserve(pos_ptr, n as u64);
    if flags & FLAG_UNTRACKED == 0 {
        // This direction's plaintext is captured: its ciphertext is counted from now on.
        unsafe { (*cs).tls_plain |= dir };
    }
    unsafe {
        h.tx_total = (*cs).tls_tx_pos;
        h.rx_total = (*cs).tls_rx_pos;
    }
    let (iov, iovcnt, buf) = if call.iovcnt != 0 { (call.buf, call.iovcnt as u64, 0) } else { (0, 0, call.buf) };
    stream(s, iov, iovcnt, buf, n as u64, pos0);
}

#[inline(always)]
fn c_key(pid_tgid: u64) -> TlsKey {
    TlsKey { a: pid_tgid, b: 0 }
}

#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u64 {
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// Entry of `SSL_write`/`SSL_read`/`gnutls_record_send`/`_recv`: (session, buf, len).
#[uprobe]
pub fn tls_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let session: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    start(c_key(pid_tgid), pid_tgid, call(session, buf, 0, cookie(&ctx)), true);
    0
}

/// Entry of `SSL_write_ex`/`SSL_read_ex`: (ssl, buf, num, size_t *done).
#[uprobe]
pub fn tls_entry_ex(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let session: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let done: u64 = ctx.arg(3).unwrap_or(0);
    start(c_key(pid_tgid), pid_tgid, call(session, buf, done, cookie(&ctx)), true);
    0
}

macro_rules! c_return {
    ($name:ident, $ty:ty, $sys:expr, $dir:expr) => {
        #[uretprobe]
        pub fn $name(ctx: RetProbeContext) -> u32 {
            let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
            let ret: u64 = ctx.ret();
            finish(c_key(pid_tgid), pid_tgid, ret as $ty as i64, $sys, $dir);
            0
        }
    };
}

// SSL_write/SSL_read return int; gnutls_record_send/recv return ssize_t.
c_return!(ssl_write_ret, i32, SYS_SSL_WRITE, DIR_EGRESS);
c_return!(ssl_read_ret, i32, SYS_SSL_READ, DIR_INGRESS);
c_return!(gnutls_send_ret, i64, SYS_GNUTLS_SEND, DIR_EGRESS);
c_return!(gnutls_recv_ret, i64, SYS_GNUTLS_RECV, DIR_INGRESS);

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    unsafe { &*ctx.regs }
}

#[inline(always)]
fn go_key(pid_tgid: u64, r: &pt_regs) -> TlsKey {
    TlsKey { a: pid_tgid >> 32, b: r.r14 }
}

/// Entry of Go `(*Conn).Write`/`Read`: RAX = *Conn, RBX = b.ptr, RCX = b.len, R14 = g.
#[uprobe]
pub fn go_tls_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let r = regs(&ctx);
    start(go_key(pid_tgid, r), pid_tgid, call(r.rax, r.rbx, 0, cookie(&ctx)), true);
    0
}

/// A RET of Go `(*Conn).Write`: RAX = n.
#[uprobe]
pub fn go_tls_write_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let r = regs(&ctx);
    finish(go_key(pid_tgid, r), pid_tgid, r.rax as i64, SYS_GO_TLS_WRITE, DIR_EGRESS);
    0
}

/// A RET of Go `(*Conn).Read`: RAX = n.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let r = regs(&ctx);
    finish(go_key(pid_tgid, r), pid_tgid, r.rax as i64, SYS_GO_TLS_READ, DIR_INGRESS);
    0
}

/// rustls calls are keyed by thread: a write in flight, a write held for its
/// socket write, and a read, apart, so one never replaces another.
#[inline(always)]
fn rustls_key(pid_tgid: u64, slot: u64) -> TlsKey {
    TlsKey { a: pid_tgid, b: slot }
}
const RUSTLS_WRITING: u64 = 1;
const RUSTLS_HELD: u64 = 2;
const RUSTLS_READING: u64 = 3;

/// `io::Result<usize>` of a rustls call: the count if `Ok` and not 0.
#[inline(always)]
fn rustls_ok(ctx: &RetProbeContext) -> Option<u64> {
    let r = unsafe { &*ctx.regs };
    (r.rax == 0 && r.rdx != 0).then_some(r.rdx)
}

#[inline(always)]
fn rustls_write_start(ctx: &ProbeContext, iovcnt: u32) {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let mut c = call(0, buf, 0, cookie(ctx));
    c.iovcnt = iovcnt;
    start(rustls_key(pid_tgid, RUSTLS_WRITING), pid_tgid, c, false);
}

/// Entry of rustls `<Writer as io::Write>::write(&mut self, buf: &[u8])`.
#[uprobe]
pub fn rustls_write_entry(ctx: ProbeContext) -> u32 {
    rustls_write_start(&ctx, 0);
    0
}

/// Entry of rustls `<Writer as io::Write>::write_vectored(&mut self, bufs: &[IoSlice])`
/// (an `IoSlice` is an iovec).
#[uprobe]
pub fn rustls_writev_entry(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(2).unwrap_or(0);
    rustls_write_start(&ctx, n.clamp(1, u32::MAX as u64) as u32);
    0
}

/// Return of rustls `Writer::write`/`write_vectored`: holds the accepted
/// count until the thread's next TCP write (see the module doc). A write
/// still held from before is emitted now, without a connection.
#[uretprobe]
pub fn rustls_write_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let writing = rustls_key(pid_tgid, RUSTLS_WRITING);
    let held = rustls_key(pid_tgid, RUSTLS_HELD);
    let Some(n) = rustls_ok(&ctx) else {
        let _ = TLS_PENDING.remove(&writing);
        return 0;
    };
    if let Some(old) = unsafe { TLS_PENDING.get(&held) }.map(|c| c.held) {
        finish(held, pid_tgid, old as i64, SYS_RUSTLS_WRITE, DIR_EGRESS);
    }
    let Some(c) = TLS_PENDING.get_ptr_mut(&writing) else { return 0 };
    unsafe { (*c).held = n };
    if TLS_PENDING.insert(&held, unsafe { &*c }, 0).is_err() || TLS_ACTIVE.insert(&pid_tgid, &held, 0).is_err() {
        stat_add(STAT_PENDING_FULL, 1);
    }
    let _ = TLS_PENDING.remove(&writing);
    0
}

/// Tail call of a TCP write's enter on a thread holding a rustls write: emits it
/// on that syscall's socket.
#[tracepoint]
pub fn rustls_flush(_ctx: TracePointContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let key = rustls_key(pid_tgid, RUSTLS_HELD);
    let Some(n) = unsafe { TLS_PENDING.get(&key) }.map(|c| c.held) else { return 0 };
    finish(key, pid_tgid, n as i64, SYS_RUSTLS_WRITE, DIR_EGRESS);
    0
}

/// Entry of rustls `<Reader as io::Read>::read(&mut self, buf: &mut [u8])`.
#[uprobe]
pub fn rustls_read_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    start(rustls_key(pid_tgid, RUSTLS_READING), pid_tgid, call(0, buf, 0, cookie(&ctx)), false);
    0
}

/// Return of rustls `Reader::read`: the plaintext belongs to the thread's last
/// TCP read (the `read_tls` that received it).
#[uretprobe]
pub fn rustls_read_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let key = rustls_key(pid_tgid, RUSTLS_READING);
    let Some(n) = rustls_ok(&ctx) else {
        let _ = TLS_PENDING.remove(&key);
        return 0;
    };
    if let Some(p) = PENDING.current(false)
        && let Some(c) = TLS_PENDING.get_ptr_mut(&key)
    {
        // A socket closed since (no longer tracked) is not revived: the
        // plaintext is then emitted without a connection.
        let rx = unsafe { (*p).rx_sock };
        if rx != 0 && unsafe { crate::maps::CONNS.get(&rx) }.is_some() {
            unsafe {
                (*c).sock = rx;
                (*c).fd = (*p).rx_fd;
            }
        }
    }
    finish(key, pid_tgid, n as i64, SYS_RUSTLS_READ, DIR_INGRESS);
    0
}
