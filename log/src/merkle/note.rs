//! Checkpoints in the C2SP `tlog-checkpoint` format, signed as C2SP `signed-note`s
//! with Ed25519.
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n
//! \n
//! — <key name> <base64(key id (4 bytes) || signature)>\n
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::hash::Hash;

/// Signature type byte for Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;

/// Why a note could not be parsed, signed or verified.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// The text is not a well-formed checkpoint note.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No signature line by the expected key verifies.
    #[error("no valid signature by key {0}")]
    BadSignature(String),
    /// A key string could not be parsed.
    #[error("bad key: {0}")]
    BadKey(String),
}

/// The signed statement: this log had `size` leaves with root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique name of the log (C2SP: schema-less URL-like string).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Merkle tree hash of the first `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body (the signed text of the note).
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    fn parse_body(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.split('\n');
        let origin =
            lines.next().filter(|s| !s.is_empty()).ok_or_else(|| NoteError::Malformed("missing origin".into()))?;
        let size = lines
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| NoteError::Malformed("bad tree size line".into()))?;
        let root_b64 = lines.next().ok_or_else(|| NoteError::Malformed("missing root hash".into()))?;
        let root: Hash = B64
            .decode(root_b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| NoteError::Malformed("root hash is not 32 bytes of base64".into()))?;
        Ok(Checkpoint { origin: origin.to_string(), size, root })
    }
}

/// A checkpoint together with its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed checkpoint.
    pub checkpoint: Checkpoint,
    /// The full note: body, blank line, signature lines.
    pub note: String,
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Signs checkpoints.
pub struct Signer {
    /// Key name shown in the signature line (by convention the log origin).
    name: String,
    /// The Ed25519 private key.
    key: SigningKey,
}

impl Signer {
    /// A signer named `name` using the 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if name.is_empty() || name.contains(['+', ' ', '\n']) {
            return Err(NoteError::BadKey(format!("invalid key name {name:?}")));
        }
        Ok(Signer { name: name.to_string(), key: SigningKey::from_bytes(seed) })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        let public = self.key.verifying_key();
        Verifier { name: self.name.clone(), id: key_id(&self.name, &public), public }
    }

    /// Signs `cp`, producing the note text.
    pub fn sign(&self, cp: &Checkpoint) -> SignedCheckpoint {
        SignedCheckpoint { checkpoint: cp.clone(), note: self.sign_text(&cp.body()) }
    }

    /// Signs any note `body` (lines ending in a newline; no blank line), e.g. a
    /// bundle manifest statement: the signed-note text.
    pub fn sign_text(&self, body: &str) -> String {
        let sig = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_id(&self.name, &self.key.verifying_key()));
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// Verifies signed checkpoints by one key.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// Key name.
    pub name: String,
    /// First 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
    id: [u8; 4],
    /// The Ed25519 public key.
    public: VerifyingKey,
}

impl Verifier {
    /// The verifier key string `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn key_string(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.public.as_bytes());
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(k))
    }

    /// The key id in hex (8 characters).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// Parses a verifier key string.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected name+id+key".into()));
        };
        let key = B64.decode(key_b64).map_err(|e| NoteError::BadKey(e.to_string()))?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(NoteError::BadKey("not an Ed25519 key".into()));
        }
        let bytes: [u8; 32] = key[1..].try_into().map_err(|_| NoteError::BadKey("key length".into()))?;
        let public = VerifyingKey::from_bytes(&bytes).map_err(|e| NoteError::BadKey(e.to_string()))?;
        let id = key_id(name, &public);
        if hex::encode(id) != id_hex {
            return Err(NoteError::BadKey("key id does not match key".into()));
        }
        Ok(Verifier { name: name.to_string(), id, public })
    }

    /// Parses `note` and checks it carries a valid signature by this key.
    pub fn open(&self, note: &str) -> Result<SignedCheckpoint, NoteError> {
        let (body, _) =
            note.split_once("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before signatures".into()))?;
        let checkpoint = Checkpoint::parse_body(&format!("{body}\n"))?;
        self.open_text(note)?;
        Ok(SignedCheckpoint { checkpoint, note: note.to_string() })
    }

    /// Checks that `note` carries a valid signature by this key; its body.
    pub fn open_text(&self, note: &str) -> Result<String, NoteError> {
        let (body, sigs) =
            note.split_once("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before signatures".into()))?;
        let body = format!("{body}\n");
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed(format!("bad signature line {line:?}")));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed(format!("bad signature line {line:?}")));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = B64.decode(b64) else { continue };
            if blob.len() != 68 || blob[..4] != self.id {
                continue;
            }
            let Ok(sig) = Signature::from_slice(&blob[4..]) else {
                continue;
            };
            if self.public.verify_strict(body.as_bytes(), &sig).is_ok() {
                return Ok(body);
            }
        }
        Err(NoteError::BadSignature(self.name.clone()))
    }
}
