//! Configuration handed to the kernel programs as a read-only global before load.
//!
//! Rust eBPF has no CO-RE relocations, so the agent reads the running kernel's
//! BTF at start, computes the byte offsets of the few kernel struct fields the
//! programs must read (fd → file → socket → sock → addresses) and fills this in.

/// Byte offsets of kernel struct fields, computed from `/sys/kernel/btf/vmlinux`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.private_data` (the `struct socket *` of a socket file)
    pub file_private_data: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`
    pub skc_family: u32,
    /// `sock.__sk_common.skc_daddr`
    pub skc_daddr: u32,
    /// `sock.__sk_common.skc_rcv_saddr`
    pub skc_rcv_saddr: u32,
    /// `sock.__sk_common.skc_dport`
    pub skc_dport: u32,
    /// `sock.__sk_common.skc_num`
    pub skc_num: u32,
    /// `sock.__sk_common.skc_v6_daddr`
    pub skc_v6_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`
    pub skc_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_net.net`
    pub skc_net: u32,
    /// `net.ns.inum`
    pub net_inum: u32,
    /// `sock.sk_protocol` (u16)
    pub sk_protocol: u32,
    /// `file.f_ref.refcnt` (6.13+) or `file.f_count`: the file's reference count.
    pub file_refcnt: u32,
    /// The value of that count when only one reference is left: 0 for the biased
    /// `file_ref_t` (6.13+), 1 for the plain `f_count`.
    pub file_last_ref: u32,
    /// `task_struct.mm` (segmentation: the executable of the connecting task)
    pub task_mm: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 104);

/// Runtime settings for the kernel programs (read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The agent's own tgid: its traffic is never captured.
    pub agent_tgid: u32,
    /// Non-zero once the agent filled this struct in; programs do nothing
    /// before. Bit [`CONFIG_TLS`] says TLS uprobes may be attached.
    pub enabled: u32,
    /// Per-connection, per-direction capture cap in bytes (0 = unlimited).
    /// Bytes past the cap are reported as `KIND_TRUNCATED`, never dropped silently.
    pub conn_cap_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 16);

/// `CaptureConfig::enabled` bit: capture is on.
pub const CONFIG_ON: u32 = 1;
/// `CaptureConfig::enabled` bit: TLS uprobes may be attached, so the syscall
/// path must tell an in-flight TLS call which socket it uses (without it,
/// that lookup is skipped on every call).
pub const CONFIG_TLS: u32 = 2;
/// `CaptureConfig::enabled` bit: copy a socket's TLS ciphertext even after its
/// plaintext is captured (by default only its counts and timing are kept:
/// `KIND_TRUNCATED` events with [`FLAG_NOT_KEPT`](crate::FLAG_NOT_KEPT)).
pub const CONFIG_KEEP_CIPHERTEXT: u32 = 4;

/// `ConnState::tls_plain` bit: the socket's stream began with a TLS handshake record.
pub const TLS_HELLO_SEEN: u8 = 4;

/// Per-socket tracking state kept in the kernel (`CONNS` map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    pub conn_id: u64,
    /// Next egress stream position.
    pub tx_pos: u64,
    /// Next ingress stream position.
    pub rx_pos: u64,
    /// Cached tuple (valid when `tuple_ok` is 1): a connected socket's addresses
    /// do not change, so they are read from `struct sock` once, not per event.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub netns: u32,
    /// 1 once the cached tuple is complete (both ports known).
    pub tuple_ok: u8,
    /// 1 once the peer is known not to be one of the agent's own sockets:
    /// set only after bytes flowed both ways, by when the agent's connect()
    /// (which registers its endpoint) has certainly returned.
    pub peer_ok: u8,
    /// Directions (`DIR_EGRESS | DIR_INGRESS` bits) whose TLS plaintext a
    /// library probe has emitted on this socket, and [`TLS_HELLO_SEEN`] once
    /// the socket's first bytes (either direction) were a TLS handshake
    /// record. With both, that direction's ciphertext is counted, not copied
    /// (unless [`CONFIG_KEEP_CIPHERTEXT`]): a socket that did not begin with
    /// TLS is always copied, whatever plaintext was tied to it.
    pub tls_plain: u8,
    pub _pad: [u8; 5],
    /// Next TLS plaintext egress position (separate from the ciphertext stream).
    pub tls_tx_pos: u64,
    /// Next TLS plaintext ingress position.
    pub tls_rx_pos: u64,
    /// Inode number of the socket this entry tracks (0 until an fd path
    /// learns it): a new socket at a dead one's address has another.
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<ConnState>() == 96);

/// Key of an in-flight TLS call: (pid_tgid, 0) for C libraries (one call per
/// thread), (tgid, goroutine pointer) for Go (goroutines move between threads).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsKey {
    pub a: u64,
    pub b: u64,
}
const _: () = assert!(core::mem::size_of::<TlsKey>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CaptureConfig {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ConnState {}

/// A local endpoint of one of the agent's own sockets (`AGENT_ENDPOINTS` key):
/// traffic whose peer is this endpoint is the agent's own, seen from the other
/// side (e.g. a collector on the same host), and is not captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 24);

#[cfg(feature = "user")]
unsafe impl aya::Pod for Endpoint {}
