//! Container ids from cgroup v2 paths, for the layouts of containerd, CRI-O and
//! Docker (systemd and cgroupfs drivers) and Kubernetes' kubepods hierarchy.

/// A container the cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// `containerd`, `cri-o`, `docker`, or `unknown` (a bare 64-hex id).
    pub runtime: std::borrow::Cow<'static, str>,
    /// The 64-hex container id.
    pub id: String,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The container of the deepest path component that names one.
pub fn from_cgroup_path(path: &str) -> Option<Container> {
    for comp in path.rsplit('/') {
        let base = comp.strip_suffix(".scope").unwrap_or(comp);
        for (prefix, runtime) in [("cri-containerd-", "containerd"), ("crio-", "cri-o"), ("docker-", "docker")] {
            if let Some(id) = base.strip_prefix(prefix)
                && is_id(id)
            {
                return Some(Container { runtime: runtime.into(), id: id.to_string() });
            }
        }
        if is_id(base) {
            let runtime = if path.contains("/docker/") { "docker" } else { "unknown" };
            return Some(Container { runtime: runtime.into(), id: base.to_string() });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a9c1e0b3d5a7f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f";

    #[test]
    fn containerd_systemd_layout() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(from_cgroup_path(&p), Some(Container { runtime: "containerd".into(), id: ID.into() }));
    }

    #[test]
    fn crio_and_docker_layouts() {
        assert_eq!(from_cgroup_path(&format!("/kubepods.slice/crio-{ID}.scope")).unwrap().runtime, "cri-o");
        assert_eq!(from_cgroup_path(&format!("/system.slice/docker-{ID}.scope")).unwrap().runtime, "docker");
        assert_eq!(from_cgroup_path(&format!("/docker/{ID}")).unwrap().runtime, "docker");
        assert_eq!(from_cgroup_path(&format!("/kubepods/besteffort/pod1234/{ID}")).unwrap().id, ID);
    }

    #[test]
    fn host_processes_have_no_container() {
        assert_eq!(from_cgroup_path("/system.slice/nginx.service"), None);
        assert_eq!(from_cgroup_path("/"), None);
        assert_eq!(from_cgroup_path(&format!("/x/cri-containerd-{}.scope", &ID[..63])), None);
        assert_eq!(from_cgroup_path(&format!("/x/{}", ID.to_uppercase())), None);
    }
}
