//! Signing key, log origin and the checkpoints file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::StoreError;
use crate::merkle::{SignedCheckpoint, Signer, Verifier};

/// Loads (or creates on first use) the origin and signing key of the data directory.
pub fn load_or_create_signer(dir: &Path, default_origin: &str) -> Result<Signer, StoreError> {
    let origin_path = dir.join("origin");
    let origin = match std::fs::read_to_string(&origin_path) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&origin_path, format!("{default_origin}\n"))
                .map_err(StoreError::io("writing", &origin_path))?;
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
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| StoreError::io("generating key", &key_path)(std::io::Error::other(e.to_string())))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(StoreError::io("creating", &key_path))?;
            f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(StoreError::io("writing", &key_path))?;
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

/// Writes `verifier.key` next to the signing key.
pub fn write_verifier(dir: &Path, v: &Verifier) -> Result<(), StoreError> {
    let path = dir.join("verifier.key");
    std::fs::write(&path, format!("{}\n", v.key_string())).map_err(StoreError::io("writing", &path))
}

/// One line of `checkpoints.jsonl`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    /// The signed note text.
    note: String,
}

/// Reads and verifies every checkpoint in `dir/checkpoints.jsonl`, in file order.
pub fn load_checkpoints(dir: &Path, verifier: &Verifier) -> Result<Vec<SignedCheckpoint>, StoreError> {
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
        let cp = verifier.open(&l.note)?;
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

/// Appends a checkpoint line and fsyncs.
pub fn append_checkpoint(dir: &Path, cp: &SignedCheckpoint) -> Result<(), StoreError> {
    let path = dir.join("checkpoints.jsonl");
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(StoreError::io("opening", &path))?;
    let line = serde_json::to_string(&Line { note: cp.note.clone() }).expect("string serializes");
    f.write_all(format!("{line}\n").as_bytes()).and_then(|_| f.sync_data()).map_err(StoreError::io("appending", &path))
}
