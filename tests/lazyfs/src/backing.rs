//! The synced contents of files, one backing file per inode, and the pages
//! written to a file since its last sync.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::model::{FsError, Ino};

/// Page size of the unsynced-write cache.
pub const PAGE: u64 = 4096;

/// Writes to one file since its last fsync.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Lowest size the file had since its last sync: synced bytes at or past
    /// this offset are no longer the file's (they read as zeros).
    pub low: u64,
    /// Whole pages written since the last sync; bytes past the file's size are zero.
    pub pages: BTreeMap<u64, Box<[u8]>>,
}

/// The backing directory: `<dir>/<inode>` holds the synced contents of a file.
#[derive(Debug)]
pub struct Backing {
    dir: PathBuf,
    open: HashMap<Ino, File>,
}

impl Backing {
    /// Uses `dir` (empty) for the synced contents.
    pub fn new(dir: &Path) -> Backing {
        Backing { dir: dir.to_path_buf(), open: HashMap::new() }
    }

    fn path(&self, ino: Ino) -> PathBuf {
        self.dir.join(ino.to_string())
    }

    fn err(&self, ino: Ino) -> impl FnOnce(std::io::Error) -> FsError + use<> {
        let path = self.path(ino);
        move |source| FsError::Backing { path, source }
    }

    fn file(&mut self, ino: Ino) -> Result<&File, FsError> {
        if !self.open.contains_key(&ino) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.path(ino))
                .map_err(self.err(ino))?;
            self.open.insert(ino, f);
        }
        Ok(&self.open[&ino])
    }

    /// Fills `buf` with the synced bytes of `ino` from `off`; bytes at or past
    /// `limit` (the synced size, or less after a truncation) are zeros.
    pub fn read(&mut self, ino: Ino, off: u64, buf: &mut [u8], limit: u64) -> Result<(), FsError> {
        let n = limit.saturating_sub(off).min(buf.len() as u64) as usize;
        buf[n..].fill(0);
        if n > 0 {
            let err = self.err(ino);
            self.file(ino)?.read_exact_at(&mut buf[..n], off).map_err(err)?;
        }
        Ok(())
    }

    /// Makes the contents of `ino` its synced contents: cut at `dirty.low`,
    /// the dirty pages written, the length set to `size`.
    pub fn sync(&mut self, ino: Ino, dirty: &Dirty, synced_size: u64, size: u64) -> Result<(), FsError> {
        let path = self.path(ino);
        let err = |source| FsError::Backing { path: path.clone(), source };
        let f = self.file(ino)?;
        if dirty.low < synced_size {
            f.set_len(dirty.low).map_err(err)?;
        }
        for (&p, page) in &dirty.pages {
            let start = p * PAGE;
            if start >= size {
                break;
            }
            let n = (size - start).min(PAGE) as usize;
            f.write_all_at(&page[..n], start).map_err(err)?;
        }
        f.set_len(size).map_err(err)
    }

    /// Deletes the backing file of `ino` (its inode is gone).
    pub fn remove(&mut self, ino: Ino) {
        self.open.remove(&ino);
        let _ = std::fs::remove_file(self.path(ino));
    }
}
