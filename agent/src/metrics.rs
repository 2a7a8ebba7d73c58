//! Agent counters, exported as Prometheus text on `--metrics-addr` (with
//! HELP and TYPE lines), in the `--stats-file` JSON and the final log line.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::record::Record;
use crate::types::GapReason;

/// A monotonically increasing counter (or a gauge, when `set`).
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

/// Declares the metrics struct, its field table and the help text of each
/// counter (from one list, so the three never disagree).
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])+ $name:ident: $kind:literal, )+) => {
        /// Everything the agent counts. Each field is exported under its own name.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $name: Counter, )+
        }

        impl Metrics {
            /// (name, counter or gauge, help, value) of every metric.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, String, &Counter)> {
                vec![ $( (stringify!($name), $kind, [$($doc),+].iter().map(|d| d.trim()).collect::<Vec<_>>().join(" "), &self.$name), )+ ]
            }
        }
    };
}

metrics! {
    /// Records read from the ring buffer.
    ring_records: "counter",
    /// Ring buffer records that could not be decoded (a bug or a version mismatch).
    decode_errors: "counter",
    /// Payload bytes captured.
    data_bytes: "counter",
    /// Data events captured.
    data_events: "counter",
    /// Records made (every kind).
    records_out: "counter",
    /// Exchange records made (a request with its response, or a one-way message).
    exchange_records: "counter",
    /// Segment records made (unparsed bytes, coalesced).
    segment_records: "counter",
    /// Connection records made (at the end, and once for long-lived connections).
    connection_records: "counter",
    /// Gap records made (missing bytes no other record holds).
    gap_records: "counter",
    /// Records carrying a capture fault (e.g. the two ends saw different bytes).
    fault_records: "counter",
    /// Records holding both ends of a conversation captured on this host.
    two_witness_records: "counter",
    /// Bytes missing because events were lost (ring full, or never arrived in the reorder window).
    gap_lost_bytes: "counter",
    /// Bytes missing because of a capture cap.
    gap_truncated_bytes: "counter",
    /// Bytes missing because user memory could not be read.
    gap_unreadable_bytes: "counter",
    /// Bytes missing for other reasons (reorder overflow, missing at close or flush, message cap).
    gap_other_bytes: "counter",
    /// Raw bytes the records hold (each conversation byte once, both ends of a pair included).
    record_payload_bytes: "counter",
    /// Encoded bytes of the records handed to the shipper (before compression on the wire).
    wire_record_bytes: "counter",
    /// Connections tracked now.
    conns_tracked: "gauge",
    /// Bytes held by the connection table now (reordering, partial messages, exchanges in progress).
    conns_buffered_bytes: "gauge",
    /// Connections finished by the connection or memory bound (their records made, nothing dropped).
    conns_evicted: "counter",
    /// Conversations whose two ends were both captured and paired.
    twins: "counter",
    /// Parts where the two ends saw different bytes.
    witness_mismatches: "counter",
    /// Records that could not be handed to the shipper (it had stopped).
    ship_closed: "counter",
    /// Exec events not handed to TLS discovery at once (channel full); the periodic rescan still finds those processes.
    exec_backlog: "counter",
    /// TLS library files with probes attached now.
    tls_libraries: "gauge",
    /// Files first hooked because a process executed them or mapped them after its exec (the late-hook window's count).
    tls_exec_attaches: "counter",
    /// Microseconds from those execs to their probes being attached, summed (divide by tls_exec_attaches for the mean).
    tls_exec_attach_us_sum: "counter",
    /// The longest of those delays, in microseconds.
    tls_exec_attach_us_max: "gauge",
    /// Kernel: events written to the ring buffer.
    kernel_events: "counter",
    /// Kernel: events lost because the ring buffer was full.
    kernel_lost_events: "counter",
    /// Kernel: payload bytes in lost events.
    kernel_lost_bytes: "counter",
    /// Kernel: connection-tracking map full.
    kernel_track_full: "counter",
    /// Kernel: bytes reported truncated.
    kernel_truncated_bytes: "counter",
    /// Kernel: TLS ciphertext bytes counted, not copied (their plaintext is captured; `--keep-tls-ciphertext` copies them).
    kernel_tls_ciphertext_not_kept_bytes: "counter",
    /// Kernel: failed kernel/user memory reads.
    kernel_internal_errors: "counter",
    /// Kernel: pending-syscall map full (those calls were not captured).
    kernel_pending_full: "counter",
    /// Kernel: events not captured because their peer is the agent's own socket.
    kernel_self_peer: "counter",
    /// Policy decision records written (allows of connects and inbound TCP, every deny and audit).
    policy_decisions: "counter",
    /// Kernel decisions that allowed a flow.
    policy_allowed: "counter",
    /// Kernel decisions that denied a flow.
    policy_denied: "counter",
    /// Kernel decisions that let a flow through in audit mode.
    policy_audited: "counter",
    /// Decision events the kernel could not queue (reported as records).
    policy_lost: "counter",
    /// Hook-internal errors (the flow was let through).
    policy_errors: "counter",
    /// Generation of the policy in force (0: none).
    policy_generation: "gauge",
    /// Policy files rejected (invalid) while a previous policy stayed in force.
    policy_rejected: "counter",
    /// Executables hashed (SHA-256, each file version once).
    exe_hashes: "counter",
    /// Executables that could not be hashed (unreadable, changed while read).
    exe_hash_errors: "counter",
    /// Executables not hashed: over `--exe-hash-max-bytes`.
    exe_hash_skipped: "counter",
    /// Hash requests put off because the hashing queue was full (retried later).
    exe_hash_backlog: "counter",
    /// Kubernetes API errors (client configuration, list, watch); never fatal.
    kube_api_errors: "counter",
    /// Pod watch events applied (added, modified, deleted).
    kube_pod_events: "counter",
    /// Pods on this node known now.
    kube_pods: "gauge",
}

impl Metrics {
    /// Counts one record made (by kind, faults, and the bytes it says are missing).
    pub fn count_record(&self, r: &Record) {
        self.records_out.inc();
        let gap = |reason: GapReason, len: u64| match reason {
            GapReason::Lost => self.gap_lost_bytes.add(len),
            GapReason::Truncated => self.gap_truncated_bytes.add(len),
            GapReason::Unreadable => self.gap_unreadable_bytes.add(len),
            _ => self.gap_other_bytes.add(len),
        };
        match r {
            Record::Exchange(e) => {
                self.exchange_records.inc();
                if !e.faults.is_empty() {
                    self.fault_records.inc();
                }
            }
            Record::Segment(s) => {
                self.segment_records.inc();
                if !s.faults.is_empty() {
                    self.fault_records.inc();
                }
            }
            Record::Connection(_) | Record::ConnectionOpen(_) => self.connection_records.inc(),
            Record::Gap(g) => {
                self.gap_records.inc();
                gap(g.reason, g.len);
            }
            Record::Lost(_) => self.gap_records.inc(),
            Record::PolicyDecision(_) | Record::Notice(_) => {}
        }
        for p in r.parts() {
            self.record_payload_bytes.add(p.raw.0.len() as u64);
            for g in &p.seen.gaps {
                gap(g.reason, g.len);
            }
        }
        if r.who().is_some_and(|w| w.witness.is_some()) && !r.parts().is_empty() {
            self.two_witness_records.inc();
        }
    }

    /// Mirrors the connection table's state and counters.
    pub fn set_conns(&self, t: &crate::conn::ConnTable) {
        self.conns_tracked.set(t.len() as u64);
        self.conns_buffered_bytes.set(t.buffered() as u64);
        self.conns_evicted.set(t.stats.conns_evicted);
        self.twins.set(t.stats.twins);
        self.witness_mismatches.set(t.stats.witness_mismatches);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, kind, help, c) in self.fields() {
            let _ = writeln!(
                s,
                "# HELP wiretrail_agent_{name} {help}\n# TYPE wiretrail_agent_{name} {kind}\nwiretrail_agent_{name} {}",
                c.get()
            );
        }
        s
    }

    /// One JSON object with every counter (for logs and the final summary).
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Object(self.fields().iter().map(|(n, _, _, c)| (n.to_string(), c.get().into())).collect())
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
        assert!(text.contains(
            "# HELP wiretrail_agent_kernel_lost_events Kernel: events lost because the ring buffer was full."
        ));
        assert!(text.contains("# TYPE wiretrail_agent_conns_tracked gauge"));
        let n = m.fields().len();
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), n);
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP")).count(), n);
        assert_eq!(m.snapshot()["kernel_lost_events"], 3);
    }
}
