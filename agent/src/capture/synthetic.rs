//! Capture events made up without a kernel, for unit tests, benchmarks and
//! fuzzers: one [`Synth`] per socket keeps its positions, clock and totals
//! the way the kernel programs do.
use std::net::SocketAddr;

use bytes::Bytes;
use wiretrail_common as k;

use super::event::{CaptureEvent, Meta};
use crate::types::{Call, Comm, Direction, GapReason, Transport};

/// One made-up socket.
#[derive(Clone, Debug)]
pub struct Synth {
    meta: Meta,
    /// Next stream position per direction (socket bytes).
    pub pos: [u64; 2],
    /// Next stream position per direction (TLS plaintext).
    pub tls_pos: [u64; 2],
    /// Kernel time of the next event; each event advances it by `step`.
    pub ts: u64,
    /// Nanoseconds between events.
    pub step: u64,
}

impl Synth {
    /// A TCP socket `local` → `remote` (e.g. `"127.0.0.1:40000"`) with id `conn_id`.
    pub fn tcp(conn_id: u64, local: &str, remote: &str) -> Synth {
        Synth::new(conn_id, local, remote, Transport::Tcp)
    }

    /// A UDP socket.
    pub fn udp(conn_id: u64, local: &str, remote: &str) -> Synth {
        Synth::new(conn_id, local, remote, Transport::Udp)
    }

    fn new(conn_id: u64, local: &str, remote: &str, transport: Transport) -> Synth {
        let meta = Meta {
            ts_ns: 1_000_000,
            conn_id,
            pid: 4242,
            tid: 4242,
            uid: 1000,
            fd: 3,
            cgroup_id: 1,
            netns: 4_026_531_840,
            comm: Comm::new("synthetic"),
            transport,
            call: Call(k::SYS_WRITE),
            local: local.parse().expect("local address"),
            remote: remote.parse().expect("remote address"),
            peer_from_arg: false,
            midstream: false,
            untracked: false,
            tls: false,
            tls_lib: 0,
            tx_total: 0,
            rx_total: 0,
        };
        Synth { meta, pos: [0; 2], tls_pos: [0; 2], ts: 1_000_000, step: 1_000 }
    }

    /// The same socket owned by process `pid` named `comm`.
    pub fn process(mut self, pid: u32, comm: &str) -> Synth {
        self.meta.pid = pid;
        self.meta.tid = pid;
        self.meta.comm = Comm::new(comm);
        self
    }

    /// TLS plaintext events name library `cookie` (see `TlsRegistry`).
    pub fn tls_lib(mut self, cookie: u16) -> Synth {
        self.meta.tls_lib = cookie;
        self
    }

    /// Starting at kernel time `ts`.
    pub fn at(mut self, ts: u64) -> Synth {
        self.ts = ts;
        self
    }

    fn meta(&mut self, call: u8, tls: bool) -> Meta {
        self.ts += self.step;
        let totals = if tls { self.tls_pos } else { self.pos };
        Meta { ts_ns: self.ts, call: Call(call), tls, tx_total: totals[0], rx_total: totals[1], ..self.meta.clone() }
    }

    /// The connect() that opened it.
    pub fn connect(&mut self) -> CaptureEvent {
        CaptureEvent::Connect { meta: self.meta(k::SYS_CONNECT, false) }
    }

    /// The accept() that opened it.
    pub fn accept(&mut self) -> CaptureEvent {
        CaptureEvent::Accept { meta: self.meta(k::SYS_ACCEPT4, false) }
    }

    /// `bytes` written by one call.
    pub fn send(&mut self, bytes: &[u8]) -> CaptureEvent {
        self.data(Direction::Egress, bytes, false)
    }

    /// `bytes` read by one call.
    pub fn recv(&mut self, bytes: &[u8]) -> CaptureEvent {
        self.data(Direction::Ingress, bytes, false)
    }

    /// `bytes` of `dir` at the next position (TLS plaintext with `tls`).
    pub fn data(&mut self, dir: Direction, bytes: &[u8], tls: bool) -> CaptureEvent {
        let i = dir.index();
        let pos = if tls { &mut self.tls_pos[i] } else { &mut self.pos[i] };
        let at = *pos;
        *pos += bytes.len() as u64;
        let call = match (dir, tls) {
            (Direction::Egress, false) => k::SYS_WRITE,
            (Direction::Ingress, false) => k::SYS_READ,
            (Direction::Egress, true) => k::SYS_SSL_WRITE,
            (Direction::Ingress, true) => k::SYS_SSL_READ,
        };
        let meta = self.meta(call, tls);
        CaptureEvent::Data { meta, direction: dir, pos: at, payload: Bytes::copy_from_slice(bytes) }
    }

    /// `bytes` of `dir` at position `pos` (out of order, or again).
    pub fn data_at(&mut self, dir: Direction, pos: u64, bytes: &[u8]) -> CaptureEvent {
        let i = dir.index();
        self.pos[i] = self.pos[i].max(pos + bytes.len() as u64);
        let call = if dir == Direction::Egress { k::SYS_WRITE } else { k::SYS_READ };
        let meta = self.meta(call, false);
        CaptureEvent::Data { meta, direction: dir, pos, payload: Bytes::copy_from_slice(bytes) }
    }

    /// `len` bytes of `dir` the kernel reports it did not copy.
    pub fn truncated(&mut self, dir: Direction, len: u64, reason: GapReason) -> CaptureEvent {
        let i = dir.index();
        let pos = self.pos[i];
        self.pos[i] += len;
        let meta = self.meta(if dir == Direction::Egress { k::SYS_WRITE } else { k::SYS_READ }, false);
        CaptureEvent::Truncated { meta, direction: dir, pos, len, reason }
    }

    /// `len` bytes of `dir` that were transferred but whose event never
    /// arrives (ring full): only the positions move.
    pub fn lose(&mut self, dir: Direction, len: u64) {
        self.pos[dir.index()] += len;
    }

    /// The close, with the final totals.
    pub fn close(&mut self) -> CaptureEvent {
        CaptureEvent::Close { meta: self.meta(k::SYS_CLOSE, false) }
    }

    /// The socket's addresses.
    pub fn local(&self) -> SocketAddr {
        self.meta.local
    }
}
