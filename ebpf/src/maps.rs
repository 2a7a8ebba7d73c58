//! Maps and read-only globals shared by all programs.
use aya_ebpf::{
    macros::{btf_map, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use wiretrail_common::{CaptureConfig, ConnState, KernelOffsets, STAT_COUNT, ScratchEvent};

/// Events to user space. The agent resizes it at load (`--ring-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(32 << 20, 0);

/// Exec notifications only (control plane): never stuck behind data events.
#[map]
pub static EXECS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// One event under construction per CPU (too large for the 512-byte stack),
/// indexed by CPU id. A plain array because per-CPU values are limited to 32 KiB;
/// the agent sizes it to the number of possible CPUs at load.
#[map]
pub static SCRATCH: Array<ScratchEvent> = Array::with_max_entries(1, 0);

/// State of the chunking loop (see `emit::Cursor`).
#[map]
pub static CURSOR: PerCpuArray<crate::emit::Cursor> = PerCpuArray::with_max_entries(1, 0);

/// Syscall arguments stashed at enter in the calling thread, consumed at exit
/// (`syscall == 0`: nothing stashed).
#[btf_map]
pub static PENDING: crate::task::TaskStorage<PendingCall> = crate::task::TaskStorage::new();

/// Per-socket tracking, keyed by the kernel `struct sock` address.
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(262144, 0);

/// Sockets behind fds, so `sys_enter_*` need not walk fd → file → socket →
/// sock on every call (see `kernel::fd_to_inet_sock` for when a hit is used).
#[map]
pub static SOCK_CACHE: LruHashMap<FdKey, CachedSock> = LruHashMap::with_max_entries(65536, 0);

/// One fd of one process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: i32,
}

/// What `SOCK_CACHE` remembers of an fd.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedSock {
    /// `struct file *` the fd held.
    pub file: u64,
    pub sk: u64,
    /// Inode number of the socket: the check against a file reusing memory.
    pub ino: u64,
    pub family: u8,
    pub protocol: u8,
    pub _pad: [u8; 6],
}

/// Local endpoints of the agent's own sockets (see `wiretrail_common::Endpoint`).
#[map]
pub static AGENT_ENDPOINTS: LruHashMap<wiretrail_common::Endpoint, u8> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU counters, indexed by `STAT_*`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Next connection id (single slot, incremented atomically).
#[map]
pub static NEXT_CONN_ID: Array<u64> = Array::with_max_entries(1, 0);

/// Filled in by the agent before load from the running kernel's BTF.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    skc_net: 0,
    net_inum: 0,
    sk_protocol: 0,
    file_refcnt: 0,
    file_last_ref: 0,
    task_mm: 0,
    mm_exe_file: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    _pad0: 0,
};

/// Filled in by the agent before load.
#[unsafe(no_mangle)]
pub static CONFIG: CaptureConfig = CaptureConfig { agent_tgid: 0, enabled: 0, conn_cap_bytes: 0 };

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // Volatile so the compiler cannot fold the zero initializer.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub fn config() -> CaptureConfig {
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Arguments of a data or lifecycle syscall between its enter and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    /// `struct sock *` of the fd at enter.
    pub sock: u64,
    /// Inode number of that socket.
    pub ino: u64,
    /// Buffer, iovec array, msghdr or mmsghdr array (by syscall).
    pub a0: u64,
    /// Count, iovec count or vlen (by syscall).
    pub a1: u64,
    /// sockaddr pointer of sendto/recvfrom (0 if none).
    pub addr: u64,
    pub fd: i32,
    pub syscall: u8,
    pub family: u8,
    pub protocol: u8,
    pub _pad: u8,
    /// The socket of the thread's last TCP read-family syscall, and its fd:
    /// kept across calls for rustls, whose `Reader::read` hands out plaintext
    /// that the `read_tls` just before it received (see `tls`).
    pub rx_sock: u64,
    pub rx_fd: i32,
    pub _pad2: u32,
}

#[inline(always)]
pub fn stat_add(idx: u32, v: u64) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        unsafe { *p += v };
    }
}
