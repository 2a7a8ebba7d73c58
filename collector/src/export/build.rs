//! Building a bundle from the collector's query API.

use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use wiretrail_proto::v1::keys_client::KeysClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::review_client::ReviewClient;
use wiretrail_proto::v1::{
    Filter, InclusionProofsRequest, IssueCheckpointRequest, KeyHistoryRequest, SealExportRequest, SearchRequest,
    StoredLeaf,
};

use super::ExportError;
use crate::access::meta::Meta;
use wiretrail_log::bundle::render::{filter_json, record_line, record_text};
use wiretrail_log::bundle::seal::Sealed;
use wiretrail_log::bundle::{FILES, FORMAT, Files, KEYS_FILE, MANIFEST, Manifest, sha256_hex};
use wiretrail_log::merkle::{Hash, Verifier, leaf_hash, verify_inclusion};

/// Export progress, reported to the caller's callback.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Records received from the search so far.
    Searching(u64),
    /// Proofs fetched and checked, out of the total.
    Proving(u64, u64),
}

/// Runs `filter` against the collector, has it issue a checkpoint covering
/// the results, fetches and checks each record's inclusion proof, and returns
/// the bundle's files.
pub async fn export(channel: Channel, filter: Filter, progress: impl FnMut(Progress)) -> Result<Files, ExportError> {
    export_as(channel, Meta::default().export(), filter, progress).await
}

/// [`export`] sending `meta` (case id, purpose) with every call, so the
/// collector's access log records the export under its case.
pub async fn export_as(
    channel: Channel,
    meta: Meta,
    filter: Filter,
    mut progress: impl FnMut(Progress),
) -> Result<Files, ExportError> {
    let mut keys = KeysClient::with_interceptor(channel.clone(), meta.clone());
    let mut q = QueryClient::with_interceptor(channel.clone(), meta.clone()).max_decoding_message_size(64 << 20);
    let rpc = |what| move |source| ExportError::Rpc { what, source };
    let mut s = q
        .search(SearchRequest { filter: Some(filter.clone()), follow: false, ..Default::default() })
        .await
        .map_err(rpc("search"))?
        .into_inner();
    let (mut jsonl, mut text) = (Vec::new(), Vec::new());
    let mut leaves: Vec<(u64, Hash)> = Vec::new();
    while let Some(r) = s.next().await {
        let r = r.map_err(rpc("search"))?;
        let decoded = StoredLeaf::decode(r.leaf.as_slice())
            .map_err(|e| ExportError::Invalid(format!("leaf {} does not decode: {e}", r.leaf_index)))?;
        if leaves.last().is_some_and(|(i, _)| *i >= r.leaf_index) {
            return Err(ExportError::Invalid("search results out of order".into()));
        }
        serde_json::to_writer(&mut jsonl, &record_line(r.leaf_index, &r.leaf, &decoded)).expect("json to memory");
        jsonl.push(b'\n');
        text.extend_from_slice(record_text(r.leaf_index, &decoded).as_bytes());
        leaves.push((r.leaf_index, leaf_hash(&r.leaf)));
        if leaves.len().is_multiple_of(1000) {
            progress(Progress::Searching(leaves.len() as u64));
        }
    }
    progress(Progress::Searching(leaves.len() as u64));
    let cp = q.issue_checkpoint(IssueCheckpointRequest {}).await.map_err(rpc("issuing a checkpoint"))?.into_inner();
    // The key chain from the log's first key to the one that signed `cp`.
    let history = keys.key_history(KeyHistoryRequest {}).await.map_err(rpc("key history"))?.into_inner();
    let first = Verifier::parse(&history.first_key)?;
    let (ring, links) =
        wiretrail_log::keychain::ring_of_history(&history).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let signed = ring.open(&cp.note)?;
    let size = signed.checkpoint.size;
    let mut proofs = Vec::new();
    let total = leaves.len() as u64;
    let mut done = 0u64;
    // Proved in chunks: one access entry per chunk, not per record.
    for chunk in leaves.chunks(crate::query::service::MAX_PROOFS) {
        if let Some((i, _)) = chunk.iter().find(|(i, _)| *i >= size) {
            return Err(ExportError::Invalid(format!("leaf {i} beyond the checkpoint's size {size}")));
        }
        let req = InclusionProofsRequest { leaf_indexes: chunk.iter().map(|(i, _)| *i).collect(), tree_size: size };
        let got = q.inclusion_proofs(req).await.map_err(rpc("inclusion proofs"))?.into_inner().proofs;
        if got.len() != chunk.len() {
            return Err(ExportError::Invalid(format!("{} proofs for {} leaves", got.len(), chunk.len())));
        }
        for ((i, h), p) in chunk.iter().zip(got) {
            let hashes: Vec<Hash> = p
                .hashes
                .iter()
                .map(|h| h.as_slice().try_into())
                .collect::<Result<_, _>>()
                .map_err(|_| ExportError::Invalid(format!("proof of leaf {i}: bad hash length")))?;
            verify_inclusion(*i, size, h, &hashes, &signed.checkpoint.root)
                .map_err(|e| ExportError::Invalid(format!("proof of leaf {i} does not verify: {e}")))?;
            let line = serde_json::json!({
                "leaf_index": i, "tree_size": size,
                "hashes": hashes.iter().map(hex::encode).collect::<Vec<_>>(),
            });
            serde_json::to_writer(&mut proofs, &line).expect("json to memory");
            proofs.push(b'\n');
        }
        done += chunk.len() as u64;
        progress(Progress::Proving(done, total));
    }
    let mut query = serde_json::to_vec_pretty(&filter_json(&filter)).expect("json");
    query.push(b'\n');
    let mut files = Files::new();
    files.insert("records.jsonl".into(), jsonl);
    files.insert("records.txt".into(), text);
    files.insert("proofs.jsonl".into(), proofs);
    files.insert("checkpoint.txt".into(), signed.note.clone().into_bytes());
    files.insert("verifier.key".into(), format!("{}\n", first.key_string()).into_bytes());
    if !links.is_empty() {
        files.insert(KEYS_FILE.into(), wiretrail_log::keychain::links_to_jsonl(&links));
    }
    files.insert("query.json".into(), query);
    debug_assert!(FILES.iter().all(|f| files.contains_key(*f)));
    let manifest = Manifest {
        format: FORMAT.into(),
        records: total,
        origin: signed.checkpoint.origin.clone(),
        tree_size: size,
        root_hash: hex::encode(signed.checkpoint.root),
        files: files.iter().map(|(k, v)| (k.clone(), sha256_hex(v))).collect(),
        access: None,
    };
    // The collector adds the export's access record and signs the manifest.
    let mut r = ReviewClient::with_interceptor(channel, meta);
    let req = SealExportRequest { manifest: manifest.canonical(), query_json: files["query.json"].clone() };
    let sealed = r.seal_export(req).await.map_err(rpc("sealing the manifest"))?.into_inner();
    let sealed = Sealed { manifest: sealed.manifest, sig: sealed.manifest_sig, access: sealed.access_json };
    // Signed by the key that signed the bundle's checkpoint (a rotation in
    // between fails here: export again).
    wiretrail_log::bundle::seal::accept(&mut files, &manifest, sealed, ring.key_for(size))
        .map_err(ExportError::Invalid)?;
    debug_assert!(files.contains_key(MANIFEST));
    Ok(files)
}
