//! Events in, records out: capture events go through the connection table
//! (`crate::conn`), records made elsewhere (policy decisions, notices) join
//! them, and every record is written to the local output and handed to the
//! shipper in the collector's form.
use std::sync::Arc;

use tokio::sync::mpsc;
use wiretrail_proto::v1 as pb;

use crate::{
    capture::{event::CaptureEvent, reader::Drained},
    clock::Clock,
    conn::ConnTable,
    metrics::Metrics,
    output::{Sink, SinkError},
    record::{LostRecord, Record, Stamp, wire},
    redact::Redactor,
    types::GapReason,
};

/// Where records go besides the local output: the collector's shipper.
pub struct Ship {
    /// The shipper's bounded input (it batches, spools and sends).
    pub tx: mpsc::Sender<pb::Record>,
    /// Host name stamped on every record.
    pub host: String,
}

/// Where records go, and what is masked in them first.
pub struct Outputs {
    /// The local output.
    pub sink: Sink,
    /// The collector's shipper, when shipping.
    pub ship: Option<Ship>,
    /// Masks secrets in every record before either sees it.
    pub redactor: Arc<Redactor>,
}

/// Writes records to the local output and queues them for the collector.
struct Out {
    sink: Sink,
    ship: Option<Ship>,
    /// Wire records for the shipper, handed over after each batch (the send
    /// waits while the shipper writes its spool: backpressure, never loss).
    queue: Vec<pb::Record>,
    metrics: Arc<Metrics>,
    /// Masks secrets in every record before it is written or shipped.
    redactor: Arc<Redactor>,
    /// Missing bytes the records written so far state for events the kernel
    /// could not hand over (either end's observation).
    ring_gap_bytes: u64,
}

/// Whether a gap is bytes whose events never reached the agent (what the
/// kernel's `lost_bytes` counts), rather than a cap or unreadable memory.
fn is_ring_loss(r: GapReason) -> bool {
    matches!(r, GapReason::Lost | GapReason::ReorderOverflow | GapReason::MissingAtClose | GapReason::MissingAtFlush)
}

/// The ring-loss bytes `r` states missing, from this end and from the other
/// end's observation when both ends were captured.
fn ring_gap_bytes(r: &Record) -> u64 {
    let marks = |o: &crate::record::Observation| -> u64 {
        o.gaps.iter().filter(|g| is_ring_loss(g.reason)).map(|g| g.len).sum()
    };
    let mut n = 0;
    if let Record::Gap(g) = r {
        if is_ring_loss(g.reason) {
            n += g.len;
        }
        n += g.witness_seen.as_ref().map_or(0, marks);
    }
    for p in r.parts() {
        n += marks(&p.seen) + p.witness.as_ref().map_or(0, marks);
    }
    n
}

impl Out {
    fn write(&mut self, records: &mut Vec<Record>) -> Result<(), SinkError> {
        for mut r in records.drain(..) {
            // Before anything sees the record: the output, the spool, the
            // collector's hash all get the masked bytes only.
            self.redactor.apply(&mut r);
            self.metrics.count_record(&r);
            self.ring_gap_bytes += ring_gap_bytes(&r);
            if self.sink.writes() {
                self.sink.write(&r)?;
            }
            if let Some(ship) = &self.ship {
                let w = wire::to_wire(&r, &ship.host);
                self.metrics.wire_record_bytes.add(prost::Message::encoded_len(&w) as u64);
                self.queue.push(w);
            }
        }
        Ok(())
    }

    /// The shipper outlives the pipeline, so a closed channel is a bug:
    /// counted and logged, never silent.
    async fn send(&mut self) {
        let Some(ship) = &self.ship else { return };
        for r in self.queue.drain(..) {
            if ship.tx.send(r).await.is_err() {
                self.metrics.ship_closed.inc();
                tracing::error!("shipper stopped before the pipeline; record not shipped (kept in the local output)");
            }
        }
    }
}

/// Consumes event batches until the reader closes the channel (and records
/// made elsewhere until their senders are gone), then finishes every
/// connection and flushes.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<CaptureEvent>>,
    mut notes: mpsc::Receiver<Record>,
    mut table: ConnTable,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    drained: Drained,
) -> Result<(), SinkError> {
    let Outputs { sink, ship, redactor } = outputs;
    let mut out = Out { sink, ship, queue: Vec::new(), metrics: metrics.clone(), redactor, ring_gap_bytes: 0 };
    let mut records: Vec<Record> = Vec::new();
    let mut clock = Clock::system();
    let mut tick = tokio::time::interval(std::time::Duration::from_nanos(crate::clock::REMEASURE_NS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                for ev in batch {
                    if let CaptureEvent::Data { payload, .. } = &ev {
                        metrics.data_events.inc();
                        metrics.data_bytes.add(payload.len() as u64);
                    }
                    table.on_event(ev, &mut records);
                }
                out.write(&mut records)?;
                out.send().await;
                if rx.is_empty() {
                    out.sink.flush()?;
                }
            }
            Some(n) = notes.recv() => {
                records.push(n);
                while let Ok(n) = notes.try_recv() {
                    records.push(n);
                }
                out.write(&mut records)?;
                out.send().await;
                out.sink.flush()?;
            }
            _ = tick.tick() => {
                if clock.refresh() {
                    table.set_clock(*clock.sync());
                }
                // Time moves on only as far as the ring has been read and
                // its events consumed: a lagging agent must not time out a
                // range (or a conversation's other end) still in the ring.
                let read_to = drained.up_to();
                table.tick(if rx.is_empty() { read_to } else { 0 }, &mut records);
                out.write(&mut records)?;
                out.send().await;
                metrics.set_conns(&table);
                out.sink.flush()?;
            }
        }
    }
    // Every note until their senders are gone (main drops its own; the
    // decisions reader drains its ring and stops on shutdown).
    while let Some(n) = notes.recv().await {
        records.push(n);
    }
    table.finish_all(&mut records);
    out.write(&mut records)?;
    // Every stream is finished: lost bytes no stream could place (a
    // connection whose every event was lost, or whose lost tail had no close
    // before now) are stated here, never left to the counters alone.
    let kernel_lost = metrics.kernel_lost_bytes.get();
    if kernel_lost > out.ring_gap_bytes {
        let n = kernel_lost - out.ring_gap_bytes;
        tracing::warn!(bytes = n, "bytes lost in the kernel ring buffer that no stream's gaps hold");
        records.push(Record::Lost(Box::new(LostRecord {
            stamp: Stamp::now(),
            what: "stream_bytes".into(),
            count: n,
            detail: format!(
                "{n} of the {kernel_lost} bytes the kernel lost (ring buffer full) are in no stream's gaps: \
                 connections whose every event was lost, or whose lost tail was not followed by a close"
            ),
        })));
        out.write(&mut records)?;
    }
    out.send().await;
    metrics.set_conns(&table);
    out.sink.flush()
}
