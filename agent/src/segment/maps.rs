//! The policy maps as the agent writes them. A new policy is written into the
//! slot the hooks are not reading, then `POLICY_STATE` is flipped in one array
//! update; the old slot is cleared after a grace period (a hook reads the
//! state once and finishes within microseconds).
use std::collections::HashMap as StdMap;

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use wiretrail_common::segment::*;

use super::SegmentError;

/// Entries that follow the workloads (refreshed while a policy is live).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Membership {
    /// cgroup id → zone.
    pub cgroups: StdMap<u64, u32>,
    /// (kernel dev, inode) of a member executable → zone.
    pub exes: StdMap<(u64, u64), u32>,
    /// (LPM prefix length, IPv4-mapped address) → zone: declared addresses,
    /// addresses of members' own network namespaces, pod IPs.
    pub addrs: StdMap<(u32, [u8; 16]), u32>,
}

/// Handles on every policy map (taken out of the loaded object).
pub struct PolicyMaps {
    state: Array<MapData, PolicyState>,
    zones: HashMap<MapData, ZoneKey, ZoneInfo>,
    cgroups: HashMap<MapData, CgroupZoneKey, ZoneValue>,
    uids: HashMap<MapData, UidZoneKey, ZoneValue>,
    exes: HashMap<MapData, ExeZoneKey, ZoneValue>,
    addrs: LpmTrie<MapData, AddrZoneKey, ZoneValue>,
    rules: HashMap<MapData, RuleKey, RuleValue>,
    cidr_rules: LpmTrie<MapData, CidrRuleKey, RuleValue>,
    stats: PerCpuArray<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, SegmentError> {
    ebpf.take_map(name).ok_or(SegmentError::Missing { what: "map", name })
}

macro_rules! typed {
    ($ebpf:expr, $name:literal, $ty:ident) => {
        $ty::try_from(take($ebpf, $name)?).map_err(|source| SegmentError::Map { name: $name, source })?
    };
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> SegmentError {
    move |source| SegmentError::Map { name, source }
}

impl PolicyMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<PolicyMaps, SegmentError> {
        Ok(PolicyMaps {
            state: typed!(ebpf, "POLICY_STATE", Array),
            zones: typed!(ebpf, "ZONES", HashMap),
            cgroups: typed!(ebpf, "CGROUP_ZONES", HashMap),
            uids: typed!(ebpf, "UID_ZONES", HashMap),
            exes: typed!(ebpf, "EXE_ZONES", HashMap),
            addrs: typed!(ebpf, "ADDR_ZONES", LpmTrie),
            rules: typed!(ebpf, "RULES", HashMap),
            cidr_rules: typed!(ebpf, "CIDR_RULES", LpmTrie),
            stats: typed!(ebpf, "POLICY_STATS", PerCpuArray),
        })
    }

    pub fn state(&self) -> Result<PolicyState, SegmentError> {
        self.state.get(&0, 0).map_err(map_err("POLICY_STATE"))
    }

    /// Makes `next` live: from the next hook invocation on, every lookup uses its slot.
    pub fn flip(&mut self, next: PolicyState) -> Result<(), SegmentError> {
        self.state.set(0, next, 0).map_err(map_err("POLICY_STATE"))
    }

    /// Writes the file's part of a policy (zones, rules, uid members) into `slot`.
    pub fn write_static(&mut self, slot: u32, c: &wiretrail_common::policy::Compiled) -> Result<(), SegmentError> {
        let cap = |name, needed: usize, capacity: u32| {
            if needed > capacity as usize {
                Err(SegmentError::TooBig { name, needed, capacity: capacity as usize })
            } else {
                Ok(())
            }
        };
        cap("ZONES", c.zones.len(), ZONES_PER_SLOT)?;
        cap("RULES", c.rules.len(), RULES_PER_SLOT)?;
        cap("CIDR_RULES", c.cidr_rules.len(), CIDR_RULES_PER_SLOT)?;
        cap("UID_ZONES", c.uids.len(), UIDS_PER_SLOT)?;
        for (k, v) in &c.zones {
            self.zones.insert(ZoneKey { slot, ..*k }, v, 0).map_err(map_err("ZONES"))?;
        }
        for (k, v) in &c.rules {
            self.rules.insert(RuleKey { slot, ..*k }, v, 0).map_err(map_err("RULES"))?;
        }
        for (bits, k, v) in &c.cidr_rules {
            let key = Key::new(*bits, CidrRuleKey { slot: slot.to_be_bytes(), ..*k });
            self.cidr_rules.insert(&key, v, 0).map_err(map_err("CIDR_RULES"))?;
        }
        for (k, v) in &c.uids {
            self.uids.insert(UidZoneKey { slot, ..*k }, v, 0).map_err(map_err("UID_ZONES"))?;
        }
        Ok(())
    }

    /// Brings the membership entries of `slot` from `old` to `new` (inserting
    /// what changed, removing what is gone).
    pub fn write_membership(&mut self, slot: u32, old: &Membership, new: &Membership) -> Result<(), SegmentError> {
        for (name, needed, capacity) in [
            ("CGROUP_ZONES", new.cgroups.len(), CGROUPS_PER_SLOT),
            ("EXE_ZONES", new.exes.len(), EXES_PER_SLOT),
            ("ADDR_ZONES", new.addrs.len(), ADDRS_PER_SLOT),
        ] {
            if needed > capacity as usize {
                return Err(SegmentError::TooBig { name, needed, capacity: capacity as usize });
            }
        }
        for (&cgroup_id, &zone) in &new.cgroups {
            if old.cgroups.get(&cgroup_id) != Some(&zone) {
                let k = CgroupZoneKey { slot, _pad: 0, cgroup_id };
                self.cgroups.insert(k, ZoneValue { zone }, 0).map_err(map_err("CGROUP_ZONES"))?;
            }
        }
        for cgroup_id in old.cgroups.keys().filter(|k| !new.cgroups.contains_key(k)) {
            let _ = self.cgroups.remove(&CgroupZoneKey { slot, _pad: 0, cgroup_id: *cgroup_id });
        }
        for (&(dev, ino), &zone) in &new.exes {
            if old.exes.get(&(dev, ino)) != Some(&zone) {
                let k = ExeZoneKey { slot, _pad: 0, dev, ino };
                self.exes.insert(k, ZoneValue { zone }, 0).map_err(map_err("EXE_ZONES"))?;
            }
        }
        for &(dev, ino) in old.exes.keys().filter(|k| !new.exes.contains_key(k)) {
            let _ = self.exes.remove(&ExeZoneKey { slot, _pad: 0, dev, ino });
        }
        let addr_key = |bits: u32, addr: [u8; 16]| Key::new(bits, AddrZoneKey { slot: slot.to_be_bytes(), addr });
        for (&(bits, addr), &zone) in &new.addrs {
            if old.addrs.get(&(bits, addr)) != Some(&zone) {
                self.addrs.insert(&addr_key(bits, addr), ZoneValue { zone }, 0).map_err(map_err("ADDR_ZONES"))?;
            }
        }
        for &(bits, addr) in old.addrs.keys().filter(|k| !new.addrs.contains_key(k)) {
            let _ = self.addrs.remove(&addr_key(bits, addr));
        }
        Ok(())
    }

    /// Removes every entry of `slot` (a policy no hook reads any more).
    pub fn clear_slot(&mut self, slot: u32) {
        macro_rules! clear_hash {
            ($map:expr, $slot_of:expr) => {{
                let keys: Vec<_> = $map.keys().filter_map(Result::ok).filter(|k| $slot_of(k) == slot).collect();
                for k in keys {
                    let _ = $map.remove(&k);
                }
            }};
        }
        clear_hash!(self.zones, |k: &ZoneKey| k.slot);
        clear_hash!(self.cgroups, |k: &CgroupZoneKey| k.slot);
        clear_hash!(self.uids, |k: &UidZoneKey| k.slot);
        clear_hash!(self.exes, |k: &ExeZoneKey| k.slot);
        clear_hash!(self.rules, |k: &RuleKey| k.slot);
        clear_hash!(self.addrs, |k: &Key<AddrZoneKey>| u32::from_be_bytes(k.data().slot));
        clear_hash!(self.cidr_rules, |k: &Key<CidrRuleKey>| u32::from_be_bytes(k.data().slot));
    }

    /// The kernel's decision counters (`PSTAT_*`), summed over CPUs.
    pub fn stats(&self) -> [u64; PSTAT_COUNT as usize] {
        let mut out = [0u64; PSTAT_COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = self.stats.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }
}
