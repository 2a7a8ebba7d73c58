//! The processing stage between the ring-buffer reader and the output: clock
//! conversion, connection accounting (gaps), and writing records.
use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;
use wiretrail_proto::v1 as pb;

use crate::{
    capture::{
        event::{CaptureEvent, GapReason},
        tls::{TlsLib, TlsRegistry},
    },
    clock::ClockSync,
    conn::{Gap, Tracker, TrackerConfig},
    flow::feed::{Feed, TLS_FLOW_BIT},
    identity::{ConnIdentities, IdentityResolver},
    metrics::Metrics,
    output::{AgentNote, JsonRecord, Sink, SinkError, wire},
    proto::record::Record,
};

/// Where records go besides the local output: the collector's shipper.
pub struct Ship {
    /// The shipper's bounded input (it batches, spools and sends).
    pub tx: mpsc::Sender<pb::Record>,
    /// Host name stamped on every record.
    pub host: String,
}

/// The optional stages around the core (byte accounting and the local output).
pub struct Stages {
    /// Library table, to name the library on TLS records.
    pub tls: Arc<TlsRegistry>,
    /// Flow reassembly and protocol parsing (None with `--no-flows`).
    pub feed: Option<Feed>,
    /// Shipping to the collector (None without `--collector`).
    pub ship: Option<Ship>,
    /// Where workload identities come from (exec-time executables, exe hashes, pods).
    pub identity: crate::identity::Sources,
    /// Records made outside the capture path: policy decisions, policy and TLS
    /// notices, losses of other kernel rings.
    pub notes: mpsc::Receiver<AgentNote>,
}

/// Consumes batches until the reader closes the channel, then finalizes every
/// connection (so trailing gaps are reported) and flushes.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<CaptureEvent>>,
    sink: Sink,
    config: TrackerConfig,
    metrics: Arc<Metrics>,
    stages: Stages,
) -> Result<(), SinkError> {
    let Stages { tls, mut feed, ship, identity, mut notes } = stages;
    let mut tracker = Tracker::new(config);
    let mut records: Vec<Record> = Vec::new();
    let mut identities = IdentityResolver::new(identity);
    let mut peers = crate::identity::PeerIndex::new(crate::identity::PeerIndex::DEFAULT_MAX, metrics.clone());
    let mut out = Out {
        sink,
        outbox: Outbox { ship, queue: Vec::new() },
        metrics: metrics.clone(),
        registry: tls,
        conn_ids: ConnIdentities::default(),
        clock: ClockSync::measure(),
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let now = Instant::now();
                for ev in &batch {
                    // Exec notifications travel on their own ring (capture::execs).
                    if let CaptureEvent::Exec { .. } = ev {
                        continue;
                    }
                    if let CaptureEvent::Data { payload, .. } = ev {
                        metrics.data_events.inc();
                        metrics.data_bytes.add(payload.len() as u64);
                    }
                    let gaps = tracker.on_event(ev, now);
                    if let Some(f) = feed.as_mut() {
                        f.on_event(ev, &mut records);
                    }
                    // Explicit truncations are written as the event itself (a gap record).
                    count_gaps(&metrics, &gaps);
                    let m = ev.meta();
                    let identity = identities.resolve(m.pid, &m.comm, m.cgroup_id);
                    let peer = peers.on_event(ev, &identity);
                    out.event(ev, identity, peer)?;
                }
                out.records(&mut records)?;
                out.outbox.send(&metrics).await;
                if rx.is_empty() {
                    out.sink.flush()?;
                }
            }
            Some(n) = notes.recv() => {
                out.note(n)?;
                while let Ok(n) = notes.try_recv() {
                    out.note(n)?;
                }
                out.outbox.send(&metrics).await;
                out.sink.flush()?;
            }
            _ = tick.tick() => {
                out.clock = ClockSync::measure();
                let gaps = tracker.tick(Instant::now());
                out.settle(&gaps, Finish::Idle(now_boot_ns()), &mut feed, &mut records)?;
                out.outbox.send(&metrics).await;
                metrics.conns_tracked.set(tracker.len() as u64);
                metrics.conns_evicted.set(tracker.evicted);
                out.sink.flush()?;
            }
        }
    }
    // Every note until their senders are gone (main drops its own; the
    // decisions reader drains its ring and stops on shutdown).
    while let Some(n) = notes.recv().await {
        out.note(n)?;
    }
    let gaps = tracker.finish_all();
    out.settle(&gaps, Finish::All, &mut feed, &mut records)?;
    out.outbox.send(&metrics).await;
    metrics.conns_tracked.set(0);
    out.sink.flush()
}

/// Records for the collector, handed to the shipper after each batch (the
/// send waits while the shipper writes its spool: backpressure, never loss).
struct Outbox {
    ship: Option<Ship>,
    queue: Vec<pb::Record>,
}

impl Outbox {
    /// The host name to stamp, when shipping is on.
    fn host(&self) -> Option<&str> {
        self.ship.as_ref().map(|s| s.host.as_str())
    }

    /// The shipper outlives the pipeline, so a closed channel is a bug:
    /// counted and logged, never silent.
    async fn send(&mut self, metrics: &Metrics) {
        let Some(ship) = &self.ship else { return };
        for r in self.queue.drain(..) {
            if ship.tx.send(r).await.is_err() {
                metrics.ship_closed.inc();
                tracing::error!("shipper stopped before the pipeline; record not shipped (kept in the local output)");
            }
        }
    }
}

/// Which flows reassembly finishes when gaps are settled.
enum Finish {
    /// Idle and closed flows, as of this kernel time.
    Idle(u64),
    /// Every flow (shutdown).
    All,
}

/// Writes every kind of record to the local output and queues it for the
/// collector, with what that needs: the clock, TLS library names, and the
/// identity of each connection's process (for records made after its events).
struct Out {
    sink: Sink,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    registry: Arc<TlsRegistry>,
    /// Identity per connection, for protocol records and tracker gaps.
    conn_ids: ConnIdentities,
    /// Boottime → UTC, re-measured every second.
    clock: ClockSync,
}

impl Out {
    /// A captured event, with its process's identity and its local peer's.
    fn event(
        &mut self,
        ev: &CaptureEvent,
        identity: Arc<crate::identity::Identity>,
        peer: Option<Arc<crate::identity::Identity>>,
    ) -> Result<(), SinkError> {
        self.conn_ids.note(ev.meta().conn_id, &identity);
        let mut rec = JsonRecord::from_event(ev, &self.clock);
        rec.tls = tls_info(&self.registry, ev.meta());
        if let Some(host) = self.outbox.host()
            && let Some(mut w) = wire::event(ev, rec.tls.as_ref(), &self.clock, host)
        {
            w.identity = wire::identity_map(&identity);
            w.peer_identity = peer.as_deref().map(wire::identity_map).unwrap_or_default();
            self.outbox.queue.push(w);
        }
        rec.identity = Some(identity);
        rec.peer_identity = peer;
        self.sink.write(&rec)?;
        self.metrics.records_out.inc();
        Ok(())
    }

    /// Protocol records: the flow engine's record with `type: "record"`, the
    /// connection id (TLS flows reported on their connection, `tls: true`),
    /// the UTC time of its first byte and the connection's identity.
    fn records(&mut self, records: &mut Vec<Record>) -> Result<(), SinkError> {
        for r in records.drain(..) {
            let identity = self.conn_ids.get(r.conn_id & !TLS_FLOW_BIT);
            if let Some(host) = self.outbox.host() {
                let mut w = wire::protocol(&r, &self.clock, host);
                w.identity = identity.map(|i| wire::identity_map(i)).unwrap_or_default();
                self.outbox.queue.push(w);
            }
            let mut v = r.to_json();
            if let serde_json::Value::Object(o) = &mut v {
                if let Some(i) = identity {
                    o.insert("identity".into(), serde_json::to_value(&**i).unwrap_or_default());
                }
                let tls = r.conn_id & TLS_FLOW_BIT != 0;
                o.insert("type".into(), "record".into());
                o.insert("conn_id".into(), (r.conn_id & !TLS_FLOW_BIT).into());
                o.insert("tls".into(), tls.into());
                o.insert("ts".into(), crate::clock::rfc3339(self.clock.to_utc_ns(r.first_ts_ns)).into());
            }
            self.sink.write_value(&v)?;
            self.metrics.protocol_records.inc();
            self.metrics.records_out.inc();
        }
        Ok(())
    }

    /// A record made outside the capture path.
    fn note(&mut self, mut n: AgentNote) -> Result<(), SinkError> {
        if !n.json.is_null() {
            self.sink.write_value(&n.json)?;
        }
        self.metrics.records_out.inc();
        if let Some(host) = self.outbox.host() {
            n.wire.host = host.to_string();
            self.outbox.queue.push(n.wire);
        }
        Ok(())
    }

    /// Bytes the tracker found missing.
    fn gaps(&mut self, gaps: &[Gap]) -> Result<(), SinkError> {
        count_gaps(&self.metrics, gaps);
        for g in gaps {
            tracing::warn!(conn_id = g.meta.conn_id, direction = ?g.direction, pos = g.pos, len = g.len, reason = ?g.reason, "bytes missing from stream");
            let mut rec = JsonRecord::from_gap(g, &self.clock);
            rec.tls = tls_info(&self.registry, &g.meta);
            rec.identity = self.conn_ids.get(g.meta.conn_id).cloned();
            if let Some(host) = self.outbox.host() {
                let mut w = wire::gap(g, rec.tls.as_ref(), &self.clock, host);
                w.identity = rec.identity.as_deref().map(wire::identity_map).unwrap_or_default();
                self.outbox.queue.push(w);
            }
            self.sink.write(&rec)?;
            self.metrics.records_out.inc();
        }
        Ok(())
    }

    /// Settles what the tracker found missing and the flows that are done:
    /// gaps are written and fed to reassembly, finished flows' records written.
    fn settle(
        &mut self,
        gaps: &[Gap],
        finish: Finish,
        feed: &mut Option<Feed>,
        records: &mut Vec<Record>,
    ) -> Result<(), SinkError> {
        self.gaps(gaps)?;
        if let Some(f) = feed.as_mut() {
            for g in gaps {
                f.on_gap(g, records);
            }
            records.extend(match finish {
                Finish::Idle(now) => f.flush_idle(now),
                Finish::All => f.shutdown(),
            });
        }
        self.records(records)
    }
}

fn count_gaps(metrics: &Metrics, gaps: &[Gap]) {
    for g in gaps {
        metrics.gaps.inc();
        match g.reason {
            GapReason::Lost => metrics.gap_lost_bytes.add(g.len),
            GapReason::Truncated => metrics.gap_truncated_bytes.add(g.len),
            GapReason::Unreadable => metrics.gap_unreadable_bytes.add(g.len),
        }
    }
}

/// The library a TLS record came from (always set for TLS records, so they are
/// never mistaken for socket bytes).
fn tls_info(registry: &TlsRegistry, meta: &crate::capture::event::Meta) -> Option<TlsLib> {
    meta.tls.then(|| {
        registry.get(meta.tls_lib).unwrap_or(TlsLib {
            path: "unknown".into(),
            library: "unknown".into(),
            version: "unknown".into(),
        })
    })
}

fn now_boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
