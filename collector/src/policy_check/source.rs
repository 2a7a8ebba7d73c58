//! Connection-open records, from the agent's JSONL output or from the
//! collector, as [`Opened`] connections.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use wiretrail_proto::v1 as pb;

/// Which side of a connection a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The workload initiated it (connect): an egress flow.
    Connect,
    /// The workload accepted it: an ingress flow.
    Accept,
}

/// What the record says about the workload that owns the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Workload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_service_account: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub k8s_labels: BTreeMap<String, String>,
    pub uid: Option<u32>,
}

impl Workload {
    pub fn attrs(&self) -> wiretrail_common::policy::WorkloadAttrs<'_> {
        wiretrail_common::policy::WorkloadAttrs {
            cgroup_path: self.cgroup_path.as_deref(),
            k8s_namespace: self.k8s_namespace.as_deref(),
            k8s_service_account: self.k8s_service_account.as_deref(),
            k8s_labels: Some(&self.k8s_labels),
            exe: self.exe.as_deref(),
            uid: self.uid,
        }
    }

    /// A short label: the Kubernetes namespace/service account, else the
    /// executable and the cgroup path; with the uid.
    pub fn label(&self) -> String {
        let who = match (&self.k8s_namespace, &self.k8s_service_account, &self.exe, &self.cgroup_path) {
            (Some(ns), Some(sa), _, _) => format!("{ns}/{sa}"),
            (Some(ns), None, _, _) => ns.clone(),
            (None, _, Some(exe), Some(cg)) => format!("{exe} in {cg}"),
            (None, _, Some(exe), None) => exe.clone(),
            (None, _, None, Some(cg)) => cg.clone(),
            (None, _, None, None) => "?".into(),
        };
        match self.uid {
            Some(u) => format!("{who} (uid {u})"),
            None => who,
        }
    }
}

/// One opened connection as one side saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub role: Role,
    pub workload: Workload,
    /// The socket's own address (may be unknown or unspecified on connect).
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
    /// 6 or 17.
    pub proto: u8,
    /// Host that recorded it ("" when unknown).
    pub host: String,
}

fn role(s: &str) -> Option<Role> {
    match s {
        "connect" => Some(Role::Connect),
        "accept" | "accept4" => Some(Role::Accept),
        _ => None,
    }
}

fn proto(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        _ => None,
    }
}

/// A line of the agent's `--output jsonl`: `Ok(None)` for records that are not
/// connection opens (data, close, gap, notices) or that lack an address.
pub fn from_jsonl(v: &serde_json::Value) -> Option<Opened> {
    let role = role(v.get("type")?.as_str()?)?;
    let str_of = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let id = v.get("identity").cloned().unwrap_or_default();
    let pod = id.get("pod").cloned().unwrap_or_default();
    let k8s_labels = pod
        .get("labels")
        .and_then(|l| l.as_object())
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let workload = Workload {
        cgroup_path: str_of(&id, "cgroup_path"),
        exe: str_of(&id, "exe"),
        k8s_namespace: str_of(&pod, "namespace"),
        k8s_service_account: str_of(&pod, "service_account"),
        k8s_labels,
        uid: v.get("uid").and_then(|u| u.as_u64()).and_then(|u| u32::try_from(u).ok()),
    };
    Some(Opened {
        role,
        workload,
        local: v.get("local").and_then(|l| l.as_str()).and_then(|l| l.parse().ok()),
        remote: v.get("remote")?.as_str()?.parse().ok()?,
        proto: proto(v.get("transport").and_then(|t| t.as_str()).unwrap_or("tcp"))?,
        host: String::new(),
    })
}

fn endpoint(e: &Option<pb::Endpoint>) -> Option<SocketAddr> {
    let e = e.as_ref()?;
    let ip: IpAddr = e.address.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(e.port).ok()?))
}

/// A collector record: `None` unless it is a connection open with a usable
/// remote address. The side comes from `parsed_json` (`role`, else `syscall`).
pub fn from_record(r: &pb::Record) -> Option<Opened> {
    if r.kind() != pb::RecordKind::ConnectionOpen {
        return None;
    }
    let extra: serde_json::Value = serde_json::from_str(&r.parsed_json).unwrap_or_default();
    let side = extra.get("role").or_else(|| extra.get("syscall")).and_then(|s| s.as_str())?;
    let role = role(side)?;
    let proto = match r.transport() {
        pb::TransportProtocol::Tcp => 6,
        pb::TransportProtocol::Udp => 17,
        _ => return None,
    };
    let get = |k: &str| r.identity.get(k).cloned();
    let k8s_labels =
        r.identity.iter().filter_map(|(k, v)| Some((k.strip_prefix("k8s_label.")?.to_string(), v.clone()))).collect();
    let workload = Workload {
        cgroup_path: get("cgroup_path"),
        exe: get("exe"),
        k8s_namespace: get("k8s_namespace"),
        k8s_service_account: get("k8s_service_account"),
        k8s_labels,
        uid: Some(r.uid),
    };
    Some(Opened {
        role,
        workload,
        local: endpoint(&r.local),
        remote: endpoint(&r.remote)?,
        proto,
        host: r.host.clone(),
    })
}
