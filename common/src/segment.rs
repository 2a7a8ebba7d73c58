//! Segmentation: the policy as the kernel's cgroup hooks read it, and the
//! decision events they emit.
//!
//! Every map key starts with a `slot` (0 or 1). The agent writes a new policy
//! into the inactive slot, then flips [`PolicyState::slot`] with one array
//! update: each hook reads the state once and does all its lookups in that
//! slot, so a decision never mixes two policies. The old slot is cleared after
//! a grace period.
//!
//! Zone ids are 1-based (file order); [`ZONE_NONE`] means "in no zone".
//! Rule ids are 1-based (file order); [`RULE_DEFAULT_DENY`] means no rule
//! allowed the flow.
//!
//! Lookup order (the agent's reference evaluator mirrors it exactly):
//! 1. Local zone. Connect/sendmsg: exe (dev, inode) → uid → cgroup id.
//!    Ingress (no task): the receiving socket's uid → its cgroup id.
//! 2. Peer zone: [`AddrZoneKey`] longest prefix on the peer address.
//! 3. Rule: when the peer zone is known, [`RuleKey`] with (port, proto),
//!    (any port, proto), (port, any proto), (any, any); then [`CidrRuleKey`]
//!    in the same four combinations. First hit wins.

/// Entries each map holds per slot (the kernel maps hold twice as many).
pub const ZONES_PER_SLOT: u32 = 4096;
pub const CGROUPS_PER_SLOT: u32 = 65536;
pub const UIDS_PER_SLOT: u32 = 4096;
pub const EXES_PER_SLOT: u32 = 4096;
pub const ADDRS_PER_SLOT: u32 = 65536;
pub const RULES_PER_SLOT: u32 = 262144;
pub const CIDR_RULES_PER_SLOT: u32 = 65536;

/// No zone.
pub const ZONE_NONE: u32 = 0;
/// No rule matched: the zone's default deny applies.
pub const RULE_DEFAULT_DENY: u32 = 0;
/// Wildcards in rule keys.
pub const PORT_ANY: u16 = 0;
pub const PROTO_ANY: u8 = 0;

/// Zone modes ([`ZoneInfo::mode`]).
pub const MODE_AUDIT: u32 = 1;
pub const MODE_ENFORCE: u32 = 2;

/// Decision verdicts ([`PolicyEvent::verdict`]).
pub const VERDICT_ALLOW: u8 = 1;
/// Denied: connect/sendmsg failed with EPERM, or the inbound packet was dropped.
pub const VERDICT_DENY: u8 = 2;
/// Not allowed by any rule, but the zone is in audit mode: let through and recorded.
pub const VERDICT_AUDIT: u8 = 3;

/// Which hook decided ([`PolicyEvent::hook`]).
pub const HOOK_CONNECT4: u8 = 1;
pub const HOOK_CONNECT6: u8 = 2;
pub const HOOK_SENDMSG4: u8 = 3;
pub const HOOK_SENDMSG6: u8 = 4;
pub const HOOK_INGRESS4: u8 = 5;
pub const HOOK_INGRESS6: u8 = 6;

/// [`CidrRuleKey::dir`]: the zone is the source (`from: zone, to: cidr`).
pub const DIR_OUT: u8 = 1;
/// [`CidrRuleKey::dir`]: the zone is the destination (`from: cidr, to: zone`).
pub const DIR_IN: u8 = 2;

/// Index of each counter in the kernel's `POLICY_STATS` per-CPU array.
pub const PSTAT_ALLOW: u32 = 0;
pub const PSTAT_DENY: u32 = 1;
pub const PSTAT_AUDIT: u32 = 2;
/// Decision events that did not fit in the ring buffer (the decision itself
/// was still applied; the agent reports the loss as a gap record).
pub const PSTAT_LOST: u32 = 3;
/// Internal errors (unreadable packet or task fields): the flow is let through.
pub const PSTAT_ERRORS: u32 = 4;
pub const PSTAT_COUNT: u32 = 5;

/// `POLICY_STATE[0]`: which slot is live and which policy generation it holds.
/// `generation == 0` means no policy is loaded (every hook allows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub slot: u32,
    pub generation: u32,
    /// `STATE_*` flags of the live policy.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyState>() == 16);

/// [`PolicyState::flags`]: some zone has `exe` members (the connect hooks read
/// the task's executable only then).
pub const STATE_HAS_EXE: u32 = 1;

/// Zone of the processes in a cgroup (cgroup-level selectors: Kubernetes
/// namespace/labels/service account, cgroup path).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupZoneKey {
    pub slot: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<CgroupZoneKey>() == 16);

/// Zone of the processes running as a uid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UidZoneKey {
    pub slot: u32,
    pub uid: u32,
}
const _: () = assert!(core::mem::size_of::<UidZoneKey>() == 8);

/// Zone of the processes running an executable, by file identity:
/// `dev` is the kernel's `sb->s_dev` (`MAJOR << 20 | MINOR`), `ino` the inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeZoneKey {
    pub slot: u32,
    pub _pad: u32,
    pub dev: u64,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<ExeZoneKey>() == 24);

/// Value of the zone maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneValue {
    pub zone: u32,
}
const _: () = assert!(core::mem::size_of::<ZoneValue>() == 4);

/// `ZONES` key: a zone's settings in a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ZoneKey {
    pub slot: u32,
    pub zone: u32,
}
const _: () = assert!(core::mem::size_of::<ZoneKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneInfo {
    /// [`MODE_AUDIT`] or [`MODE_ENFORCE`].
    pub mode: u32,
}
const _: () = assert!(core::mem::size_of::<ZoneInfo>() == 4);

/// Data of an `ADDR_ZONES` LPM key: addresses owned by a zone's members
/// (declared `addresses`, Kubernetes pod IPs, addresses of members' own
/// network namespaces). IPv4 is IPv4-mapped IPv6 (`::ffff:a.b.c.d`). The LPM
/// prefix length counts `slot` too: `32 + 96 + v4_prefix` or `32 + v6_prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrZoneKey {
    /// Big-endian bytes of the slot, so the prefix covers it first.
    pub slot: [u8; 4],
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<AddrZoneKey>() == 20);

/// A zone-to-zone rule (`from: zone, to: zone`); checked both by the source's
/// connect/sendmsg hook and by the destination's ingress hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub slot: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    /// Destination port (host order) or [`PORT_ANY`].
    pub port: u16,
    /// IPPROTO_TCP / IPPROTO_UDP or [`PROTO_ANY`].
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<RuleKey>() == 16);

/// Data of a `CIDR_RULES` LPM key: a rule between a zone and an address range.
/// The prefix length is `(4 + 4 + 1 + 1 + 2) * 8 + 96 + v4_prefix` (or `+ v6_prefix`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrRuleKey {
    /// Big-endian slot.
    pub slot: [u8; 4],
    /// Big-endian zone id (the source for [`DIR_OUT`], the destination for [`DIR_IN`]).
    pub zone: [u8; 4],
    pub dir: u8,
    pub proto: u8,
    /// Big-endian destination port, or 0 for any.
    pub port: [u8; 2],
    /// The address range's base (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<CidrRuleKey>() == 28);
/// Bits of a [`CidrRuleKey`] before `addr`.
pub const CIDR_KEY_FIXED_BITS: u32 = 12 * 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<RuleValue>() == 4);

/// One decision, written to the `DECISIONS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyEvent {
    /// `bpf_ktime_get_boot_ns`.
    pub ts_ns: u64,
    /// cgroup id of the local workload: the connecting task's, or (ingress)
    /// the receiving socket's.
    pub cgroup_id: u64,
    /// Local task (connect/sendmsg only; 0 on ingress).
    pub pid: u32,
    pub tid: u32,
    /// The task's uid (connect/sendmsg) or the receiving socket's (ingress).
    pub uid: u32,
    /// Policy generation (`PolicyState::generation`) that decided.
    pub generation: u32,
    /// Rule that allowed the flow, or [`RULE_DEFAULT_DENY`].
    pub rule_id: u32,
    /// Zone of the local workload and of the peer ([`ZONE_NONE`] if none).
    pub local_zone: u32,
    pub peer_zone: u32,
    /// The mode of the zone whose default applied (0 when allowed by a rule).
    pub mode: u32,
    pub verdict: u8,
    pub hook: u8,
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub proto: u8,
    /// AF_INET / AF_INET6 (of the addresses below).
    pub family: u8,
    /// Host order. Connect/sendmsg: the local port is 0 (not yet bound).
    pub local_port: u16,
    pub remote_port: u16,
    /// Network order; IPv4 in the first 4 bytes. Connect/sendmsg: local is zero.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Task command name (connect/sendmsg only).
    pub comm: [u8; 16],
}
pub const POLICY_EVENT_SIZE: usize = core::mem::size_of::<PolicyEvent>();
const _: () = assert!(POLICY_EVENT_SIZE == 104);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for PolicyState {}
    unsafe impl aya::Pod for CgroupZoneKey {}
    unsafe impl aya::Pod for UidZoneKey {}
    unsafe impl aya::Pod for ExeZoneKey {}
    unsafe impl aya::Pod for ZoneValue {}
    unsafe impl aya::Pod for ZoneKey {}
    unsafe impl aya::Pod for ZoneInfo {}
    unsafe impl aya::Pod for AddrZoneKey {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for CidrRuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for PolicyEvent {}
}
