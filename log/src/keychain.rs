//! Checkpoint signing key rotation and the chain of trust across rotations.
//!
//! A rotation (the collector's `Keys.RotateSigningKey` service, admin only):
//! 1. a new key is generated and its seed stored under `keys/` (not yet in force);
//! 2. a `key_rotation` collector entry is appended (durable): old and new
//!    verifier keys and ids, and who asked;
//! 3. the old key signs a checkpoint covering the entry, the rotation is
//!    appended to `keys/history.jsonl`, and the new key signs every later
//!    checkpoint.
//!
//! Someone trusting only the first key follows the chain ([`follow_chain`]):
//! each rotation's entry is proven, by inclusion in a checkpoint the old key
//! signed, to name the new key. A checkpoint is accepted only when signed by
//! the key valid at its tree size ([`crate::merkle::KeyRing`]). A crash
//! between steps 2 and 3 leaves an entry whose key never took over: the old
//! key stays in force and the rotation can simply be asked for again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message;
use wiretrail_proto::v1::{KeyHistoryResponse, KeyRotationLink, StoredLeaf};

use crate::entry;
use crate::merkle::{Hash, KeyRing, Verifier, leaf_hash, verify_inclusion};
use crate::store::keys::KeyLink;

/// Why a key chain does not hold.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A link (rotation) does not prove what it claims.
    #[error("key rotation {index} (entry {entry}): {why}")]
    Link {
        /// Position of the link in the chain (0 = first rotation).
        index: usize,
        /// Leaf index of its entry.
        entry: u64,
        /// What is wrong.
        why: String,
    },
    /// A key or checkpoint does not parse or verify.
    #[error(transparent)]
    Note(#[from] crate::merkle::NoteError),
    /// A bundle's `keys.jsonl` line does not parse.
    #[error("keys.jsonl line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// The entry detail of a rotation from `old` to `new` asked by `identity` (`role`).
pub fn entry_detail(old: &Verifier, new: &Verifier, identity: &str, role: &str) -> serde_json::Value {
    serde_json::json!({
        "old_key": old.key_string(), "old_key_id": old.id_hex(),
        "new_key": new.key_string(), "new_key_id": new.id_hex(),
        "identity": identity, "role": role,
    })
}

/// Checks that `leaf` is a `key_rotation` entry from `old_key` to `new_key`.
pub fn check_entry_leaf(leaf: &[u8], old_key: &str, new_key: &str) -> Result<(), String> {
    let l = StoredLeaf::decode(leaf).map_err(|e| format!("leaf does not decode: {e}"))?;
    let e = l.entry.ok_or("leaf is a record, not a key_rotation entry")?;
    if e.kind != entry::KEY_ROTATION {
        return Err(format!("leaf is a {:?} entry, not a key_rotation entry", e.kind));
    }
    let d: serde_json::Value =
        serde_json::from_str(&e.detail_json).map_err(|e| format!("entry detail is not JSON: {e}"))?;
    if d["old_key"] != old_key || d["new_key"] != new_key {
        return Err(format!(
            "entry rotates {} -> {}, not {old_key} -> {new_key}",
            d["old_key"].as_str().unwrap_or("?"),
            d["new_key"].as_str().unwrap_or("?")
        ));
    }
    Ok(())
}

/// Follows `links` from `first`: each link's checkpoint must be signed by
/// the key in force, include its entry, and the entry must name that key
/// and the next. Returns the resulting key ring.
pub fn follow_chain(first: &Verifier, links: &[KeyLink]) -> Result<KeyRing, KeyError> {
    let mut ring = KeyRing::single(first.clone());
    for (index, l) in links.iter().enumerate() {
        let r = &l.rotation;
        let bad = |why: String| KeyError::Link { index, entry: r.entry_index, why };
        let old = ring.current().clone();
        if r.old_key != old.key_string() {
            return Err(bad(format!("names old key {} but {} is in force", r.old_key, old.key_string())));
        }
        let cp = old.open(&l.old_key_checkpoint).map_err(|e| bad(format!("old key's checkpoint: {e}")))?;
        if cp.checkpoint.size != r.old_last_size {
            return Err(bad(format!("checkpoint has size {}, link says {}", cp.checkpoint.size, r.old_last_size)));
        }
        if ring.epochs().last().and_then(|e| e.after).is_some_and(|a| cp.checkpoint.size <= a) {
            return Err(bad("old key's checkpoint is outside the old key's range".into()));
        }
        verify_inclusion(r.entry_index, cp.checkpoint.size, &leaf_hash(&l.entry_leaf), &l.proof, &cp.checkpoint.root)
            .map_err(|e| bad(format!("entry not proven in the old key's checkpoint: {e}")))?;
        check_entry_leaf(&l.entry_leaf, &r.old_key, &r.new_key).map_err(bad)?;
        let new = Verifier::parse(&r.new_key).map_err(|e| bad(format!("new key: {e}")))?;
        ring.push(new, r.entry_index, r.old_last_size).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ring)
}

/// The key ring a `Keys.KeyHistory` answer proves from its first key, and its links.
pub fn ring_of_history(h: &KeyHistoryResponse) -> Result<(KeyRing, Vec<KeyLink>), KeyError> {
    let first = Verifier::parse(&h.first_key)?;
    let links = (h.links.iter().enumerate()).map(|(k, l)| link_from_proto(l, k)).collect::<Result<Vec<_>, _>>()?;
    Ok((follow_chain(&first, &links)?, links))
}

/// A link as sent by `Keys.KeyHistory`.
pub fn link_to_proto(l: &KeyLink) -> KeyRotationLink {
    KeyRotationLink {
        old_key: l.rotation.old_key.clone(),
        new_key: l.rotation.new_key.clone(),
        entry_index: l.rotation.entry_index,
        entry_leaf: l.entry_leaf.clone(),
        old_key_checkpoint: l.old_key_checkpoint.clone(),
        proof: l.proof.iter().map(|h| h.to_vec()).collect(),
    }
}

/// A link received from `Keys.KeyHistory` (its size comes from its checkpoint).
pub fn link_from_proto(p: &KeyRotationLink, index: usize) -> Result<KeyLink, KeyError> {
    let bad = |why: String| KeyError::Link { index, entry: p.entry_index, why };
    let proof: Vec<Hash> = p
        .proof
        .iter()
        .map(|h| h.as_slice().try_into())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("bad hash length in proof".into()))?;
    let size = note_size(&p.old_key_checkpoint).map_err(bad)?;
    Ok(KeyLink {
        rotation: crate::store::Rotation {
            old_key: p.old_key.clone(),
            new_key: p.new_key.clone(),
            entry_index: p.entry_index,
            old_last_size: size,
            time_ns: 0,
            by: String::new(),
        },
        entry_leaf: p.entry_leaf.clone(),
        old_key_checkpoint: p.old_key_checkpoint.clone(),
        proof,
    })
}

/// The tree size line of a checkpoint note (unverified; the chain checks the signature).
fn note_size(note: &str) -> Result<u64, String> {
    note.lines().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| "checkpoint has no tree size line".into())
}

/// One `keys.jsonl` line of a bundle.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    old_key: String,
    new_key: String,
    entry_index: u64,
    entry_leaf_base64: String,
    old_key_checkpoint: String,
    proof: Vec<String>,
}

/// `keys.jsonl` of a bundle: one line per rotation.
pub fn links_to_jsonl(links: &[KeyLink]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in links {
        let line = Line {
            old_key: l.rotation.old_key.clone(),
            new_key: l.rotation.new_key.clone(),
            entry_index: l.rotation.entry_index,
            entry_leaf_base64: B64.encode(&l.entry_leaf),
            old_key_checkpoint: l.old_key_checkpoint.clone(),
            proof: l.proof.iter().map(hex::encode).collect(),
        };
        serde_json::to_writer(&mut out, &line).expect("json to memory");
        out.push(b'\n');
    }
    out
}

/// Parses a bundle's `keys.jsonl`.
pub fn links_from_jsonl(text: &str) -> Result<Vec<KeyLink>, KeyError> {
    text.lines()
        .enumerate()
        .map(|(n, s)| {
            let bad = |why: String| KeyError::Line { line: n + 1, why };
            let l: Line = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
            let p = KeyRotationLink {
                old_key: l.old_key,
                new_key: l.new_key,
                entry_index: l.entry_index,
                entry_leaf: B64.decode(&l.entry_leaf_base64).map_err(|e| bad(format!("entry_leaf_base64: {e}")))?,
                old_key_checkpoint: l.old_key_checkpoint,
                proof: l
                    .proof
                    .iter()
                    .map(|h| hex::decode(h).map_err(|e| bad(format!("proof: {e}"))))
                    .collect::<Result<_, _>>()?,
            };
            link_from_proto(&p, n)
        })
        .collect()
}
