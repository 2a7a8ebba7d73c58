//! The pods on this node, indexed by container id and pod IP: what Kubernetes
//! enrichment adds to an identity. Filled by the watcher in [`super::kube`].
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use k8s_openapi::api::core::v1::Pod;

/// What records carry about the pod a process runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// Pod IPs (indexed; not repeated on every record).
    #[serde(skip)]
    pub ips: Vec<IpAddr>,
}

/// The runtime and id of a `status.containerStatuses[].containerID`
/// (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`). The id is the one the
/// cgroup path names (see [`super::container`]).
pub fn parse_container_id(s: &str) -> Option<(&'static str, &str)> {
    let (scheme, id) = s.split_once("://")?;
    let runtime = match scheme {
        "containerd" => "containerd",
        "cri-o" | "crio" => "cri-o",
        "docker" => "docker",
        _ => "unknown",
    };
    let ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    ok.then_some((runtime, id))
}

/// A pod's identity, the ids of its containers (regular, init and ephemeral)
/// and whether it shares the node's network (its IPs are the node's then).
pub struct Mapped {
    pub info: Arc<PodInfo>,
    pub containers: Vec<String>,
    pub host_network: bool,
}

/// Maps a Pod object; None for a pod without a uid (never sent by an API server).
pub fn map_pod(pod: &Pod) -> Option<Mapped> {
    let md = &pod.metadata;
    let uid = md.uid.clone()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().filter_map(|p| p.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    let containers = status
        .into_iter()
        .flat_map(|s| {
            [&s.container_statuses, &s.init_container_statuses, &s.ephemeral_container_statuses]
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|c| c.container_id.as_deref().and_then(parse_container_id).map(|(_, id)| id.to_string()))
        .collect();
    let info = PodInfo {
        name: md.name.clone().unwrap_or_default(),
        namespace: md.namespace.clone().unwrap_or_default(),
        uid,
        service_account: spec
            .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
            .unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        labels: md.labels.clone().unwrap_or_default(),
        ips,
    };
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    Some(Mapped { info: Arc::new(info), containers, host_network })
}

#[derive(Default)]
struct Inner {
    /// pod uid → the pod and what it put in the other maps.
    pods: HashMap<String, Mapped>,
    by_container: HashMap<String, Arc<PodInfo>>,
    by_ip: HashMap<IpAddr, Arc<PodInfo>>,
}

impl Inner {
    fn insert(&mut self, m: Mapped) {
        self.remove(&m.info.uid.clone());
        for c in &m.containers {
            self.by_container.insert(c.clone(), m.info.clone());
        }
        if !m.host_network {
            for ip in &m.info.ips {
                self.by_ip.insert(*ip, m.info.clone());
            }
        }
        self.pods.insert(m.info.uid.clone(), m);
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.pods.remove(uid) else { return };
        for c in &old.containers {
            if self.by_container.get(c).is_some_and(|p| p.uid == uid) {
                self.by_container.remove(c);
            }
        }
        for ip in &old.info.ips {
            if self.by_ip.get(ip).is_some_and(|p| p.uid == uid) {
                self.by_ip.remove(ip);
            }
        }
    }
}

/// Container id → pod and pod IP → pod, for the pods on this node. Readers
/// (the pipeline) take a read lock for one map lookup; [`PodIndex::generation`]
/// changes on every change, so cached identities know when to look again.
#[derive(Default)]
pub struct PodIndex {
    inner: RwLock<Inner>,
    generation: AtomicU64,
}

impl PodIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever the index does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A pod was added or changed.
    pub fn apply(&self, pod: &Pod) {
        if let Some(m) = map_pod(pod) {
            self.write().insert(m);
            self.bump();
        }
    }

    /// A pod was deleted.
    pub fn delete(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.write().remove(uid);
            self.bump();
        }
    }

    /// Replaces everything (a complete list after the watch (re)started).
    pub fn replace_all(&self, pods: &[Pod]) {
        let mut inner = Inner::default();
        for p in pods {
            if let Some(m) = map_pod(p) {
                inner.insert(m);
            }
        }
        *self.write() = inner;
        self.bump();
    }

    pub fn by_container(&self, id: &str) -> Option<Arc<PodInfo>> {
        self.read().by_container.get(id).cloned()
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<PodInfo>> {
        self.read().by_ip.get(&ip).cloned()
    }

    /// Pods indexed.
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "8d3f2a1b0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    const C2: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    const INIT: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    /// Shaped like `kubectl get pod -o json` of a two-container pod with an
    /// init container (fields trimmed, none invented).
    fn pod_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "creationTimestamp": "2026-11-20T09:14:03Z",
                "generateName": "checkout-7c9d8f6b5-",
                "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7c9d8f6b5", "tier": "backend"},
                "name": "checkout-7c9d8f6b5-x2k4q",
                "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "blockOwnerDeletion": true, "controller": true,
                    "kind": "ReplicaSet", "name": "checkout-7c9d8f6b5", "uid": "0b8e2a4c-5d6f-4e7a-9b1c-2d3e4f5a6b7c"}],
                "resourceVersion": "918273",
                "uid": "3f6c1a2e-8b7d-4c5e-9f0a-1b2c3d4e5f60"
            },
            "spec": {
                "containers": [
                    {"image": "registry.example/checkout:1.4.2", "imagePullPolicy": "IfNotPresent", "name": "app",
                     "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
                    {"image": "envoyproxy/envoy:v1.31.0", "name": "proxy"}
                ],
                "initContainers": [{"image": "busybox:1.36", "name": "migrate"}],
                "dnsPolicy": "ClusterFirst",
                "nodeName": "node-a",
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "serviceAccount": "checkout",
                "serviceAccountName": "checkout",
                "terminationGracePeriodSeconds": 30
            },
            "status": {
                "conditions": [{"lastTransitionTime": "2026-11-20T09:14:09Z", "status": "True", "type": "Ready"}],
                "containerStatuses": [
                    {"containerID": format!("containerd://{C1}"), "image": "registry.example/checkout:1.4.2",
                     "imageID": "registry.example/checkout@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                     "lastState": {}, "name": "app", "ready": true, "restartCount": 0, "started": true,
                     "state": {"running": {"startedAt": "2026-11-20T09:14:08Z"}}},
                    {"containerID": format!("containerd://{C2}"), "image": "docker.io/envoyproxy/envoy:v1.31.0",
                     "imageID": "docker.io/envoyproxy/envoy@sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
                     "lastState": {}, "name": "proxy", "ready": true, "restartCount": 0, "started": true,
                     "state": {"running": {"startedAt": "2026-11-20T09:14:08Z"}}}
                ],
                "initContainerStatuses": [
                    {"containerID": format!("containerd://{INIT}"), "image": "docker.io/library/busybox:1.36",
                     "imageID": "docker.io/library/busybox@sha256:2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071",
                     "lastState": {}, "name": "migrate", "ready": true, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": "2026-11-20T09:14:05Z", "finishedAt": "2026-11-20T09:14:06Z"}}}
                ],
                "hostIP": "10.0.3.17",
                "hostIPs": [{"ip": "10.0.3.17"}],
                "phase": "Running",
                "podIP": "10.244.1.23",
                "podIPs": [{"ip": "10.244.1.23"}, {"ip": "fd00:10:244:1::17"}],
                "qosClass": "BestEffort",
                "startTime": "2026-11-20T09:14:03Z"
            }
        })
    }

    fn pod() -> Pod {
        serde_json::from_value(pod_json()).unwrap()
    }

    #[test]
    fn container_ids() {
        assert_eq!(parse_container_id(&format!("containerd://{C1}")), Some(("containerd", C1)));
        assert_eq!(parse_container_id(&format!("cri-o://{C1}")), Some(("cri-o", C1)));
        assert_eq!(parse_container_id(&format!("docker://{C1}")), Some(("docker", C1)));
        assert_eq!(parse_container_id(C1), None, "no scheme");
        assert_eq!(parse_container_id("containerd://"), None, "not started yet");
        assert_eq!(parse_container_id(&format!("containerd://{}", &C1[..63])), None);
        assert_eq!(parse_container_id(&format!("containerd://{}", C1.to_uppercase())), None);
    }

    #[test]
    fn maps_a_real_shaped_pod() {
        let m = map_pod(&pod()).unwrap();
        let i = &m.info;
        assert_eq!(i.name, "checkout-7c9d8f6b5-x2k4q");
        assert_eq!(i.namespace, "shop");
        assert_eq!(i.uid, "3f6c1a2e-8b7d-4c5e-9f0a-1b2c3d4e5f60");
        assert_eq!(i.service_account, "checkout");
        assert_eq!(i.node, "node-a");
        assert_eq!(i.labels.get("tier").map(String::as_str), Some("backend"));
        assert_eq!(i.labels.len(), 3);
        assert_eq!(i.ips, vec!["10.244.1.23".parse::<IpAddr>().unwrap(), "fd00:10:244:1::17".parse().unwrap()]);
        assert_eq!(m.containers, vec![C1.to_string(), C2.into(), INIT.into()]);
        assert!(!m.host_network);
        let json = serde_json::to_value(&**i).unwrap();
        assert_eq!(json["service_account"], "checkout");
        assert!(json.get("ips").is_none(), "{json}");
    }

    #[test]
    fn pending_pod_without_status_maps() {
        let mut v = pod_json();
        v.as_object_mut().unwrap().remove("status");
        let m = map_pod(&serde_json::from_value(v).unwrap()).unwrap();
        assert!(m.containers.is_empty() && m.info.ips.is_empty());
    }

    #[test]
    fn index_follows_changes_and_deletions() {
        let idx = PodIndex::default();
        let g0 = idx.generation();
        idx.apply(&pod());
        assert!(idx.generation() > g0);
        assert_eq!(idx.by_container(C2).unwrap().name, "checkout-7c9d8f6b5-x2k4q");
        assert_eq!(idx.by_container(INIT).unwrap().namespace, "shop");
        assert_eq!(idx.by_ip("10.244.1.23".parse().unwrap()).unwrap().uid, "3f6c1a2e-8b7d-4c5e-9f0a-1b2c3d4e5f60");
        // A restart gives the container a new id: the old one is gone.
        let mut v = pod_json();
        v["status"]["containerStatuses"][1]["containerID"] = format!("containerd://{}", "ab".repeat(32)).into();
        v["metadata"]["labels"]["tier"] = "edge".into();
        idx.apply(&serde_json::from_value(v).unwrap());
        assert!(idx.by_container(C2).is_none());
        assert_eq!(idx.by_container(&"ab".repeat(32)).unwrap().labels["tier"], "edge");
        assert_eq!(idx.by_container(C1).unwrap().labels["tier"], "edge");
        assert_eq!(idx.len(), 1);
        idx.delete(&pod());
        assert!(idx.by_container(C1).is_none() && idx.by_ip("10.244.1.23".parse().unwrap()).is_none());
        assert!(idx.is_empty());
        idx.replace_all(&[pod()]);
        assert!(idx.by_container(C1).is_some());
        idx.replace_all(&[]);
        assert!(idx.by_container(C1).is_none());
    }

    #[test]
    fn host_network_pods_do_not_claim_the_node_ip() {
        let mut v = pod_json();
        v["spec"]["hostNetwork"] = true.into();
        v["status"]["podIPs"] = serde_json::json!([{"ip": "10.0.3.17"}]);
        let idx = PodIndex::default();
        idx.apply(&serde_json::from_value(v).unwrap());
        assert!(idx.by_ip("10.0.3.17".parse().unwrap()).is_none());
        assert!(idx.by_container(C1).is_some());
    }
}
