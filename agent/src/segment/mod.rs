//! Segmentation: a policy file (zones of workloads, allowed flows) compiled
//! into the kernel maps of `wiretrail_common::segment` and enforced by the
//! cgroup hooks in `ebpf/src/segment.rs`; every decision becomes a record.
//!
//! - `attach`: the cgroup programs, on the root of the cgroup v2 hierarchy.
//! - `maps`: the policy maps, written slot by slot and flipped atomically.
//! - `members`: which cgroups, executables and addresses belong to which zone now.
//! - `enforcer`: loads, reloads (SIGHUP, file change) and refreshes membership.
//! - `decisions`: turns the kernel's decision events into records.
//! - `cgroups`: wakes the enforcer when a cgroup is created.
//! - `run`: all of it while the agent runs, with its notices.
pub mod attach;
pub mod cgroups;
pub mod decisions;
pub mod enforcer;
pub mod maps;
pub mod members;
pub mod run;

pub use enforcer::{Enforcer, Generations, Rings};
pub use run::Segmentation;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("reading policy file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: std::path::PathBuf,
        #[source]
        source: wiretrail_common::policy::PolicyError,
    },
    #[error("no cgroup v2 hierarchy is mounted: segmentation needs one")]
    NoCgroup2,
    #[error("opening the cgroup v2 root {path}")]
    OpenCgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF object has no {what} `{name}`")]
    Missing { what: &'static str, name: &'static str },
    #[error("program `{name}`: {source:?}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source:?}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the policy needs {needed} entries in map `{name}`, which holds {capacity} per policy")]
    TooBig { name: &'static str, needed: usize, capacity: usize },
}
