//! Wakes the enforcer when the kernel reports a new cgroup, so a container
//! started after the policy was loaded is in its zone before its process runs
//! (instead of at the next periodic refresh).
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::capture::reader::ReaderError;

/// Runs until `shutdown`; each batch of new cgroups is one `notify`.
pub async fn watch(
    ring: RingBuf<MapData>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<(), ReaderError> {
    let mut fd = crate::capture::reader::readable(ring)?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| ReaderError::Poll { source })?;
                let ring = guard.get_inner_mut();
                let mut any = false;
                while let Some(item) = ring.next() {
                    if item.len() >= 8 {
                        let id = u64::from_ne_bytes(item[..8].try_into().unwrap_or([0; 8]));
                        tracing::debug!(cgroup_id = id, "cgroup created");
                    }
                    any = true;
                }
                guard.clear_ready();
                if any {
                    notify.notify_one();
                }
            }
        }
    }
}
