//! The one lazy file system of a test binary, and unmounting.
//!
//! Statics are never dropped, so the mount is unmounted by an `atexit` hook.
//! A run killed before its hook ran leaves a mount whose server is gone
//! (every access fails with ENOTCONN); the next [`shared`] call detaches such
//! mounts and deletes their directories. Live mounts of other runs are left alone.

use std::ffi::CString;
use std::ops::{Deref, DerefMut};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use crate::{FS_NAME, LazyFs};

/// Prefix of the temp directory holding `mnt/` and `backing/`.
const DIR_PREFIX: &str = "wiretrail-lazyfs-";

/// How long an unmount waits for a killed process's files to be closed.
const BUSY_WAIT: Duration = Duration::from_secs(10);

struct Mounted {
    fs: Option<LazyFs>,
    root: PathBuf,
}

static FS: OnceLock<Mutex<Mounted>> = OnceLock::new();
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Exclusive use of the test binary's lazy file system (tests that crash it
/// must not overlap, so each holds this for its whole run).
pub struct Guard(MutexGuard<'static, Mounted>);

impl Deref for Guard {
    type Target = LazyFs;
    fn deref(&self) -> &LazyFs {
        self.0.fs.as_ref().expect("mounted until the binary exits")
    }
}

impl DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut LazyFs {
        self.0.fs.as_mut().expect("mounted until the binary exits")
    }
}

/// The test binary's lazy file system, mounted on first use (panics with the
/// reason when it cannot be: not root, no /dev/fuse).
pub fn shared() -> Guard {
    let m = FS.get_or_init(|| {
        sweep_stale();
        let root = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().expect("temp dir").keep();
        let (mnt, backing) = (root.join("mnt"), root.join("backing"));
        for d in [&mnt, &backing] {
            std::fs::create_dir(d).expect("creating lazyfs directories");
        }
        let fs = LazyFs::mount(&backing, &mnt).unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&root);
            panic!("{e}")
        });
        let _ = ROOT.set(root.clone());
        // SAFETY: registers a plain function; it runs once at exit.
        unsafe { libc::atexit(at_exit) };
        Mutex::new(Mounted { fs: Some(fs), root })
    });
    Guard(m.lock().unwrap_or_else(|e| e.into_inner()))
}

extern "C" fn at_exit() {
    let Some(m) = FS.get() else { return };
    let mut g = match m.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            // A test still holds it (the binary is exiting under it): detach by path.
            if let Some(root) = ROOT.get() {
                detach(&root.join("mnt"));
                let _ = std::fs::remove_dir_all(root);
            }
            return;
        }
    };
    if let Some(fs) = g.fs.take() {
        let at = fs.path().to_path_buf();
        if let Err(e) = fs.unmount() {
            eprintln!("lazyfs: {e}; detaching {}", at.display());
            detach(&at);
        }
    }
    let _ = std::fs::remove_dir_all(&g.root);
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Unmounts `at`, waiting (bounded) while it is busy.
pub(crate) fn unmount(at: &Path) -> std::io::Result<()> {
    let c = cpath(at);
    let start = Instant::now();
    loop {
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > BUSY_WAIT {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches `at` (lazy unmount), whatever uses it.
pub(crate) fn detach(at: &Path) {
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(cpath(at).as_ptr(), libc::MNT_DETACH) };
}

/// Mount points of lazy file systems (from /proc/self/mountinfo: FUSE
/// mounts whose source is [`FS_NAME`]).
fn lazy_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let at = pre.split(' ').nth(4)?;
            let mut f = post.split(' ');
            let (fstype, source) = (f.next()?, f.next()?);
            (fstype.split('.').next() == Some("fuse") && source == FS_NAME).then(|| PathBuf::from(unescape(at)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches lazy mounts whose server is gone (left by a killed run) and
/// deletes their temp directories.
fn sweep_stale() {
    for at in lazy_mounts() {
        let dead = matches!(std::fs::metadata(&at), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
        if !dead {
            continue;
        }
        tracing::warn!(mountpoint = %at.display(), "detaching a lazy file system left by a killed run");
        detach(&at);
        let root = at.parent().filter(|r| r.file_name().is_some_and(|n| n.to_string_lossy().starts_with(DIR_PREFIX)));
        if let Some(root) = root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
