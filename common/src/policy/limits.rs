//! Whether the agent can install a policy: the kernel maps have fixed
//! capacities per policy slot ([`crate::segment`]'s `*_PER_SLOT`), and the
//! agent refuses a policy that does not fit. `wiretrail policy check` applies
//! the same limits so a policy is known to be installable before it ships.
//! (CGROUP_ZONES depends on the cgroups present on each node and is checked
//! by the agent when it resolves members.)
use std::collections::HashSet;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::Policy;
use super::compile::{RuleMapKey, rule_keys};
use crate::segment::{
    ADDRS_PER_SLOT, CIDR_RULES_PER_SLOT, EXES_PER_SLOT, RULES_PER_SLOT, UIDS_PER_SLOT, ZONES_PER_SLOT,
};

/// A kernel map the policy does not fit in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The agent's map name (as in its error).
    pub map: &'static str,
    /// Entries the policy needs (a lower bound when `at_least`).
    pub needed: u64,
    /// Entries the map holds per policy slot.
    pub capacity: u64,
    /// `needed` is a lower bound (counting stopped past the capacity).
    pub at_least: bool,
    /// What the entries are, in words.
    pub what: String,
}

impl core::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} needs {}{} entries ({}), the agent's map holds {}",
            self.map,
            if self.at_least { "more than " } else { "" },
            self.needed,
            self.what,
            self.capacity
        )
    }
}

/// Distinct keys of one kind over all rules, counting at most `cap + 1`.
fn distinct(p: &Policy, cidr: bool, cap: u64) -> (u64, bool) {
    let upper: u64 =
        p.rules.iter().map(|r| rule_keys(r).filter(|k| matches!(k, RuleMapKey::Cidr(..)) == cidr).count() as u64).sum();
    if upper <= cap {
        // No more keys than capacity even before removing duplicates.
        return (upper, false);
    }
    let mut seen = HashSet::new();
    for r in &p.rules {
        for k in rule_keys(r).filter(|k| matches!(k, RuleMapKey::Cidr(..)) == cidr) {
            seen.insert(k);
            if seen.len() as u64 > cap {
                return (cap, true);
            }
        }
    }
    (seen.len() as u64, false)
}

impl Policy {
    /// The maps this policy does not fit in (empty: the agent can install it).
    pub fn shortfalls(&self) -> Vec<Shortfall> {
        let mut out = Vec::new();
        let mut check = |map, needed: u64, capacity: u32, at_least, what: String| {
            if needed > capacity as u64 || at_least {
                out.push(Shortfall { map, needed, capacity: capacity as u64, at_least, what });
            }
        };
        check("ZONES", self.zones.len() as u64, ZONES_PER_SLOT, false, "zones".into());
        let (n, more) = distinct(self, false, RULES_PER_SLOT as u64);
        check("RULES", n, RULES_PER_SLOT, more, "zone-to-zone rule keys: one per port and protocol".into());
        let (n, more) = distinct(self, true, CIDR_RULES_PER_SLOT as u64);
        check("CIDR_RULES", n, CIDR_RULES_PER_SLOT, more, "zone-to-address rule keys: ports × address ranges".into());
        check("UID_ZONES", self.uid_members().len() as u64, UIDS_PER_SLOT, false, "uid members".into());
        check("EXE_ZONES", self.exe_members().len() as u64, EXES_PER_SLOT, false, "exe members".into());
        let addrs: u64 = self.zones.iter().map(|z| z.addresses.len() as u64).sum();
        check("ADDR_ZONES", addrs, ADDRS_PER_SLOT, false, format!("zone addresses in {} zones", self.zones.len()));
        out
    }
}
