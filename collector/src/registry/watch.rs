//! The registry in force, shared by the indexer and the query service, and the
//! task that reloads it on SIGHUP or when the file changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::{Registry, RegistryError};

/// The registry in force and where it comes from.
#[derive(Debug)]
pub struct RegistryHandle {
    /// The registry file; `None` = no file, an empty registry (every identity is shadow).
    path: Option<PathBuf>,
    /// The registry in force.
    current: RwLock<Arc<Registry>>,
    /// Incremented at each successful (re)load.
    generation: AtomicU64,
    /// (mtime, length) of the file when last read, valid or not.
    seen: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl RegistryHandle {
    /// Loads the registry from `path` (an invalid file is an error), or the
    /// empty registry when there is no file.
    pub fn open(path: Option<PathBuf>) -> Result<Self, RegistryError> {
        let (registry, seen) = match &path {
            None => (Registry::default(), None),
            Some(p) => {
                let seen = stamp(p);
                let r = Registry::load(p)?;
                tracing::info!(path = %p.display(), entries = r.entries.len(), sha256 = %r.sha256, "identity registry loaded");
                (r, seen)
            }
        };
        Ok(RegistryHandle {
            path,
            current: RwLock::new(Arc::new(registry)),
            generation: AtomicU64::new(1),
            seen: Mutex::new(seen),
        })
    }

    /// A handle holding `registry` (tests, tools).
    pub fn fixed(registry: Registry) -> Self {
        RegistryHandle {
            path: None,
            current: RwLock::new(Arc::new(registry)),
            generation: AtomicU64::new(1),
            seen: Mutex::new(None),
        }
    }

    /// The registry in force.
    pub fn get(&self) -> Arc<Registry> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The registry in force and its generation (changes at each reload).
    pub fn snapshot(&self) -> (u64, Arc<Registry>) {
        let r = self.current.read().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::Acquire), r.clone())
    }

    /// Replaces the registry in force.
    pub fn set(&self, registry: Registry) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(registry);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-reads the file; on error the registry in force is kept. Returns
    /// whether a new registry was put in force.
    pub fn reload(&self) -> Result<bool, RegistryError> {
        let Some(path) = &self.path else { return Ok(false) };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp(path);
        let r = Registry::load(path)?;
        if *self.get() == r {
            return Ok(false);
        }
        tracing::info!(path = %path.display(), entries = r.entries.len(), sha256 = %r.sha256, "identity registry reloaded");
        self.set(r);
        Ok(true)
    }

    /// Whether the file's mtime or length differs from when it was last read.
    fn changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        stamp(path) != *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload_logged(&self, why: &str) {
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, why, "identity registry rejected; the previous one stays in force");
        }
    }

    /// Spawns the task reloading the registry on SIGHUP and when the file
    /// changes (checked every `every`). Nothing to do without a file.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        self.path.as_ref()?;
        let me = self.clone();
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; the registry is reloaded on file changes only");
                None
            }
        };
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let why = tokio::select! {
                    _ = tick.tick() => "file changed",
                    _ = hangup => "SIGHUP",
                };
                if why == "SIGHUP" || me.changed() {
                    let m = me.clone();
                    let _ = tokio::task::spawn_blocking(move || m.reload_logged(why)).await;
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "version: 1\nidentities:\n  - match: {exe: /a}\n    custodian: a@x\n    purpose: A\n";
    const V2: &str = "version: 1\nidentities:\n  - match: {exe: /b}\n    custodian: b@x\n    purpose: B\n";

    #[test]
    fn reload_replaces_a_valid_registry_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.yaml");
        std::fs::write(&path, V1).unwrap();
        let h = RegistryHandle::open(Some(path.clone())).unwrap();
        let (g1, r1) = h.snapshot();
        assert_eq!(r1.entries[0].custodian, "a@x");
        assert!(!h.changed());

        std::fs::write(&path, "version: 1\nidentities:\n  - match: {exe: /b}\n    custodian: \"\"\n    purpose: B\n")
            .unwrap();
        let e = h.reload().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: line 4: ", path.display())), "{e}");
        let (g, r) = h.snapshot();
        assert_eq!((g, r.entries[0].custodian.as_str()), (g1, "a@x"));
        assert!(!h.changed(), "a rejected file is not re-read until it changes again");

        std::fs::write(&path, V2).unwrap();
        assert!(h.reload().unwrap());
        let (g2, r2) = h.snapshot();
        assert!(g2 > g1);
        assert_eq!(r2.entries[0].custodian, "b@x");
        // Unchanged contents: no new generation.
        assert!(!h.reload().unwrap());
        assert_eq!(h.snapshot().0, g2);
    }

    #[test]
    fn no_file_is_an_empty_registry_and_a_missing_file_an_error() {
        let h = RegistryHandle::open(None).unwrap();
        assert!(h.get().entries.is_empty());
        assert!(!h.reload().unwrap());
        let e = RegistryHandle::open(Some("/nonexistent/registry.yaml".into())).unwrap_err();
        assert!(matches!(e, RegistryError::Read { .. }), "{e}");
    }
}
