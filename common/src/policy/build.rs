//! From the file to a validated [`Policy`]: serde_yaml does the shape (with
//! positions), then every semantic check here names its node's position
//! through the [`LineMap`].
use std::borrow::ToOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use serde_yaml::Value;
use sha2::Digest;

use super::cidr::{Cidr, CidrError, mapped};
use super::compile::MAX_RULE_KEYS;
use super::error::{PolicyError, Pos};
use super::glob::Glob;
use super::lines::LineMap;
use super::schema::{RawMember, RawPolicy, RawRule, RawZone};
use super::{Member, Peer, Policy, Rule, Zone};

pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = serde_yaml::from_str(text).map_err(|e| PolicyError::from_yaml(&e))?;
    let lines = LineMap::new(text);
    let b = Builder { lines: &lines };
    b.version(&raw.version)?;
    let zones = b.zones(&raw.zones)?;
    let by_name: HashMap<&str, u32> = zones.iter().map(|z| (z.name.as_str(), z.id)).collect();
    let rules = raw.rules.iter().enumerate().map(|(i, r)| b.rule(i, r, &by_name)).collect::<Result<Vec<_>, _>>()?;
    let mut names: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let Some(first_line) = names.insert(&r.name, r.line) {
            let at = b.at(&format!("rules[{i}].name"));
            return Err(PolicyError::DuplicateRule { at, name: r.name.clone(), first_line });
        }
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Policy { zones, rules, sha256 })
}

struct Builder<'a> {
    lines: &'a LineMap,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Builder<'_> {
    fn at(&self, path: &str) -> Pos {
        self.lines.pos(path)
    }

    fn version(&self, v: &Value) -> Result<(), PolicyError> {
        if v.as_u64() == Some(1) {
            return Ok(());
        }
        let found = serde_yaml::to_string(v).map(|s| s.trim_end().to_owned()).unwrap_or_default();
        Err(PolicyError::Version { at: self.at("version"), found })
    }

    fn zones(&self, raw: &[RawZone]) -> Result<Vec<Zone>, PolicyError> {
        let mut zones: Vec<Zone> = Vec::new();
        // exe / uid → (zone name, line) of the first claim.
        let mut exes: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let mut uids: BTreeMap<u32, (String, u32)> = BTreeMap::new();
        let mut addrs: BTreeMap<([u8; 16], u32), String> = BTreeMap::new();
        // zone name → line of its entry (duplicate names in O(1), not a scan).
        let mut names: HashMap<String, u32> = HashMap::with_capacity(raw.len());
        for (i, z) in raw.iter().enumerate() {
            let p = format!("zones[{i}]");
            if !valid_name(&z.name) {
                return Err(PolicyError::ZoneName { at: self.at(&format!("{p}.name")), name: z.name.clone() });
            }
            if let Some(first_line) = names.get(&z.name) {
                let at = self.at(&format!("{p}.name"));
                return Err(PolicyError::DuplicateZone { at, name: z.name.clone(), first_line: *first_line });
            }
            if z.members.is_empty() {
                return Err(PolicyError::NoMembers { at: self.at(&format!("{p}.members")), zone: z.name.clone() });
            }
            let mut members = Vec::new();
            for (j, m) in z.members.iter().enumerate() {
                let mp = format!("{p}.members[{j}]");
                let member = self.member(&mp, m)?;
                let claim = match (&member.exe, member.uid) {
                    (Some(e), _) => exes.get(e).map(|c| (format!("exe {e}"), c)),
                    (_, Some(u)) => uids.get(&u).map(|c| (format!("uid {u}"), c)),
                    _ => None,
                };
                if let Some((what, (other, other_line))) = claim
                    && *other != z.name
                {
                    let at = self.at(&mp);
                    return Err(PolicyError::ClaimedTwice { at, what, other: other.clone(), other_line: *other_line });
                }
                if let Some(e) = &member.exe {
                    exes.entry(e.clone()).or_insert((z.name.clone(), member.line));
                }
                if let Some(u) = member.uid {
                    uids.entry(u).or_insert((z.name.clone(), member.line));
                }
                members.push(member);
            }
            let mut addresses = Vec::new();
            for (j, a) in z.addresses.iter().enumerate() {
                let ap = format!("{p}.addresses[{j}]");
                let c = self.cidr(&ap, a)?;
                if let Some(other) = addrs.insert((mapped(c.addr), c.mapped_prefix()), z.name.clone()) {
                    return Err(PolicyError::DuplicateAddress { at: self.at(&ap), cidr: c.to_string(), other });
                }
                addresses.push(c);
            }
            names.insert(z.name.clone(), self.at(&p).line);
            zones.push(Zone {
                id: i as u32 + 1,
                name: z.name.clone(),
                mode: z.mode,
                members,
                addresses,
                line: self.at(&p).line,
            });
        }
        Ok(zones)
    }

    fn member(&self, p: &str, m: &RawMember) -> Result<Member, PolicyError> {
        let at = self.at(p);
        let cgroup_level =
            m.cgroup.is_some() || m.namespace.is_some() || !m.labels.is_empty() || m.service_account.is_some();
        let alone = |field: &str| PolicyError::Member {
            at,
            msg: format!("{field} must be alone in its member entry (use another list entry for the other selectors)"),
        };
        if m.exe.is_some() && (cgroup_level || m.uid.is_some()) {
            return Err(alone("exe"));
        }
        if m.uid.is_some() && cgroup_level {
            return Err(alone("uid"));
        }
        if !cgroup_level && m.exe.is_none() && m.uid.is_none() {
            return Err(PolicyError::Member {
                at,
                msg: "empty member entry: give cgroup, namespace, labels, service_account, exe or uid".into(),
            });
        }
        if let Some(e) = &m.exe
            && !e.starts_with('/')
        {
            let at = self.at(&format!("{p}.exe"));
            return Err(PolicyError::Member { at, msg: format!("exe {e:?} must be an absolute path") });
        }
        let cgroup = match &m.cgroup {
            None => None,
            Some(g) => Some(Glob::new(g).map_err(|msg| PolicyError::Glob {
                at: self.at(&format!("{p}.cgroup")),
                glob: g.clone(),
                msg: msg.into(),
            })?),
        };
        Ok(Member {
            namespace: m.namespace.clone(),
            labels: m.labels.clone(),
            service_account: m.service_account.clone(),
            cgroup,
            exe: m.exe.clone(),
            uid: m.uid,
            line: at.line,
        })
    }

    fn cidr(&self, p: &str, text: &str) -> Result<Cidr, PolicyError> {
        Cidr::parse(text).map_err(|e| {
            let at = self.at(p);
            match e {
                CidrError::Invalid(msg) => PolicyError::Cidr { at, text: text.into(), msg },
                CidrError::HostBits(suggestion) => PolicyError::HostBits { at, text: text.into(), suggestion },
            }
        })
    }

    fn rule(&self, i: usize, r: &RawRule, zones: &HashMap<&str, u32>) -> Result<Rule, PolicyError> {
        let p = format!("rules[{i}]");
        let line = self.at(&p).line;
        let name = match &r.name {
            Some(n) if !valid_name(n) => {
                return Err(PolicyError::RuleName { at: self.at(&format!("{p}.name")), name: n.clone() });
            }
            Some(n) => n.clone(),
            None => format!("rule-{}", i + 1),
        };
        let from = self.peer(&format!("{p}.from"), &r.from, zones)?;
        let to = self.peer(&format!("{p}.to"), &r.to, zones)?;
        if let (Peer::Cidrs(_), Peer::Cidrs(_)) = (&from, &to) {
            return Err(PolicyError::CidrToCidr { at: self.at(&p) });
        }
        let ports = self.ports(&format!("{p}.ports"), &r.ports)?;
        let port_keys: u64 =
            if ports.is_empty() { 1 } else { ports.iter().map(|(a, b)| (*b - *a) as u64 + 1).sum::<u64>() };
        let cidrs = match (&from, &to) {
            (Peer::Cidrs(c), _) | (_, Peer::Cidrs(c)) => c.len() as u64,
            _ => 1,
        };
        let keys = port_keys * cidrs;
        if keys > MAX_RULE_KEYS {
            let at = if ports.is_empty() { self.at(&p) } else { self.at(&format!("{p}.ports")) };
            return Err(PolicyError::TooManyKeys { at, rule: name, keys, max: MAX_RULE_KEYS });
        }
        Ok(Rule { id: i as u32 + 1, name, line, from, to, ports, protocol: r.protocol })
    }

    fn zone_ref(&self, p: &str, name: &str, zones: &HashMap<&str, u32>) -> Result<Peer, PolicyError> {
        match zones.get(name) {
            Some(id) => Ok(Peer::Zone(*id)),
            None => Err(PolicyError::UnknownZone { at: self.at(p), name: name.into() }),
        }
    }

    fn peer(&self, p: &str, v: &Value, zones: &HashMap<&str, u32>) -> Result<Peer, PolicyError> {
        let shape = || PolicyError::Peer {
            at: self.at(p),
            msg: "a rule side is a zone name, {zone: NAME}, or {cidr: CIDR} / {cidr: [CIDR, ...]}".into(),
        };
        match v {
            Value::String(name) => self.zone_ref(p, name, zones),
            Value::Mapping(m) if m.len() == 1 => {
                let (k, v) = m.iter().next().ok_or_else(shape)?;
                match (k.as_str(), v) {
                    (Some("zone"), Value::String(name)) => self.zone_ref(&format!("{p}.zone"), name, zones),
                    (Some("cidr"), Value::String(c)) => Ok(Peer::Cidrs(std::vec![self.cidr(&format!("{p}.cidr"), c)?])),
                    (Some("cidr"), Value::Sequence(list)) if !list.is_empty() => {
                        let mut out: Vec<Cidr> = Vec::new();
                        for (j, c) in list.iter().enumerate() {
                            let cp = format!("{p}.cidr[{j}]");
                            let Some(s) = c.as_str() else {
                                return Err(PolicyError::Cidr {
                                    at: self.at(&cp),
                                    text: serde_yaml::to_string(c).unwrap_or_default().trim_end().into(),
                                    msg: "expected a string".into(),
                                });
                            };
                            let c = self.cidr(&cp, s)?;
                            if !out.contains(&c) {
                                out.push(c);
                            }
                        }
                        Ok(Peer::Cidrs(out))
                    }
                    _ => Err(shape()),
                }
            }
            _ => Err(shape()),
        }
    }

    fn ports(&self, p: &str, raw: &[Value]) -> Result<Vec<(u16, u16)>, PolicyError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (j, v) in raw.iter().enumerate() {
            let at = self.at(&format!("{p}[{j}]"));
            let err = |msg: String| PolicyError::Port { at, msg };
            let one = |s: &str| -> Result<u16, PolicyError> {
                match s.trim().parse::<u64>() {
                    Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                    Ok(n) => Err(err(format!("port {n} is out of range (1-65535)"))),
                    Err(_) => Err(err(format!("{s:?} is not a port number"))),
                }
            };
            let range = match v {
                Value::Number(n) => {
                    let n = n.to_string();
                    let p = one(&n)?;
                    (p, p)
                }
                Value::String(s) => match s.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (one(a)?, one(b)?);
                        if a > b {
                            return Err(err(format!("port range {s:?} is empty (start > end)")));
                        }
                        (a, b)
                    }
                    None => {
                        let p = one(s)?;
                        (p, p)
                    }
                },
                _ => return Err(err("a port is a number or a range \"LOW-HIGH\"".to_string())),
            };
            if seen.insert(range) {
                out.push(range);
            }
        }
        Ok(out)
    }
}
