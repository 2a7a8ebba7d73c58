//! Signing key, log origin and the checkpoints file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::StoreError;
use super::writer::sync_dir;
use crate::merkle::{KeyRing, SignedCheckpoint, Signer, Verifier};

/// Whether the data directory already holds evidence signed or hashed under
/// some key: a checkpoint, a verifier key or a non-empty segment.
fn has_evidence(dir: &Path) -> Result<bool, StoreError> {
    let nonempty = |p: &Path| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false);
    if nonempty(&dir.join("checkpoints.jsonl")) || dir.join("verifier.key").exists() {
        return Ok(true);
    }
    let log = dir.join("log");
    if !log.exists() {
        return Ok(false);
    }
    Ok(super::list_segments(&log)?.iter().any(|(_, p)| nonempty(p)))
}

/// Creates `path` with `bytes` (mode `mode`), failing if it exists; fsyncs
/// it and its directory (a new file's name is durable only then).
pub(super) fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(StoreError::io("creating", path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(StoreError::io("writing", path))?;
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Loads the origin and signing key of the data directory; creates them only
/// for a directory without evidence. A missing key next to existing
/// checkpoints, a verifier key or log data is an error: a new key would sign
/// checkpoints nobody can relate to the old ones. No key file is ever replaced.
pub fn load_or_create_signer(dir: &Path, default_origin: &str) -> Result<Signer, StoreError> {
    let origin_path = dir.join("origin");
    let origin = match std::fs::read_to_string(&origin_path) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if has_evidence(dir)? {
                return Err(StoreError::KeyMissing(origin_path));
            }
            create_new(&origin_path, format!("{default_origin}\n").as_bytes(), 0o644)?;
            default_origin.to_string()
        }
        Err(e) => return Err(StoreError::io("reading", &origin_path)(e)),
    };
    let key_path = dir.join("signing.key");
    let seed: [u8; 32] = match std::fs::read_to_string(&key_path) {
        Ok(s) => hex::decode(s.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| StoreError::Inconsistent(format!("{} is not a 32-byte hex seed", key_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if has_evidence(dir)? {
                return Err(StoreError::KeyMissing(key_path));
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| StoreError::io("generating key", &key_path)(std::io::Error::other(e.to_string())))?;
            create_new(&key_path, format!("{}\n", hex::encode(seed)).as_bytes(), 0o600)?;
            tracing::info!(path = %key_path.display(), "new signing key created");
            seed
        }
        Err(e) => return Err(StoreError::io("reading", &key_path)(e)),
    };
    Ok(Signer::from_seed(&origin, &seed)?)
}

/// The verifier key of a data directory (for verification on the same host).
pub fn load_verifier(dir: &Path) -> Result<Verifier, StoreError> {
    let path = dir.join("verifier.key");
    let s = std::fs::read_to_string(&path).map_err(StoreError::io("reading", &path))?;
    Ok(Verifier::parse(&s)?)
}

/// Writes `verifier.key` next to the signing key when it is missing; an
/// existing one must be the signing key's (it is never replaced).
pub fn write_verifier(dir: &Path, v: &Verifier) -> Result<(), StoreError> {
    let path = dir.join("verifier.key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim() == v.key_string() => Ok(()),
        Ok(_) => Err(StoreError::KeyMismatch(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_new(&path, format!("{}\n", v.key_string()).as_bytes(), 0o644)
        }
        Err(e) => Err(StoreError::io("reading", &path)(e)),
    }
}

/// One line of `checkpoints.jsonl`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    /// The signed note text.
    note: String,
}

/// Reads and verifies every checkpoint in `dir/checkpoints.jsonl`, in file
/// order; each must be signed by the key of `keys` valid at its size.
pub fn load_checkpoints(dir: &Path, keys: &KeyRing) -> Result<Vec<SignedCheckpoint>, StoreError> {
    let path = dir.join("checkpoints.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("reading", &path)(e)),
    };
    let mut out: Vec<SignedCheckpoint> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l: Line = serde_json::from_str(line)
            .map_err(|e| StoreError::Inconsistent(format!("checkpoints.jsonl line {}: {e}", n + 1)))?;
        let cp = keys
            .open(&l.note)
            .map_err(|e| StoreError::Inconsistent(format!("checkpoints.jsonl line {}: {e}", n + 1)))?;
        if let Some(prev) = out.last()
            && cp.checkpoint.size < prev.checkpoint.size
        {
            return Err(StoreError::Inconsistent(format!(
                "checkpoints.jsonl line {}: tree size went backwards",
                n + 1
            )));
        }
        out.push(cp);
    }
    Ok(out)
}

/// Appends a checkpoint line and fsyncs (and, when the file is new, its
/// directory: a checkpoint handed out must survive a crash).
pub fn append_checkpoint(dir: &Path, cp: &SignedCheckpoint) -> Result<(), StoreError> {
    let path = dir.join("checkpoints.jsonl");
    let new = !path.exists();
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(StoreError::io("opening", &path))?;
    let line = serde_json::to_string(&Line { note: cp.note.clone() }).expect("string serializes");
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(StoreError::io("appending", &path))?;
    if new {
        sync_dir(dir)?;
    }
    Ok(())
}
