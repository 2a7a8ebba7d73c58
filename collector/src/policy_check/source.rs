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

/// A workload from an agent JSON identity object (`identity`, `peer_identity`).
fn workload_of_json(id: &serde_json::Value, uid: Option<u32>) -> Workload {
    let str_of = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let pod = id.get("pod").cloned().unwrap_or_default();
    let k8s_labels = pod
        .get("labels")
        .and_then(|l| l.as_object())
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Workload {
        cgroup_path: str_of(id, "cgroup_path"),
        exe: str_of(id, "exe"),
        k8s_namespace: str_of(&pod, "namespace"),
        k8s_service_account: str_of(&pod, "service_account"),
        k8s_labels,
        uid,
    }
}

fn uid_of(v: &serde_json::Value) -> Option<u32> {
    v.get("uid").and_then(|u| u.as_u64()).and_then(|u| u32::try_from(u).ok())
}

/// A line of the agent's `--output jsonl`: the connection's ends that were
/// opened (a `connection` or `connection_open` record: its side, and the
/// other end when both were captured; older agents' `connect`/`accept`
/// lines), none for other records or without an address. With the
/// connection id, to count a connection with both records once.
pub fn from_jsonl(v: &serde_json::Value) -> Vec<(u64, Opened)> {
    let Some(kind) = v.get("type").and_then(|t| t.as_str()) else { return Vec::new() };
    let conn_id = v.get("conn_id").and_then(|c| c.as_u64()).unwrap_or(0);
    let proto = proto(v.get("transport").and_then(|t| t.as_str()).unwrap_or("tcp"));
    let addr = |v: &serde_json::Value, k: &str| v.get(k).and_then(|l| l.as_str()).and_then(|l| l.parse().ok());
    let side = |s: &serde_json::Value, id: &serde_json::Value, role: Role| -> Option<Opened> {
        Some(Opened {
            role,
            workload: workload_of_json(id, uid_of(s)),
            local: addr(s, "local"),
            remote: addr(s, "remote")?,
            proto: proto?,
            host: String::new(),
        })
    };
    let role_of = |s: &serde_json::Value| match s.get("role").and_then(|r| r.as_str()) {
        Some("client") => Some(Role::Connect),
        Some("server") => Some(Role::Accept),
        _ => None,
    };
    let empty = serde_json::Value::Null;
    match kind {
        "connection" | "connection_open" => {
            let mut out = Vec::new();
            if v.get("open_seen") != Some(&serde_json::Value::Bool(false))
                && let Some(r) = role_of(v)
                && let Some(o) = side(v, v.get("identity").unwrap_or(&empty), r)
            {
                out.push((conn_id, o));
            }
            if let Some(w) = v.get("witness")
                && let Some(r) = role_of(w)
                && let Some(o) = side(w, v.get("peer_identity").unwrap_or(&empty), r)
            {
                out.push((w.get("conn_id").and_then(|c| c.as_u64()).unwrap_or(0), o));
            }
            out
        }
        // Agents before records per message wrote one line per connect/accept.
        "connect" | "accept" | "accept4" => {
            let r = role(kind).expect("matched");
            side(v, v.get("identity").unwrap_or(&empty), r).map(|o| (conn_id, o)).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

fn endpoint(e: &Option<pb::Endpoint>) -> Option<SocketAddr> {
    let e = e.as_ref()?;
    let ip: IpAddr = e.address.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(e.port).ok()?))
}

fn workload_of_map(m: &std::collections::HashMap<String, String>, uid: u32) -> Workload {
    let get = |k: &str| m.get(k).cloned();
    let k8s_labels =
        m.iter().filter_map(|(k, v)| Some((k.strip_prefix("k8s_label.")?.to_string(), v.clone()))).collect();
    Workload {
        cgroup_path: get("cgroup_path"),
        exe: get("exe"),
        k8s_namespace: get("k8s_namespace"),
        k8s_service_account: get("k8s_service_account"),
        k8s_labels,
        uid: Some(uid),
    }
}

fn conn_role(r: pb::ConnRole) -> Option<Role> {
    match r {
        pb::ConnRole::Client => Some(Role::Connect),
        pb::ConnRole::Server => Some(Role::Accept),
        pb::ConnRole::Unspecified => None,
    }
}

/// A collector record: the connection's ends that were opened (see
/// [`from_jsonl`]), keyed by (host, connection id) for records that a
/// connection can have two of (its open record and its end record); older
/// agents' one-per-open records have no key.
pub fn from_record(r: &pb::Record) -> Vec<(Option<(String, u64)>, Opened)> {
    let proto = match r.transport() {
        pb::TransportProtocol::Tcp => 6,
        pb::TransportProtocol::Udp => 17,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    match r.kind() {
        pb::RecordKind::Connection | pb::RecordKind::ConnectionOpen if r.connection.is_some() => {
            let open_seen = r.connection.as_ref().is_some_and(|c| c.open_seen);
            if open_seen && let (Some(role), Some(remote)) = (conn_role(r.role()), endpoint(&r.remote)) {
                let o = Opened {
                    role,
                    workload: workload_of_map(&r.identity, r.uid),
                    local: endpoint(&r.local),
                    remote,
                    proto,
                    host: r.host.clone(),
                };
                out.push((Some((r.host.clone(), r.conn_id)), o));
            }
            if let Some(w) = &r.witness
                && let (Some(role), Some(remote)) = (conn_role(w.role()), endpoint(&w.remote))
            {
                let o = Opened {
                    role,
                    workload: workload_of_map(&r.peer_identity, w.uid),
                    local: endpoint(&w.local),
                    remote,
                    proto,
                    host: r.host.clone(),
                };
                out.push((Some((r.host.clone(), w.conn_id)), o));
            }
        }
        // Records of agents before records per message: one per connect/accept.
        pb::RecordKind::ConnectionOpen => {
            let extra: serde_json::Value = serde_json::from_str(&r.parsed_json).unwrap_or_default();
            let side = extra.get("role").or_else(|| extra.get("syscall")).and_then(|s| s.as_str());
            if let Some(role) = side.and_then(role)
                && let Some(remote) = endpoint(&r.remote)
            {
                let o = Opened {
                    role,
                    workload: workload_of_map(&r.identity, r.uid),
                    local: endpoint(&r.local),
                    remote,
                    proto,
                    host: r.host.clone(),
                };
                out.push((None, o));
            }
        }
        _ => {}
    }
    out
}
