//! The processing stage between the ring-buffer reader and the output: clock
//! conversion, connection accounting (gaps), and writing records.
use std::{sync::Arc, time::Instant};

use tokio::sync::mpsc;

use crate::{
    capture::event::{CaptureEvent, GapReason},
    clock::ClockSync,
    conn::{Gap, Tracker, TrackerConfig},
    metrics::Metrics,
    output::{JsonRecord, Sink, SinkError},
};

/// Consumes batches until the reader closes the channel, then finalizes every
/// connection (so trailing gaps are reported) and flushes.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<CaptureEvent>>,
    mut sink: Sink,
    config: TrackerConfig,
    metrics: Arc<Metrics>,
) -> Result<(), SinkError> {
    let mut tracker = Tracker::new(config);
    let mut clock = ClockSync::measure();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let now = Instant::now();
                for ev in &batch {
                    if let CaptureEvent::Data { payload, .. } = ev {
                        metrics.data_events.inc();
                        metrics.data_bytes.add(payload.len() as u64);
                    }
                    let gaps = tracker.on_event(ev, now);
                    // Explicit truncations are written as the event itself (a gap record).
                    count_gaps(&metrics, &gaps);
                    sink.write(&JsonRecord::from_event(ev, &clock))?;
                    metrics.records_out.inc();
                }
                if rx.is_empty() {
                    sink.flush()?;
                }
            }
            _ = tick.tick() => {
                clock = ClockSync::measure();
                let gaps = tracker.tick(Instant::now());
                write_gaps(&mut sink, &gaps, &clock, &metrics)?;
                metrics.conns_tracked.set(tracker.len() as u64);
                metrics.conns_evicted.set(tracker.evicted);
                sink.flush()?;
            }
        }
    }
    let gaps = tracker.finish_all();
    write_gaps(&mut sink, &gaps, &clock, &metrics)?;
    metrics.conns_tracked.set(0);
    sink.flush()
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

fn write_gaps(
    sink: &mut Sink,
    gaps: &[Gap],
    clock: &ClockSync,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    count_gaps(metrics, gaps);
    for g in gaps {
        tracing::warn!(conn_id = g.meta.conn_id, direction = ?g.direction, pos = g.pos, len = g.len, reason = ?g.reason, "bytes missing from stream");
        sink.write(&JsonRecord::from_gap(g, clock))?;
        metrics.records_out.inc();
    }
    Ok(())
}
