//! tracefs must be mounted for tracepoint attach; the agent mounts it if missing.
use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed (needs CAP_SYS_ADMIN; or run `mount -t tracefs tracefs {TRACEFS}`)"
    )]
    Mount {
        #[source]
        source: std::io::Error,
    },
}

/// True when `TRACEFS` looks like a mounted tracefs.
fn mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

/// Mounts tracefs at `/sys/kernel/tracing` unless already there. Returns true if
/// this call mounted it.
pub fn ensure_mounted() -> Result<bool, TracefsError> {
    if mounted() {
        return Ok(false);
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError::Mount { source: std::io::Error::last_os_error() });
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(true)
}
