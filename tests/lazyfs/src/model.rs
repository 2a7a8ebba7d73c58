//! The file system's state: what a process sees (`volatile`) and what a
//! crash keeps (`durable`), in the strict POSIX model:
//!
//! - `fsync`/`fdatasync` of a file makes its contents, size and attributes
//!   durable, not its name: a new file whose directory was never synced is
//!   an orphan that a crash removes;
//! - `fsync` of a directory makes its entries durable (creates, unlinks,
//!   renames into or out of it); an entry for a file that was never synced
//!   itself survives as an empty file;
//! - nothing else is durable: a crash ([`Model::crash`]) resets what
//!   processes see to the durable state.
//!
//! Both trees share inode numbers; inode numbers are never reused. The synced
//! contents of files live in the backing directory ([`Backing`]); the writes
//! since a file's last sync stay in memory ([`Dirty`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::backing::{Backing, Dirty, PAGE};

/// Inode number (the root is [`ROOT`]).
pub type Ino = u64;

/// The root directory's inode.
pub const ROOT: Ino = 1;

/// Errors of file system operations (each maps to an errno).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such inode or entry.
    #[error("no such file or directory")]
    NotFound,
    /// The entry exists.
    #[error("file exists")]
    Exists,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was expected.
    #[error("is a directory")]
    IsDir,
    /// A directory to remove or replace has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// The operation is not modelled (special files, rename exchange).
    #[error("operation not supported")]
    Unsupported,
    /// The backing directory failed.
    #[error("backing file {path}: {source}")]
    Backing {
        /// The backing file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl FsError {
    /// The errno a process sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::Backing { .. } => libc::EIO,
        }
    }
}

/// Attributes of an inode.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
}

/// What an inode is.
#[derive(Debug, Clone)]
pub enum Body {
    /// A directory: name → inode.
    Dir(BTreeMap<OsString, Ino>),
    /// A regular file of `size` bytes.
    File {
        /// Length in bytes.
        size: u64,
    },
}

/// One inode.
#[derive(Debug, Clone)]
pub struct Node {
    /// Attributes.
    pub attr: Attr,
    /// Directory entries or file size.
    pub body: Body,
    /// Directory entries naming it (files; directories report 2).
    pub nlink: u32,
}

impl Node {
    fn entries(&self) -> Result<&BTreeMap<OsString, Ino>, FsError> {
        match &self.body {
            Body::Dir(e) => Ok(e),
            Body::File { .. } => Err(FsError::NotDir),
        }
    }

    fn entries_mut(&mut self) -> Result<&mut BTreeMap<OsString, Ino>, FsError> {
        match &mut self.body {
            Body::Dir(e) => Ok(e),
            Body::File { .. } => Err(FsError::NotDir),
        }
    }

    fn size(&self) -> Result<u64, FsError> {
        match self.body {
            Body::File { size } => Ok(size),
            Body::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }
}

/// Attribute changes of a `setattr`.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    /// New mode.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

/// What a crash threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Files with writes or size changes since their last sync.
    pub unsynced_files: usize,
    /// Inodes that existed but were not durably reachable.
    pub unreachable_inodes: usize,
    /// Directories whose entries differed from their synced entries.
    pub unsynced_dirs: usize,
}

/// Counters of syncs (for tests that want to see the collector sync).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// `fsync`/`fdatasync` of files.
    pub files: u64,
    /// `fsync` of directories.
    pub dirs: u64,
}

#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: HashMap<Ino, Node>,
}

impl Tree {
    fn get(&self, ino: Ino) -> Result<&Node, FsError> {
        self.nodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn get_mut(&mut self, ino: Ino) -> Result<&mut Node, FsError> {
        self.nodes.get_mut(&ino).ok_or(FsError::NotFound)
    }
}

/// The lazy file system's state.
#[derive(Debug)]
pub struct Model {
    volatile: Tree,
    durable: Tree,
    dirty: HashMap<Ino, Dirty>,
    backing: Backing,
    next_ino: Ino,
    syncs: SyncCounts,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl Model {
    /// An empty file system whose synced file contents go to `backing` (an empty directory).
    pub fn new(backing: &Path, uid: u32, gid: u32) -> Model {
        let t = now();
        let root = Node {
            attr: Attr { perm: 0o755, uid, gid, atime: t, mtime: t, ctime: t },
            body: Body::Dir(BTreeMap::new()),
            nlink: 2,
        };
        let tree = Tree { nodes: HashMap::from([(ROOT, root)]) };
        Model {
            volatile: tree.clone(),
            durable: tree,
            dirty: HashMap::new(),
            backing: Backing::new(backing),
            next_ino: ROOT + 1,
            syncs: SyncCounts::default(),
        }
    }

    /// Syncs so far.
    pub fn syncs(&self) -> SyncCounts {
        self.syncs
    }

    /// The inode `ino` as processes see it.
    pub fn node(&self, ino: Ino) -> Result<&Node, FsError> {
        self.volatile.get(ino)
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, FsError> {
        self.volatile.get(parent)?.entries()?.get(name).copied().ok_or(FsError::NotFound)
    }

    /// The entries of directory `ino` (name, inode, is a directory).
    pub fn entries(&self, ino: Ino) -> Result<Vec<(OsString, Ino, bool)>, FsError> {
        let e = self.volatile.get(ino)?.entries()?;
        Ok(e.iter().map(|(n, &i)| (n.clone(), i, self.volatile.nodes.get(&i).is_some_and(Node::is_dir))).collect())
    }

    fn touch_dir(&mut self, ino: Ino) {
        if let Some(n) = self.volatile.nodes.get_mut(&ino) {
            let t = now();
            n.attr.mtime = t;
            n.attr.ctime = t;
        }
    }

    /// Creates a file (`dir` false) or directory named `name` in `parent`.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        dir: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Ino, FsError> {
        let entries = self.volatile.get(parent)?.entries()?;
        if entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let t = now();
        let body = if dir { Body::Dir(BTreeMap::new()) } else { Body::File { size: 0 } };
        let node = Node {
            attr: Attr { perm: (mode & 0o7777) as u16, uid, gid, atime: t, mtime: t, ctime: t },
            body,
            nlink: if dir { 2 } else { 1 },
        };
        self.volatile.nodes.insert(ino, node);
        self.volatile.get_mut(parent)?.entries_mut()?.insert(name.to_os_string(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    /// Adds the name `name` in `parent` for file `ino` (a hard link).
    pub fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        if self.volatile.get(ino)?.is_dir() {
            return Err(FsError::IsDir);
        }
        let entries = self.volatile.get_mut(parent)?.entries_mut()?;
        if entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        entries.insert(name.to_os_string(), ino);
        let n = self.volatile.get_mut(ino)?;
        n.nlink += 1;
        n.attr.ctime = now();
        self.touch_dir(parent);
        Ok(())
    }

    /// Removes the entry `name` of `parent`: a non-directory (`dir` false) or an empty directory.
    pub fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), FsError> {
        let ino = self.lookup(parent, name)?;
        let node = self.volatile.get(ino)?;
        match (&node.body, dir) {
            (Body::Dir(_), false) => return Err(FsError::IsDir),
            (Body::File { .. }, true) => return Err(FsError::NotDir),
            (Body::Dir(e), true) if !e.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        self.volatile.get_mut(parent)?.entries_mut()?.remove(name);
        self.unlinked(ino);
        self.touch_dir(parent);
        Ok(())
    }

    fn unlinked(&mut self, ino: Ino) {
        if let Some(n) = self.volatile.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.attr.ctime = now();
        }
    }

    /// Renames `parent/name` to `new_parent/new_name` (replacing what is
    /// there unless `noreplace`).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        noreplace: bool,
    ) -> Result<(), FsError> {
        let ino = self.lookup(parent, name)?;
        self.volatile.get(new_parent)?.entries()?;
        if let Ok(old) = self.lookup(new_parent, new_name) {
            if noreplace {
                return Err(FsError::Exists);
            }
            if old == ino {
                return Ok(());
            }
            let (src_dir, dst) = (self.volatile.get(ino)?.is_dir(), self.volatile.get(old)?);
            match (&dst.body, src_dir) {
                (Body::Dir(_), false) => return Err(FsError::IsDir),
                (Body::File { .. }, true) => return Err(FsError::NotDir),
                (Body::Dir(e), true) if !e.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            self.unlinked(old);
        }
        self.volatile.get_mut(parent)?.entries_mut()?.remove(name);
        self.volatile.get_mut(new_parent)?.entries_mut()?.insert(new_name.to_os_string(), ino);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// Changes attributes (a size change truncates or extends the file).
    pub fn setattr(&mut self, ino: Ino, s: &SetAttr) -> Result<(), FsError> {
        if let Some(size) = s.size {
            self.resize(ino, size)?;
        }
        let n = self.volatile.get_mut(ino)?;
        let t = now();
        if let Some(m) = s.mode {
            n.attr.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = s.uid {
            n.attr.uid = u;
        }
        if let Some(g) = s.gid {
            n.attr.gid = g;
        }
        if let Some(a) = s.atime {
            n.attr.atime = a;
        }
        if let Some(m) = s.mtime {
            n.attr.mtime = m;
        }
        n.attr.ctime = t;
        Ok(())
    }

    /// Synced size of file `ino` (0 when it was never synced).
    fn synced_size(&self, ino: Ino) -> u64 {
        self.durable.nodes.get(&ino).and_then(|n| n.size().ok()).unwrap_or(0)
    }

    /// The dirty state of file `ino`, created on first use.
    fn dirty(&mut self, ino: Ino, size: u64) -> &mut Dirty {
        self.dirty.entry(ino).or_insert_with(|| Dirty { low: size, pages: BTreeMap::new() })
    }

    /// Synced bytes of `ino` below this offset are still the file's.
    fn base_limit(&self, ino: Ino, size: u64) -> u64 {
        let low = self.dirty.get(&ino).map_or(size, |d| d.low);
        low.min(self.synced_size(ino))
    }

    fn resize(&mut self, ino: Ino, new: u64) -> Result<(), FsError> {
        let size = self.volatile.get(ino)?.size()?;
        let d = self.dirty(ino, size);
        if new < size {
            let keep = new.div_ceil(PAGE);
            d.pages.retain(|&p, _| p < keep);
            if !new.is_multiple_of(PAGE)
                && let Some(page) = d.pages.get_mut(&(new / PAGE))
            {
                page[(new % PAGE) as usize..].fill(0);
            }
            d.low = d.low.min(new);
        }
        let n = self.volatile.get_mut(ino)?;
        n.body = Body::File { size: new };
        n.attr.mtime = now();
        Ok(())
    }

    /// Reads up to `len` bytes of file `ino` at `off`.
    pub fn read(&mut self, ino: Ino, off: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let size = self.volatile.get(ino)?.size()?;
        let end = off.saturating_add(len as u64).min(size);
        if off >= end {
            return Ok(Vec::new());
        }
        let limit = self.base_limit(ino, size);
        let mut out = vec![0u8; (end - off) as usize];
        let mut p = off / PAGE;
        while p * PAGE < end {
            let (a, b) = ((p * PAGE).max(off), ((p + 1) * PAGE).min(end));
            let dst = &mut out[(a - off) as usize..(b - off) as usize];
            match self.dirty.get(&ino).and_then(|d| d.pages.get(&p)) {
                Some(page) => dst.copy_from_slice(&page[(a - p * PAGE) as usize..(b - p * PAGE) as usize]),
                None => self.backing.read(ino, a, dst, limit)?,
            }
            p += 1;
        }
        Ok(out)
    }

    /// Writes `data` to file `ino` at `off` (kept in memory until synced).
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<(), FsError> {
        let size = self.volatile.get(ino)?.size()?;
        if data.is_empty() {
            return Ok(());
        }
        let end = off + data.len() as u64;
        let limit = self.base_limit(ino, size);
        let mut p = off / PAGE;
        while p * PAGE < end {
            if !self.dirty.get(&ino).is_some_and(|d| d.pages.contains_key(&p)) {
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                self.backing.read(ino, p * PAGE, &mut page, limit)?;
                self.dirty(ino, size).pages.insert(p, page);
            }
            let page = self.dirty.get_mut(&ino).and_then(|d| d.pages.get_mut(&p)).expect("page loaded above");
            let (a, b) = ((p * PAGE).max(off), ((p + 1) * PAGE).min(end));
            page[(a - p * PAGE) as usize..(b - p * PAGE) as usize]
                .copy_from_slice(&data[(a - off) as usize..(b - off) as usize]);
            p += 1;
        }
        let n = self.volatile.get_mut(ino)?;
        n.body = Body::File { size: size.max(end) };
        let t = now();
        n.attr.mtime = t;
        n.attr.ctime = t;
        Ok(())
    }

    /// `fsync`/`fdatasync` of `ino`: a file's contents and attributes, or a
    /// directory's entries, become durable.
    pub fn sync(&mut self, ino: Ino) -> Result<(), FsError> {
        let node = self.volatile.get(ino)?.clone();
        match &node.body {
            Body::File { size } => {
                self.syncs.files += 1;
                let synced = self.synced_size(ino);
                if let Some(d) = self.dirty.remove(&ino) {
                    self.backing.sync(ino, &d, synced, *size)?;
                }
                self.durable.nodes.insert(ino, node);
            }
            Body::Dir(entries) => {
                self.syncs.dirs += 1;
                for &child in entries.values() {
                    if self.durable.nodes.contains_key(&child) {
                        continue;
                    }
                    // Named now, never synced itself: an empty file or directory.
                    let mut c = self.volatile.get(child)?.clone();
                    c.body = match c.body {
                        Body::Dir(_) => Body::Dir(BTreeMap::new()),
                        Body::File { .. } => Body::File { size: 0 },
                    };
                    self.durable.nodes.insert(child, c);
                }
                match self.durable.nodes.get_mut(&ino) {
                    Some(d) => *d = node,
                    None => {
                        self.durable.nodes.insert(ino, node);
                    }
                }
            }
        }
        Ok(())
    }

    /// A crash: everything not synced is forgotten; processes see the durable
    /// state from now on. Inodes no longer reachable are deleted.
    pub fn crash(&mut self) -> Forgotten {
        let mut reach = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        let mut links: HashMap<Ino, u32> = HashMap::new();
        while let Some(i) = stack.pop() {
            if let Some(Body::Dir(e)) = self.durable.nodes.get(&i).map(|n| &n.body) {
                for &c in e.values() {
                    *links.entry(c).or_default() += 1;
                    if reach.insert(c) {
                        stack.push(c);
                    }
                }
            }
        }
        let gone: Vec<Ino> = self.durable.nodes.keys().copied().filter(|i| !reach.contains(i)).collect();
        for i in gone {
            self.durable.nodes.remove(&i);
            self.backing.remove(i);
        }
        for (i, n) in self.durable.nodes.iter_mut() {
            if !n.is_dir() {
                n.nlink = links.get(i).copied().unwrap_or(0);
            }
        }
        let unsynced_dirs = self
            .volatile
            .nodes
            .iter()
            .filter(|(i, n)| match (&n.body, self.durable.nodes.get(i).map(|d| &d.body)) {
                (Body::Dir(v), Some(Body::Dir(d))) => v != d,
                _ => false,
            })
            .count();
        let f = Forgotten {
            unsynced_files: self.dirty.len(),
            unreachable_inodes: self.volatile.nodes.keys().filter(|i| !self.durable.nodes.contains_key(i)).count(),
            unsynced_dirs,
        };
        self.dirty.clear();
        self.volatile = self.durable.clone();
        f
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
