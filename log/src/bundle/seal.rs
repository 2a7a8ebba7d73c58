//! Signed manifests and the export's own access record.
//!
//! The collector seals a bundle (`Review.SealExport`): it checks the
//! client's draft manifest against its log, adds the access entry of the
//! export's search (`access.json`: leaf index, leaf bytes, inclusion proof at
//! the bundle's tree size) and signs the final manifest with its checkpoint
//! key, in the checkpoints' signed-note format (`manifest.sig`):
//!
//! ```text
//! wiretrail-bundle-manifest/v1
//! <origin>
//! <SHA-256 of manifest.json, hex>
//!
//! — <key name> <base64(key id || Ed25519 signature)>
//! ```
//!
//! `verify-bundle` checks the signature with the pinned (or the bundle's) key,
//! so any change of the manifest (and through its hashes, of any file) is refused.

//!
//! This module holds the client side (the statement, the sealed answer's
//! check at export and the offline check); the collector seals.

use base64::Engine;
use prost::Message;
use wiretrail_proto::v1::StoredLeaf;

use super::{ACCESS, Files, MANIFEST, Manifest, SIG, sha256_hex};
use crate::merkle::{Hash, SignedCheckpoint, Verifier, leaf_hash, verify_inclusion};

/// First line of a manifest statement (never a checkpoint's origin line
/// followed by a tree size, so the two kinds of notes cannot be confused).
pub const STATEMENT_TAG: &str = "wiretrail-bundle-manifest/v1";
/// `manifest.json`'s access section: the export's search, as logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRef {
    /// Leaf index of the `access` entry.
    pub leaf_index: u64,
    /// SHA-256 (hex) of its stored leaf bytes.
    pub leaf_sha256: String,
}

/// `access.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// Leaf index of the `access` entry.
    pub leaf_index: u64,
    /// Tree size the proof is for (the bundle's checkpoint).
    pub tree_size: u64,
    /// The stored leaf bytes (base64).
    pub leaf_base64: String,
    /// Inclusion proof at `tree_size` (hex hashes).
    pub hashes: Vec<String>,
    /// The entry's detail (who, role, filter, case, what came back), for people.
    pub detail: serde_json::Value,
}

/// The signed statement over `manifest` bytes.
pub fn statement(origin: &str, manifest: &[u8]) -> String {
    format!("{STATEMENT_TAG}\n{origin}\n{}\n", sha256_hex(manifest))
}

/// A sealed manifest: its bytes, signature note and `access.json` (if found).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Final `manifest.json`.
    pub manifest: Vec<u8>,
    /// `manifest.sig`.
    pub sig: String,
    /// `access.json`, or empty.
    pub access: Vec<u8>,
}

/// Client side: the collector's answer must be the draft plus the access
/// section only, signed by the checkpoint's key; adds the files.
pub fn accept(files: &mut Files, draft: &Manifest, sealed: Sealed, verifier: &Verifier) -> Result<(), String> {
    let m: Manifest = serde_json::from_slice(&sealed.manifest).map_err(|e| format!("sealed manifest: {e}"))?;
    let mut plain = m.clone();
    plain.access = None;
    plain.files.remove(ACCESS);
    if plain != *draft {
        return Err("the collector changed the manifest beyond its access section".into());
    }
    if m.access.is_some() == sealed.access.is_empty() {
        return Err("access section and access.json disagree".into());
    }
    let body = verifier.open_text(&sealed.sig).map_err(|e| format!("manifest.sig: {e}"))?;
    if body != statement(&m.origin, &sealed.manifest) {
        return Err("manifest.sig signs another manifest".into());
    }
    files.insert(MANIFEST.into(), sealed.manifest);
    files.insert(SIG.into(), sealed.sig.into_bytes());
    if !sealed.access.is_empty() {
        files.insert(ACCESS.into(), sealed.access);
    }
    Ok(())
}

/// Offline: the signature over `mbytes` and the access record; problems go to `p`.
pub fn check(
    files: &Files,
    m: &Manifest,
    mbytes: &[u8],
    verifier: Option<&Verifier>,
    cp: Option<&SignedCheckpoint>,
    p: &mut Vec<String>,
) {
    match (files.get(SIG).map(|b| std::str::from_utf8(b)), verifier) {
        (None, _) => p.push(format!("{SIG}: missing (the manifest is not signed)")),
        (Some(Err(_)), _) => p.push(format!("{SIG}: not UTF-8 text")),
        (Some(Ok(_)), None) => {}
        (Some(Ok(note)), Some(v)) => match v.open_text(note) {
            Ok(body) if body == statement(&m.origin, mbytes) => {}
            Ok(_) => p.push(format!("{SIG}: signs another manifest ({MANIFEST} modified?)")),
            Err(e) => p.push(format!("{SIG}: signature invalid: {e}")),
        },
    }
    let Some(a) = &m.access else { return };
    let Some(bytes) = files.get(ACCESS) else { return };
    let f: AccessFile = match serde_json::from_slice(bytes) {
        Ok(f) => f,
        Err(e) => return p.push(format!("{ACCESS}: does not parse: {e}")),
    };
    let leaf = match base64::engine::general_purpose::STANDARD.decode(&f.leaf_base64) {
        Ok(l) => l,
        Err(_) => return p.push(format!("{ACCESS}: leaf_base64 is not base64")),
    };
    if f.leaf_index != a.leaf_index || sha256_hex(&leaf) != a.leaf_sha256 {
        p.push(format!("{ACCESS}: leaf differs from the manifest's access section"));
    }
    match StoredLeaf::decode(leaf.as_slice()).ok().and_then(|l| l.entry) {
        Some(e) if e.kind == crate::entry::ACCESS => {
            let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
            if d != f.detail {
                p.push(format!("{ACCESS}: detail differs from the stored entry"));
            }
        }
        _ => p.push(format!("{ACCESS}: the leaf is not an access entry")),
    }
    let Some(cp) = cp else { return };
    let hashes: Option<Vec<Hash>> =
        f.hashes.iter().map(|h| hex::decode(h).ok().and_then(|v| v.try_into().ok())).collect();
    let ok = f.tree_size == cp.checkpoint.size
        && hashes.is_some_and(|h| {
            verify_inclusion(f.leaf_index, f.tree_size, &leaf_hash(&leaf), &h, &cp.checkpoint.root).is_ok()
        });
    if !ok {
        p.push(format!("{ACCESS}: inclusion proof does not verify against checkpoint.txt"));
    }
}
