//! Drains the `EVENTS` ring buffer through `AsyncFd`, decodes records and hands
//! them on in bounded batches. Backpressure on the channel fills the ring buffer,
//! where every loss is counted by the kernel: nothing is dropped silently here.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::event::{CaptureEvent, decode};
use crate::metrics::Metrics;

/// Events decoded per batch before it is sent on.
const BATCH: usize = 512;

/// The kernel wakes us only when 256 KiB are waiting; below that we poll.
pub(crate) const POLL: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("registering the ring buffer with the runtime")]
    Register {
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for ring buffer readiness")]
    Poll {
        #[source]
        source: std::io::Error,
    },
}

/// How far the ring has been read: every event the kernel stamped before this
/// CLOCK_BOOTTIME instant has been handed on (sent on the channel). The
/// connection table's timeouts must not run ahead of it: when the agent lags
/// behind the ring, a missing range or the other end of a conversation may be
/// waiting in the ring, not lost.
#[derive(Clone, Debug, Default)]
pub struct Drained(Arc<AtomicU64>);

impl Drained {
    /// The instant (0 before the first complete drain).
    pub fn up_to(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn advance(&self, t: u64) {
        self.0.fetch_max(t, Ordering::AcqRel);
    }
}

/// A kernel ring buffer registered with the runtime for read readiness.
pub fn readable(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, ReaderError> {
    // SAFETY: the ring buffer owns its map fd; it stays open and unchanged until
    // the AsyncFd (which owns the ring buffer) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| ReaderError::Register { source: e.into_parts().1 })
}

/// Reads until `shutdown` is cancelled, then drains what is left and returns.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<CaptureEvent>>,
    metrics: Arc<Metrics>,
    drained: Drained,
    shutdown: CancellationToken,
) -> Result<(), ReaderError> {
    let mut fd = readable(ring)?;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                drain(fd.get_mut(), &tx, &metrics, &drained).await;
                return Ok(());
            }
            _ = poll.tick() => {
                if !drain(fd.get_mut(), &tx, &metrics, &drained).await {
                    return Ok(());
                }
            }
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| ReaderError::Poll { source })?;
                let open = drain(guard.get_inner_mut(), &tx, &metrics, &drained).await;
                guard.clear_ready();
                if !open {
                    return Ok(());
                }
            }
        }
    }
}

/// Decodes everything currently in the ring; once it is empty and the last
/// batch sent, `drained` advances to the instant the pass started. Returns
/// false if the consumer is gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<Vec<CaptureEvent>>,
    metrics: &Metrics,
    drained: &Drained,
) -> bool {
    let started = crate::clock::now_boot_ns();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(item) = ring.next() {
        metrics.ring_records.inc();
        match decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => {
                metrics.decode_errors.inc();
                tracing::warn!(error = %e, "undecodable ring buffer record");
            }
        }
        drop(item);
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).await.is_err() {
                return false;
            }
        }
    }
    if !batch.is_empty() && tx.send(batch).await.is_err() {
        return false;
    }
    drained.advance(started);
    true
}
