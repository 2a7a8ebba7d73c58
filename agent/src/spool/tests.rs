use wiretrail_proto::v1::{Batch, Record};

use super::*;

fn batch(boot: &str, seq: u64, payload: usize) -> Batch {
    Batch {
        agent_id: "a".into(),
        boot_id: boot.into(),
        seq,
        records: vec![Record { payload: vec![b'x'; payload], ..Default::default() }],
        covers_through_seq: 0,
    }
}

fn cfg(dir: &Path, max: u64) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes: max, gap_reserve_bytes: 200 }
}

#[test]
fn order_survives_reopen_across_boots() {
    let d = tempfile::tempdir().unwrap();
    let (s, bad) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
    assert!(bad.is_empty());
    let b1 = s.start_boot("boot1", 100).unwrap();
    for i in 0..3 {
        s.append(&b1, &batch("boot1", i, 10), false).unwrap();
    }
    s.remove(&BatchKey { boot_dir: b1.clone(), seq: 0 }).unwrap();
    drop(s);
    let (s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
    let b2 = s.start_boot("boot2", 200).unwrap();
    s.append(&b2, &batch("boot2", 0, 10), false).unwrap();
    let mut order = Vec::new();
    let mut k = None;
    while let Some(n) = s.next_after(k.as_ref()) {
        let b = s.read(&n).unwrap();
        order.push((b.boot_id.clone(), b.seq));
        k = Some(n);
    }
    assert_eq!(order, vec![("boot1".into(), 1), ("boot1".into(), 2), ("boot2".into(), 0)]);
}

#[test]
fn bound_refuses_ordinary_batches_but_reserve_admits_gaps() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(cfg(d.path(), 300)).unwrap();
    let b = s.start_boot("b", 1).unwrap();
    s.append(&b, &batch("b", 0, 200), false).unwrap();
    let used = s.used_bytes();
    match s.append(&b, &batch("b", 1, 200), false) {
        Err(SpoolError::Full { used: u, limit, .. }) => {
            assert_eq!((u, limit), (used, 300));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(s.len(), 1, "a refused batch must not be stored");
    s.append(&b, &batch("b", 1, 10), true).unwrap();
    assert_eq!(s.len(), 2);
}

#[test]
fn corrupt_file_is_quarantined_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
    let b = s.start_boot("b", 1).unwrap();
    s.append(&b, &batch("b", 0, 50), false).unwrap();
    s.append(&b, &batch("b", 1, 50), false).unwrap();
    drop(s);
    let f = d.path().join(&b).join(format!("{:020}.wtb", 1));
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let (s, bad) = Spool::open(cfg(d.path(), 1 << 20)).unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].key.seq, 1);
    assert_eq!(bad[0].boot_id, "b");
    assert!(bad[0].why.contains("checksum"), "{}", bad[0].why);
    assert_eq!(s.len(), 1);
    assert!(bad[0].path.exists());
}
