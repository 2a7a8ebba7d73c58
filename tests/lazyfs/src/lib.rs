//! A test-only FUSE file system that forgets what was not synced, in the
//! spirit of Jepsen's LazyFS: SIGKILL leaves the page cache alone, so only a
//! file system that drops unsynced writes can show that a program syncs
//! before it promises durability.
//!
//! [`LazyFs::mount`] mounts it (root only; the kernel's `/dev/fuse`, no
//! `fusermount`); processes use the mount point as an ordinary directory.
//! Synced file contents go to a backing directory (one file per inode);
//! writes, truncations, creates, renames and unlinks since the last
//! `fsync`/`fdatasync` of the file or directory concerned stay in memory
//! (see [`model`] for the exact rules). [`LazyFs::crash`] is a power loss:
//! it unmounts (every process using the mount must be gone), forgets
//! everything unsynced and mounts the durable state again.
//!
//! [`shared`] gives the one mount of a test binary (mounted on first use,
//! unmounted when the binary exits, and a mount left behind by a killed run
//! is cleaned up by the next one).

mod backing;
mod fuse;
pub mod model;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use model::{Forgotten, Model, SyncCounts};
pub use shared::shared;

/// The mount's source name (in /proc/self/mountinfo).
pub const FS_NAME: &str = "wiretrail-lazyfs";

/// Errors of mounting, crashing and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    /// FUSE mounts need root here (no setuid `fusermount`).
    #[error("mounting the lazy file system needs root (euid {0})")]
    NotRoot(u32),
    /// The FUSE device is missing.
    #[error("/dev/fuse is missing: load the fuse module (modprobe fuse)")]
    NoFuseDevice,
    /// Mounting failed.
    #[error("mounting the lazy file system on {path}: {source}")]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting failed (a process still uses the mount?).
    #[error("unmounting the lazy file system at {path}: {source}")]
    Unmount {
        /// Mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A mounted lazy file system.
pub struct LazyFs {
    model: Arc<Mutex<Model>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

fn session(model: &Arc<Mutex<Model>>, at: &Path) -> Result<fuser::BackgroundSession, LazyFsError> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![fuser::MountOption::FSName(FS_NAME.into()), fuser::MountOption::NoAtime];
    let fs = fuse::LazyFuse { model: model.clone() };
    fuser::spawn_mount(fs, at, &cfg).map_err(|source| LazyFsError::Mount { path: at.to_path_buf(), source })
}

impl LazyFs {
    /// Mounts an empty lazy file system on `mountpoint`, keeping synced
    /// contents in `backing` (an empty directory on a real file system).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyFs, LazyFsError> {
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid != 0 {
            return Err(LazyFsError::NotRoot(uid));
        }
        if !Path::new("/dev/fuse").exists() {
            return Err(LazyFsError::NoFuseDevice);
        }
        let mountpoint = mountpoint
            .canonicalize()
            .map_err(|source| LazyFsError::Mount { path: mountpoint.to_path_buf(), source })?;
        let model = Arc::new(Mutex::new(Model::new(backing, uid, gid)));
        let session = session(&model, &mountpoint)?;
        tracing::info!(mountpoint = %mountpoint.display(), backing = %backing.display(), "lazy file system mounted");
        Ok(LazyFs { model, session: Some(session), mountpoint })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Syncs seen so far (files, directories).
    pub fn syncs(&self) -> SyncCounts {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).syncs()
    }

    /// A power loss: unmounts (no process may use the mount any more: kill
    /// and reap them first), forgets every unsynced write and mounts the
    /// durable state again. Returns what was forgotten.
    pub fn crash(&mut self) -> Result<Forgotten, LazyFsError> {
        self.unmount_session()?;
        let forgotten = self.model.lock().unwrap_or_else(|e| e.into_inner()).crash();
        self.session = Some(session(&self.model, &self.mountpoint)?);
        tracing::info!(?forgotten, "lazy file system crashed and remounted");
        Ok(forgotten)
    }

    fn unmount_session(&mut self) -> Result<(), LazyFsError> {
        let Some(s) = self.session.take() else { return Ok(()) };
        let err = |source| LazyFsError::Unmount { path: self.mountpoint.clone(), source };
        if let Err(e) = shared::unmount(&self.mountpoint) {
            // Still mounted and served: keep the session so a later try (or Drop) can unmount.
            self.session = Some(s);
            return Err(err(e));
        }
        // Unmounted: the session thread sees the device close and ends.
        s.join().map_err(err)
    }

    /// Unmounts.
    pub fn unmount(mut self) -> Result<(), LazyFsError> {
        self.unmount_session()
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_session() {
            tracing::warn!(error = %e, "unmounting the lazy file system; detaching it");
            shared::detach(&self.mountpoint);
        }
    }
}
