//! The collector's side of signed manifests (`Review.SealExport`): it checks
//! the client's draft manifest against its log, adds the access entry of the
//! export's search and signs the final manifest with its checkpoint key. The
//! statement, its format and the checks are [`wiretrail_log::bundle::seal`]'s.

use base64::Engine;
use prost::Message;
use rusqlite::Connection;
use wiretrail_proto::v1::StoredLeaf;

use crate::error::Error;
use crate::index::{self, IndexError};
use wiretrail_log::bundle::seal::{AccessFile, AccessRef, Sealed, statement};
use wiretrail_log::bundle::{ACCESS, FORMAT, Manifest, sha256_hex};
use wiretrail_log::store::Log;

/// Most access entries examined (newest first) looking for the export's search.
const MAX_EXAMINED: u64 = 200_000;

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
