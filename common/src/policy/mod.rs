//! The segmentation policy: the YAML file's model (`Policy::parse`), the
//! reference decision (`Policy::decide`, the kernel's lookups done in Rust)
//! and its compilation into the kernel's map entries (`Policy::compile`).
//! The file format is documented in `docs/policy.md`.
mod build;
mod cidr;
mod compile;
mod decide;
mod error;
mod glob;
mod limits;
mod lines;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::string::String;
use std::vec::Vec;

pub use cidr::{Cidr, CidrError, mapped};
pub use compile::{Compiled, MAX_RULE_KEYS};
pub use decide::{Decision, FlowDirection, FlowQuery, Verdict};
pub use error::{PolicyError, Pos};
pub use glob::Glob;
pub use limits::Shortfall;

use crate::segment;

/// A parsed, validated policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// In file order; `zones[i].id == i + 1`.
    pub zones: Vec<Zone>,
    /// In file order; `rules[i].id == i + 1`.
    pub rules: Vec<Rule>,
    /// Lowercase hex SHA-256 of the file's bytes: the policy version.
    pub sha256: String,
}

/// A segment: the workloads its members select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// 1-based, file order.
    pub id: u32,
    pub name: String,
    pub mode: Mode,
    pub members: Vec<Member>,
    /// Addresses owned by the zone (as a peer).
    pub addresses: Vec<Cidr>,
    /// Line of the zone's entry.
    pub line: u32,
}

/// What happens to a flow no rule allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Let through and recorded.
    #[default]
    Audit,
    /// Refused (connect/sendmsg fail with EPERM, inbound packets are dropped).
    Enforce,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }

    /// [`segment::MODE_AUDIT`] or [`segment::MODE_ENFORCE`].
    pub fn kernel(&self) -> u32 {
        match self {
            Mode::Audit => segment::MODE_AUDIT,
            Mode::Enforce => segment::MODE_ENFORCE,
        }
    }
}

/// One member entry. Either cgroup-level (any of `namespace`, `labels`,
/// `service_account`, `cgroup`; all given must match), or `exe` alone, or `uid` alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub cgroup: Option<Glob>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    pub line: u32,
}

impl Member {
    /// Selects by cgroup-level attributes (not `exe`/`uid`)?
    pub fn is_cgroup_level(&self) -> bool {
        self.exe.is_none() && self.uid.is_none()
    }

    /// Do the cgroup-level attributes of `a` match? (false for exe/uid members)
    pub fn matches_cgroup(&self, a: &WorkloadAttrs) -> bool {
        if !self.is_cgroup_level() {
            return false;
        }
        let eq = |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
        eq(&self.namespace, a.k8s_namespace)
            && eq(&self.service_account, a.k8s_service_account)
            && self.cgroup.as_ref().is_none_or(|g| a.cgroup_path.is_some_and(|p| g.matches(p)))
            && self.labels.iter().all(|(k, v)| a.k8s_labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// An allow rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// 1-based, file order.
    pub id: u32,
    pub name: String,
    pub line: u32,
    pub from: Peer,
    pub to: Peer,
    /// Inclusive destination port ranges; empty = any port.
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
}

/// One side of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A zone id.
    Zone(u32),
    /// Address ranges (outside any zone's control).
    Cidrs(Vec<Cidr>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number; 0 ([`segment::PROTO_ANY`]) for any.
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Any => segment::PROTO_ANY,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// What is known about a workload (a process, or a cgroup).
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkloadAttrs<'a> {
    pub cgroup_path: Option<&'a str>,
    pub k8s_namespace: Option<&'a str>,
    pub k8s_service_account: Option<&'a str>,
    pub k8s_labels: Option<&'a BTreeMap<String, String>>,
    pub exe: Option<&'a str>,
    pub uid: Option<u32>,
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        build::parse(text)
    }

    pub fn zone(&self, id: u32) -> Option<&Zone> {
        self.zones.get((id as usize).checked_sub(1)?)
    }

    pub fn zone_by_name(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.get((id as usize).checked_sub(1)?)
    }

    /// The zone of a cgroup: the first zone (file order) with a cgroup-level
    /// member that matches. exe/uid members are not considered.
    pub fn cgroup_zone(&self, a: &WorkloadAttrs) -> Option<u32> {
        self.zones.iter().find(|z| z.members.iter().any(|m| m.matches_cgroup(a))).map(|z| z.id)
    }

    /// The zone of a process, as the kernel finds it: an `exe` member first,
    /// then a `uid` member, then the cgroup's zone.
    pub fn zone_of(&self, a: &WorkloadAttrs) -> Option<u32> {
        let by_exe = a.exe.and_then(|e| self.exe_members().into_iter().find(|(x, _)| x == e).map(|(_, z)| z));
        let by_uid = || a.uid.and_then(|u| self.uid_members().into_iter().find(|(x, _)| *x == u).map(|(_, z)| z));
        by_exe.or_else(by_uid).or_else(|| self.cgroup_zone(a))
    }

    /// The zone of a receiving socket, as the kernel's ingress hook finds it
    /// (no process there, so no `exe`): a `uid` member (the socket's owner),
    /// then the cgroup's zone — the same order as `zone_of` without `exe`.
    pub fn ingress_zone(&self, a: &WorkloadAttrs) -> Option<u32> {
        a.uid
            .and_then(|u| self.uid_members().into_iter().find(|(x, _)| *x == u).map(|(_, z)| z))
            .or_else(|| self.cgroup_zone(a))
    }

    /// Every `exe` member: (path, zone id), file order, without repeats.
    pub fn exe_members(&self) -> Vec<(String, u32)> {
        let mut seen = std::collections::HashSet::new();
        let mut v: Vec<(String, u32)> = Vec::new();
        for z in &self.zones {
            for e in z.members.iter().filter_map(|m| m.exe.as_ref()) {
                if seen.insert(e.as_str()) {
                    v.push((e.clone(), z.id));
                }
            }
        }
        v
    }

    /// Every `uid` member: (uid, zone id), file order, without repeats.
    pub fn uid_members(&self) -> Vec<(u32, u32)> {
        let mut seen = std::collections::HashSet::new();
        let mut v: Vec<(u32, u32)> = Vec::new();
        for z in &self.zones {
            for u in z.members.iter().filter_map(|m| m.uid) {
                if seen.insert(u) {
                    v.push((u, z.id));
                }
            }
        }
        v
    }

    /// The zone that declares the longest prefix containing `ip`.
    pub fn address_zone(&self, ip: IpAddr) -> Option<u32> {
        self.zones
            .iter()
            .flat_map(|z| z.addresses.iter().map(move |c| (c, z.id)))
            .filter(|(c, _)| c.contains(ip))
            .max_by_key(|(c, id)| (c.mapped_prefix(), core::cmp::Reverse(*id)))
            .map(|(_, id)| id)
    }
}
