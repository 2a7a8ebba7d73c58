//! A minimal Kubernetes API server for tests: plain HTTP/1.1 on loopback,
//! answering pod list (`GET /api/v1/pods`) and watch (`watch=true`, a chunked
//! stream of watch events) requests the way kube-apiserver does, with resource
//! versions and `fieldSelector=spec.nodeName=...` filtering. Every request line
//! is kept for assertions. Threads only, no async runtime; stopped on drop.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    /// uid → pod, as listed now.
    pods: BTreeMap<String, Value>,
    /// The current resource version.
    rv: u64,
    /// (resource version, type, object) of every watch event so far.
    events: Vec<(u64, String, Value)>,
    /// `METHOD target` of every request.
    requests: Vec<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake API server.
pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeKubeApi {
    /// Listens on a free loopback port.
    pub fn start() -> FakeKubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { rv: 1000, ..Default::default() }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FakeKubeApi { addr, shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the listed pods (no watch events: as if they were there before).
    pub fn set_pods(&self, pods: Vec<Value>) {
        let mut g = self.shared.lock();
        g.rv += 1;
        let rv = g.rv;
        g.pods = pods
            .into_iter()
            .map(|mut p| {
                p["metadata"]["resourceVersion"] = rv.to_string().into();
                (p["metadata"]["uid"].as_str().expect("pod uid").to_string(), p)
            })
            .collect();
    }

    /// A watch event (`ADDED`, `MODIFIED`, `DELETED`); the list follows it.
    pub fn event(&self, kind: &str, mut pod: Value) {
        let mut g = self.shared.lock();
        g.rv += 1;
        let rv = g.rv;
        pod["metadata"]["resourceVersion"] = rv.to_string().into();
        let uid = pod["metadata"]["uid"].as_str().expect("pod uid").to_string();
        if kind == "DELETED" {
            g.pods.remove(&uid);
        } else {
            g.pods.insert(uid, pod.clone());
        }
        g.events.push((rv, kind.to_string(), pod));
        drop(g);
        self.shared.changed.notify_all();
    }

    /// `METHOD target` of every request so far, e.g.
    /// `GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=500`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Writes a kubeconfig pointing at this server into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        write_kubeconfig(dir, &self.url())
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A kubeconfig (no credentials) whose only cluster is `server`.
pub fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
         current-context: test\nusers:\n- name: test\n  user: {{}}\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// A running pod shaped like `kubectl get pod -o json` output: one containerd
/// container per id in `containers` (named `c0`, `c1`, ...), service account
/// `sa-<name>`, pod IP `ip`.
pub fn pod(name: &str, namespace: &str, uid: &str, node: &str, ip: &str, containers: &[&str], labels: Value) -> Value {
    let specs: Vec<Value> = (0..containers.len())
        .map(|i| json!({"name": format!("c{i}"), "image": "docker.io/library/nginx:1.27", "imagePullPolicy": "IfNotPresent"}))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "containerID": format!("containerd://{id}"),
                "image": "docker.io/library/nginx:1.27",
                "imageID": "docker.io/library/nginx@sha256:0ad2a9e9a1b3c5d7f9e1a3c5d7f9b1d3e5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5",
                "lastState": {},
                "name": format!("c{i}"),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": "2026-11-21T08:00:00Z"}}
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": "2026-11-21T07:59:58Z",
            "labels": labels,
            "name": name,
            "namespace": namespace,
            "resourceVersion": "1",
            "uid": uid
        },
        "spec": {
            "containers": specs,
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "nodeName": node,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccount": format!("sa-{name}"),
            "serviceAccountName": format!("sa-{name}"),
            "terminationGracePeriodSeconds": 30
        },
        "status": {
            "conditions": [{"lastTransitionTime": "2026-11-21T08:00:01Z", "status": "True", "type": "Ready"}],
            "containerStatuses": statuses,
            "hostIP": "10.0.0.10",
            "hostIPs": [{"ip": "10.0.0.10"}],
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "qosClass": "BestEffort",
            "startTime": "2026-11-21T07:59:58Z"
        }
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("-"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(target: &str) -> BTreeMap<String, String> {
    let q = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Whether `pod` matches a field selector (only `spec.nodeName=` is known).
fn selected(pod: &Value, selector: Option<&String>) -> bool {
    match selector.and_then(|s| s.strip_prefix("spec.nodeName=")) {
        Some(node) => pod["spec"]["nodeName"] == node,
        None => true,
    }
}

fn serve(conn: TcpStream, s: &Shared) {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || s.stop.load(Ordering::Acquire) {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        s.lock().requests.push(format!("{method} {target}"));
        let path = target.split('?').next().unwrap_or("");
        let q = query(&target);
        if method != "GET" || path != "/api/v1/pods" {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{path} not found"), "reason": "NotFound", "code": 404})
            .to_string();
            let resp = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if out.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let selector = q.get("fieldSelector");
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            let since: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            watch(out, s, since, selector);
            return;
        }
        let g = s.lock();
        let items: Vec<&Value> = g.pods.values().filter(|p| selected(p, selector)).collect();
        let body = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": g.rv.to_string()}, "items": items})
        .to_string();
        drop(g);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Streams events after `since` as chunks until the server stops.
fn watch(mut out: TcpStream, s: &Shared, mut since: u64, selector: Option<&String>) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut g = s.lock();
    loop {
        if s.stop.load(Ordering::Acquire) {
            drop(g);
            let _ = out.write_all(b"0\r\n\r\n");
            return;
        }
        let new: Vec<String> = g
            .events
            .iter()
            .filter(|(rv, _, p)| *rv > since && selected(p, selector))
            .map(|(_, kind, p)| format!("{}\n", json!({"type": kind, "object": p})))
            .collect();
        since = g.rv;
        drop(g);
        for e in new {
            if out.write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes()).is_err() {
                return;
            }
        }
        g = s.lock();
        if g.rv == since {
            g = s.changed.wait_timeout(g, Duration::from_millis(200)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&watch=true");
        assert_eq!(q["fieldSelector"], "spec.nodeName=node-a");
        assert_eq!(q["watch"], "true");
        let p = pod("a", "ns", "u", "node-a", "10.0.0.1", &[], json!({}));
        assert!(selected(&p, q.get("fieldSelector")));
        assert!(!selected(&p, Some(&"spec.nodeName=node-b".to_string())));
    }
}
