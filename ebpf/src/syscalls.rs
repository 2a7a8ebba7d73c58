//! Syscall tracepoint programs: data path (read/write families) and connection
//! lifecycle (connect, accept, close).
//!
//! Tracepoint record layout (stable, see `events/syscalls/*/format`): syscall
//! arguments are 8-byte fields from offset 16; the exit record's `ret` is at 16.
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use wiretrail_common::*;

use crate::{
    conn::{get_or_create, reserve},
    emit::{begin, stream, stream_iovecs, submit_header},
    kernel::{InetSock, Sock, fd_to_inet_sock, fd_to_sock, forget_fd, inet_kind},
    maps::{CONNS, PENDING, PendingCall, config, stat_add},
};

const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * i).unwrap_or(0) }
}

/// pid_tgid of the current task if capture is on and it is not the agent.
#[inline(always)]
fn capturing() -> Option<u64> {
    let cfg = config();
    if cfg.enabled == 0 {
        return None;
    }
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        return None;
    }
    Some(pid_tgid)
}

/// sys_enter_*: stash the arguments if `fd` is an INET TCP/UDP socket.
#[inline(always)]
fn enter(ctx: &TracePointContext, syscall: u8) {
    let Some(pid_tgid) = capturing() else { return };
    let fd = arg(ctx, 0) as i64 as i32;
    let Some(InetSock { sock: Sock { sk, ino }, family, protocol }) =
        fd_to_inet_sock((pid_tgid >> 32) as u32, fd as i64)
    else {
        return;
    };
    let flush = crate::tls::note_socket(pid_tgid, sk, fd, syscall, protocol, arg(ctx, 1));
    let addr = if syscall == SYS_SENDTO || syscall == SYS_RECVFROM { arg(ctx, 4) } else { 0 };
    let call = PendingCall {
        sock: sk,
        ino,
        a0: arg(ctx, 1),
        a1: arg(ctx, 2),
        addr,
        fd,
        syscall,
        family,
        protocol,
        _pad: 0,
        rx_sock: 0,
        rx_fd: -1,
        _pad2: 0,
    };
    let rx =
        protocol == PROTO_TCP && matches!(syscall, SYS_READ | SYS_READV | SYS_RECVFROM | SYS_RECVMSG | SYS_RECVMMSG);
    stash(&call, rx);
    if flush {
        crate::tls::flush_held(ctx);
    }
}

/// Stashes `call` in the current thread's storage until the syscall's exit;
/// the thread's last TCP read socket is replaced by this one if `rx`, else kept.
#[inline(always)]
fn stash(call: &PendingCall, rx: bool) {
    match PENDING.current(true) {
        Some(p) => unsafe {
            let (rx_sock, rx_fd) = if rx { (call.sock, call.fd) } else { ((*p).rx_sock, (*p).rx_fd) };
            *p = *call;
            (*p).rx_sock = rx_sock;
            (*p).rx_fd = rx_fd;
        },
        None => stat_add(STAT_PENDING_FULL, 1),
    }
}

/// Takes the stashed call of the current thread, if it is `syscall`.
#[inline(always)]
fn take(syscall: u8) -> Option<PendingCall> {
    let p = PENDING.current(false)?;
    let call = unsafe { *p };
    if call.syscall == 0 {
        return None;
    }
    unsafe { (*p).syscall = 0 };
    if call.syscall == syscall { Some(call) } else { None }
}

/// Per-datagram peer of an unconnected UDP socket, from a user sockaddr.
#[inline(always)]
fn peer_from_sockaddr(h: &mut EventHeader, addr: u64) {
    if addr == 0 {
        return;
    }
    let mut sa = [0u8; 24];
    let r = unsafe { bpf_probe_read_user(sa.as_mut_ptr().cast(), 24, addr as *const c_void) };
    if r != 0 {
        return;
    }
    let fam = u16::from_ne_bytes([sa[0], sa[1]]);
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    if fam == AF_INET {
        h.raddr = [0; 16];
        h.raddr[0] = sa[4];
        h.raddr[1] = sa[5];
        h.raddr[2] = sa[6];
        h.raddr[3] = sa[7];
    } else if fam == AF_INET6 {
        let mut a = [0u8; 16];
        let r = unsafe { bpf_probe_read_user(a.as_mut_ptr().cast(), 16, (addr + 8) as *const c_void) };
        if r != 0 {
            return;
        }
        h.raddr = a;
    } else {
        return;
    }
    h.rport = port;
    h.flags |= FLAG_PEER_FROM_ARG;
}

/// The user `struct msghdr` fields we need.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u64,
    iov: u64,
    iovlen: u64,
}

#[inline(always)]
fn read_msghdr(addr: u64) -> Option<MsgHdr> {
    let mut m = MsgHdr { name: 0, namelen: 0, iov: 0, iovlen: 0 };
    let r = unsafe { bpf_probe_read_user((&mut m as *mut MsgHdr).cast(), 32, addr as *const c_void) };
    if r == 0 { Some(m) } else { None }
}

/// sys_exit_* of a data syscall: emit the bytes actually transferred.
#[inline(always)]
fn exit_data(ctx: &TracePointContext, syscall: u8, dir: u8) {
    let Some(call) = take(syscall) else { return };
    let ret = arg(ctx, 0) as i64;
    if ret <= 0 {
        return;
    }
    let mut local: ConnState = unsafe { core::mem::zeroed() };
    let mut flags = 0u8;
    let cs: *mut ConnState = match get_or_create(call.sock, call.ino) {
        Some((p, created)) => {
            if created {
                flags |= FLAG_MIDSTREAM;
            }
            p
        }
        None => {
            flags |= FLAG_UNTRACKED;
            &mut local
        }
    };
    let Some(s) = begin(KIND_DATA, syscall, call.fd, call.sock, call.family, call.protocol, cs) else {
        return;
    };
    let h = unsafe { &mut (*s).header };
    h.direction = dir;
    h.flags = flags;
    let base_flags = h.flags;
    h.conn_id = unsafe { (*cs).conn_id };
    let pos_ptr =
        unsafe { if dir == DIR_EGRESS { &mut (*cs).tx_pos as *mut u64 } else { &mut (*cs).rx_pos as *mut u64 } };
    let udp = call.protocol == PROTO_UDP;
    if syscall == SYS_RECVMMSG || syscall == SYS_SENDMMSG {
        // ret is the number of messages; each mmsghdr is 64 bytes (msghdr + msg_len).
        for i in 0..MAX_MMSG as u64 {
            if i >= ret as u64 {
                break;
            }
            let mh = call.a0 + i * 64;
            let Some(m) = read_msghdr(mh) else { break };
            let mut len = 0u32;
            let r = unsafe { bpf_probe_read_user((&mut len as *mut u32).cast(), 4, (mh + 56) as *const c_void) };
            if r != 0 {
                break;
            }
            let pos0 = reserve(pos_ptr, len as u64);
            h.flags = base_flags;
            if udp {
                peer_from_sockaddr(h, m.name);
            }
            set_totals(h, cs);
            // No gathering here: inside this loop it makes the program too large to verify.
            stream_iovecs(s, m.iov, m.iovlen, len as u64, pos0);
        }
        return;
    }
    let pos0 = reserve(pos_ptr, ret as u64);
    set_totals(h, cs);
    if call.protocol == PROTO_TCP && pos0 == 0 && ret >= 3 && crate::tls::starts_tls_handshake(syscall, call.a0) {
        unsafe { (*cs).tls_plain |= TLS_HELLO_SEEN };
    }
    let plain = unsafe { (*cs).tls_plain };
    if call.protocol == PROTO_TCP
        && plain & TLS_HELLO_SEEN != 0
        && plain & dir != 0
        && config().enabled & CONFIG_KEEP_CIPHERTEXT == 0
    {
        // Ciphertext whose plaintext a library probe captures: counted and
        // timed, not copied.
        crate::emit::truncated(s, pos0, ret as u64, FLAG_NOT_KEPT);
        return;
    }
    match syscall {
        SYS_READV | SYS_WRITEV => stream(s, call.a0, call.a1, 0, ret as u64, pos0),
        SYS_RECVMSG | SYS_SENDMSG => {
            let Some(m) = read_msghdr(call.a0) else {
                crate::emit::truncated(s, pos0, ret as u64, FLAG_UNREADABLE);
                return;
            };
            if udp {
                peer_from_sockaddr(h, m.name);
            }
            stream(s, m.iov, m.iovlen, 0, ret as u64, pos0)
        }
        _ => {
            if udp {
                peer_from_sockaddr(h, call.addr);
            }
            stream(s, 0, 0, call.a0, ret as u64, pos0)
        }
    }
}

#[inline(always)]
fn set_totals(h: &mut EventHeader, cs: *mut ConnState) {
    unsafe {
        h.tx_total = (*cs).tx_pos;
        h.rx_total = (*cs).rx_pos;
    }
}

/// Emits a lifecycle event for `sk` (connect or accept).
#[inline(always)]
fn lifecycle(kind: u8, syscall: u8, fd: i32, Sock { sk, ino }: Sock, family: u8, protocol: u8) {
    let Some((cs, _)) = get_or_create(sk, ino) else {
        return;
    };
    let Some(s) = begin(kind, syscall, fd, sk, family, protocol, cs) else {
        return;
    };
    let h = unsafe { &mut (*s).header };
    h.conn_id = unsafe { (*cs).conn_id };
    set_totals(h, cs);
    submit_header(s);
}

/// connect() of any process; the agent's own connects are stashed too (marked)
/// so their local endpoints can be registered in `AGENT_ENDPOINTS`.
#[inline(always)]
fn enter_connect(ctx: &TracePointContext) {
    let cfg = config();
    if cfg.enabled == 0 {
        return;
    }
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    if (pid_tgid >> 32) as u32 != cfg.agent_tgid {
        enter(ctx, SYS_CONNECT);
        return;
    }
    let fd = arg(ctx, 0) as i64 as i32;
    let Some(Sock { sk, ino }) = fd_to_sock(fd as i64) else { return };
    let Some((family, protocol)) = inet_kind(sk) else { return };
    let call = PendingCall {
        sock: sk,
        ino,
        a0: 0,
        a1: 0,
        addr: 0,
        fd,
        syscall: SYS_CONNECT,
        family,
        protocol,
        _pad: AGENT_CALL,
        rx_sock: 0,
        rx_fd: -1,
        _pad2: 0,
    };
    stash(&call, false);
}

/// `PendingCall::_pad` marker of the agent's own connect.
const AGENT_CALL: u8 = 1;

#[inline(always)]
fn exit_connect(ctx: &TracePointContext) {
    let Some(call) = take(SYS_CONNECT) else {
        return;
    };
    let ret = arg(ctx, 0) as i64;
    if call._pad == AGENT_CALL {
        if ret == 0 || ret == -EINPROGRESS {
            crate::kernel::register_agent_endpoint(call.sock, call.family);
        }
        return;
    }
    if ret == 0 || ret == -EINPROGRESS {
        let sock = Sock { sk: call.sock, ino: call.ino };
        lifecycle(KIND_CONNECT, SYS_CONNECT, call.fd, sock, call.family, call.protocol);
    }
}

/// accept needs nothing from its enter: a process already blocked in accept()
/// when the agent attached (no stash) still gets its accepted connection.
#[inline(always)]
fn exit_accept(ctx: &TracePointContext, syscall: u8) {
    if take(syscall).is_none() && capturing().is_none() {
        return;
    }
    let ret = arg(ctx, 0) as i64;
    if ret < 0 {
        return;
    }
    let Some(sock) = fd_to_sock(ret) else { return };
    let Some((family, protocol)) = inet_kind(sock.sk) else {
        return;
    };
    lifecycle(KIND_ACCEPT, syscall, ret as i32, sock, family, protocol);
}

#[inline(always)]
fn enter_close(ctx: &TracePointContext) {
    if capturing().is_none() {
        return;
    }
    let fd = arg(ctx, 0) as i64 as i32;
    let Some(Sock { sk, ino }) = fd_to_sock(fd as i64) else {
        return;
    };
    forget_fd((unsafe { bpf_get_current_pid_tgid() } >> 32) as u32, fd);
    // A forked child or a dup still holds the socket: the connection goes on.
    if !crate::kernel::is_last_ref(fd as i64) {
        return;
    }
    let Some(cs) = CONNS.get_ptr_mut(&sk) else {
        return;
    };
    // An entry of a dead socket at this address is not this socket's: it
    // goes, and nothing is said for a connection never seen.
    let known = unsafe { (*cs).ino };
    if known != 0 && known != ino {
        let _ = CONNS.remove(&sk);
        return;
    }
    let Some((family, protocol)) = inet_kind(sk) else {
        return;
    };
    let Some(s) = begin(KIND_CLOSE, SYS_CLOSE, fd, sk, family, protocol, cs) else {
        return;
    };
    let h = unsafe { &mut (*s).header };
    h.conn_id = unsafe { (*cs).conn_id };
    set_totals(h, cs);
    submit_header(s);
    let _ = CONNS.remove(&sk);
}

macro_rules! data_pair {
    ($enter:ident, $exit:ident, $sys:expr, $dir:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter(&ctx, $sys);
            0
        }
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit_data(&ctx, $sys, $dir);
            0
        }
    };
}

data_pair!(sys_enter_read, sys_exit_read, SYS_READ, DIR_INGRESS);
data_pair!(sys_enter_write, sys_exit_write, SYS_WRITE, DIR_EGRESS);
data_pair!(sys_enter_readv, sys_exit_readv, SYS_READV, DIR_INGRESS);
data_pair!(sys_enter_writev, sys_exit_writev, SYS_WRITEV, DIR_EGRESS);
data_pair!(sys_enter_recvfrom, sys_exit_recvfrom, SYS_RECVFROM, DIR_INGRESS);
data_pair!(sys_enter_sendto, sys_exit_sendto, SYS_SENDTO, DIR_EGRESS);
data_pair!(sys_enter_recvmsg, sys_exit_recvmsg, SYS_RECVMSG, DIR_INGRESS);
data_pair!(sys_enter_sendmsg, sys_exit_sendmsg, SYS_SENDMSG, DIR_EGRESS);
data_pair!(sys_enter_recvmmsg, sys_exit_recvmmsg, SYS_RECVMMSG, DIR_INGRESS);
data_pair!(sys_enter_sendmmsg, sys_exit_sendmmsg, SYS_SENDMMSG, DIR_EGRESS);

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    enter_connect(&ctx);
    0
}
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    exit_connect(&ctx);
    0
}
#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter(&ctx, SYS_ACCEPT);
    0
}
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx, SYS_ACCEPT);
    0
}
#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    enter(&ctx, SYS_ACCEPT4);
    0
}
#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit_accept(&ctx, SYS_ACCEPT4);
    0
}
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    enter_close(&ctx);
    0
}

/// A new program image: tell the agent so it can look for TLS libraries in it.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if capturing().is_none() {
        return 0;
    }
    let mut blank: ConnState = unsafe { core::mem::zeroed() };
    blank.tuple_ok = 1;
    if let Some(s) = begin(KIND_EXEC, 0, -1, 0, 0, 0, &mut blank) {
        crate::emit::submit_exec(s);
    }
    0
}
