//! Opening a log after a clean stop or a crash.
//!
//! The segments are the truth. The derived files (`hashes`, `offsets`) may lag
//! or be torn: their last entry is checked against the segment, and every
//! complete frame after it is re-read into them.
//!
//! What may be cut, and only when nothing covered by a signed checkpoint is
//! touched (each cut is returned as a [`Cut`] and logged):
//! - a torn write at the very end of the last segment: a frame whose header
//!   or leaf runs past the end of the file, or a tail of zero bytes, with no
//!   readable frame anywhere after it;
//! - an incomplete trailing batch: the last leaf says its batch has more
//!   records than follow it (`batch_records`). A batch is acknowledged only
//!   once all its frames are durable, so neither was ever acknowledged.
//!
//! Anything else (a bad frame followed by readable data, a bad frame in an
//! earlier segment, a segment starting at the wrong leaf) is
//! [`StoreError::NeedsRepair`]: nothing is changed and the operator decides
//! with `wiretrail repair`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::kept::{KeptHead, NO_OFFSET, list_kept, read_hashes};
use super::tree::TreeCache;
use super::writer::sync_dir;
use super::{LeafBatch, StoreError, list_segments, segment_name};
use crate::frame::{self, HEADER_LEN};
use crate::merkle::Hash;

/// What recovery found.
pub struct Recovered {
    /// (first leaf index, byte length) of each segment.
    pub segments: Vec<(u64, u64)>,
    /// Number of leaves.
    pub size: u64,
    /// The rebuilt tree cache.
    pub tree: TreeCache,
    /// What was cut.
    pub cuts: Vec<Cut>,
    /// Kept files of segments deleted by retention (or being deleted).
    pub kept: Vec<KeptHead>,
    /// Whether the tree cache came from a snapshot (checked against the checkpoint by the caller).
    pub tree_from_snapshot: bool,
}

/// Bytes recovery cut from the end of the log (never acknowledged).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cut {
    /// The segment file.
    pub segment: PathBuf,
    /// Where the cut started.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Complete frames among them (leaves `first_leaf..first_leaf + leaves`).
    pub leaves: u64,
    /// Index the first removed frame had (or would have had).
    pub first_leaf: u64,
    /// Why.
    pub reason: String,
    /// The batch the frames belonged to, when known: (agent id, boot id, seq).
    pub batch: Option<(String, String, u64)>,
}

/// Reads the frame at `off`; `None` unless it is whole and its hash matches.
pub(super) fn read_frame_at(f: &File, off: u64) -> Option<(frame::Header, Vec<u8>)> {
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact_at(&mut hb, off).ok()?;
    let h = frame::header(&hb)?;
    let mut body = vec![0u8; h.len];
    f.read_exact_at(&mut body, off + HEADER_LEN as u64).ok()?;
    let leaf = frame::checked_leaf(&h, &body).ok()?.into_owned();
    Some((h, leaf))
}

/// Whether a whole, hash-checked frame with an index in `min..max` starts at `p` of `buf`.
pub(super) fn frame_at(buf: &[u8], p: usize, min: u64, max: u64) -> Option<(frame::Header, usize)> {
    let head: &[u8; HEADER_LEN] = buf.get(p..p + HEADER_LEN)?.try_into().ok()?;
    let idx = u64::from_le_bytes(head[4..12].try_into().ok()?);
    if idx < min || idx >= max {
        return None;
    }
    let h = frame::header(head)?;
    let body = buf.get(p + HEADER_LEN..p + h.frame_len())?;
    frame::checked_leaf(&h, body).ok()?;
    Some((h, p + h.frame_len()))
}

/// Whether the bytes of `f` from `off` (where leaf `n` should start) are a
/// proven torn write: the frame there runs past the end of the file or the
/// tail is all zeros, and no readable frame starts anywhere after `off`.
fn torn_tail(f: &File, off: u64, flen: u64, n: u64) -> Result<Option<String>, std::io::Error> {
    let mut tail = vec![0u8; (flen - off) as usize];
    f.read_exact_at(&mut tail, off)?;
    let runs_past = match tail.get(..HEADER_LEN).and_then(|h| frame::header(h.try_into().ok()?)) {
        None => tail.len() < HEADER_LEN,
        Some(h) => h.frame_len() > tail.len(),
    };
    let zeros = tail.iter().all(|&b| b == 0);
    if !runs_past && !zeros {
        return Ok(None);
    }
    let max = n + 1 + (tail.len() / HEADER_LEN) as u64;
    if (1..tail.len()).any(|p| frame_at(&tail, p, n, max).is_some()) {
        return Ok(None);
    }
    Ok(Some(if zeros { "zero-filled tail".into() } else { "frame runs past the end of the file".into() }))
}

/// Recovers the log in `log`; `checkpointed` leaves are covered by a signed
/// checkpoint and are never cut.
pub fn recover(log: &Path, checkpointed: u64) -> Result<Recovered, StoreError> {
    let mut segs = list_segments(log)?;
    let kept = list_kept(log)?;
    // Ranges whose segment is gone: their hashes come from the kept file.
    let gone: Vec<&KeptHead> = kept.iter().filter(|k| !segs.iter().any(|s| s.0 == k.first)).collect();
    let gone_at = |i: u64| gone.iter().find(|k| k.first <= i && i < k.first + k.count).copied();
    if segs.is_empty() && !gone.is_empty() {
        return Err(StoreError::Inconsistent("kept hashes of deleted segments but no segment file".into()));
    }
    if segs.is_empty() {
        let p = log.join(segment_name(0));
        File::create(&p).map_err(StoreError::io("creating", &p))?;
        sync_dir(log)?;
        segs.push((0, p));
    }
    if segs[0].0 != 0 && gone_at(0).is_none() {
        return Err(StoreError::NeedsRepair {
            leaf: 0,
            path: segs[0].1.clone(),
            offset: 0,
            problem: format!("first segment starts at leaf {}, not 0", segs[0].0),
        });
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
    let seg_index_of = |i: u64, segs: &[(u64, PathBuf)]| segs.partition_point(|s| s.0 <= i) - 1;
    let files: Vec<File> =
        segs.iter().map(|(_, p)| File::open(p).map_err(StoreError::io("opening", p))).collect::<Result<_, _>>()?;
    // Check the derived files' last entry against its frame.
    while n > 0 {
        let i = n - 1;
        if let Some(g) = gone_at(i) {
            n = g.first;
            continue;
        }
        let k = seg_index_of(i, &segs);
        let mut ob = [0u8; 8];
        let mut hb: Hash = [0; 32];
        let ok = offsets.read_exact_at(&mut ob, i * 8).is_ok()
            && hashes.read_exact_at(&mut hb, i * 32).is_ok()
            && read_frame_at(&files[k], u64::from_le_bytes(ob)).is_some_and(|(h, _)| h.index == i && h.hash == hb);
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
        let k = seg_index_of(n - 1, &segs);
        let mut ob = [0u8; 8];
        offsets.read_exact_at(&mut ob, (n - 1) * 8).map_err(StoreError::io("reading", &op))?;
        let o = u64::from_le_bytes(ob);
        let (h, _) = read_frame_at(&files[k], o).expect("checked above");
        (k, o + h.frame_len() as u64)
    };
    let mut hw = std::io::BufWriter::new(&hashes);
    let mut ow = std::io::BufWriter::new(&offsets);
    hw.seek(SeekFrom::End(0)).map_err(StoreError::io("seeking", &hp))?;
    ow.seek(SeekFrom::End(0)).map_err(StoreError::io("seeking", &op))?;
    // Appends the kept hashes of deleted segments starting at leaf `n` (no offsets).
    let fill = |n: &mut u64, hw: &mut std::io::BufWriter<&File>, ow: &mut std::io::BufWriter<&File>| {
        while let Some(g) = gone.iter().find(|g| g.first == *n) {
            for h in read_hashes(g)? {
                hw.write_all(&h).map_err(StoreError::io("writing", &hp))?;
                ow.write_all(&NO_OFFSET.to_le_bytes()).map_err(StoreError::io("writing", &op))?;
            }
            *n += g.count;
        }
        Ok::<(), StoreError>(())
    };
    if n == 0 {
        fill(&mut n, &mut hw, &mut ow)?;
        if segs[0].0 != n {
            return Err(StoreError::NeedsRepair {
                leaf: n,
                path: segs[0].1.clone(),
                offset: 0,
                problem: format!("first segment starts at leaf {}, not {n}", segs[0].0),
            });
        }
    }
    let mut seg_lens = Vec::with_capacity(segs.len());
    for j in 0..k {
        seg_lens.push(files[j].metadata().map_err(StoreError::io("stat", &segs[j].1))?.len());
    }
    let mut recovered = 0u64;
    let mut cuts = Vec::new();
    loop {
        let path = &segs[k].1;
        let last = k + 1 == segs.len();
        let flen = files[k].metadata().map_err(StoreError::io("stat", path))?.len();
        let mut r = BufReader::with_capacity(1 << 20, &files[k]);
        r.seek(SeekFrom::Start(off)).map_err(StoreError::io("seeking", path))?;
        let mut body = Vec::new();
        while off < flen {
            let mut hb = [0u8; HEADER_LEN];
            let header = if off + HEADER_LEN as u64 <= flen && r.read_exact(&mut hb).is_ok() {
                frame::header(&hb)
            } else {
                None
            };
            let whole = header.filter(|h| off + h.frame_len() as u64 <= flen);
            // Why the whole frame at `off` is not leaf n (a body that does not decompress counts as a hash mismatch).
            let mut mismatch = None;
            if let Some(h) = whole {
                body.resize(h.len, 0);
                r.read_exact(&mut body).map_err(StoreError::io("reading", path))?;
                let checked = if h.index == n { frame::checked_leaf(&h, &body).map(|_| ()) } else { Ok(()) };
                if let Err(e) = &checked {
                    mismatch = Some(e.to_string());
                }
                if h.index == n && checked.is_ok() {
                    hw.write_all(&h.hash).map_err(StoreError::io("writing", &hp))?;
                    ow.write_all(&off.to_le_bytes()).map_err(StoreError::io("writing", &op))?;
                    n += 1;
                    recovered += 1;
                    off += h.frame_len() as u64;
                    continue;
                }
            }
            let repair =
                |problem: String| StoreError::NeedsRepair { leaf: n, path: path.clone(), offset: off, problem };
            let torn =
                if last { torn_tail(&files[k], off, flen, n).map_err(StoreError::io("reading", path))? } else { None };
            let Some(reason) = torn else {
                let problem = match whole {
                    Some(h) if h.index != n => format!("frame holds leaf index {} where leaf {n} belongs", h.index),
                    Some(_) => format!("frame does not match its hash ({})", mismatch.unwrap_or_default()),
                    None if last => "bad frame header, and readable frames follow it".to_string(),
                    None => "bad or truncated frame in a segment that is not the last".to_string(),
                };
                return Err(repair(problem));
            };
            if n < checkpointed {
                return Err(repair(format!("{reason}, but a signed checkpoint covers {checkpointed} leaves")));
            }
            tracing::warn!(segment = %path.display(), offset = off, bytes = flen - off, leaf = n, %reason,
                "cutting a torn (never acknowledged) write at the end of the log");
            truncate(path, off)?;
            cuts.push(Cut {
                segment: path.clone(),
                offset: off,
                bytes: flen - off,
                leaves: 0,
                first_leaf: n,
                reason,
                batch: None,
            });
            break;
        }
        seg_lens.push(off);
        if last {
            break;
        }
        k += 1;
        off = 0;
        fill(&mut n, &mut hw, &mut ow)?;
        if segs[k].0 != n {
            return Err(StoreError::NeedsRepair {
                leaf: n,
                path: segs[k].1.clone(),
                offset: 0,
                problem: format!("segment starts at leaf {} but the previous one ends at leaf {n}", segs[k].0),
            });
        }
    }
    hw.flush().map_err(StoreError::io("writing", &hp))?;
    ow.flush().map_err(StoreError::io("writing", &op))?;
    drop((hw, ow));
    if recovered > 0 {
        tracing::info!(leaves = recovered, "re-derived hashes and offsets from segments");
    }
    if let Some(c) = cut_incomplete_batch(&segs, &files, &offsets, n, checkpointed)? {
        n = c.first_leaf;
        hashes.set_len(n * 32).map_err(StoreError::io("truncating", &hp))?;
        offsets.set_len(n * 8).map_err(StoreError::io("truncating", &op))?;
        // Segments after the one holding the cut are gone; the cut one ends at the cut.
        let ks = seg_index_of(c.first_leaf, &segs);
        for (_, p) in &segs[ks + 1..] {
            std::fs::remove_file(p).map_err(StoreError::io("removing", p))?;
        }
        segs.truncate(ks + 1);
        seg_lens.truncate(ks);
        seg_lens.push(c.offset);
        sync_dir(log)?;
        // A torn frame of the same batch was cut just before: one cut.
        let c = match cuts.pop() {
            Some(t) if t.first_leaf == n + c.leaves => {
                Cut { bytes: c.bytes + t.bytes, reason: format!("{} (its last frame torn)", c.reason), ..c }
            }
            Some(t) => {
                cuts.push(t);
                c
            }
            None => c,
        };
        cuts.push(c);
    }
    hashes.sync_all().map_err(StoreError::io("syncing", &hp))?;
    offsets.sync_all().map_err(StoreError::io("syncing", &op))?;
    let dir = log.parent().unwrap_or(Path::new("."));
    let (tree, tree_from_snapshot) = tree_of(dir, &hp, n, true)?;
    let segments = segs.iter().map(|s| s.0).zip(seg_lens).collect();
    Ok(Recovered { segments, size: n, tree, cuts, kept, tree_from_snapshot })
}

/// Name of the tree cache's snapshot.
pub(super) const TREE_SNAPSHOT: &str = "tree";

/// The tree cache of the first `n` leaf hashes of `hp`: from the snapshot
/// when `use_snapshot` and it matches the hashes file, the rest pushed from
/// the file. Returns whether the snapshot was used.
pub(super) fn tree_of(dir: &Path, hp: &Path, n: u64, use_snapshot: bool) -> Result<(TreeCache, bool), StoreError> {
    let f = File::open(hp).map_err(StoreError::io("opening", hp))?;
    let at = |i: u64| {
        let mut h: Hash = [0; 32];
        f.read_exact_at(&mut h, i * 32).ok().map(|_| h)
    };
    let snap = use_snapshot
        .then(|| super::snapshot::load(dir, TREE_SNAPSHOT))
        .flatten()
        .filter(|l| l.matches(n, at))
        .and_then(|l| TreeCache::decode(&l.body).filter(|t| t.size() == l.size));
    let used = snap.is_some();
    let mut tree = snap.unwrap_or_default();
    let from = tree.size();
    let mut r = BufReader::with_capacity(1 << 20, &f);
    r.seek(SeekFrom::Start(from * 32)).map_err(StoreError::io("reading", hp))?;
    let mut hb: Hash = [0; 32];
    for _ in from..n {
        r.read_exact(&mut hb).map_err(StoreError::io("reading", hp))?;
        tree.push(hb);
    }
    tracing::info!(leaves = n, from_snapshot = from, hashed = n - from, "tree cache ready");
    Ok((tree, used))
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let f = OpenOptions::new().write(true).open(path).map_err(StoreError::io("opening", path))?;
    f.set_len(len).and_then(|_| f.sync_all()).map_err(StoreError::io("truncating", path))
}

/// Cuts the last batch of a log of `n` leaves when it is incomplete.
fn cut_incomplete_batch(
    segs: &[(u64, PathBuf)],
    files: &[File],
    offsets: &File,
    n: u64,
    checkpointed: u64,
) -> Result<Option<Cut>, StoreError> {
    if n == 0 {
        return Ok(None);
    }
    let seg_index_of = |i: u64| segs.partition_point(|s| s.0 <= i) - 1;
    let offset_of = |i: u64| -> Result<u64, StoreError> {
        let mut ob = [0u8; 8];
        offsets.read_exact_at(&mut ob, i * 8).map_err(StoreError::io("reading", "log/offsets"))?;
        Ok(u64::from_le_bytes(ob))
    };
    let leaf_at = |i: u64| -> Result<LeafBatch, StoreError> {
        let k = seg_index_of(i);
        let (_, bytes) = read_frame_at(&files[k], offset_of(i)?)
            .ok_or_else(|| StoreError::Inconsistent(format!("leaf {i} unreadable after recovery")))?;
        LeafBatch::decode_leaf(&bytes).map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))
    };
    let last = leaf_at(n - 1)?;
    if !last.ends_incomplete_batch() {
        return Ok(None);
    }
    let first = n - 1 - last.index_in_batch as u64;
    let head = leaf_at(first)?;
    let k = seg_index_of(first);
    let offset = offset_of(first)?;
    let path = segs[k].1.clone();
    if (head.agent_id.as_str(), head.boot_id.as_str(), head.seq, head.index_in_batch)
        != (last.agent_id.as_str(), last.boot_id.as_str(), last.seq, 0)
    {
        return Err(StoreError::NeedsRepair {
            leaf: first,
            path,
            offset,
            problem: format!(
                "the last batch (seq {}) is incomplete and its first leaf is not where expected",
                last.seq
            ),
        });
    }
    if first < checkpointed {
        return Err(StoreError::NeedsRepair {
            leaf: first,
            path,
            offset,
            problem: format!("the last batch is incomplete but a signed checkpoint covers {checkpointed} leaves"),
        });
    }
    let total: u64 =
        (k..segs.len()).map(|j| files[j].metadata().map(|m| m.len()).unwrap_or(0)).sum::<u64>().saturating_sub(offset);
    tracing::warn!(segment = %path.display(), offset, leaves = n - first, of = last.batch_records,
        agent = %crate::text::escape(&last.agent_id), seq = last.seq,
        "cutting an incomplete (never acknowledged) batch at the end of the log");
    truncate(&path, offset)?;
    Ok(Some(Cut {
        segment: path,
        offset,
        bytes: total,
        leaves: n - first,
        first_leaf: first,
        reason: format!("incomplete batch: {} of {} records", n - first, last.batch_records),
        batch: Some((last.agent_id, last.boot_id, last.seq)),
    }))
}
