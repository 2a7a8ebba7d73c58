//! Reads of kernel structures at offsets computed from BTF by the agent.
use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel};
use wiretrail_common::{EventHeader, FAMILY_INET, FAMILY_INET6, PROTO_TCP, PROTO_UDP};

use crate::maps::{CachedSock, FdKey, SOCK_CACHE, offsets};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

#[inline(always)]
pub unsafe fn read<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = unsafe { bpf_probe_read_kernel(v.as_mut_ptr().cast(), core::mem::size_of::<T>() as u32, addr as *const _) };
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

/// True when the current task's `fd` holds the last reference to its file:
/// closing it ends the socket (a forked child or a dup may still hold it).
#[inline(always)]
pub fn is_last_ref(fd: i64) -> bool {
    let Some(file) = fd_to_file(fd) else { return false };
    let o = offsets();
    match unsafe { read::<i64>(file + o.file_refcnt as u64) } {
        Some(n) => n == o.file_last_ref as i64,
        None => true,
    }
}

/// `struct file *` behind `fd` of the current task.
#[inline(always)]
pub fn fd_to_file(fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let o = offsets();
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read(task + o.task_files as u64)?;
        let fdt: u64 = read(files + o.files_fdt as u64)?;
        let max: u32 = read(fdt + o.fdt_max_fds as u64)?;
        if fd as u64 >= max as u64 {
            return None;
        }
        let fds: u64 = read(fdt + o.fdt_fd as u64)?;
        let file: u64 = read(fds + (fd as u64) * 8)?;
        if file == 0 { None } else { Some(file) }
    }
}

/// A socket behind an fd: its `struct sock *` and its inode number.
///
/// The address alone does not name a socket for long: a socket freed without
/// a close(2) the agent sees (its process exited) leaves its tracking entry
/// behind, and the kernel soon hands the same memory to a new socket. The
/// inode number is unique per socket, so `conn::get_or_create` uses it to
/// tell the new socket from the dead one.
#[derive(Clone, Copy)]
pub struct Sock {
    pub sk: u64,
    pub ino: u64,
}

/// An INET TCP/UDP socket behind an fd, with its family and protocol.
#[derive(Clone, Copy)]
pub struct InetSock {
    pub sock: Sock,
    pub family: u8,
    pub protocol: u8,
}

/// The INET TCP/UDP socket behind `fd` of the current task (process `tgid`).
///
/// The inode mode is read first: most reads and writes of a busy host are of
/// files and pipes, and those end here without a map operation. For a socket,
/// a hit in `SOCK_CACHE` skips the reads of the socket, the sock and its family
/// and protocol, but is used only when the fd still holds the same
/// `struct file` *and* that file's inode number is the cached one: however the
/// fd was replaced (close, dup2, exec closing CLOEXEC fds, a process exiting
/// and its pid coming back), a new socket has another inode number, even when
/// its file reuses the old file's memory. Sockets of other kinds (Unix,
/// netlink) are cached too, with their family, so they also skip the reads.
#[inline(always)]
pub fn fd_to_inet_sock(tgid: u32, fd: i64) -> Option<InetSock> {
    let file = fd_to_file(fd)?;
    let o = offsets();
    let inode: u64 = unsafe { read(file + o.file_inode as u64)? };
    let mode: u16 = unsafe { read(inode + o.inode_mode as u64)? };
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let ino: u64 = unsafe { read(inode + o.inode_ino as u64)? };
    let key = FdKey { tgid, fd: fd as i32 };
    if let Some(c) = unsafe { SOCK_CACHE.get(&key) }
        && c.file == file
        && c.ino == ino
    {
        return is_inet(c.family, c.protocol).then_some(InetSock {
            sock: Sock { sk: c.sk, ino },
            family: c.family,
            protocol: c.protocol,
        });
    }
    let socket: u64 = unsafe { read(file + o.file_private_data as u64)? };
    let sk: u64 = unsafe { read(socket + o.socket_sk as u64)? };
    if sk == 0 {
        return None;
    }
    let (family, protocol) = sock_kind(sk)?;
    let entry = CachedSock { file, sk, ino, family, protocol, _pad: [0; 6] };
    let _ = SOCK_CACHE.insert(&key, &entry, 0);
    is_inet(family, protocol).then_some(InetSock { sock: Sock { sk, ino }, family, protocol })
}

/// Forgets the cached socket of `fd` (the fd is being closed).
#[inline(always)]
pub fn forget_fd(tgid: u32, fd: i32) {
    let _ = SOCK_CACHE.remove(&FdKey { tgid, fd });
}

#[inline(always)]
fn file_to_sock(file: u64, inode: u64) -> Option<Sock> {
    let o = offsets();
    unsafe {
        let mode: u16 = read(inode + o.inode_mode as u64)?;
        if mode & S_IFMT != S_IFSOCK {
            return None;
        }
        let ino: u64 = read(inode + o.inode_ino as u64)?;
        let socket: u64 = read(file + o.file_private_data as u64)?;
        let sk: u64 = read(socket + o.socket_sk as u64)?;
        if sk == 0 { None } else { Some(Sock { sk, ino }) }
    }
}

/// The socket behind `fd` of the current task, if `fd` is a socket.
#[inline(always)]
pub fn fd_to_sock(fd: i64) -> Option<Sock> {
    let file = fd_to_file(fd)?;
    let inode: u64 = unsafe { read(file + offsets().file_inode as u64)? };
    file_to_sock(file, inode)
}

/// (family, protocol) of an INET TCP/UDP sock; `None` for anything else.
#[inline(always)]
pub fn inet_kind(sk: u64) -> Option<(u8, u8)> {
    let (family, protocol) = sock_kind(sk)?;
    is_inet(family, protocol).then_some((family, protocol))
}

/// (family, protocol) of any sock as bytes; a value over 255 (e.g.
/// IPPROTO_MPTCP, 262) becomes 255 rather than wrapping onto TCP's 6.
#[inline(always)]
fn sock_kind(sk: u64) -> Option<(u8, u8)> {
    let o = offsets();
    unsafe {
        let family: u16 = read(sk + o.skc_family as u64)?;
        let proto: u16 = read(sk + o.sk_protocol as u64)?;
        Some((u8::try_from(family).unwrap_or(u8::MAX), u8::try_from(proto).unwrap_or(u8::MAX)))
    }
}

/// An INET (v4 or v6) TCP or UDP socket.
#[inline(always)]
fn is_inet(family: u8, protocol: u8) -> bool {
    (family == FAMILY_INET || family == FAMILY_INET6) && (protocol == PROTO_TCP || protocol == PROTO_UDP)
}

/// Reads local/remote addresses, ports and network namespace of `sk` into `h`.
#[inline(always)]
pub fn read_tuple(sk: u64, family: u8, h: &mut EventHeader) {
    let o = offsets();
    unsafe {
        h.lport = read::<u16>(sk + o.skc_num as u64).unwrap_or(0);
        h.rport = u16::from_be(read::<u16>(sk + o.skc_dport as u64).unwrap_or(0));
        h.raddr = [0; 16];
        h.laddr = [0; 16];
        if family == FAMILY_INET {
            let d: [u8; 4] = read(sk + o.skc_daddr as u64).unwrap_or([0; 4]);
            let s: [u8; 4] = read(sk + o.skc_rcv_saddr as u64).unwrap_or([0; 4]);
            h.raddr[0] = d[0];
            h.raddr[1] = d[1];
            h.raddr[2] = d[2];
            h.raddr[3] = d[3];
            h.laddr[0] = s[0];
            h.laddr[1] = s[1];
            h.laddr[2] = s[2];
            h.laddr[3] = s[3];
        } else {
            h.raddr = read(sk + o.skc_v6_daddr as u64).unwrap_or([0; 16]);
            h.laddr = read(sk + o.skc_v6_rcv_saddr as u64).unwrap_or([0; 16]);
        }
        let net: u64 = read(sk + o.skc_net as u64).unwrap_or(0);
        h.netns = if net == 0 { 0 } else { read::<u32>(net + o.net_inum as u64).unwrap_or(0) };
    }
}

/// Records the local endpoint of one of the agent's own sockets.
#[inline(always)]
pub fn register_agent_endpoint(sk: u64, family: u8) {
    let o = offsets();
    let mut key = wiretrail_common::Endpoint { addr: [0; 16], port: 0, _pad: [0; 6] };
    unsafe {
        key.port = read::<u16>(sk + o.skc_num as u64).unwrap_or(0);
        if family == FAMILY_INET {
            let a: [u8; 4] = read(sk + o.skc_rcv_saddr as u64).unwrap_or([0; 4]);
            key.addr[0] = a[0];
            key.addr[1] = a[1];
            key.addr[2] = a[2];
            key.addr[3] = a[3];
        } else {
            key.addr = read(sk + o.skc_v6_rcv_saddr as u64).unwrap_or([0; 16]);
        }
    }
    if key.port != 0 {
        let _ = crate::maps::AGENT_ENDPOINTS.insert(&key, &1, 0);
    }
}
