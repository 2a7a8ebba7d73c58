//! The lazy file system through the kernel: what processes see before and
//! after a crash (root only).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn write_new(p: &Path, data: &[u8]) -> File {
    let mut f = OpenOptions::new().create_new(true).read(true).write(true).open(p).unwrap();
    f.write_all(data).unwrap();
    f
}

#[test]
fn a_crash_forgets_exactly_what_was_not_synced() {
    let mut fs = wiretrail_lazyfs::shared();
    let d = fs.path().join("control");
    fs::create_dir(&d).unwrap();
    sync_dir(&d);
    sync_dir(fs.path());

    // Synced data and name: kept; a later unsynced append: lost.
    let mut kept = write_new(&d.join("kept"), b"synced|");
    kept.sync_data().unwrap();
    // Data synced, then the name: kept.
    write_new(&d.join("both"), b"data synced, then name").sync_all().unwrap();
    // Named durably before the directory sync, data never synced: empty.
    let named = write_new(&d.join("named"), b"never synced");
    // Renamed and unlinked after the last directory sync: undone.
    write_new(&d.join("old-name"), b"R").sync_all().unwrap();
    write_new(&d.join("unlinked"), b"U").sync_all().unwrap();
    // Truncated after the last sync: undone.
    let big = write_new(&d.join("truncated"), &[9u8; 20_000]);
    big.sync_all().unwrap();
    sync_dir(&d);
    kept.write_all(b"unsynced").unwrap();
    drop((kept, named));
    // A new file synced, its name never: lost (a segment roll without the directory sync).
    let orphan = write_new(&d.join("orphan"), b"data synced, name not");
    orphan.sync_all().unwrap();
    drop(orphan);
    fs::rename(d.join("old-name"), d.join("new-name")).unwrap();
    fs::remove_file(d.join("unlinked")).unwrap();
    big.set_len(10).unwrap();
    drop(big);
    assert_eq!(fs::read(d.join("kept")).unwrap(), b"synced|unsynced");
    let before = fs.syncs();
    assert!(before.files >= 6 && before.dirs >= 3, "{before:?}");

    let forgotten = fs.crash().unwrap();
    assert!(forgotten.unsynced_files >= 2 && forgotten.unsynced_dirs >= 1, "{forgotten:?}");
    let mut names: Vec<String> =
        fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["both", "kept", "named", "old-name", "truncated", "unlinked"]);
    assert_eq!(fs::read(d.join("kept")).unwrap(), b"synced|");
    assert_eq!(fs::read(d.join("both")).unwrap(), b"data synced, then name");
    assert_eq!(fs::read(d.join("named")).unwrap(), b"");
    assert_eq!(fs::read(d.join("old-name")).unwrap(), b"R");
    assert_eq!(fs::read(d.join("unlinked")).unwrap(), b"U");
    assert_eq!(fs::read(d.join("truncated")).unwrap(), vec![9u8; 20_000]);
    fs::remove_dir_all(&d).unwrap();
    sync_dir(fs.path());
}
