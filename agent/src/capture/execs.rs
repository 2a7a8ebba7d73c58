//! Reads exec notifications from their own ring buffer and hands each new
//! program image to TLS discovery at once.
use std::sync::mpsc::SyncSender;

use aya::maps::{MapData, RingBuf};
use tokio_util::sync::CancellationToken;

use super::{
    event::{CaptureEvent, decode},
    reader::ReaderError,
    tls::worker::Request,
};
use crate::metrics::Metrics;

/// Runs until `shutdown`. Each new program image's executable is recorded in
/// `exes` (workload identity) and, with TLS capture on, handed to discovery.
pub async fn run(
    ring: RingBuf<MapData>,
    discovery: Option<SyncSender<Request>>,
    exes: std::sync::Arc<crate::identity::ExecCache>,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ReaderError> {
    let mut fd = super::reader::readable(ring)?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| ReaderError::Poll { source })?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match decode(&item) {
                        Ok(CaptureEvent::Exec { meta }) => {
                            exes.record_exec(meta.pid, meta.comm);
                            if let Some(d) = &discovery
                                && d.try_send(Request::Exec(meta.pid, meta.ts_ns)).is_err()
                            {
                                metrics.exec_backlog.inc();
                            }
                        }
                        Ok(_) | Err(_) => metrics.decode_errors.inc(),
                    }
                }
                guard.clear_ready();
            }
        }
    }
}
