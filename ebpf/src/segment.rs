//! Segmentation hooks: cgroup/connect4|6 and sendmsg4|6 for outbound, and
//! cgroup_skb/ingress for inbound (TCP SYNs and UDP datagrams). The policy is
//! in the maps of `wiretrail_common::segment`; see that module for the lookup
//! order, which the agent's reference evaluator mirrors.
//!
//! Any internal failure (an unreadable packet or task field) counts an error
//! and lets the flow through: a broken probe must never cut traffic that the
//! policy allows. A decision event that does not fit in the ring is counted
//! (`PSTAT_LOST`) and reported by the agent; the decision itself still applies.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_comm,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_skb_cgroup_id,
    },
    macros::{cgroup_skb, cgroup_sock_addr, map, tracepoint},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{SkBuffContext, SockAddrContext, TracePointContext},
};
use wiretrail_common::segment::*;

use crate::{kernel::read, maps::offsets};

/// Live slot and generation (`POLICY_STATE[0]`).
#[map]
pub static POLICY_STATE: Array<PolicyState> = Array::with_max_entries(1, 0);
#[map]
pub static ZONES: HashMap<ZoneKey, ZoneInfo> = HashMap::with_max_entries(2 * ZONES_PER_SLOT, NO_PREALLOC);
#[map]
pub static CGROUP_ZONES: HashMap<CgroupZoneKey, ZoneValue> =
    HashMap::with_max_entries(2 * CGROUPS_PER_SLOT, NO_PREALLOC);
#[map]
pub static UID_ZONES: HashMap<UidZoneKey, ZoneValue> = HashMap::with_max_entries(2 * UIDS_PER_SLOT, NO_PREALLOC);
#[map]
pub static EXE_ZONES: HashMap<ExeZoneKey, ZoneValue> = HashMap::with_max_entries(2 * EXES_PER_SLOT, NO_PREALLOC);
#[map]
pub static ADDR_ZONES: LpmTrie<AddrZoneKey, ZoneValue> = LpmTrie::with_max_entries(2 * ADDRS_PER_SLOT, NO_PREALLOC);
#[map]
pub static RULES: HashMap<RuleKey, RuleValue> = HashMap::with_max_entries(2 * RULES_PER_SLOT, NO_PREALLOC);
#[map]
pub static CIDR_RULES: LpmTrie<CidrRuleKey, RuleValue> =
    LpmTrie::with_max_entries(2 * CIDR_RULES_PER_SLOT, NO_PREALLOC);
/// Decision events to the agent.
#[map]
pub static DECISIONS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
/// Ids of cgroups just created: the agent puts them in their zone at once
/// (instead of at its next periodic refresh).
#[map]
pub static CGROUP_MKDIR: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
/// Per-CPU counters, indexed by `PSTAT_*`.
#[map]
pub static POLICY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PSTAT_COUNT, 0);

/// BPF_F_NO_PREALLOC: memory is used only by the entries a policy has.
const NO_PREALLOC: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const TCP: u8 = 6;
const UDP: u8 = 17;

#[inline(always)]
fn pstat(idx: u32) {
    if let Some(p) = POLICY_STATS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn state() -> Option<PolicyState> {
    let s = *POLICY_STATE.get(0)?;
    if s.generation == 0 { None } else { Some(s) }
}

/// `(sb->s_dev, i_ino)` of the current task's executable.
#[inline(always)]
fn current_exe() -> Option<(u64, u64)> {
    let o = offsets();
    unsafe {
        let task = bpf_get_current_task();
        let mm: u64 = read(task + o.task_mm as u64)?;
        if mm == 0 {
            return None;
        }
        let file: u64 = read(mm + o.mm_exe_file as u64)?;
        if file == 0 {
            return None;
        }
        let inode: u64 = read(file + o.file_inode as u64)?;
        let ino: u64 = read(inode + o.inode_ino as u64)?;
        let sb: u64 = read(inode + o.inode_sb as u64)?;
        let dev: u32 = read(sb + o.sb_dev as u64)?;
        Some((dev as u64, ino))
    }
}

#[inline(always)]
fn zone_of_cgroup(slot: u32, cgroup_id: u64, uid: u32) -> u32 {
    if let Some(z) = unsafe { UID_ZONES.get(&UidZoneKey { slot, uid }) } {
        return z.zone;
    }
    match unsafe { CGROUP_ZONES.get(&CgroupZoneKey { slot, _pad: 0, cgroup_id }) } {
        Some(z) => z.zone,
        None => ZONE_NONE,
    }
}

/// Zone of the current task: exe (when the policy has exe members), then uid, then cgroup.
#[inline(always)]
fn zone_of_task(st: &PolicyState, uid: u32) -> u32 {
    let slot = st.slot;
    if st.flags & STATE_HAS_EXE != 0
        && let Some((dev, ino)) = current_exe()
        && let Some(z) = unsafe { EXE_ZONES.get(&ExeZoneKey { slot, _pad: 0, dev, ino }) }
    {
        return z.zone;
    }
    zone_of_cgroup(slot, unsafe { bpf_get_current_cgroup_id() }, uid)
}

#[inline(always)]
fn zone_of_addr(slot: u32, addr: &[u8; 16]) -> u32 {
    let key = Key::new(32 + 128, AddrZoneKey { slot: slot.to_be_bytes(), addr: *addr });
    match ADDR_ZONES.get(&key) {
        Some(z) => z.zone,
        None => ZONE_NONE,
    }
}

/// The rule allowing `src_zone → dst_zone` (zone rules) or `zone ↔ addr` (CIDR
/// rules, `dir` says which side `zone` is), or `RULE_DEFAULT_DENY`.
#[inline(always)]
fn find_rule(slot: u32, src_zone: u32, dst_zone: u32, dir: u8, peer: &[u8; 16], port: u16, proto: u8) -> u32 {
    let combos = [(port, proto), (PORT_ANY, proto), (port, PROTO_ANY), (PORT_ANY, PROTO_ANY)];
    if src_zone != ZONE_NONE && dst_zone != ZONE_NONE {
        for (port, proto) in combos {
            let k = RuleKey { slot, src_zone, dst_zone, port, proto, _pad: 0 };
            if let Some(r) = unsafe { RULES.get(&k) } {
                return r.rule_id;
            }
        }
    }
    let zone = if dir == DIR_OUT { src_zone } else { dst_zone };
    for (port, proto) in combos {
        let data = CidrRuleKey {
            slot: slot.to_be_bytes(),
            zone: zone.to_be_bytes(),
            dir,
            proto,
            port: port.to_be_bytes(),
            addr: *peer,
        };
        if let Some(r) = CIDR_RULES.get(&Key::new(CIDR_KEY_FIXED_BITS + 128, data)) {
            return r.rule_id;
        }
    }
    RULE_DEFAULT_DENY
}

/// The decision for a flow of `local_zone` (already known to be a zone).
/// Returns (verdict, rule id, mode applied).
#[inline(always)]
fn decide(slot: u32, local_zone: u32, rule: u32) -> (u8, u32) {
    if rule != RULE_DEFAULT_DENY {
        return (VERDICT_ALLOW, 0);
    }
    let mode = match unsafe { ZONES.get(&ZoneKey { slot, zone: local_zone }) } {
        Some(z) => z.mode,
        None => MODE_ENFORCE,
    };
    (if mode == MODE_AUDIT { VERDICT_AUDIT } else { VERDICT_DENY }, mode)
}

#[inline(always)]
fn count(verdict: u8) {
    pstat(match verdict {
        VERDICT_ALLOW => PSTAT_ALLOW,
        VERDICT_AUDIT => PSTAT_AUDIT,
        _ => PSTAT_DENY,
    });
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Allowed decisions wake the agent only once this much is queued (it also
/// drains every 100 ms): one wakeup per connect would cost more than the hook.
const WAKEUP_BYTES: u64 = 64 * 1024;

#[inline(always)]
fn emit(ev: &PolicyEvent) {
    // Denials and violations wake the agent at once (alerts); allows are batched.
    let flags = if ev.verdict != VERDICT_ALLOW || DECISIONS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match DECISIONS.reserve::<PolicyEvent>(0) {
        Some(mut e) => {
            e.write(*ev);
            e.submit(flags);
        }
        None => pstat(PSTAT_LOST),
    }
}

/// The IPv4-mapped form of a network-order IPv4 address.
#[inline(always)]
fn mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

#[inline(always)]
fn v4_first(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = v4[0];
    a[1] = v4[1];
    a[2] = v4[2];
    a[3] = v4[3];
    a
}

/// The destination of a v4 hook (`user_ip4`; the verifier allows only the
/// family's own fields in each attach type).
#[inline(always)]
fn dest4(ctx: &SockAddrContext) -> ([u8; 16], [u8; 16], u8) {
    let b = unsafe { (*ctx.sock_addr).user_ip4 }.to_ne_bytes();
    (mapped(b), v4_first(b), AF_INET as u8)
}

/// The destination of a v6 hook (`user_ip6`, possibly IPv4-mapped).
#[inline(always)]
fn dest6(ctx: &SockAddrContext) -> ([u8; 16], [u8; 16], u8) {
    let sa = unsafe { &*ctx.sock_addr };
    let mut a = [0u8; 16];
    for i in 0..4 {
        let b = sa.user_ip6[i].to_ne_bytes();
        a[i * 4] = b[0];
        a[i * 4 + 1] = b[1];
        a[i * 4 + 2] = b[2];
        a[i * 4 + 3] = b[3];
    }
    (a, a, AF_INET6 as u8)
}

/// Outbound: connect() (TCP and UDP) and sendmsg() with an address (UDP).
/// `peer` is the destination IPv4-mapped; `shown`/`family` as recorded.
#[inline(always)]
fn outbound(ctx: &SockAddrContext, hook: u8, dest: fn(&SockAddrContext) -> ([u8; 16], [u8; 16], u8)) -> i32 {
    let Some(st) = state() else { return 1 };
    // The agent never locks itself out (shipping to the collector, the API server).
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    if (pid_tgid >> 32) as u32 == crate::maps::config().agent_tgid {
        return 1;
    }
    let sa = unsafe { &*ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != TCP && proto != UDP {
        return 1;
    }
    let uid = unsafe { bpf_get_current_uid_gid() } as u32;
    let local_zone = zone_of_task(&st, uid);
    if local_zone == ZONE_NONE {
        return 1;
    }
    let port = u16::from_be(sa.user_port as u16);
    let (peer, shown, family) = dest(ctx);
    let peer_zone = zone_of_addr(st.slot, &peer);
    let rule = find_rule(st.slot, local_zone, peer_zone, DIR_OUT, &peer, port, proto);
    let (verdict, mode) = decide(st.slot, local_zone, rule);
    count(verdict);
    // Every non-allow is recorded; allows are recorded for connect() (one per
    // flow), not for each allowed datagram (those are captured as data anyway).
    if verdict != VERDICT_ALLOW || hook == HOOK_CONNECT4 || hook == HOOK_CONNECT6 {
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        emit(&PolicyEvent {
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid,
            generation: st.generation,
            rule_id: rule,
            local_zone,
            peer_zone,
            mode,
            verdict,
            hook,
            proto,
            family,
            local_port: 0,
            remote_port: port,
            local_addr: [0; 16],
            remote_addr: shown,
            comm,
        });
    }
    if verdict == VERDICT_DENY { 0 } else { 1 }
}

#[cgroup_sock_addr(connect4)]
pub fn wt_connect4(ctx: SockAddrContext) -> i32 {
    outbound(&ctx, HOOK_CONNECT4, dest4)
}

#[cgroup_sock_addr(connect6)]
pub fn wt_connect6(ctx: SockAddrContext) -> i32 {
    outbound(&ctx, HOOK_CONNECT6, dest6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn wt_sendmsg4(ctx: SockAddrContext) -> i32 {
    outbound(&ctx, HOOK_SENDMSG4, dest4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn wt_sendmsg6(ctx: SockAddrContext) -> i32 {
    outbound(&ctx, HOOK_SENDMSG6, dest6)
}

/// What the ingress hook needs from a packet.
struct Inbound {
    family: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    /// Only new flows are decided: TCP SYN without ACK, and UDP datagrams.
    new_flow: bool,
}

#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Inbound> {
    let b0: u8 = ctx.load(0).ok()?;
    let (family, proto, src, dst, l4) = match b0 >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let frag: [u8; 2] = ctx.load(6).ok()?;
            // Non-first fragments carry no ports: the first fragment decided.
            if u16::from_be_bytes(frag) & 0x1fff != 0 {
                return None;
            }
            let s: [u8; 4] = ctx.load(12).ok()?;
            let d: [u8; 4] = ctx.load(16).ok()?;
            (AF_INET as u8, proto, mapped(s), mapped(d), ((b0 & 0x0f) as usize) * 4)
        }
        6 => {
            let proto: u8 = ctx.load(6).ok()?;
            let s: [u8; 16] = ctx.load(8).ok()?;
            let d: [u8; 16] = ctx.load(24).ok()?;
            (AF_INET6 as u8, proto, s, d, 40usize)
        }
        _ => return None,
    };
    if proto != TCP && proto != UDP {
        return None;
    }
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let new_flow = if proto == TCP {
        let flags: u8 = ctx.load(l4 + 13).ok()?;
        flags & 0x02 != 0 && flags & 0x10 == 0
    } else {
        true
    };
    Some(Inbound {
        family,
        proto,
        src,
        dst,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        new_flow,
    })
}

#[cgroup_skb(ingress)]
pub fn wt_ingress(ctx: SkBuffContext) -> i32 {
    let Some(st) = state() else { return 1 };
    let Some(p) = parse(&ctx) else { return 1 };
    if !p.new_flow {
        return 1;
    }
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    let uid = ctx.get_socket_uid();
    let local_zone = zone_of_cgroup(st.slot, cgroup_id, uid);
    if local_zone == ZONE_NONE {
        return 1;
    }
    let peer_zone = zone_of_addr(st.slot, &p.src);
    let rule = find_rule(st.slot, peer_zone, local_zone, DIR_IN, &p.src, p.dport, p.proto);
    let (verdict, mode) = decide(st.slot, local_zone, rule);
    count(verdict);
    if verdict != VERDICT_ALLOW || p.proto == TCP {
        let v4 = p.family == AF_INET as u8;
        let unmap = |a: [u8; 16]| if v4 { v4_first([a[12], a[13], a[14], a[15]]) } else { a };
        emit(&PolicyEvent {
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            cgroup_id,
            pid: 0,
            tid: 0,
            uid,
            generation: st.generation,
            rule_id: rule,
            local_zone,
            peer_zone,
            mode,
            verdict,
            hook: if v4 { HOOK_INGRESS4 } else { HOOK_INGRESS6 },
            proto: p.proto,
            family: p.family,
            local_port: p.dport,
            remote_port: p.sport,
            local_addr: unmap(p.dst),
            remote_addr: unmap(p.src),
            comm: [0; 16],
        });
    }
    if verdict == VERDICT_DENY { 0 } else { 1 }
}

/// `cgroup:cgroup_mkdir`: a new cgroup (a container, a pod, a service) exists.
/// Only while a policy is loaded; a full ring only delays the agent's refresh.
#[tracepoint]
pub fn wt_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    if state().is_none() {
        return 0;
    }
    // The event's `id` field (see the tracepoint's format file).
    let id: u64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    let _ = CGROUP_MKDIR.output::<u64>(&id, BPF_RB_FORCE_WAKEUP);
    0
}
