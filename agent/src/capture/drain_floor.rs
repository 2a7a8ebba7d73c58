//! `wiretrail-agent floor --hooks capture`: the agent's own capture programs,
//! loaded as the agent loads them, with user space doing nothing but reading
//! the ring buffer and counting the events. Measured between the no-op floor
//! (`--hooks syscalls`) and the agent (`cargo xtask bench capture`), it
//! splits the agent's cost to the workload in two: what the kernel programs
//! and the ring cost, and what the agent's user space (decoding, the
//! connection table, records, redaction) adds on top.
//!
//! Every event read here is dropped: this is a benchmark's floor, never a
//! way to run the agent (it writes no record and says so when it stops).
use std::path::PathBuf;

use aya::maps::{MapData, RingBuf};
use tokio_util::sync::CancellationToken;

use super::{CaptureError, CaptureOptions, reader};

#[derive(Debug, thiserror::Error)]
pub enum DrainFloorError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Reader(#[from] reader::ReaderError),
    #[error("writing the ready file {path}")]
    Ready {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Attaches the capture programs, creates `ready` (if given), then reads and
/// drops events until `shutdown`; returns how many were read.
pub async fn run(
    opts: &CaptureOptions,
    ready: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<u64, DrainFloorError> {
    let (_loaded, ring) = super::start(opts)?;
    let mut fd = reader::readable(ring)?;
    if let Some(path) = ready {
        std::fs::write(&path, b"").map_err(|source| DrainFloorError::Ready { path, source })?;
    }
    // Woken and polled as the agent's reader is.
    let mut poll = tokio::time::interval(reader::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(read + drop_all(fd.get_mut())),
            _ = poll.tick() => read += drop_all(fd.get_mut()),
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| reader::ReaderError::Poll { source })?;
                read += drop_all(guard.get_inner_mut());
                guard.clear_ready();
            }
        }
    }
}

/// Reads (and drops) everything in the ring.
fn drop_all(ring: &mut RingBuf<MapData>) -> u64 {
    let mut n = 0;
    while let Some(item) = ring.next() {
        drop(item);
        n += 1;
    }
    n
}
