//! Evidence bundles and inclusion proofs from ClickHouse alone: what an
//! auditor gets when the collectors that wrote the logs are gone.
//!
//! `wiretrail export --clickhouse URL --out DIR [filter]` writes one bundle
//! per log (origin) whose records match, each checked by `wiretrail
//! verify-bundle` like a collector's export. A log is exported only after
//! it verifies from ClickHouse ([`super::verify`]: every row from leaf 0, its
//! hashes and order, every stored checkpoint's signature and root, the key
//! chain); then each matching record gets its RFC 9162 inclusion proof at the
//! largest checkpoint the rows verify against, computed from the verified
//! leaf hashes ([`MemTree`]), and the bundle carries that checkpoint, the
//! log's first key and, after rotations, the key chain (`keys.jsonl`).
//!
//! The manifest is unsigned (format `wiretrail-bundle-v1`): the manifest
//! signature and the access entry of a collector's export are made by the
//! collector, which this path does not need. The records are proven all the
//! same: each by its inclusion proof under a checkpoint signed by the log's
//! key. Records after the largest verified checkpoint (inserted, not yet
//! acknowledged) cannot be proven and are counted, not exported.

use std::collections::BTreeMap;

use wiretrail_log::bundle::render::{filter_json, record_line, record_text};
use wiretrail_log::bundle::{FILES, FORMAT_V1, Files, KEYS_FILE, MANIFEST, Manifest, sha256_hex};
use wiretrail_log::merkle::{MemTree, Verifier, inclusion_proof, leaf_hash, verify_inclusion};
use wiretrail_log::store::Rotation;
use wiretrail_log::store::keys::KeyLink;
use wiretrail_proto::v1::Filter;

use super::ClickHouseError;
use super::reader::{Hit, Reader};
use super::schema::LEAVES;
use super::verify::{Checked, Pins};

/// The bundle of one log.
pub struct OriginBundle {
    /// The log.
    pub origin: String,
    /// The bundle's files (write them with [`crate::export::write`]).
    pub files: Files,
    /// Records in the bundle.
    pub records: u64,
    /// Matching records after the checkpoint the bundle is proven at (not exported).
    pub after_checkpoint: u64,
    /// The checkpoint's tree size.
    pub tree_size: u64,
}

/// What an export from ClickHouse found.
pub struct Export {
    /// One bundle per log with matching records.
    pub bundles: Vec<OriginBundle>,
    /// The search stopped at its limit: more records may match.
    pub truncated: bool,
}

/// An inclusion proof of one leaf, from ClickHouse alone.
#[derive(Debug, serde::Serialize)]
pub struct LeafProof {
    /// The log.
    pub origin: String,
    /// The leaf.
    pub leaf_index: u64,
    /// Its leaf hash (hex).
    pub leaf_hash: String,
    /// The tree size of the checkpoint.
    pub tree_size: u64,
    /// The proof, leaf to root (hex).
    pub hashes: Vec<String>,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
    /// The log's first verifier key.
    pub verifier_key: String,
    /// The key that signed the checkpoint (the first key unless rotated).
    pub signing_key: String,
    /// From the first key to the signing key: one `keys.jsonl` line per
    /// rotation (its entry, the old key's checkpoint covering it, the proof).
    pub key_chain: Vec<serde_json::Value>,
}

impl Reader {
    /// The bundles of every log with records matching `filter` (search
    /// order and limit as [`Reader::search`]); an origin in `pins` is
    /// verified from the pinned key. Fails when a log with matches does not
    /// verify.
    pub async fn export(&self, filter: &Filter, pins: &Pins) -> Result<Export, ClickHouseError> {
        // ClickHouse's search is a candidate set (its text and identity tests
        // are looser); the bundle holds what the filter matches as every
        // verifier reads `query.json` (`filter::Query`), up to its limit.
        let query = wiretrail_log::filter::Query::new(filter.clone())
            .map_err(|e| ClickHouseError::Unproven(format!("the filter: {e}")))?;
        let mut by_origin: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
        let hits = self.search_matching(&query).await?;
        let truncated = hits.len() as u64 >= query.limit;
        for h in hits {
            by_origin.entry(h.origin.clone()).or_default().push(h);
        }
        let mut out = Vec::new();
        for (origin, mut hits) in by_origin {
            hits.sort_by_key(|h| h.leaf_index);
            let log = self.verified(&origin, pins.get(&origin)).await?;
            out.push(self.bundle(&origin, &log, hits, filter).await?);
        }
        Ok(Export { bundles: out, truncated })
    }

    /// The inclusion proof of `leaf_index` in log `origin` at the largest
    /// checkpoint its rows verify against.
    pub async fn prove(
        &self,
        origin: &str,
        leaf_index: u64,
        pin: Option<&Verifier>,
    ) -> Result<LeafProof, ClickHouseError> {
        let log = self.verified(origin, pin).await?;
        let size = log.report.verified_size;
        if leaf_index >= size {
            return Err(ClickHouseError::Unproven(format!(
                "leaf {leaf_index} of {origin} is not covered by a verified checkpoint (largest: size {size})"
            )));
        }
        let tree = MemTree::new(log.hashes[..size as usize].to_vec());
        let (note, signed_by) = checkpoint_at(&log, origin, size)?;
        let proof = inclusion_proof(&tree, leaf_index, size).map_err(unproven(origin))?;
        let links = self.key_links(origin, &log, &tree, signed_by).await?;
        let chain = wiretrail_log::keychain::links_to_jsonl(&links);
        let key_chain = chain
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("keys.jsonl lines are JSON"))
            .collect();
        Ok(LeafProof {
            signing_key: log.ring.key_for(size).key_string(),
            key_chain,
            origin: origin.to_string(),
            leaf_index,
            leaf_hash: hex::encode(log.hashes[leaf_index as usize]),
            tree_size: size,
            hashes: proof.iter().map(hex::encode).collect(),
            checkpoint: note,
            verifier_key: log.ring.first().key_string(),
        })
    }

    /// Origin `origin`, verified; an error when it is missing or does not verify.
    async fn verified(&self, origin: &str, pin: Option<&Verifier>) -> Result<Checked, ClickHouseError> {
        let log = self.checked(origin, pin).await?.ok_or_else(|| {
            ClickHouseError::Unproven(format!("origin {origin:?} has no registered key in ClickHouse"))
        })?;
        if !log.report.problems.is_empty() {
            return Err(ClickHouseError::Unproven(format!(
                "the log {origin} does not verify: {}",
                log.report.problems.join("; ")
            )));
        }
        if !log.report.ok {
            return Err(ClickHouseError::Unproven(format!(
                "the log {origin}: no stored signed checkpoint covers its {} leaves (nothing can be proven yet)",
                log.report.leaves
            )));
        }
        Ok(log)
    }

    async fn bundle(
        &self,
        origin: &str,
        log: &Checked,
        hits: Vec<Hit>,
        filter: &Filter,
    ) -> Result<OriginBundle, ClickHouseError> {
        let size = log.report.verified_size;
        let (note, signed_by) = checkpoint_at(log, origin, size)?;
        let tree = MemTree::new(log.hashes[..size as usize].to_vec());
        let root = wiretrail_log::merkle::subtree_hash(&tree, 0, size).map_err(unproven(origin))?;
        let (mut jsonl, mut text, mut proofs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut records, mut after_checkpoint) = (0u64, 0u64);
        for h in hits {
            let i = h.leaf_index;
            if i >= size {
                after_checkpoint += 1;
                continue;
            }
            // The search may pick another row for this leaf than verify read.
            let lh = leaf_hash(&h.bytes);
            if lh != log.hashes[i as usize] {
                return Err(ClickHouseError::Unproven(format!(
                    "leaf {i} of {origin}: the row found by the search is not the verified one"
                )));
            }
            let proof = inclusion_proof(&tree, i, size).map_err(unproven(origin))?;
            verify_inclusion(i, size, &lh, &proof, &root).map_err(unproven(origin))?;
            serde_json::to_writer(&mut jsonl, &record_line(i, &h.bytes, &h.leaf)).expect("json to memory");
            jsonl.push(b'\n');
            text.extend_from_slice(record_text(i, &h.leaf).as_bytes());
            let line = serde_json::json!({
                "leaf_index": i, "tree_size": size,
                "hashes": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            });
            serde_json::to_writer(&mut proofs, &line).expect("json to memory");
            proofs.push(b'\n');
            records += 1;
        }
        let links = self.key_links(origin, log, &tree, signed_by).await?;
        let mut query = serde_json::to_vec_pretty(&filter_json(filter)).expect("json");
        query.push(b'\n');
        let mut files = Files::new();
        files.insert("records.jsonl".into(), jsonl);
        files.insert("records.txt".into(), text);
        files.insert("proofs.jsonl".into(), proofs);
        files.insert("checkpoint.txt".into(), note.into_bytes());
        files.insert("verifier.key".into(), format!("{}\n", log.ring.first().key_string()).into_bytes());
        if !links.is_empty() {
            files.insert(KEYS_FILE.into(), wiretrail_log::keychain::links_to_jsonl(&links));
        }
        files.insert("query.json".into(), query);
        debug_assert!(FILES.iter().all(|f| files.contains_key(*f)));
        let manifest = Manifest {
            format: FORMAT_V1.into(),
            records,
            origin: origin.to_string(),
            tree_size: size,
            root_hash: hex::encode(root),
            files: files.iter().map(|(k, v)| (k.clone(), sha256_hex(v))).collect(),
            access: None,
        };
        files.insert(MANIFEST.into(), manifest.canonical());
        Ok(OriginBundle { origin: origin.to_string(), files, records, after_checkpoint, tree_size: size })
    }

    /// The chain from the first key to the one in force at `upto` epochs:
    /// each rotation's entry leaf, the old key's last checkpoint and the
    /// entry's proof in it.
    async fn key_links(
        &self,
        origin: &str,
        log: &Checked,
        tree: &MemTree,
        epochs: usize,
    ) -> Result<Vec<KeyLink>, ClickHouseError> {
        let ring = log.ring.epochs();
        let mut links = Vec::new();
        for k in 1..epochs {
            let (old, new) = (&ring[k - 1], &ring[k]);
            let (Some(entry_index), Some(old_last_size)) = (new.entry_index, new.after) else {
                return Err(ClickHouseError::Unproven(format!("{origin}: key {k} has no rotation entry")));
            };
            let entry_leaf = self.leaf(origin, entry_index).await?;
            if leaf_hash(&entry_leaf) != log.hashes[entry_index as usize] {
                return Err(ClickHouseError::Unproven(format!(
                    "leaf {entry_index} of {origin}: the key_rotation row read is not the verified one"
                )));
            }
            let (old_key_checkpoint, _) = checkpoint_at(log, origin, old_last_size)?;
            let proof = inclusion_proof(tree, entry_index, old_last_size).map_err(unproven(origin))?;
            let rotation = Rotation {
                old_key: old.verifier.key_string(),
                new_key: new.verifier.key_string(),
                entry_index,
                old_last_size,
                time_ns: 0,
                by: String::new(),
            };
            links.push(KeyLink { rotation, entry_leaf, old_key_checkpoint, proof });
        }
        Ok(links)
    }

    /// The leaf bytes of one leaf.
    async fn leaf(&self, origin: &str, leaf_index: u64) -> Result<Vec<u8>, ClickHouseError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct LeafBytes {
            #[serde(with = "serde_bytes")]
            leaf: Vec<u8>,
        }
        let r: LeafBytes = self
            .client
            .query(&format!("SELECT leaf FROM {LEAVES} WHERE origin = ? AND leaf_index = ? LIMIT 1"))
            .bind(origin)
            .bind(leaf_index)
            .fetch_one()
            .await
            .map_err(ClickHouseError::query(format!("reading leaf {leaf_index} of {origin}")))?;
        Ok(r.leaf)
    }
}

/// The signed note of the checkpoint of `size` leaves that verified, and the
/// number of keys of the ring up to the one that signed it.
fn checkpoint_at(log: &Checked, origin: &str, size: u64) -> Result<(String, usize), ClickHouseError> {
    let missing = || ClickHouseError::Unproven(format!("{origin}: no verified checkpoint of size {size}"));
    let row = log.checkpoints.iter().find(|c| c.size == size).ok_or_else(missing)?;
    let signed = log.ring.open(&row.note).map_err(|_| missing())?;
    let key = log.ring.key_for(size).key_string();
    let epochs = log.ring.epochs().iter().position(|e| e.verifier.key_string() == key).ok_or_else(missing)? + 1;
    Ok((signed.note, epochs))
}

fn unproven(origin: &str) -> impl Fn(wiretrail_log::merkle::ProofError) -> ClickHouseError + '_ {
    move |e| ClickHouseError::Unproven(format!("{origin}: {e}"))
}
