//! The event the kernel programs emit into the `EVENTS` ring buffer.
//!
//! One ring-buffer record is an [`EventHeader`] immediately followed by
//! `header.len` payload bytes (only for [`KIND_DATA`]).

/// Maximum payload bytes carried by one data event. Larger syscalls are split
/// into several events with contiguous positions.
pub const CHUNK_MAX: usize = 16 * 1024;

/// Upper bound on data events emitted for one syscall (64 MiB); bytes beyond
/// `CHUNK_MAX * MAX_CHUNKS_PER_CALL` are reported as a [`KIND_TRUNCATED`] event.
pub const MAX_CHUNKS_PER_CALL: usize = 4096;

/// Upper bound on iovecs walked for one readv/writev/sendmsg/recvmsg; bytes in
/// later iovecs are reported as a [`KIND_TRUNCATED`] event.
pub const MAX_IOVECS: usize = 32;

/// Upper bound on messages walked for one sendmmsg/recvmmsg call.
pub const MAX_MMSG: usize = 8;

/// Payload bytes of a connection's stream (`pos`..`pos + len`).
pub const KIND_DATA: u8 = 1;
/// An outbound connect() succeeded or is in progress.
pub const KIND_CONNECT: u8 = 2;
/// An inbound connection was accepted.
pub const KIND_ACCEPT: u8 = 3;
/// The socket's last tracked fd was closed; `tx_total`/`rx_total` are final.
pub const KIND_CLOSE: u8 = 4;
/// `len` bytes at `pos` were transferred but deliberately not captured
/// (per-call or per-connection cap). Always explicit, never silent.
pub const KIND_TRUNCATED: u8 = 5;

/// A process called execve (only `pid`, `tid`, `comm`, `ts_ns`, `uid`,
/// `cgroup_id` are set): the agent looks for TLS libraries in the new image.
pub const KIND_EXEC: u8 = 6;

/// Bytes written by the process (egress from its point of view).
pub const DIR_EGRESS: u8 = 1;
/// Bytes read by the process (ingress from its point of view).
pub const DIR_INGRESS: u8 = 2;

pub const FAMILY_INET: u8 = 2;
pub const FAMILY_INET6: u8 = 10;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Syscall that produced the event (`EventHeader::syscall`).
pub const SYS_READ: u8 = 1;
pub const SYS_WRITE: u8 = 2;
pub const SYS_READV: u8 = 3;
pub const SYS_WRITEV: u8 = 4;
pub const SYS_RECVFROM: u8 = 5;
pub const SYS_SENDTO: u8 = 6;
pub const SYS_RECVMSG: u8 = 7;
pub const SYS_SENDMSG: u8 = 8;
pub const SYS_RECVMMSG: u8 = 9;
pub const SYS_SENDMMSG: u8 = 10;
pub const SYS_CONNECT: u8 = 11;
pub const SYS_ACCEPT: u8 = 12;
pub const SYS_ACCEPT4: u8 = 13;
pub const SYS_CLOSE: u8 = 14;
/// TLS plaintext: `SSL_write`/`SSL_write_ex` (OpenSSL, BoringSSL).
pub const SYS_SSL_WRITE: u8 = 20;
/// TLS plaintext: `SSL_read`/`SSL_read_ex`.
pub const SYS_SSL_READ: u8 = 21;
/// TLS plaintext: `gnutls_record_send`.
pub const SYS_GNUTLS_SEND: u8 = 22;
/// TLS plaintext: `gnutls_record_recv`.
pub const SYS_GNUTLS_RECV: u8 = 23;
/// TLS plaintext: Go `crypto/tls.(*Conn).Write`.
pub const SYS_GO_TLS_WRITE: u8 = 24;
/// TLS plaintext: Go `crypto/tls.(*Conn).Read`.
pub const SYS_GO_TLS_READ: u8 = 25;
/// TLS plaintext: rustls `<Writer as io::Write>::write` (and `write_vectored`).
pub const SYS_RUSTLS_WRITE: u8 = 26;
/// TLS plaintext: rustls `<Reader as io::Read>::read`.
pub const SYS_RUSTLS_READ: u8 = 27;

/// `EventHeader::flags`: the remote address came from the syscall's own
/// sockaddr argument (per-datagram peer of an unconnected UDP socket).
pub const FLAG_PEER_FROM_ARG: u8 = 1 << 0;
/// The kernel's connection-tracking map was full: positions of this event are
/// relative to an untracked stream and `conn_id` is 0.
pub const FLAG_UNTRACKED: u8 = 1 << 1;
/// This is the first event seen for the socket and it was not a
/// connect/accept: the connection predates capture (positions start at 0 here).
pub const FLAG_MIDSTREAM: u8 = 1 << 2;
/// On `KIND_TRUNCATED`: the bytes could not be read from the process's memory
/// (rather than being over a configured cap).
pub const FLAG_UNREADABLE: u8 = 1 << 3;
/// The payload is TLS plaintext taken inside a TLS library (its stream
/// positions are those of the plaintext, not of the socket's ciphertext).
pub const FLAG_TLS: u8 = 1 << 4;
/// On `KIND_TRUNCATED`: TLS ciphertext counted, not copied, because the
/// socket's plaintext of that direction is captured by a library probe.
pub const FLAG_NOT_KEPT: u8 = 1 << 5;

/// Header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// Kernel time of the event, `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME, ns).
    pub ts_ns: u64,
    /// Connection id, unique per boot of the kernel programs (never 0 when tracked).
    pub conn_id: u64,
    /// Position in the direction's byte stream of the first byte of this event.
    pub pos: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Bytes sent on this connection so far (final value on `KIND_CLOSE`).
    pub tx_total: u64,
    /// Bytes received on this connection so far (final value on `KIND_CLOSE`).
    pub rx_total: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// File descriptor used by the syscall.
    pub fd: i32,
    /// Network namespace inode of the socket (0 if unreadable).
    pub netns: u32,
    /// Payload bytes following this header (`KIND_DATA`), or bytes not captured
    /// (`KIND_TRUNCATED`).
    pub len: u32,
    pub kind: u8,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    pub syscall: u8,
    pub flags: u8,
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// For TLS events: the agent's id of the library file the probe is attached
    /// to (the probe's attach cookie); 0 otherwise.
    pub tls_lib: u16,
    pub _pad0: [u8; 4],
    /// Local address: IPv4 in the first 4 bytes, or IPv6 (network order).
    pub laddr: [u8; 16],
    /// Remote address: IPv4 in the first 4 bytes, or IPv6 (network order).
    pub raddr: [u8; 16],
    /// Task command name (`comm`), NUL padded.
    pub comm: [u8; 16],
}

pub const EVENT_HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();
const _: () = assert!(EVENT_HEADER_SIZE == 136);
const _: () = assert!(EVENT_HEADER_SIZE.is_multiple_of(8));

/// One per-CPU scratch slot: the header plus room for one chunk of payload.
/// The data area is twice `CHUNK_MAX` so that a length masked with
/// `2 * CHUNK_MAX - 1` is provably in bounds for the verifier.
#[repr(C)]
pub struct ScratchEvent {
    pub header: EventHeader,
    pub data: [u8; 2 * CHUNK_MAX],
}
const _: () = assert!(core::mem::size_of::<ScratchEvent>() == EVENT_HEADER_SIZE + 2 * CHUNK_MAX);

/// Index of each per-CPU counter in the kernel's `STATS` array.
pub const STAT_EVENTS: u32 = 0;
/// Ring-buffer output failures (events lost).
pub const STAT_LOST_EVENTS: u32 = 1;
/// Payload bytes in lost data events.
pub const STAT_LOST_BYTES: u32 = 2;
/// Connection-tracking map insert failures.
pub const STAT_TRACK_FULL: u32 = 3;
/// Bytes reported truncated by caps.
pub const STAT_TRUNCATED_BYTES: u32 = 4;
/// Internal errors (failed kernel reads); the traffic itself is never affected.
pub const STAT_INTERNAL_ERRORS: u32 = 5;
/// Pending-syscall map insert failures.
pub const STAT_PENDING_FULL: u32 = 6;
/// Events skipped because the socket's peer is one of the agent's own sockets
/// (the collector's side of the agent's shipping connection on this host).
pub const STAT_SELF_PEER: u32 = 7;
/// TLS ciphertext bytes counted but not copied (their plaintext is captured).
pub const STAT_NOT_KEPT_BYTES: u32 = 8;
pub const STAT_COUNT: u32 = 9;

#[cfg(feature = "user")]
unsafe impl aya::Pod for EventHeader {}
