//! The live policy: loads the file, writes it into the kernel maps, keeps the
//! membership current, and reloads atomically when the file changes or on
//! SIGHUP. An invalid file is rejected and the policy in force stays.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use wiretrail_common::{
    policy::Policy,
    segment::{PSTAT_COUNT, PolicyState},
};

use super::{
    SegmentError, attach,
    maps::{Membership, PolicyMaps},
    members::Discovery,
};

/// How long an old slot is kept after a flip before it is cleared: far longer
/// than any hook runs, so no decision ever reads a half-cleared slot.
const GRACE: Duration = Duration::from_millis(250);
/// Policies remembered by generation for naming rules in late decision events.
const KEEP_GENERATIONS: usize = 16;

/// What the decisions reader needs to know about policies and members.
#[derive(Default)]
pub struct Generations {
    /// Policy by generation (the newest `KEEP_GENERATIONS`).
    policies: RwLock<BTreeMap<u32, Arc<Policy>>>,
    /// Address → cgroup path of the member owning it (peer identity).
    owners: RwLock<HashMap<IpAddr, String>>,
}

impl Generations {
    pub fn policy(&self, generation: u32) -> Option<Arc<Policy>> {
        self.policies.read().unwrap_or_else(|e| e.into_inner()).get(&generation).cloned()
    }

    pub fn owner(&self, addr: IpAddr) -> Option<String> {
        self.owners.read().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned()
    }

    fn insert(&self, generation: u32, policy: Arc<Policy>) {
        let mut m = self.policies.write().unwrap_or_else(|e| e.into_inner());
        m.insert(generation, policy);
        while m.len() > KEEP_GENERATIONS {
            m.pop_first();
        }
    }
}

/// The outcome of loading the policy file, for logs and notice records.
#[derive(Debug, Clone)]
pub enum Outcome {
    Loaded { sha256: String, generation: u32, zones: usize, rules: usize },
    Unchanged,
    Rejected { error: String },
}

/// The policy in force.
struct Live {
    policy: Arc<Policy>,
    /// The policy's declared zone addresses (LPM prefix length, address, zone).
    declared: Vec<(u32, [u8; 16], u32)>,
    state: PolicyState,
    /// Membership entries written in `state.slot`.
    membership: Membership,
}

/// Identifies a version of the policy file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    size: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        size: md.size(),
        ino: md.ino(),
    })
}

/// The kernel's rings for the agent: decision events, and ids of new cgroups.
pub struct Rings {
    pub decisions: RingBuf<MapData>,
    pub cgroups: RingBuf<MapData>,
}

pub struct Enforcer {
    maps: PolicyMaps,
    /// The policy file.
    path: PathBuf,
    discovery: Discovery,
    live: Option<Live>,
    /// Shared with the decisions reader.
    pub generations: Arc<Generations>,
    /// The file's stamp when last read (a change triggers a reload).
    stamp: Option<Stamp>,
    /// A slot to clear once the grace period is over.
    pending_clear: Option<(u32, Instant)>,
}

impl Enforcer {
    /// Attaches the hooks and puts the policy at `path` in force (the outcome
    /// says which). An invalid policy is an error (the agent does not start
    /// half-enforcing).
    pub fn start(
        ebpf: &mut Ebpf,
        path: &Path,
        pods: Option<Arc<crate::identity::PodIndex>>,
    ) -> Result<(Enforcer, Rings, Outcome), SegmentError> {
        let maps = PolicyMaps::take(ebpf)?;
        let ring = |ebpf: &mut Ebpf, name: &'static str| {
            let m = ebpf.take_map(name).ok_or(SegmentError::Missing { what: "map", name })?;
            RingBuf::try_from(m).map_err(|source| SegmentError::Map { name, source })
        };
        let rings = Rings { decisions: ring(ebpf, "DECISIONS")?, cgroups: ring(ebpf, "CGROUP_MKDIR")? };
        let mut e = Enforcer {
            maps,
            path: path.to_path_buf(),
            discovery: Discovery::new(PathBuf::new(), None),
            live: None,
            generations: Arc::default(),
            stamp: None,
            pending_clear: None,
        };
        // Load first, then attach: the hooks never run without a policy.
        let policy = e.read()?;
        let root = crate::host::cgroup2_root().ok_or(SegmentError::NoCgroup2)?;
        e.discovery = Discovery::new(root, pods);
        let loaded = e.install(policy)?;
        attach::attach(ebpf)?;
        Ok((e, rings, loaded))
    }

    fn read(&mut self) -> Result<Policy, SegmentError> {
        self.stamp = stamp(&self.path);
        let text = std::fs::read_to_string(&self.path)
            .map_err(|source| SegmentError::Read { path: self.path.clone(), source })?;
        Policy::parse(&text).map_err(|source| SegmentError::Invalid { path: self.path.clone(), source })
    }

    /// Writes `policy` into the idle slot, flips to it, and schedules the old
    /// slot's removal.
    fn install(&mut self, policy: Policy) -> Result<Outcome, SegmentError> {
        self.clear_pending(true);
        let policy = Arc::new(policy);
        let current = self.maps.state()?;
        let slot = if current.generation == 0 { current.slot } else { 1 - current.slot };
        let generation = current.generation.wrapping_add(1).max(1);
        let compiled = policy.compile();
        let declared: Vec<_> = compiled.addresses.iter().map(|(bits, k, v)| (*bits, k.addr, v.zone)).collect();
        let membership = self.discovery.membership(&policy, &declared);
        let written = self
            .maps
            .write_static(slot, &compiled)
            .and_then(|()| self.maps.write_membership(slot, &Membership::default(), &membership));
        if let Err(e) = written {
            // Never leave a half-written slot behind.
            self.maps.clear_slot(slot);
            return Err(e);
        }
        self.generations.insert(generation, policy.clone());
        self.publish_owners();
        let flags = if policy.exe_members().is_empty() { 0 } else { wiretrail_common::segment::STATE_HAS_EXE };
        let next = PolicyState { slot, generation, flags, _pad: 0 };
        self.maps.flip(next)?;
        if current.generation != 0 {
            self.pending_clear = Some((current.slot, Instant::now()));
        }
        let outcome = Outcome::Loaded {
            sha256: policy.sha256.clone(),
            generation,
            zones: policy.zones.len(),
            rules: policy.rules.len(),
        };
        tracing::info!(
            path = %self.path.display(),
            sha256 = %policy.sha256,
            generation,
            zones = policy.zones.len(),
            rules = policy.rules.len(),
            cgroups = membership.cgroups.len(),
            addresses = membership.addrs.len(),
            "segmentation policy in force"
        );
        self.live = Some(Live { policy, declared, state: next, membership });
        Ok(outcome)
    }

    /// Re-reads the file (SIGHUP, or its stamp changed). Invalid: rejected,
    /// the policy in force stays.
    pub fn reload(&mut self) -> Outcome {
        let policy = match self.read() {
            Ok(p) => p,
            Err(e) => {
                let error = e.to_string();
                tracing::error!(%error, "policy rejected; the previous policy stays in force");
                return Outcome::Rejected { error };
            }
        };
        if self.live.as_ref().is_some_and(|l| l.policy.sha256 == policy.sha256) {
            return Outcome::Unchanged;
        }
        match self.install(policy) {
            Ok(o) => o,
            Err(e) => {
                let error = e.to_string();
                tracing::error!(%error, "policy could not be installed; the previous policy stays in force");
                Outcome::Rejected { error }
            }
        }
    }

    /// Periodic work: reload a changed file, clear an old slot, and bring the
    /// membership up to date (new cgroups, executables, addresses).
    pub fn tick(&mut self) -> Option<Outcome> {
        self.clear_pending(false);
        if stamp(&self.path) != self.stamp {
            return Some(self.reload());
        }
        self.refresh();
        None
    }

    /// Brings the membership of the live policy up to date (every second, and
    /// at once when a cgroup is created).
    pub fn refresh(&mut self) {
        let Some(live) = self.live.as_mut() else { return };
        let membership = self.discovery.membership(&live.policy, &live.declared);
        if membership == live.membership {
            return;
        }
        match self.maps.write_membership(live.state.slot, &live.membership, &membership) {
            Ok(()) => {
                for (id, zone) in membership.cgroups.iter().filter(|(id, z)| live.membership.cgroups.get(id) != Some(z))
                {
                    let path = self.discovery.cgroup_paths.get(id).map(String::as_str).unwrap_or("?");
                    let zone = live.policy.zone(*zone).map(|z| z.name.as_str()).unwrap_or("?");
                    tracing::info!(cgroup = path, cgroup_id = id, zone, "cgroup joined its policy zone");
                }
                live.membership = membership;
            }
            Err(e) => tracing::error!(error = %e, "updating policy membership"),
        }
        self.publish_owners();
    }

    fn publish_owners(&self) {
        let owners = self
            .discovery
            .addr_owner
            .iter()
            .filter_map(|(a, id)| self.discovery.cgroup_paths.get(id).map(|p| (*a, p.clone())))
            .collect();
        *self.generations.owners.write().unwrap_or_else(|e| e.into_inner()) = owners;
    }

    /// Clears the old slot once its grace period is over (or now, waiting out
    /// the rest of it, when `force`: the slot is about to be reused).
    fn clear_pending(&mut self, force: bool) {
        let Some((slot, since)) = self.pending_clear else { return };
        let left = GRACE.saturating_sub(since.elapsed());
        if !left.is_zero() {
            if !force {
                return;
            }
            std::thread::sleep(left);
        }
        self.maps.clear_slot(slot);
        self.pending_clear = None;
    }

    /// The kernel's decision counters (`PSTAT_*`).
    pub fn kernel_stats(&self) -> [u64; PSTAT_COUNT as usize] {
        self.maps.stats()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the policy in force.
    pub fn sha256(&self) -> Option<&str> {
        self.live.as_ref().map(|l| l.policy.sha256.as_str())
    }
}
