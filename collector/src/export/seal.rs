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

use base64::Engine;
use prost::Message;
use rusqlite::Connection;
use wiretrail_proto::v1::StoredLeaf;

use super::{ACCESS, FORMAT, Files, MANIFEST, Manifest, SIG, sha256_hex};
use crate::error::Error;
use crate::index::{self, IndexError};
use wiretrail_log::merkle::{Hash, SignedCheckpoint, Verifier, leaf_hash, verify_inclusion};
use wiretrail_log::store::Log;

/// First line of a manifest statement (never a checkpoint's origin line
/// followed by a tree size, so the two kinds of notes cannot be confused).
pub const STATEMENT_TAG: &str = "wiretrail-bundle-manifest/v1";
/// Most access entries examined (newest first) looking for the export's search.
const MAX_EXAMINED: u64 = 200_000;

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
struct AccessFile {
    leaf_index: u64,
    tree_size: u64,
    leaf_base64: String,
    /// Inclusion proof at `tree_size` (hex hashes).
    hashes: Vec<String>,
    /// The entry's detail (who, role, filter, case, what came back), for people.
    detail: serde_json::Value,
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

/// Collector side: checks `draft` against the log, attaches the access entry
/// of `identity`'s export search and signs.
pub fn seal(
    shared: &Log,
    conn: &Connection,
    indexed: u64,
    identity: &str,
    draft: &[u8],
    query_json: &[u8],
) -> Result<Sealed, Error> {
    let bad = |m: String| Error::InvalidArgument(format!("draft manifest: {m}"));
    let mut m: Manifest = serde_json::from_slice(draft).map_err(|e| bad(e.to_string()))?;
    if m.canonical() != draft || m.format != FORMAT || m.access.is_some() || m.files.contains_key(ACCESS) {
        return Err(bad(format!("not a canonical {FORMAT} draft without an access section")));
    }
    if m.files.get("query.json") != Some(&sha256_hex(query_json)) {
        return Err(bad("query.json does not match its SHA-256 in the manifest".into()));
    }
    let origin = shared.verifier().name;
    let size = shared.size();
    if m.origin != origin || m.tree_size == 0 || m.tree_size > size {
        return Err(bad(format!(
            "origin {:?} / tree size {} not of this log ({origin}, size {size})",
            m.origin, m.tree_size
        )));
    }
    if hex::encode(shared.root(m.tree_size)?) != m.root_hash {
        return Err(bad(format!("root hash is not this log's root at size {}", m.tree_size)));
    }
    let filter: serde_json::Value = serde_json::from_slice(query_json).map_err(|e| bad(format!("query.json: {e}")))?;
    let mut access = Vec::new();
    if let Some((i, leaf, detail)) = find_search(shared, conn, indexed, m.tree_size, identity, &filter)? {
        let proof = shared.inclusion_proof(i, m.tree_size)?;
        let f = AccessFile {
            leaf_index: i,
            tree_size: m.tree_size,
            leaf_base64: base64::engine::general_purpose::STANDARD.encode(&leaf),
            hashes: proof.iter().map(hex::encode).collect(),
            detail,
        };
        access = serde_json::to_vec_pretty(&f).expect("json");
        access.push(b'\n');
        m.access = Some(AccessRef { leaf_index: i, leaf_sha256: sha256_hex(&leaf) });
        m.files.insert(ACCESS.into(), sha256_hex(&access));
    }
    let manifest = m.canonical();
    let sig = shared.sign_note(&statement(&origin, &manifest));
    Ok(Sealed { manifest, sig, access })
}

/// The newest `access` entry below `upto` of `identity`'s search for export
/// with `filter`: (leaf index, leaf bytes, detail).
fn find_search(
    shared: &Log,
    conn: &Connection,
    indexed: u64,
    upto: u64,
    identity: &str,
    filter: &serde_json::Value,
) -> Result<Option<(u64, Vec<u8>, serde_json::Value)>, Error> {
    let check = |i: u64| -> Result<Option<(u64, Vec<u8>, serde_json::Value)>, Error> {
        let leaf = shared.read_leaf(i)?;
        let l = StoredLeaf::decode(leaf.as_slice()).map_err(|e| Error::InvalidArgument(format!("leaf {i}: {e}")))?;
        let Some(e) = l.entry.filter(|e| e.kind == wiretrail_log::entry::ACCESS) else { return Ok(None) };
        let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
        let ok =
            d["identity"] == identity && d["action"] == "search" && d["purpose"] == "export" && d["filter"] == *filter;
        Ok(ok.then_some((i, leaf, d)))
    };
    let indexed = indexed.min(upto);
    let mut examined = 0u64;
    for i in (indexed..upto).rev() {
        if let Some(found) = check(i)? {
            return Ok(Some(found));
        }
        examined += 1;
        if examined >= MAX_EXAMINED {
            return Ok(None);
        }
    }
    let path = index::db_path(shared.dir());
    let err = |source| Error::Index(IndexError::Sqlite { path: path.clone(), source });
    let mut st = conn
        .prepare_cached(
            "SELECT leaf FROM records WHERE dim IN (SELECT id FROM dims WHERE proto = ?1) AND leaf < ?2 \
             ORDER BY leaf DESC LIMIT 1000",
        )
        .map_err(err)?;
    let kind = format!("entry:{}", wiretrail_log::entry::ACCESS);
    let mut below = indexed as i64;
    loop {
        let leaves: Vec<i64> = st
            .query_map(rusqlite::params![kind, below], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let Some(&last) = leaves.last() else { return Ok(None) };
        for i in leaves {
            if let Some(found) = check(i as u64)? {
                return Ok(Some(found));
            }
            examined += 1;
            if examined >= MAX_EXAMINED {
                return Ok(None);
            }
        }
        below = last;
    }
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
        Some(e) if e.kind == wiretrail_log::entry::ACCESS => {
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
