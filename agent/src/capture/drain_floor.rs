//! `wiretrail-agent floor --hooks capture`: the agent's own capture programs,
//! loaded as the agent loads them, with user space doing nothing but reading
//! the ring buffers (data and exec notifications) as the agent's reader does
//! (woken at 256 KiB, polled every 10 ms) and dropping the events. Measured
//! between the no-op floor (`--hooks syscalls`) and the agent (`cargo xtask
//! bench capture`), it splits the agent's cost to the workload in two: the
//! kernel programs and the ring (with the cheapest possible reader), and what
//! the agent's user space (decoding, the connection table, records,
//! redaction) adds on top.
//!
//! Every event read here is dropped: this is a benchmark's floor, never a
//! way to run the agent (it writes no record and says so when it stops).
use std::path::PathBuf;

use aya::maps::{MapData, RingBuf};
use tokio_util::sync::CancellationToken;

use super::{CaptureError, CaptureOptions, loader::LoadError, reader};

#[derive(Debug, thiserror::Error)]
pub enum DrainFloorError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Reader(#[from] reader::ReaderError),
    #[error("reading the kernel's counters")]
    Stats {
        #[source]
        source: LoadError,
    },
    #[error("writing the ready file {path}")]
    Ready {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a run read, and what the kernel says it wrote and lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Events read from the rings (and dropped).
    pub read: u64,
    /// Events the programs wrote (`STAT_EVENTS`).
    pub written: u64,
    /// Events the programs could not write, the ring being full.
    pub lost: u64,
}

/// Attaches the capture programs, creates `ready` (if given), then reads and
/// drops events until `shutdown`.
pub async fn run(
    opts: &CaptureOptions,
    ready: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<DrainReport, DrainFloorError> {
    let (mut loaded, ring) = super::start(opts)?;
    let mut data = reader::readable(ring)?;
    let mut execs = loaded.execs.take().map(reader::readable).transpose()?;
    if let Some(path) = ready {
        std::fs::write(&path, b"").map_err(|source| DrainFloorError::Ready { path, source })?;
    }
    let mut poll = tokio::time::interval(reader::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {
                read += drop_all(data.get_mut());
                if let Some(e) = execs.as_mut() {
                    read += drop_all(e.get_mut());
                }
            }
            guard = data.readable_mut() => {
                let mut guard = guard.map_err(|source| reader::ReaderError::Poll { source })?;
                read += drop_all(guard.get_inner_mut());
                guard.clear_ready();
            }
        }
    }
    read += drop_all(data.get_mut());
    if let Some(e) = execs.as_mut() {
        read += drop_all(e.get_mut());
    }
    let stats = loaded.kernel_stats().map_err(|source| DrainFloorError::Stats { source })?;
    Ok(DrainReport { read, written: stats.events, lost: stats.lost_events })
}

/// Reads (and drops) everything in `ring`.
fn drop_all(ring: &mut RingBuf<MapData>) -> u64 {
    let mut n = 0;
    while let Some(item) = ring.next() {
        drop(item);
        n += 1;
    }
    n
}
