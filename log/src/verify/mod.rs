//! `verify`: re-reads every segment, recomputes every leaf hash and the tree,
//! and checks them against the signed checkpoints. Reports the index of the
//! first bad record.
//!
//! Keys: verification starts from the log's first key (pinned) and follows
//! the key history (`keys/history.jsonl`): each checkpoint must be signed by
//! the key valid at its size, each rotated-in key must be named by the
//! `key_rotation` entry at the leaf the history gives, and that entry must be
//! covered by a checkpoint of the old key.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub mod background;
mod frames;

pub use frames::default_threads;

use crate::frame;
use crate::merkle::{Hash, KeyRing, Verifier, node_hash};
use crate::store::kept::{KeptHead, list_kept, read_hashes};
use crate::store::{StoreError, list_segments, load_checkpoints};

/// Compact Merkle frontier: the perfect subtrees covering the leaves so far.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Frontier {
    /// Number of leaves.
    pub size: u64,
    /// (height, hash) of each perfect subtree, left to right.
    pub nodes: Vec<(u32, String)>,
    /// Same as `nodes`, decoded.
    #[serde(skip)]
    decoded: Vec<(u32, Hash)>,
}

impl Frontier {
    fn push(&mut self, h: Hash) {
        self.decoded.push((0, h));
        self.size += 1;
        while self.decoded.len() >= 2 {
            let n = self.decoded.len();
            if self.decoded[n - 1].0 != self.decoded[n - 2].0 {
                break;
            }
            let (lvl, r) = self.decoded.pop().expect("len >= 2");
            let (_, l) = self.decoded.pop().expect("len >= 2");
            self.decoded.push((lvl + 1, node_hash(&l, &r)));
        }
    }

    /// Root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.decoded.iter().rev();
        let Some((_, mut r)) = it.next().copied() else {
            return crate::merkle::EMPTY_ROOT;
        };
        for (_, l) in it {
            r = node_hash(l, &r);
        }
        r
    }

    fn encode(&mut self) {
        self.nodes = self.decoded.iter().map(|(l, h)| (*l, hex::encode(h))).collect();
    }

    fn decode(&mut self) -> Result<(), String> {
        self.decoded = self
            .nodes
            .iter()
            .map(|(l, h)| {
                hex::decode(h).ok().and_then(|v| v.try_into().ok()).map(|h| (*l, h)).ok_or("bad hash in state")
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }
}

/// What verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Leaves read and checked.
    pub leaves: u64,
    /// Segment bytes read (frames as stored, compressed or not).
    pub bytes: u64,
    /// Leaf bytes checked (uncompressed).
    pub leaf_bytes: u64,
    /// Signed checkpoints whose root was recomputed and matched.
    pub checkpoints_checked: usize,
    /// Index of the first bad record, if any.
    pub first_bad: Option<u64>,
    /// What is wrong with it.
    pub problem: Option<String>,
    /// Largest checkpoint size verified (where incremental verification resumes).
    pub verified_size: u64,
    /// Leaves of segments deleted by retention, verified by their kept hash only.
    pub kept_hash_only: u64,
}

/// Saved state for incremental verification (kept by the verifier, e.g. `--state FILE`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Frontier at the last verified checkpoint.
    pub frontier: Frontier,
}

/// Errors that stop verification before any record can be judged.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading the store (or a checkpoint signature) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state file is unusable.
    #[error("verification state: {0}")]
    State(String),
    /// Stopped by its caller before the end.
    #[error("verification cancelled")]
    Cancelled,
}

/// Verifies the log in `dir` from its first key `first` (and the key history
/// in `dir`). `resume` continues from a saved state; `progress`
/// is called with (leaves, leaf bytes) regularly. Returns the report and, when no
/// problem was found, the new state.
pub fn verify(
    dir: &Path,
    first: &Verifier,
    resume: Option<State>,
    progress: impl FnMut(u64, u64),
) -> Result<(Report, Option<State>), VerifyError> {
    let keys = crate::store::load_keyring(dir, first)?;
    verify_upto(dir, &keys, resume, None, default_threads(), &AtomicBool::new(false), progress)
}

/// [`verify`] of the first `upto` leaves only (all with `None`): a live
/// collector's log is verified up to a checkpoint it has issued, since the
/// leaves after it may still be being written. Setting `cancel` stops it
/// (checked at each segment and every 64 MB) with [`VerifyError::Cancelled`].
/// Leaves are decompressed and hashed on `threads` threads ([`verify`]
/// uses [`default_threads`]).
pub fn verify_upto(
    dir: &Path,
    keys: &KeyRing,
    resume: Option<State>,
    upto: Option<u64>,
    threads: usize,
    cancel: &AtomicBool,
    mut progress: impl FnMut(u64, u64),
) -> Result<(Report, Option<State>), VerifyError> {
    let upto = upto.unwrap_or(u64::MAX);
    let mut checkpoints = load_checkpoints(dir, keys)?;
    checkpoints.retain(|c| c.checkpoint.size <= upto);
    // Leaf index of each rotation entry -> (old key, new key).
    let ep = keys.epochs();
    let rotations: std::collections::BTreeMap<u64, (String, String)> = (1..ep.len())
        .filter_map(|k| {
            let e = &ep[k];
            Some((e.entry_index?, (ep[k - 1].verifier.key_string(), e.verifier.key_string())))
        })
        .collect();
    let log = dir.join("log");
    let segs = list_segments(&log)?;
    let hashes = File::open(log.join("hashes")).ok();
    let mut kept: Vec<KeptHead> =
        list_kept(&log)?.into_iter().filter(|k| !segs.iter().any(|s| s.0 == k.first)).collect();
    let mut hb0 = [0u8; 32];
    let mut fr = match resume {
        Some(mut s) => {
            s.frontier.decode().map_err(VerifyError::State)?;
            if !checkpoints
                .iter()
                .any(|c| c.checkpoint.size == s.frontier.size && c.checkpoint.root == s.frontier.root())
            {
                return Err(VerifyError::State("state does not match any signed checkpoint".into()));
            }
            s.frontier
        }
        None => Frontier::default(),
    };
    let start = fr.size;
    let mut report = Report {
        leaves: 0,
        bytes: 0,
        leaf_bytes: 0,
        checkpoints_checked: 0,
        first_bad: None,
        problem: None,
        verified_size: start,
        kept_hash_only: 0,
    };
    let mut state = State { frontier: fr.clone() };
    let mut cps = checkpoints.iter().filter(|c| c.checkpoint.size > start).peekable();
    let bad = |report: &mut Report, i: u64, p: String| {
        report.first_bad = Some(i);
        report.problem = Some(p);
    };
    for e in &ep[1..] {
        let (Some(a), Some(i)) = (e.after, e.entry_index) else { continue };
        if a <= upto && !checkpoints.iter().any(|c| c.checkpoint.size == a) {
            bad(
                &mut report,
                i,
                format!("no checkpoint of size {a} by the old key covers the rotation to {}", e.verifier.key_string()),
            );
            progress(0, 0);
            return Ok((report, None));
        }
    }
    let mut n = start;
    let mut last_progress = 0u64;
    'segments: for (k, (first, path)) in segs.iter().enumerate() {
        let next_first = segs.get(k + 1).map(|s| s.0).unwrap_or(u64::MAX);
        if next_first <= start {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(VerifyError::Cancelled);
        }
        // Segments deleted by retention: their kept hashes are checked against the checkpoints.
        while *first > n
            && let Some(g) = kept.iter().find(|g| g.first <= n && n < g.first + g.count)
        {
            let kept_hashes = read_hashes(g)?;
            for (j, lh) in kept_hashes.into_iter().enumerate() {
                let i = g.first + j as u64;
                if i < n {
                    continue;
                }
                if i >= upto {
                    break 'segments;
                }
                if let Some(hf) = &hashes
                    && hf.read_exact_at(&mut hb0, i * 32).is_ok()
                    && hb0 != lh
                {
                    bad(&mut report, i, format!("kept hash in {} does not match the hashes file", g.path.display()));
                    break 'segments;
                }
                fr.push(lh);
                report.kept_hash_only += 1;
                if !at_checkpoint(i + 1, &fr, &mut report, &mut state, &mut cps) {
                    break 'segments;
                }
            }
            n = g.first + g.count;
        }
        if *first > n {
            bad(&mut report, n, format!("records {n}..{first} missing: segment {} starts at {first}", path.display()));
            break;
        }
        let f = match File::open(path) {
            Ok(f) => f,
            // Deleted by retention while verifying: its kept hashes stand in (next iteration).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && let Some(g) = list_kept(&log)?.into_iter().find(|g| g.first == *first) =>
            {
                kept.push(g);
                continue;
            }
            Err(source) => return Err(StoreError::Io { what: "opening", path: path.clone(), source }.into()),
        };
        let len = f.metadata().map_err(|source| StoreError::Io { what: "stat", path: path.clone(), source })?.len();
        let mut off = 0u64;
        if n > *first {
            // Resume inside this segment at the frame of leaf n (as the offsets file says;
            // a wrong offset shows up as a frame for the wrong index).
            let mut ob = [0u8; 8];
            File::open(log.join("offsets"))
                .and_then(|o| o.read_exact_at(&mut ob, n * 8))
                .map_err(|source| StoreError::Io { what: "reading", path: log.join("offsets"), source })?;
            off = u64::from_le_bytes(ob);
        }
        let mut r = BufReader::with_capacity(4 << 20, f);
        r.seek(SeekFrom::Start(off)).map_err(|source| StoreError::Io {
            what: "seeking",
            path: path.clone(),
            source,
        })?;
        let mut chunk = frames::Chunk::default();
        let mut hbuf = Vec::new();
        while off < len {
            if n >= upto {
                break 'segments;
            }
            let malformed = chunk.read(&mut r, off, len, upto - n).map_err(|source| StoreError::Io {
                what: "reading",
                path: path.clone(),
                source,
            })?;
            let leaves = chunk.hash_all(threads);
            // The hashes file's entries for the chunk, in one read (as many as it holds).
            hbuf.resize(chunk.frames.len() * 32, 0);
            let have = hashes.as_ref().map_or(0, |hf| frames::read_up_to(hf, &mut hbuf, n * 32));
            for (k, ((h, _), res)) in chunk.frames.iter().zip(leaves).enumerate() {
                if h.index != n {
                    bad(
                        &mut report,
                        n,
                        format!("record out of place: frame for leaf {} found where leaf {n} belongs", h.index),
                    );
                    break 'segments;
                }
                // A compressed body that does not decompress is judged like a hash mismatch.
                let (lh, leaf_len) = match res {
                    Ok(x) => x,
                    Err(e) => {
                        bad(&mut report, n, format!("record bytes do not match the leaf hash stored with them ({e})"));
                        break 'segments;
                    }
                };
                if lh != h.hash {
                    bad(&mut report, n, "record bytes do not match the leaf hash stored with them".into());
                    break 'segments;
                }
                if (k + 1) * 32 <= have && hbuf[k * 32..(k + 1) * 32] != lh {
                    bad(&mut report, n, "record does not match the hashes file".into());
                    break 'segments;
                }
                if let Some((old, new)) = rotations.get(&n) {
                    let leaf =
                        frame::decode_body(h, chunk.body(k)).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
                    if let Err(why) = crate::keychain::check_entry_leaf(&leaf, old, new) {
                        bad(&mut report, n, format!("the key history says leaf {n} rotates {old} -> {new}, but {why}"));
                        break 'segments;
                    }
                }
                fr.push(lh);
                n += 1;
                off += h.frame_len() as u64;
                report.leaves += 1;
                report.bytes += h.frame_len() as u64;
                report.leaf_bytes += leaf_len as u64;
                if report.leaf_bytes - last_progress >= 64 << 20 {
                    last_progress = report.leaf_bytes;
                    progress(report.leaves, report.leaf_bytes);
                    if cancel.load(Ordering::Relaxed) {
                        return Err(VerifyError::Cancelled);
                    }
                }
                if !at_checkpoint(n, &fr, &mut report, &mut state, &mut cps) {
                    break 'segments;
                }
            }
            if malformed {
                bad(&mut report, n, format!("malformed or truncated frame at {}:{off}", path.display()));
                break 'segments;
            }
        }
        if next_first != u64::MAX && next_first != n && !kept.iter().any(|g| g.first == n) {
            bad(
                &mut report,
                n,
                format!("segment {} ends at leaf {n} but the next starts at {next_first}", path.display()),
            );
            break;
        }
    }
    if report.first_bad.is_none()
        && let Some(cp) = cps.next()
    {
        bad(
            &mut report,
            n,
            format!("log truncated: a signed checkpoint covers {} records but the log holds {n}", cp.checkpoint.size),
        );
    }
    progress(report.leaves, report.leaf_bytes);
    if report.first_bad.is_some() {
        return Ok((report, None));
    }
    state.frontier.encode();
    Ok((report, Some(state)))
}

/// Checks the frontier of `n` leaves against the next checkpoint when it has
/// that size; false (with the report's problem set) when it differs.
fn at_checkpoint<'a>(
    n: u64,
    fr: &Frontier,
    report: &mut Report,
    state: &mut State,
    cps: &mut std::iter::Peekable<impl Iterator<Item = &'a crate::merkle::SignedCheckpoint> + Clone>,
) -> bool {
    if let Some(cp) = cps.peek()
        && cp.checkpoint.size == n
    {
        if fr.root() != cp.checkpoint.root {
            let from = report.verified_size;
            report.first_bad = Some(from);
            report.problem = Some(format!(
                "root of the first {n} records differs from the signed checkpoint; a record in {from}..{n} was altered"
            ));
            return false;
        }
        report.checkpoints_checked += 1;
        report.verified_size = n;
        state.frontier = fr.clone();
        // Every checkpoint of this size must state the same root (two roots
        // for one size would be a forked log).
        if let Some(c) = cps.clone().take_while(|c| c.checkpoint.size <= n).find(|c| c.checkpoint.root != fr.root()) {
            report.first_bad = Some(n);
            report.problem =
                Some(format!("another signed checkpoint of size {} states a different root", c.checkpoint.size));
            return false;
        }
        while cps.peek().is_some_and(|c| c.checkpoint.size <= n) {
            cps.next();
        }
    }
    true
}
