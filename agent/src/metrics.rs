//! Agent counters, exported as Prometheus text on `--metrics-addr` and logged.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::capture::KernelStats;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Everything the agent counts. Each field is exported under its own name.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the ring buffer.
    pub ring_records: Counter,
    /// Records that could not be decoded (a bug or a version mismatch).
    pub decode_errors: Counter,
    /// Payload bytes captured.
    pub data_bytes: Counter,
    /// Data events captured.
    pub data_events: Counter,
    /// Gap records emitted (any reason).
    pub gaps: Counter,
    /// Bytes in gaps because events were lost (ring buffer full).
    pub gap_lost_bytes: Counter,
    /// Bytes in gaps because of a capture cap.
    pub gap_truncated_bytes: Counter,
    /// Bytes in gaps because user memory could not be read.
    pub gap_unreadable_bytes: Counter,
    /// Connections currently tracked by the agent.
    pub conns_tracked: Counter,
    /// Connections evicted from the agent's table (cap or idle), with gaps flushed.
    pub conns_evicted: Counter,
    /// Records written to the output.
    pub records_out: Counter,
    /// Protocol records produced by flow reassembly and parsing.
    pub protocol_records: Counter,
    /// Records that could not be handed to the shipper (it had stopped).
    pub ship_closed: Counter,
    /// Exec events not handed to TLS discovery at once (channel full); the
    /// periodic rescan still finds those processes.
    pub exec_backlog: Counter,
    /// TLS library files with probes attached now.
    pub tls_libraries: Counter,
    /// Kernel: events written to the ring buffer.
    pub kernel_events: Counter,
    /// Kernel: events lost because the ring buffer was full.
    pub kernel_lost_events: Counter,
    /// Kernel: payload bytes in lost events.
    pub kernel_lost_bytes: Counter,
    /// Kernel: connection-tracking map full.
    pub kernel_track_full: Counter,
    /// Kernel: bytes reported truncated.
    pub kernel_truncated_bytes: Counter,
    /// Kernel: failed kernel/user memory reads.
    pub kernel_internal_errors: Counter,
    /// Kernel: pending-syscall map full (those calls were not captured).
    pub kernel_pending_full: Counter,
    /// Kernel: events not captured because their peer is the agent's own socket
    /// (e.g. a collector on this host receiving what the agent ships).
    pub kernel_self_peer: Counter,
    /// Policy decision records written (allows of connects and inbound TCP,
    /// every deny and audit).
    pub policy_decisions: Counter,
    /// Kernel decisions by verdict (every one, recorded or not).
    pub policy_allowed: Counter,
    pub policy_denied: Counter,
    pub policy_audited: Counter,
    /// Decision events the kernel could not queue (reported as gap records).
    pub policy_lost: Counter,
    /// Hook-internal errors (the flow was let through).
    pub policy_errors: Counter,
    /// Generation of the policy in force (0: none).
    pub policy_generation: Counter,
    /// Policy files rejected (invalid) while a previous policy stayed in force.
    pub policy_rejected: Counter,
    /// Executables hashed (SHA-256, each file version once).
    pub exe_hashes: Counter,
    /// Executables that could not be hashed (unreadable, changed while read).
    pub exe_hash_errors: Counter,
    /// Executables not hashed: over `--exe-hash-max-bytes`.
    pub exe_hash_skipped: Counter,
    /// Hash requests put off because the hashing queue was full (retried later).
    pub exe_hash_backlog: Counter,
    /// Kubernetes API errors (client configuration, list, watch); never fatal.
    pub kube_api_errors: Counter,
    /// Pod watch events applied (added, modified, deleted).
    pub kube_pod_events: Counter,
    /// Pods on this node known now.
    pub kube_pods: Counter,
    /// Local endpoint pairs dropped from the peer-identity index (bound reached).
    pub peer_index_evicted: Counter,
}

impl Metrics {
    pub fn set_kernel(&self, k: &KernelStats) {
        self.kernel_events.set(k.events);
        self.kernel_lost_events.set(k.lost_events);
        self.kernel_lost_bytes.set(k.lost_bytes);
        self.kernel_track_full.set(k.track_full);
        self.kernel_truncated_bytes.set(k.truncated_bytes);
        self.kernel_internal_errors.set(k.internal_errors);
        self.kernel_pending_full.set(k.pending_full);
        self.kernel_self_peer.set(k.self_peer);
    }

    fn fields(&self) -> [(&'static str, &Counter); 39] {
        [
            ("ring_records", &self.ring_records),
            ("decode_errors", &self.decode_errors),
            ("data_bytes", &self.data_bytes),
            ("data_events", &self.data_events),
            ("gaps", &self.gaps),
            ("gap_lost_bytes", &self.gap_lost_bytes),
            ("gap_truncated_bytes", &self.gap_truncated_bytes),
            ("gap_unreadable_bytes", &self.gap_unreadable_bytes),
            ("conns_tracked", &self.conns_tracked),
            ("conns_evicted", &self.conns_evicted),
            ("records_out", &self.records_out),
            ("protocol_records", &self.protocol_records),
            ("ship_closed", &self.ship_closed),
            ("exec_backlog", &self.exec_backlog),
            ("tls_libraries", &self.tls_libraries),
            ("kernel_events", &self.kernel_events),
            ("kernel_lost_events", &self.kernel_lost_events),
            ("kernel_lost_bytes", &self.kernel_lost_bytes),
            ("kernel_track_full", &self.kernel_track_full),
            ("kernel_truncated_bytes", &self.kernel_truncated_bytes),
            ("kernel_internal_errors", &self.kernel_internal_errors),
            ("kernel_pending_full", &self.kernel_pending_full),
            ("kernel_self_peer", &self.kernel_self_peer),
            ("policy_decisions", &self.policy_decisions),
            ("policy_allowed", &self.policy_allowed),
            ("policy_denied", &self.policy_denied),
            ("policy_audited", &self.policy_audited),
            ("policy_lost", &self.policy_lost),
            ("policy_errors", &self.policy_errors),
            ("policy_generation", &self.policy_generation),
            ("policy_rejected", &self.policy_rejected),
            ("exe_hashes", &self.exe_hashes),
            ("exe_hash_errors", &self.exe_hash_errors),
            ("exe_hash_skipped", &self.exe_hash_skipped),
            ("exe_hash_backlog", &self.exe_hash_backlog),
            ("kube_api_errors", &self.kube_api_errors),
            ("kube_pod_events", &self.kube_pod_events),
            ("kube_pods", &self.kube_pods),
            ("peer_index_evicted", &self.peer_index_evicted),
        ]
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, c) in self.fields() {
            let kind =
                if matches!(name, "conns_tracked" | "kube_pods" | "policy_generation") { "gauge" } else { "counter" };
            let _ = writeln!(s, "# TYPE wiretrail_agent_{name} {kind}\nwiretrail_agent_{name} {}", c.get());
        }
        s
    }

    /// One JSON object with every counter (for logs and the final summary).
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Object(self.fields().iter().map(|(n, c)| (n.to_string(), c.get().into())).collect())
    }
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((mut sock, _)) = conn else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        m.kernel_lost_events.add(3);
        let text = m.render();
        assert!(text.contains("wiretrail_agent_kernel_lost_events 3"));
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 39);
        assert_eq!(m.snapshot()["kernel_lost_events"], 3);
    }
}
