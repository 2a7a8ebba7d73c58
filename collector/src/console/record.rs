//! A record: parsed fields, raw bytes as text and hex, both identities, gaps,
//! clock error, review marks, and its inclusion proof checked here against
//! the latest signed checkpoint (opened with the log's key chain).

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Html;
use tokio_stream::StreamExt;
use wiretrail_proto::v1::keys_client::KeysClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{
    CheckpointResponse, InclusionProofRequest, IssueCheckpointRequest, KeyHistoryRequest, LatestCheckpointRequest,
    SearchResult, ViewRequest,
};

use super::Console;
use super::fail::Failure;
use super::html::{esc, fields, hexdump, page as frame, time, url};
use super::principal::Principal;
use super::search::identity_text;
use wiretrail_log::merkle::{Hash, leaf_hash, verify_inclusion};

/// The outcome of checking a record's inclusion proof.
pub struct Proof {
    /// The checkpoint the proof is for.
    pub checkpoint: CheckpointResponse,
    /// `Ok(())` when the signature and the proof check out; why not otherwise.
    pub verdict: Result<(), String>,
}

/// Fetches the latest checkpoint (issuing one when it does not cover `leaf`
/// yet) and the leaf's proof, and checks both.
pub async fn prove(
    q: &mut QueryClient<tonic::transport::Channel>,
    keys: &mut KeysClient<tonic::transport::Channel>,
    leaf_index: u64,
    leaf: &[u8],
) -> Result<Proof, Failure> {
    let mut cp = match q.latest_checkpoint(LatestCheckpointRequest {}).await {
        Ok(c) => Some(c.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(s.into()),
    };
    if cp.as_ref().is_none_or(|c| c.size <= leaf_index) {
        cp = Some(q.issue_checkpoint(IssueCheckpointRequest {}).await?.into_inner());
    }
    let checkpoint = cp.expect("set above");
    let hashes =
        q.inclusion_proof(InclusionProofRequest { leaf_index, tree_size: checkpoint.size }).await?.into_inner();
    let history = keys.key_history(KeyHistoryRequest {}).await?.into_inner();
    let verdict = check(&checkpoint, &history, leaf_index, leaf, &hashes.hashes);
    Ok(Proof { checkpoint, verdict })
}

/// Opens the checkpoint with the key chain from the log's first key and
/// checks the proof against its root.
fn check(
    cp: &CheckpointResponse,
    history: &wiretrail_proto::v1::KeyHistoryResponse,
    leaf_index: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
) -> Result<(), String> {
    let (ring, _) = wiretrail_log::keychain::ring_of_history(history).map_err(|e| format!("key history: {e}"))?;
    let signed = ring.open(&cp.note).map_err(|e| format!("checkpoint signature: {e}"))?;
    let hashes: Vec<Hash> = proof
        .iter()
        .map(|h| h.as_slice().try_into())
        .collect::<Result<_, _>>()
        .map_err(|_| "a proof hash is not 32 bytes".to_string())?;
    verify_inclusion(leaf_index, signed.checkpoint.size, &leaf_hash(leaf), &hashes, &signed.checkpoint.root)
        .map_err(|e| format!("inclusion proof: {e}"))
}

/// The proof section of a record page.
pub fn proof_html(p: &Proof) -> String {
    let verdict = match &p.verdict {
        Ok(()) => format!(
            "<p id=\"proof\" class=\"verified\">✔ Inclusion proof verified against the signed checkpoint of size {}</p>",
            p.checkpoint.size
        ),
        Err(why) => format!("<p id=\"proof\" class=\"unverified\">✘ Not verified: {}</p>", esc(why)),
    };
    format!(
        "<h2>Inclusion proof</h2>{verdict}<h3>Checkpoint</h3><pre id=\"checkpoint\">{}</pre>\
         <p class=\"hint\">Verifier key: <code>{}</code></p>",
        esc(&p.checkpoint.note),
        esc(&p.checkpoint.verifier_key)
    )
}

/// The record's fields for people.
fn summary(r: &SearchResult) -> String {
    let l = r.decoded.clone().unwrap_or_default();
    let rec = l.record.clone().unwrap_or_default();
    let ep = |e: &Option<wiretrail_proto::v1::Endpoint>| {
        e.as_ref().map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_else(|| "-".into())
    };
    let gap = match &rec.gap {
        None => "none".to_string(),
        Some(g) => format!("{} bytes at {} ({:?}) {}", g.len, g.pos, g.reason(), g.detail),
    };
    let conv = format!("/conversation?agent={}&boot={}&conn={}", url(&l.agent_id), url(&l.boot_id), rec.conn_id);
    fields(&[
        ("Leaf", r.leaf_index.to_string()),
        ("Kind", esc(rec.kind().as_str_name())),
        ("Captured (UTC)", time(rec.capture_time_ns)),
        ("Received (UTC)", time(l.received_time_ns)),
        ("Clock", format!("{} ± {} ns", esc(rec.clock_source().as_str_name()), rec.clock_error_ns)),
        ("Agent / boot / seq", esc(&format!("{} / {} / {}", l.agent_id, l.boot_id, l.seq))),
        ("Shipped by (certificate)", esc(&r.shipped_by)),
        ("Host", esc(&rec.host)),
        ("Local", esc(&ep(&rec.local))),
        ("Remote", esc(&ep(&rec.remote))),
        ("Direction / role", esc(&format!("{} / {}", rec.direction().as_str_name(), rec.role().as_str_name()))),
        ("Protocol", esc(&rec.app_protocol)),
        ("Local identity", esc(&identity_text(&rec.identity))),
        ("Peer identity", esc(&identity_text(&rec.peer_identity))),
        ("Process", esc(&format!("{} (pid {}, uid {})", rec.comm, rec.pid, rec.uid))),
        ("Gap", esc(&gap)),
        ("Conversation", format!("<a href=\"{}\">connection {}</a>", esc(&conv), rec.conn_id)),
    ])
}

/// `GET /record/{leaf}`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Path(leaf): Path<u64>,
) -> Result<Html<String>, Failure> {
    let ch = c.backend.channel(&who).await?;
    let mut q = QueryClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let mut keys = KeysClient::new(ch);
    let mut s = q.view(ViewRequest { first_leaf: leaf, last_leaf: leaf }).await?.into_inner();
    let mut found = None;
    while let Some(r) = s.next().await {
        found = Some(r?);
    }
    let r = found.ok_or_else(|| Failure::Input(format!("leaf {leaf} is not a record you may view")))?;
    let proof = prove(&mut q, &mut keys, r.leaf_index, &r.leaf).await?;
    let decoded = r.decoded.clone().unwrap_or_default();
    let payload = decoded.record.clone().unwrap_or_default().payload;
    let mut json = wiretrail_log::record_json::to_json(r.leaf_index, &decoded);
    json["payload_base64"] = serde_json::Value::String(format!("({} bytes, shown below)", payload.len()));
    let marks: Vec<_> = r
        .review_marks
        .iter()
        .map(|m| {
            format!("<li>{} — {} by {}: {}</li>", time(m.time_ns), esc(&m.action), esc(&m.reviewer), esc(&m.comment))
        })
        .collect();
    let body = format!(
        "<div class=\"grid2\"><section><h2>Fields</h2>{}</section><section>{}</section></div>\
         <h2>Payload as text</h2><pre id=\"payload-text\">{}</pre><h2>Payload as hex</h2><pre id=\"payload-hex\">{}</pre>\
         <h2>Review</h2><ul id=\"marks\">{}</ul>{}\
         <h2>All fields (JSON)</h2><pre>{}</pre>",
        summary(&r),
        proof_html(&proof),
        esc(&String::from_utf8_lossy(&payload)),
        hexdump(&payload),
        if marks.is_empty() { "<li>No review marks.</li>".to_string() } else { marks.concat() },
        super::review::mark_form(&leaf.to_string(), None),
        esc(&serde_json::to_string_pretty(&json).unwrap_or_default()),
    );
    Ok(Html(frame(&who, "", &format!("Record {leaf}"), &body)))
}
