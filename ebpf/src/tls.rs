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
use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::generated::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use wiretrail_common::*;

use crate::{
    conn::{get_or_create, reserve},
    emit::{begin, stream},
    kernel::inet_kind,
    maps::{config, stat_add},
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
    pub _pad: u32,
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

/// Called from the syscall enter path for socket fds: ties the socket to the
/// TLS call this thread is inside, if any.
#[inline(always)]
pub fn note_socket(pid_tgid: u64, sk: u64, fd: i32) {
    if config().enabled & wiretrail_common::CONFIG_TLS == 0 {
        return;
    }
    if let Some(key) = unsafe { TLS_ACTIVE.get(&pid_tgid) }
        && let Some(call) = TLS_PENDING.get_ptr_mut(key)
    {
        unsafe {
            (*call).sock = sk;
            (*call).fd = fd;
        }
    }
}

#[inline(always)]
fn start(key: TlsKey, pid_tgid: u64, session: u64, buf: u64, len_ptr: u64, lib: u64) {
    if config().enabled == 0 || (pid_tgid >> 32) as u32 == config().agent_tgid {
        return;
    }
    let call = TlsCall { session, buf, len_ptr, sock: 0, lib, fd: -1, _pad: 0 };
    if TLS_PENDING.insert(&key, &call, 0).is_err() || TLS_ACTIVE.insert(&pid_tgid, &key, 0).is_err() {
        stat_add(STAT_PENDING_FULL, 1);
    }
}

#[inline(always)]
fn finish(key: TlsKey, pid_tgid: u64, n: i64, syscall: u8, dir: u8) {
    let Some(call) = (unsafe { TLS_PENDING.get(&key) }).copied() else { return };
    let _ = TLS_PENDING.remove(&key);
    let _ = TLS_ACTIVE.remove(&pid_tgid);
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
    let sock = if call.sock != 0 {
        let _ = TLS_SOCK.insert(&skey, &call.sock, 0);
        call.sock
    } else {
        unsafe { TLS_SOCK.get(&skey) }.copied().unwrap_or(0)
    };
    let mut local: ConnState = unsafe { core::mem::zeroed() };
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
            local.tuple_ok = 1;
            &mut local
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
    unsafe {
        h.tx_total = (*cs).tls_tx_pos;
        h.rx_total = (*cs).tls_rx_pos;
    }
    stream(s, 0, 0, call.buf, n as u64, pos0);
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
    start(c_key(pid_tgid), pid_tgid, session, buf, 0, cookie(&ctx));
    0
}

/// Entry of `SSL_write_ex`/`SSL_read_ex`: (ssl, buf, num, size_t *done).
#[uprobe]
pub fn tls_entry_ex(ctx: ProbeContext) -> u32 {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let session: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let done: u64 = ctx.arg(3).unwrap_or(0);
    start(c_key(pid_tgid), pid_tgid, session, buf, done, cookie(&ctx));
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
    start(go_key(pid_tgid, r), pid_tgid, r.rax, r.rbx, 0, cookie(&ctx));
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
