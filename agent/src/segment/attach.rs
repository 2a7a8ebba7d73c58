//! Attaches the segmentation programs to the root of the cgroup v2 hierarchy,
//! so they apply to every process and socket on the host. They attach as BPF
//! links, which the kernel always attaches in multi mode: other programs on the
//! same hooks (systemd's, a CNI's) keep running, and all must allow.
use std::os::fd::OwnedFd;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, TracePoint},
};

use super::SegmentError;

/// The connect/sendmsg programs, by name.
pub const SOCK_ADDR_PROGRAMS: &[&str] = &["wt_connect4", "wt_connect6", "wt_sendmsg4", "wt_sendmsg6"];
/// The inbound program.
pub const INGRESS_PROGRAM: &str = "wt_ingress";

/// Loads and attaches every segmentation program. The links live as long as
/// `ebpf` (dropping it detaches them). Policy reloads never detach.
pub fn attach(ebpf: &mut Ebpf) -> Result<std::path::PathBuf, SegmentError> {
    let root = crate::host::cgroup2_root().ok_or(SegmentError::NoCgroup2)?;
    let cgroup: OwnedFd =
        std::fs::File::open(&root).map_err(|source| SegmentError::OpenCgroup { path: root.clone(), source })?.into();
    for &name in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(SegmentError::Missing { what: "program", name })?
            .try_into()
            .map_err(|source| SegmentError::Program { name, source })?;
        prog.load().map_err(|source| SegmentError::Program { name, source })?;
        // With links, "Single" passes no flags; the kernel attaches the link multi.
        prog.attach(&cgroup, CgroupAttachMode::Single).map_err(|source| SegmentError::Program { name, source })?;
    }
    let name = INGRESS_PROGRAM;
    let prog: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or(SegmentError::Missing { what: "program", name })?
        .try_into()
        .map_err(|source| SegmentError::Program { name, source })?;
    prog.load().map_err(|source| SegmentError::Program { name, source })?;
    prog.attach(&cgroup, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|source| SegmentError::Program { name, source })?;
    // New cgroups are put in their zone as soon as they exist.
    let name = "wt_cgroup_mkdir";
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(SegmentError::Missing { what: "program", name })?
        .try_into()
        .map_err(|source| SegmentError::Program { name, source })?;
    prog.load().map_err(|source| SegmentError::Program { name, source })?;
    prog.attach("cgroup", "cgroup_mkdir").map_err(|source| SegmentError::Program { name, source })?;
    tracing::info!(cgroup = %root.display(), "segmentation hooks attached (connect4/6, sendmsg4/6, ingress, cgroup_mkdir)");
    Ok(root)
}
