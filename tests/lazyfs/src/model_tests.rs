//! The crash model without FUSE: what survives a crash and what does not.

use std::ffi::OsStr;

use super::*;

fn fs() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::new(dir.path(), 0, 0);
    (dir, m)
}

fn file(m: &mut Model, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let i = m.create(parent, OsStr::new(name), false, 0o644, 0, 0).unwrap();
    m.write(i, 0, data).unwrap();
    i
}

fn contents(m: &mut Model, parent: Ino, name: &str) -> Option<Vec<u8>> {
    let i = m.lookup(parent, OsStr::new(name)).ok()?;
    let size = m.node(i).unwrap().body.clone();
    let Body::File { size } = size else { panic!("{name} is a directory") };
    Some(m.read(i, 0, size as usize).unwrap())
}

#[test]
fn a_created_file_needs_its_directory_synced() {
    let (_d, mut m) = fs();
    let sub = m.create(ROOT, OsStr::new("sub"), true, 0o755, 0, 0).unwrap();
    m.sync(sub).unwrap();
    let b = file(&mut m, ROOT, "b", b"unsynced file, synced name");
    let c = file(&mut m, ROOT, "c", b"both synced");
    m.sync(c).unwrap();
    m.sync(ROOT).unwrap();
    let a = file(&mut m, sub, "a", b"synced file, unsynced name");
    m.sync(a).unwrap();
    m.write(b, 0, b"more").unwrap();
    let f = m.crash();
    assert_eq!(contents(&mut m, sub, "a"), None, "a name never synced is gone");
    assert_eq!(contents(&mut m, ROOT, "b"), Some(Vec::new()), "a synced name of unsynced data is an empty file");
    assert_eq!(contents(&mut m, ROOT, "c").as_deref(), Some(&b"both synced"[..]));
    assert_eq!(f, Forgotten { unsynced_files: 1, unreachable_inodes: 1, unsynced_dirs: 1 });
}

#[test]
fn writes_after_the_last_sync_are_lost() {
    let (_d, mut m) = fs();
    let a = file(&mut m, ROOT, "a", &vec![b'x'; 10_000]);
    m.sync(a).unwrap();
    m.sync(ROOT).unwrap();
    m.write(a, 9_000, &vec![b'y'; 3_000]).unwrap();
    m.write(a, 10, b"zz").unwrap();
    assert_eq!(m.read(a, 9_998, 4).unwrap(), b"yyyy");
    m.crash();
    assert_eq!(contents(&mut m, ROOT, "a"), Some(vec![b'x'; 10_000]));
}

#[test]
fn truncation_and_extension_are_lost_or_kept_whole() {
    let (_d, mut m) = fs();
    let a = file(&mut m, ROOT, "a", &vec![7u8; 9_000]);
    m.sync(a).unwrap();
    m.sync(ROOT).unwrap();
    // Truncate and grow again: the old bytes must not come back.
    m.setattr(a, &SetAttr { size: Some(100), ..Default::default() }).unwrap();
    m.setattr(a, &SetAttr { size: Some(5_000), ..Default::default() }).unwrap();
    let mut want = vec![7u8; 100];
    want.resize(5_000, 0);
    assert_eq!(contents(&mut m, ROOT, "a"), Some(want.clone()));
    m.crash();
    assert_eq!(contents(&mut m, ROOT, "a"), Some(vec![7u8; 9_000]), "an unsynced truncation is undone");
    m.setattr(a, &SetAttr { size: Some(100), ..Default::default() }).unwrap();
    m.setattr(a, &SetAttr { size: Some(5_000), ..Default::default() }).unwrap();
    m.sync(a).unwrap();
    m.crash();
    assert_eq!(contents(&mut m, ROOT, "a"), Some(want), "a synced truncation stays");
}

#[test]
fn renames_and_unlinks_need_the_directory_synced() {
    let (_d, mut m) = fs();
    let sub = m.create(ROOT, OsStr::new("sub"), true, 0o755, 0, 0).unwrap();
    let a = file(&mut m, sub, "a", b"A");
    let b = file(&mut m, sub, "b", b"B");
    m.sync(a).unwrap();
    m.sync(b).unwrap();
    m.sync(sub).unwrap();
    m.sync(ROOT).unwrap();
    m.rename(sub, OsStr::new("a"), sub, OsStr::new("renamed"), false).unwrap();
    m.remove(sub, OsStr::new("b"), false).unwrap();
    m.crash();
    assert_eq!(contents(&mut m, sub, "a").as_deref(), Some(&b"A"[..]));
    assert_eq!(contents(&mut m, sub, "renamed"), None);
    assert_eq!(contents(&mut m, sub, "b").as_deref(), Some(&b"B"[..]));
    m.rename(sub, OsStr::new("a"), sub, OsStr::new("renamed"), false).unwrap();
    m.sync(sub).unwrap();
    m.crash();
    assert_eq!(contents(&mut m, sub, "a"), None);
    assert_eq!(contents(&mut m, sub, "renamed").as_deref(), Some(&b"A"[..]));
}

#[test]
fn a_directory_never_synced_into_its_parent_takes_its_files_along() {
    let (d, mut m) = fs();
    let sub = m.create(ROOT, OsStr::new("log"), true, 0o755, 0, 0).unwrap();
    let a = file(&mut m, sub, "seg", b"frames");
    m.sync(a).unwrap();
    m.sync(sub).unwrap();
    let f = m.crash();
    assert_eq!(m.lookup(ROOT, OsStr::new("log")).err().map(|e| e.errno()), Some(libc::ENOENT));
    assert_eq!(f.unreachable_inodes, 2);
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "orphans' backing files are deleted");
}
