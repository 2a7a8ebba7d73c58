//! The tokenization key: 32 random bytes in a file only the agent's user may
//! read (0600), created on first start.
use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use super::RedactError;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// A tokenization key and its public id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub bytes: Vec<u8>,
    /// 16 hex digits of HMAC-SHA256(key, "wiretrail redaction key id"):
    /// names the key on records without revealing it.
    pub id: String,
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Key {
        use hmac::{Hmac, Mac as _};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&bytes).expect("HMAC takes any key length");
        mac.update(b"wiretrail redaction key id");
        let id = hex::encode(&mac.finalize().into_bytes()[..8]);
        Key { bytes, id }
    }
}

/// Reads the key at `path`, creating it (and its directory) when absent.
/// A key readable by group or others, or of the wrong length, is an error.
pub fn load_or_create(path: &Path) -> Result<Vec<u8>, RedactError> {
    let err = |what: &str, source: std::io::Error| RedactError::Key {
        path: path.to_path_buf(),
        what: what.to_string(),
        source: Some(source),
    };
    match std::fs::read(path) {
        Ok(key) => {
            let mode = std::fs::metadata(path).map_err(|e| err("reading", e))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(RedactError::Key {
                    path: path.into(),
                    what: format!("mode {:o} lets others read it (must be 0600)", mode & 0o777),
                    source: None,
                });
            }
            if key.len() != KEY_LEN {
                return Err(RedactError::Key {
                    path: path.into(),
                    what: format!("holds {} bytes, not {KEY_LEN}", key.len()),
                    source: None,
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err("creating its directory", e))?;
            }
            let mut key = vec![0u8; KEY_LEN];
            getrandom::fill(&mut key).map_err(|e| err("drawing random bytes", std::io::Error::other(e.to_string())))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err("creating", e))?;
            f.write_all(&key).and_then(|_| f.sync_all()).map_err(|e| err("writing", e))?;
            tracing::info!(path = %path.display(), "created the redaction tokenization key");
            Ok(key)
        }
        Err(e) => Err(err("reading", e)),
    }
}
