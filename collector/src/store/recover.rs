//! Opening a log after a clean stop or a crash.
//!
//! The segments are the truth. The derived files (`hashes`, `offsets`) may lag
//! or be torn: their last entry is checked against the segment, and every
//! complete frame after it is re-read into them. An incomplete frame at the end
//! of the last segment is an unacknowledged torn write and is cut off; any other
//! bad frame stops the opening with an error.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::frame::{self, HEADER_LEN};
use super::tree::TreeCache;
use super::writer::sync_dir;
use super::{StoreError, list_segments, segment_name};
use crate::merkle::{Hash, leaf_hash};

/// What recovery found.
pub struct Recovered {
    /// (first leaf index, byte length) of each segment.
    pub segments: Vec<(u64, u64)>,
    /// Number of leaves.
    pub size: u64,
    /// The rebuilt tree cache.
    pub tree: TreeCache,
}

fn read_frame_at(f: &File, off: u64) -> Option<(frame::Header, Vec<u8>)> {
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact_at(&mut hb, off).ok()?;
    let h = frame::header(&hb)?;
    let mut leaf = vec![0u8; h.len];
    f.read_exact_at(&mut leaf, off + HEADER_LEN as u64).ok()?;
    Some((h, leaf))
}

/// Recovers the log in `log`.
pub fn recover(log: &Path) -> Result<Recovered, StoreError> {
    let mut segs = list_segments(log)?;
    if segs.is_empty() {
        let p = log.join(segment_name(0));
        File::create(&p).map_err(StoreError::io("creating", &p))?;
        sync_dir(log)?;
        segs.push((0, p));
    }
    if segs[0].0 != 0 {
        return Err(StoreError::Inconsistent(format!("first segment starts at leaf {}, not 0", segs[0].0)));
    }
    let hp = log.join("hashes");
    let op = log.join("offsets");
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(StoreError::io("opening", p))
    };
    let (hashes, offsets) = (open(&hp)?, open(&op)?);
    let hlen = hashes.metadata().map_err(StoreError::io("stat", &hp))?.len();
    let olen = offsets.metadata().map_err(StoreError::io("stat", &op))?.len();
    let mut n = (hlen / 32).min(olen / 8);
    let seg_index_of = |i: u64| segs.partition_point(|s| s.0 <= i) - 1;
    let files: Vec<File> =
        segs.iter().map(|(_, p)| File::open(p).map_err(StoreError::io("opening", p))).collect::<Result<_, _>>()?;
    // Check the derived files' last entry against its frame.
    while n > 0 {
        let i = n - 1;
        let k = seg_index_of(i);
        let mut ob = [0u8; 8];
        let mut hb: Hash = [0; 32];
        let ok = offsets.read_exact_at(&mut ob, i * 8).is_ok()
            && hashes.read_exact_at(&mut hb, i * 32).is_ok()
            && read_frame_at(&files[k], u64::from_le_bytes(ob))
                .is_some_and(|(h, leaf)| h.index == i && h.hash == hb && leaf_hash(&leaf) == hb);
        if ok {
            break;
        }
        tracing::warn!(leaf = i, "derived files disagree with the segment; rebuilding from segment start");
        n = if segs[k].0 < i { segs[k].0 } else { i };
    }
    hashes.set_len(n * 32).map_err(StoreError::io("truncating", &hp))?;
    offsets.set_len(n * 8).map_err(StoreError::io("truncating", &op))?;
    // Where leaf n starts.
    let (mut k, mut off) = if n == 0 {
        (0, 0)
    } else {
        let k = seg_index_of(n - 1);
        let mut ob = [0u8; 8];
        offsets.read_exact_at(&mut ob, (n - 1) * 8).map_err(StoreError::io("reading", &op))?;
        let o = u64::from_le_bytes(ob);
        let (h, _) = read_frame_at(&files[k], o).expect("checked above");
        (k, o + (HEADER_LEN + h.len) as u64)
    };
    let mut hw = std::io::BufWriter::new(&hashes);
    let mut ow = std::io::BufWriter::new(&offsets);
    hw.seek(SeekFrom::End(0)).map_err(StoreError::io("seeking", &hp))?;
    ow.seek(SeekFrom::End(0)).map_err(StoreError::io("seeking", &op))?;
    let mut seg_lens = Vec::with_capacity(segs.len());
    for (j, (first, _)) in segs.iter().enumerate().take(k) {
        let _ = first;
        seg_lens.push(files[j].metadata().map_err(StoreError::io("stat", &segs[j].1))?.len());
    }
    let mut recovered = 0u64;
    loop {
        let path = &segs[k].1;
        let last = k + 1 == segs.len();
        let flen = files[k].metadata().map_err(StoreError::io("stat", path))?.len();
        let mut r = BufReader::with_capacity(1 << 20, &files[k]);
        r.seek(SeekFrom::Start(off)).map_err(StoreError::io("seeking", path))?;
        while off < flen {
            let mut hb = [0u8; HEADER_LEN];
            let complete = off + HEADER_LEN as u64 <= flen && r.read_exact(&mut hb).is_ok();
            let header = if complete { frame::header(&hb) } else { None };
            let frame_end = header.map(|h| off + (HEADER_LEN + h.len) as u64);
            match (header, frame_end) {
                (Some(h), Some(end)) if end <= flen => {
                    let mut leaf = vec![0u8; h.len];
                    r.read_exact(&mut leaf).map_err(StoreError::io("reading", path))?;
                    if h.index != n || leaf_hash(&leaf) != h.hash {
                        return Err(StoreError::Inconsistent(format!(
                            "segment {} offset {off}: frame for leaf {n} is corrupt",
                            path.display()
                        )));
                    }
                    hw.write_all(&h.hash).map_err(StoreError::io("writing", &hp))?;
                    ow.write_all(&off.to_le_bytes()).map_err(StoreError::io("writing", &op))?;
                    n += 1;
                    recovered += 1;
                    off = end;
                }
                (Some(_), _) | (None, _) if last && (!complete || frame_end.is_some_and(|e| e > flen)) => {
                    tracing::warn!(segment = %path.display(), offset = off, bytes = flen - off,
                        "cutting off an incomplete (never acknowledged) frame at the end of the log");
                    let f = OpenOptions::new().write(true).open(path).map_err(StoreError::io("opening", path))?;
                    f.set_len(off).and_then(|_| f.sync_all()).map_err(StoreError::io("truncating", path))?;
                    break;
                }
                _ => {
                    return Err(StoreError::Inconsistent(format!(
                        "segment {} offset {off}: bad frame header for leaf {n}",
                        path.display()
                    )));
                }
            }
        }
        seg_lens.push(off);
        if last {
            break;
        }
        k += 1;
        off = 0;
        if segs[k].0 != n {
            return Err(StoreError::Inconsistent(format!("segment {} should start at leaf {n}", segs[k].1.display())));
        }
    }
    hw.flush().map_err(StoreError::io("writing", &hp))?;
    ow.flush().map_err(StoreError::io("writing", &op))?;
    drop((hw, ow));
    hashes.sync_all().map_err(StoreError::io("syncing", &hp))?;
    offsets.sync_all().map_err(StoreError::io("syncing", &op))?;
    if recovered > 0 {
        tracing::info!(leaves = recovered, "re-derived hashes and offsets from segments");
    }
    // Rebuild the tree cache from the hashes file.
    let mut tree = TreeCache::default();
    let mut r = BufReader::with_capacity(1 << 20, File::open(&hp).map_err(StoreError::io("opening", &hp))?);
    let mut hb: Hash = [0; 32];
    for _ in 0..n {
        r.read_exact(&mut hb).map_err(StoreError::io("reading", &hp))?;
        tree.push(hb);
    }
    let segments = segs.iter().map(|s| s.0).zip(seg_lens).collect();
    Ok(Recovered { segments, size: n, tree })
}
