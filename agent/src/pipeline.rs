//! The processing stage between the ring-buffer reader and the output: clock
//! conversion, connection accounting (gaps), and writing records.
use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;
use wiretrail_proto::v1 as pb;

use crate::{
    capture::{
        event::{CaptureEvent, GapReason},
        tls::{TlsLib, TlsNotice, TlsRegistry},
    },
    clock::ClockSync,
    conn::{Gap, Tracker, TrackerConfig},
    flow::feed::{Feed, TLS_FLOW_BIT},
    identity::{ConnIdentities, IdentityResolver},
    metrics::Metrics,
    output::{AgentNote, JsonRecord, Sink, SinkError, wire},
    proto::record::Record,
};

/// Consumes batches until the reader closes the channel, then finalizes every
/// connection (so trailing gaps are reported) and flushes.
/// Links between the pipeline and the TLS library manager (owned by main).
pub struct TlsLinks {
    /// Library table, to name the library on TLS records.
    pub registry: Arc<TlsRegistry>,
    /// Libraries that carry TLS but cannot be hooked: written as records.
    pub notices: mpsc::Receiver<TlsNotice>,
}

/// Where records go besides the local output: the collector's shipper.
pub struct Ship {
    /// The shipper's bounded input (it batches, spools and sends).
    pub tx: mpsc::Sender<pb::Record>,
    /// Host name stamped on every record.
    pub host: String,
}

/// The optional stages around the core (byte accounting and the local output).
pub struct Stages {
    /// TLS library names and reports.
    pub tls: TlsLinks,
    /// Flow reassembly and protocol parsing (None with `--no-flows`).
    pub feed: Option<Feed>,
    /// Shipping to the collector (None without `--collector`).
    pub ship: Option<Ship>,
    /// Where workload identities come from (exec-time executables, exe hashes, pods).
    pub identity: crate::identity::Sources,
    /// Records made outside the capture path (policy decisions and notices).
    pub notes: mpsc::Receiver<AgentNote>,
}

pub async fn run(
    mut rx: mpsc::Receiver<Vec<CaptureEvent>>,
    mut sink: Sink,
    config: TrackerConfig,
    metrics: Arc<Metrics>,
    stages: Stages,
) -> Result<(), SinkError> {
    let Stages { mut tls, mut feed, ship, identity, mut notes } = stages;
    let mut tracker = Tracker::new(config);
    let mut records: Vec<Record> = Vec::new();
    let mut outbox = Outbox { ship, queue: Vec::new() };
    let mut identities = IdentityResolver::new(identity);
    let mut conn_ids = ConnIdentities::default();
    let mut peers = crate::identity::PeerIndex::new(crate::identity::PeerIndex::DEFAULT_MAX, metrics.clone());
    let mut clock = ClockSync::measure();
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
                    let mut rec = JsonRecord::from_event(ev, &clock);
                    rec.tls = tls_info(&tls.registry, ev.meta());
                    let m = ev.meta();
                    let identity = identities.resolve(m.pid, &m.comm, m.cgroup_id);
                    conn_ids.note(m.conn_id, &identity);
                    let peer = peers.on_event(ev, &identity);
                    if let Some(host) = outbox.host()
                        && let Some(mut w) = wire::event(ev, rec.tls.as_ref(), &clock, host)
                    {
                        w.identity = wire::identity_map(&identity);
                        w.peer_identity = peer.as_deref().map(wire::identity_map).unwrap_or_default();
                        outbox.queue.push(w);
                    }
                    rec.identity = Some(identity);
                    rec.peer_identity = peer;
                    sink.write(&rec)?;
                    metrics.records_out.inc();
                }
                write_records(&mut sink, &mut records, &clock, &metrics, &mut outbox, &conn_ids)?;
                outbox.send(&metrics).await;
                if rx.is_empty() {
                    sink.flush()?;
                }
            }
            Some(n) = tls.notices.recv() => {
                let now_utc = clock.to_utc_ns(now_boot_ns());
                let v = serde_json::json!({
                    "type": "tls_unsupported",
                    "ts": crate::clock::rfc3339(now_utc),
                    "path": n.path,
                    "pid": n.pid,
                    "library": n.library,
                    "reason": n.reason,
                });
                sink.write_value(&v)?;
                metrics.records_out.inc();
                sink.flush()?;
                if let Some(host) = outbox.host() {
                    let w = wire::notice(&n, now_utc as i64, host);
                    outbox.queue.push(w);
                    outbox.send(&metrics).await;
                }
            }
            Some(n) = notes.recv() => {
                write_note(&mut sink, n, &metrics, &mut outbox)?;
                while let Ok(n) = notes.try_recv() {
                    write_note(&mut sink, n, &metrics, &mut outbox)?;
                }
                outbox.send(&metrics).await;
                sink.flush()?;
            }
            _ = tick.tick() => {
                clock = ClockSync::measure();
                let gaps = tracker.tick(Instant::now());
                let finished = Finish::Idle(now_boot_ns());
                settle(&gaps, finished, &mut feed, &mut records, &mut sink, &clock, &metrics, &tls.registry, &mut outbox, &conn_ids)?;
                outbox.send(&metrics).await;
                metrics.conns_tracked.set(tracker.len() as u64);
                metrics.conns_evicted.set(tracker.evicted);
                sink.flush()?;
            }
        }
    }
    // Every note until their senders are gone (main drops its own; the
    // decisions reader drains its ring and stops on shutdown).
    while let Some(n) = notes.recv().await {
        write_note(&mut sink, n, &metrics, &mut outbox)?;
    }
    let gaps = tracker.finish_all();
    settle(
        &gaps,
        Finish::All,
        &mut feed,
        &mut records,
        &mut sink,
        &clock,
        &metrics,
        &tls.registry,
        &mut outbox,
        &conn_ids,
    )?;
    outbox.send(&metrics).await;
    metrics.conns_tracked.set(0);
    sink.flush()
}

/// Writes protocol records: the flow engine's record with `type: "record"`, the
/// connection id (TLS flows reported on their connection, `tls: true`) and the
/// UTC time of its first byte.
fn write_records(
    sink: &mut Sink,
    records: &mut Vec<Record>,
    clock: &ClockSync,
    metrics: &Metrics,
    outbox: &mut Outbox,
    ids: &ConnIdentities,
) -> Result<(), SinkError> {
    for r in records.drain(..) {
        let identity = ids.get(r.conn_id & !TLS_FLOW_BIT);
        if let Some(host) = outbox.host() {
            let mut w = wire::protocol(&r, clock, host);
            w.identity = identity.map(|i| wire::identity_map(i)).unwrap_or_default();
            outbox.queue.push(w);
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
            o.insert("ts".into(), crate::clock::rfc3339(clock.to_utc_ns(r.first_ts_ns)).into());
        }
        sink.write_value(&v)?;
        metrics.protocol_records.inc();
        metrics.records_out.inc();
    }
    Ok(())
}

/// Writes a record made outside the capture path and queues it for the collector.
fn write_note(sink: &mut Sink, mut n: AgentNote, metrics: &Metrics, outbox: &mut Outbox) -> Result<(), SinkError> {
    if !n.json.is_null() {
        sink.write_value(&n.json)?;
    }
    metrics.records_out.inc();
    if let Some(host) = outbox.host() {
        n.wire.host = host.to_string();
        outbox.queue.push(n.wire);
    }
    Ok(())
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

/// Settles what the tracker found missing and the flows that are done: gaps
/// are written and fed to reassembly, finished flows' records written, and all
/// of it queued for the collector.
#[allow(clippy::too_many_arguments)]
fn settle(
    gaps: &[Gap],
    finish: Finish,
    feed: &mut Option<Feed>,
    records: &mut Vec<Record>,
    sink: &mut Sink,
    clock: &ClockSync,
    metrics: &Metrics,
    registry: &TlsRegistry,
    outbox: &mut Outbox,
    ids: &ConnIdentities,
) -> Result<(), SinkError> {
    write_gaps(sink, gaps, clock, metrics, registry, outbox, ids)?;
    if let Some(f) = feed.as_mut() {
        for g in gaps {
            f.on_gap(g, records);
        }
        records.extend(match finish {
            Finish::Idle(now) => f.flush_idle(now),
            Finish::All => f.shutdown(),
        });
    }
    write_records(sink, records, clock, metrics, outbox, ids)
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

fn write_gaps(
    sink: &mut Sink,
    gaps: &[Gap],
    clock: &ClockSync,
    metrics: &Metrics,
    registry: &TlsRegistry,
    outbox: &mut Outbox,
    ids: &ConnIdentities,
) -> Result<(), SinkError> {
    count_gaps(metrics, gaps);
    for g in gaps {
        tracing::warn!(conn_id = g.meta.conn_id, direction = ?g.direction, pos = g.pos, len = g.len, reason = ?g.reason, "bytes missing from stream");
        let mut rec = JsonRecord::from_gap(g, clock);
        rec.tls = tls_info(registry, &g.meta);
        rec.identity = ids.get(g.meta.conn_id).cloned();
        if let Some(host) = outbox.host() {
            let mut w = wire::gap(g, rec.tls.as_ref(), clock, host);
            w.identity = rec.identity.as_deref().map(wire::identity_map).unwrap_or_default();
            outbox.queue.push(w);
        }
        sink.write(&rec)?;
        metrics.records_out.inc();
    }
    Ok(())
}

fn now_boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
