//! Programs that return at once, for measuring the floor: the cost of the
//! hooks themselves, with nothing done in them. `wiretrail-agent floor`
//! attaches them where the capture programs go (every syscall tracepoint of
//! the agent's hook set, or its TLS uprobes on a library), or on the socket layer (fentry/fexit of the TCP and
//! UDP send and receive functions) as a candidate data path; `cargo xtask
//! bench capture` compares the agent with them in the same run.
use aya_ebpf::{
    macros::{fentry, fexit, tracepoint, uprobe, uretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};

#[tracepoint]
pub fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

/// Where the agent puts a TLS entry probe (and Go's RET probes).
#[uprobe]
pub fn floor_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// Where the agent puts a TLS return probe.
#[uretprobe]
pub fn floor_uretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

macro_rules! floor_socket {
    ($f:literal, $entry:ident, $exit:ident) => {
        #[fentry(function = $f)]
        pub fn $entry(_ctx: FEntryContext) -> u32 {
            0
        }
        #[fexit(function = $f)]
        pub fn $exit(_ctx: FExitContext) -> u32 {
            0
        }
    };
}

floor_socket!("tcp_sendmsg", floor_tcp_sendmsg, floor_tcp_sendmsg_exit);
floor_socket!("tcp_recvmsg", floor_tcp_recvmsg, floor_tcp_recvmsg_exit);
floor_socket!("udp_sendmsg", floor_udp_sendmsg, floor_udp_sendmsg_exit);
floor_socket!("udp_recvmsg", floor_udp_recvmsg, floor_udp_recvmsg_exit);
floor_socket!("udpv6_sendmsg", floor_udpv6_sendmsg, floor_udpv6_sendmsg_exit);
floor_socket!("udpv6_recvmsg", floor_udpv6_recvmsg, floor_udpv6_recvmsg_exit);
