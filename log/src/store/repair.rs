//! `wiretrail repair`: the operator's decision when recovery refuses to open
//! the log ([`StoreError::NeedsRepair`]). Runs with the collector stopped
//! (it takes the data directory's lock).
//!
//! The segments are scanned from leaf 0. At each frame that is not a whole,
//! hash-checked frame of the expected leaf index:
//! - **restore** when the leaf bytes are intact: if the bytes between this
//!   frame's header and the next readable frame (or the end of the log) hash
//!   to the frame's stored leaf hash (or to the `log/hashes` entry), as they
//!   are or once decompressed (a compressed body), only the header was
//!   damaged; it is rewritten (the old header is kept);
//! - otherwise **cut**: everything from that frame to the end of the log is
//!   moved to `repairs/<UTC ns>/` (the cut bytes, and whole later segments),
//!   unless a signed checkpoint covers the frame: then nothing is changed and
//!   the segment must be restored from a backup.
//!
//! With `--dry-run` the plan is computed and printed and nothing is written.
//! Otherwise the actions are applied, the derived files (`log/hashes`,
//! `log/offsets`, and after a cut `index.sqlite`) are removed so they are
//! rebuilt, and one `repair` collector entry per action is appended to the
//! log (so the repair is itself evidence).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::recover::frame_at;
use super::writer::{StoreConfig, Writer, sync_dir};
use super::{StoreError, list_segments, load_checkpoints, load_verifier, now_ns};
use crate::frame::{self, HEADER_LEN};
use crate::merkle::{Hash, leaf_hash};

/// One repair step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Action {
    /// "restore" (header rewritten) or "cut" (moved away to the end of the log).
    pub action: String,
    /// Leaf index of the frame.
    pub leaf: u64,
    /// Segment file.
    pub segment: PathBuf,
    /// Byte offset of the frame in it.
    pub offset: u64,
    /// Bytes rewritten (restore: the header) or cut (to the end of the log).
    pub bytes: u64,
    /// SHA-256 (hex) of the bytes replaced or cut.
    pub sha256: String,
    /// Where those bytes were kept (none in a dry run).
    pub copy: Option<PathBuf>,
    /// What was wrong.
    pub problem: String,
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// What a repair would do (or did).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The steps, in log order.
    pub actions: Vec<Action>,
    /// Leaves in the log after the repair (before the repair entries).
    pub size: u64,
}

/// A restored header for the frame at `off` of `buf` (leaf `n`), when its
/// leaf bytes still match its stored hash or the hashes-file entry `known`.
fn restore(buf: &[u8], off: usize, n: u64, known: Option<Hash>, next_first: Option<u64>) -> Option<Vec<u8>> {
    let start = off + HEADER_LEN;
    let stored: Option<Hash> = buf.get(off + 12..off + 44).and_then(|h| h.try_into().ok());
    let hashes: Vec<Hash> = stored.into_iter().chain(known).collect();
    if hashes.is_empty() || start > buf.len() {
        return None;
    }
    // Candidate ends: where a readable frame of leaf n+1 starts, or the end of
    // the segment when the next segment starts at leaf n+1 (or there is none).
    let mut ends: Vec<usize> = (start..buf.len()).filter(|&p| frame_at(buf, p, n + 1, n + 2).is_some()).collect();
    if next_first.is_none_or(|f| f == n + 1) {
        ends.push(buf.len());
    }
    for end in ends {
        let body = &buf[start..end];
        if body.len() > frame::MAX_LEAF_LEN {
            continue;
        }
        // The body as the leaf itself, or as its compressed form.
        for compressed in [false, true] {
            let h = frame::Header { len: body.len(), compressed, index: n, hash: [0; 32] };
            let Ok(leaf) = frame::decode_body(&h, body) else { continue };
            let lh = leaf_hash(&leaf);
            if hashes.contains(&lh) {
                let word = body.len() as u32 | if compressed { frame::COMPRESSED } else { 0 };
                let mut head = Vec::with_capacity(HEADER_LEN);
                head.extend_from_slice(&word.to_le_bytes());
                head.extend_from_slice(&n.to_le_bytes());
                head.extend_from_slice(&lh);
                return Some(head);
            }
        }
    }
    None
}

/// Computes the repair of `dir` and, unless `dry_run`, applies it.
pub fn repair(dir: &Path, dry_run: bool) -> Result<Plan, StoreError> {
    let log = dir.join("log");
    let checkpointed = match load_verifier(dir) {
        Ok(v) => {
            load_checkpoints(dir, &super::load_keyring(dir, &v)?)?.iter().map(|c| c.checkpoint.size).max().unwrap_or(0)
        }
        Err(_) => 0,
    };
    // Take the lock for the whole repair (a running collector holds it).
    let _lock = super::writer::lock_dir(dir)?;
    let segs = list_segments(&log)?;
    let hashes = std::fs::read(log.join("hashes")).unwrap_or_default();
    let known = |i: u64| -> Option<Hash> { hashes.get(i as usize * 32..i as usize * 32 + 32)?.try_into().ok() };
    let stamp = now_ns();
    let copies = dir.join("repairs").join(stamp.to_string());
    let mut actions = Vec::new();
    let mut n = 0u64;
    // Segments deleted by retention: their leaves are accounted for by their kept hashes.
    let gone: Vec<_> =
        super::kept::list_kept(&log)?.into_iter().filter(|g| !segs.iter().any(|s| s.0 == g.first)).collect();
    'segments: for (k, (_, path)) in segs.iter().enumerate() {
        while let Some(g) = gone.iter().find(|g| g.first == n) {
            n += g.count;
        }
        let mut buf = std::fs::read(path).map_err(StoreError::io("reading", path))?;
        let next_first = segs.get(k + 1).map(|s| s.0);
        let mut off = 0usize;
        while off < buf.len() {
            if let Some((_, end)) = frame_at(&buf, off, n, n + 1) {
                n += 1;
                off = end;
                continue;
            }
            let old_head = buf[off..(off + HEADER_LEN).min(buf.len())].to_vec();
            let problem = match buf.get(off..off + HEADER_LEN).and_then(|h| frame::header(h.try_into().ok()?)) {
                None => "bad frame header".to_string(),
                Some(h) if h.index != n => format!("frame holds leaf index {} where leaf {n} belongs", h.index),
                Some(_) => "frame does not match its hash".to_string(),
            };
            if let Some(head) = restore(&buf, off, n, known(n), next_first) {
                let mut copy = None;
                if !dry_run {
                    std::fs::create_dir_all(&copies).map_err(StoreError::io("creating", &copies))?;
                    let c = copies.join(format!("{}.header-at-{off}", file_name(path)));
                    write_copy(&c, &old_head)?;
                    let f =
                        std::fs::OpenOptions::new().write(true).open(path).map_err(StoreError::io("opening", path))?;
                    f.write_all_at(&head, off as u64)
                        .and_then(|_| f.sync_all())
                        .map_err(StoreError::io("writing", path))?;
                    copy = Some(c);
                }
                tracing::warn!(leaf = n, segment = %path.display(), offset = off, %problem, "frame header restored");
                buf[off..off + HEADER_LEN].copy_from_slice(&head);
                actions.push(Action {
                    action: "restore".into(),
                    leaf: n,
                    segment: path.clone(),
                    offset: off as u64,
                    bytes: HEADER_LEN as u64,
                    sha256: sha256_hex(&old_head),
                    copy,
                    problem,
                });
                continue;
            }
            if n < checkpointed {
                return Err(StoreError::NeedsRepair {
                    leaf: n,
                    path: path.clone(),
                    offset: off as u64,
                    problem: format!(
                        "{problem}; the leaf cannot be restored and a signed checkpoint covers {checkpointed} leaves, \
                         so repair will not cut it: restore this segment from a backup"
                    ),
                });
            }
            let cut = buf[off..].to_vec();
            let later: Vec<&PathBuf> = segs[k + 1..].iter().map(|s| &s.1).collect();
            let mut later_bytes = 0u64;
            for p in &later {
                later_bytes += std::fs::metadata(p).map_err(StoreError::io("stat", *p))?.len();
            }
            let mut copy = None;
            if !dry_run {
                std::fs::create_dir_all(&copies).map_err(StoreError::io("creating", &copies))?;
                let c = copies.join(format!("{}.from-{off}", file_name(path)));
                write_copy(&c, &cut)?;
                for p in &later {
                    let dst = copies.join(file_name(p));
                    std::fs::rename(p, &dst).map_err(StoreError::io("moving", *p))?;
                }
                let f = std::fs::OpenOptions::new().write(true).open(path).map_err(StoreError::io("opening", path))?;
                f.set_len(off as u64).and_then(|_| f.sync_all()).map_err(StoreError::io("truncating", path))?;
                sync_dir(&log)?;
                copy = Some(copies.clone());
            }
            tracing::warn!(leaf = n, segment = %path.display(), offset = off, %problem, "log cut");
            actions.push(Action {
                action: "cut".into(),
                leaf: n,
                segment: path.clone(),
                offset: off as u64,
                bytes: (buf.len() - off) as u64 + later_bytes,
                sha256: sha256_hex(&buf[off..]),
                copy,
                problem,
            });
            break 'segments;
        }
    }
    let plan = Plan { actions, size: n };
    if dry_run || plan.actions.is_empty() {
        return Ok(plan);
    }
    for f in ["log/hashes", "log/offsets"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    super::snapshot::remove_all(dir)?;
    if plan.actions.iter().any(|a| a.action == "cut") {
        for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    drop(_lock);
    let (mut w, _) = Writer::open(dir, StoreConfig::default())?;
    for a in &plan.actions {
        let detail = serde_json::to_value(a).expect("action serializes");
        let e = crate::entry::new(crate::entry::REPAIR, now_ns(), &file_name(&a.segment), detail, Vec::new());
        w.append(&[crate::entry::leaf(e, "")])?;
    }
    w.commit()?;
    Ok(plan)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn write_copy(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(StoreError::io("creating", path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(StoreError::io("writing", path))
}
