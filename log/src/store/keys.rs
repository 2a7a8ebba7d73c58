//! Key history: the signing keys rotated in after the first one.
//!
//! Files (in the data directory):
//! - `keys/history.jsonl`: one [`Rotation`] per line, in order; appended and
//!   fsynced before the new key signs anything;
//! - `keys/signing-<key id>.key`: each rotated-in key's 32-byte seed (hex),
//!   written before the rotation entry is appended.
//!
//! `signing.key` and `verifier.key` stay the first key's: `verifier.key` is
//! the trust anchor from which the history is followed. A retired key's seed
//! file is no longer used; delete it once the rotation is done if the key is
//! suspected compromised (verifiers refuse its signature on any later size).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::checkpoints::create_new;
use super::writer::sync_dir;
use crate::merkle::{KeyRing, Signer, Verifier};

/// One line of `keys/history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// Verifier key string of the retired key.
    pub old_key: String,
    /// Verifier key string of the key rotated in.
    pub new_key: String,
    /// Leaf index of the `key_rotation` entry.
    pub entry_index: u64,
    /// Size of the old key's last checkpoint (it covers the entry); the new
    /// key signs sizes above it.
    pub old_last_size: u64,
    /// When the new key took over (UTC ns).
    pub time_ns: i64,
    /// Certificate identity that asked for the rotation.
    pub by: String,
}

fn keys_dir(dir: &Path) -> PathBuf {
    dir.join("keys")
}

fn seed_path(dir: &Path, key_id_hex: &str) -> PathBuf {
    keys_dir(dir).join(format!("signing-{key_id_hex}.key"))
}

/// The rotations recorded in `dir` (empty when none).
pub fn load_history(dir: &Path) -> Result<Vec<Rotation>, StoreError> {
    let path = keys_dir(dir).join("history.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("reading", &path)(e)),
    };
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map_err(|e| StoreError::Inconsistent(format!("{} line {}: {e}", path.display(), n + 1)))
        })
        .collect()
}

/// The key ring of `dir`, anchored at `first` (the pinned first key): each
/// rotation must name the previous key as its old key.
pub fn load_keyring(dir: &Path, first: &Verifier) -> Result<KeyRing, StoreError> {
    ring_of(first, &load_history(dir)?)
}

/// The key ring of `history`, anchored at `first`.
pub fn ring_of(first: &Verifier, history: &[Rotation]) -> Result<KeyRing, StoreError> {
    let mut ring = KeyRing::single(first.clone());
    for (n, r) in history.iter().enumerate() {
        if r.old_key != ring.current().key_string() {
            return Err(StoreError::Inconsistent(format!(
                "keys/history.jsonl line {}: old key {} is not the key in force ({})",
                n + 1,
                r.old_key,
                ring.current().key_string()
            )));
        }
        ring.push(Verifier::parse(&r.new_key)?, r.entry_index, r.old_last_size)?;
    }
    Ok(ring)
}

/// The signer in force: the first key's, or the last rotated-in key's seed.
pub fn current_signer(dir: &Path, first: Signer, history: &[Rotation]) -> Result<Signer, StoreError> {
    let Some(last) = history.last() else { return Ok(first) };
    let want = Verifier::parse(&last.new_key)?;
    let path = seed_path(dir, &want.id_hex());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::KeyMissing(path.clone())
        } else {
            StoreError::io("reading", &path)(e)
        }
    })?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| StoreError::Inconsistent(format!("{} is not a 32-byte hex seed", path.display())))?;
    let signer = Signer::from_seed(&want.name, &seed)?;
    if signer.verifier().key_string() != last.new_key {
        return Err(StoreError::KeyMismatch(path));
    }
    Ok(signer)
}

/// Generates a new signing key named `name` and stores its seed (fsynced)
/// under `keys/`; it signs nothing until [`append_rotation`] recorded it.
pub fn create_signer(dir: &Path, name: &str) -> Result<Signer, StoreError> {
    let kd = keys_dir(dir);
    if !kd.exists() {
        std::fs::create_dir(&kd).map_err(StoreError::io("creating", &kd))?;
        sync_dir(dir)?;
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| StoreError::io("generating key", &kd)(std::io::Error::other(e.to_string())))?;
    let signer = Signer::from_seed(name, &seed)?;
    create_new(&seed_path(dir, &signer.verifier().id_hex()), format!("{}\n", hex::encode(seed)).as_bytes(), 0o600)?;
    Ok(signer)
}

/// Appends `r` to `keys/history.jsonl` and fsyncs it (and the directory when
/// the file is new).
pub fn append_rotation(dir: &Path, r: &Rotation) -> Result<(), StoreError> {
    let kd = keys_dir(dir);
    let path = kd.join("history.jsonl");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&path)
        .map_err(StoreError::io("opening", &path))?;
    let line = serde_json::to_string(r).expect("rotation serializes");
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(StoreError::io("appending", &path))?;
    if new {
        sync_dir(&kd)?;
    }
    Ok(())
}

/// What proves one rotation to someone trusting the old key: the rotation
/// entry's leaf, the old key's last checkpoint and the entry's inclusion
/// proof in it.
#[derive(Debug, Clone)]
pub struct KeyLink {
    /// The history line.
    pub rotation: Rotation,
    /// The `key_rotation` entry's stored leaf bytes.
    pub entry_leaf: Vec<u8>,
    /// The old key's checkpoint of `old_last_size` leaves (signed note).
    pub old_key_checkpoint: String,
    /// Inclusion proof of the entry in that checkpoint.
    pub proof: Vec<crate::merkle::Hash>,
}

impl super::Log {
    /// Generates the next signing key (stored, not yet in force).
    pub fn new_signing_key(&self) -> Result<Signer, StoreError> {
        create_signer(&self.dir, &self.verifier().name)
    }

    /// Puts `new` in force after the `key_rotation` entry at `entry_index`
    /// (durable, naming `old_key` as the key it retires): the old key signs
    /// a checkpoint covering the entry (unless its latest one already
    /// does), the rotation is appended to the history, then `new` signs
    /// every later checkpoint.
    pub fn activate_signing_key(
        &self,
        new: Signer,
        entry_index: u64,
        old_key: &str,
        by: &str,
        time_ns: i64,
    ) -> Result<(Rotation, crate::merkle::SignedCheckpoint), StoreError> {
        let mut cps = self.checkpoints.lock().expect("checkpoints lock");
        if self.verifier().key_string() != old_key {
            return Err(StoreError::Inconsistent(format!(
                "the key in force is no longer {old_key} (another rotation ran meanwhile); entry {entry_index} \
                 names a key that was not put in force"
            )));
        }
        let cp = self.issue_locked(&mut cps)?;
        if cp.checkpoint.size <= entry_index {
            return Err(StoreError::OutOfRange(format!("rotation entry {entry_index} is not committed")));
        }
        let r = Rotation {
            old_key: old_key.to_string(),
            new_key: new.verifier().key_string(),
            entry_index,
            old_last_size: cp.checkpoint.size,
            time_ns,
            by: by.to_string(),
        };
        let mut ring = self.keys.write().expect("keys lock");
        let mut next = ring.clone();
        next.push(new.verifier(), entry_index, cp.checkpoint.size)?;
        append_rotation(&self.dir, &r)?;
        *ring = next;
        *self.signer.write().expect("signer lock") = new;
        tracing::info!(old = %r.old_key, new = %r.new_key, entry_index, old_last_size = r.old_last_size, "signing key rotated");
        Ok((r, cp))
    }

    /// The proofs of every rotation so far, oldest first.
    pub fn key_links(&self) -> Result<Vec<KeyLink>, StoreError> {
        let history = load_history(&self.dir)?;
        let cps = self.checkpoints.lock().expect("checkpoints lock").clone();
        history
            .into_iter()
            .map(|r| {
                let note = cps
                    .iter()
                    .find(|c| c.checkpoint.size == r.old_last_size)
                    .ok_or_else(|| {
                        StoreError::Inconsistent(format!(
                            "no checkpoint of size {} (the last of key {})",
                            r.old_last_size, r.old_key
                        ))
                    })?
                    .note
                    .clone();
                Ok(KeyLink {
                    entry_leaf: self.read_leaf(r.entry_index)?,
                    old_key_checkpoint: note,
                    proof: self.inclusion_proof(r.entry_index, r.old_last_size)?,
                    rotation: r,
                })
            })
            .collect()
    }
}
