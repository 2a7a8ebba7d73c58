//! Offline verification of a bundle: no collector, only the bundle (and
//! optionally a pinned verifier key).

use base64::Engine;
use prost::Message;
use wiretrail_proto::v1::StoredLeaf;

use super::render::{filter_from_json, record_line, record_text};
use super::{ACCESS, FILES, FORMAT, FORMAT_V1, Files, KEYS_FILE, MANIFEST, Manifest, SIG, sha256_hex};
use crate::filter::Query;
use crate::merkle::{Hash, KeyRing, SignedCheckpoint, Verifier, leaf_hash, verify_inclusion};

/// What an accepted bundle holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleReport {
    /// Records verified.
    pub records: u64,
    /// Log origin of the checkpoint.
    pub origin: String,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Whether the verifier key was pinned by the caller (else taken from the bundle).
    pub key_pinned: bool,
    /// Whether the manifest carries the collector's signature (older bundles do not).
    pub manifest_signed: bool,
    /// Leaf index of the export's own access entry carried in the bundle.
    pub access_leaf: Option<u64>,
}

/// The bundle was rejected; every problem found names its file (and record).
#[derive(Debug, thiserror::Error)]
#[error("bundle REJECTED:\n  {}", .problems.join("\n  "))]
pub struct Rejected {
    /// Each problem found.
    pub problems: Vec<String>,
}

fn text<'a>(files: &'a Files, name: &str, problems: &mut Vec<String>) -> Option<&'a str> {
    match files.get(name).map(|b| std::str::from_utf8(b)) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            problems.push(format!("{name}: not UTF-8 text ({e})"));
            None
        }
        None => None,
    }
}

/// Verifies a bundle's files. `pinned_key` replaces the bundle's own
/// `verifier.key` as the trust anchor (and must then equal it).
pub fn verify_bundle(files: &Files, pinned_key: Option<&str>) -> Result<BundleReport, Rejected> {
    let mut p: Vec<String> = Vec::new();
    let reject = |p: Vec<String>| Err(Rejected { problems: p });

    // The manifest: canonical, complete, hashes match.
    let Some(mbytes) = files.get(MANIFEST) else {
        return reject(vec![format!("{MANIFEST}: missing")]);
    };
    let manifest: Manifest = match serde_json::from_slice(mbytes) {
        Ok(m) => m,
        Err(e) => return reject(vec![format!("{MANIFEST}: does not parse: {e}")]),
    };
    if manifest.canonical() != *mbytes {
        p.push(format!("{MANIFEST}: not in canonical form (edited?)"));
    }
    let signed = manifest.format == FORMAT;
    if !signed && manifest.format != FORMAT_V1 {
        p.push(format!("{MANIFEST}: format {:?}, expected {FORMAT:?}", manifest.format));
    }
    if !signed && manifest.access.is_some() {
        p.push(format!("{MANIFEST}: an access section in a {FORMAT_V1} manifest"));
    }
    // Files beyond the six: the signature (v2), the access record (when
    // listed) and the key chain (after a rotation).
    let extra = |n: &str| (signed && n == SIG) || (manifest.access.is_some() && n == ACCESS);
    for name in files.keys().filter(|n| *n != MANIFEST && *n != KEYS_FILE) {
        if !FILES.contains(&name.as_str()) && !extra(name) {
            p.push(format!("{name}: not part of a bundle"));
        }
    }
    if manifest.access.is_some() {
        match (files.get(ACCESS), manifest.files.get(ACCESS)) {
            (None, _) => p.push(format!("{ACCESS}: missing")),
            (Some(_), None) => p.push(format!("{ACCESS}: not listed in {MANIFEST}")),
            (Some(b), Some(h)) if sha256_hex(b) != *h => p.push(format!("{ACCESS}: SHA-256 does not match {MANIFEST}")),
            _ => {}
        }
    }
    for name in FILES {
        match (files.get(name), manifest.files.get(name)) {
            (None, _) => p.push(format!("{name}: missing")),
            (Some(_), None) => p.push(format!("{name}: not listed in {MANIFEST}")),
            (Some(b), Some(h)) if sha256_hex(b) != *h => p.push(format!("{name}: SHA-256 does not match {MANIFEST}")),
            _ => {}
        }
    }
    match (files.get(KEYS_FILE), manifest.files.get(KEYS_FILE)) {
        (None, Some(_)) => p.push(format!("{KEYS_FILE}: listed in {MANIFEST} but missing")),
        (Some(_), None) => p.push(format!("{KEYS_FILE}: not listed in {MANIFEST}")),
        (Some(b), Some(h)) if sha256_hex(b) != *h => p.push(format!("{KEYS_FILE}: SHA-256 does not match {MANIFEST}")),
        _ => {}
    }
    for name in manifest.files.keys().filter(|n| *n != KEYS_FILE) {
        let listed_access = manifest.access.is_some() && name == ACCESS;
        if !(FILES.contains(&name.as_str()) || listed_access) {
            p.push(format!("{MANIFEST}: lists unknown file {name}"));
        }
    }

    // The trust anchor: key and signed checkpoint.
    let bundle_key = text(files, "verifier.key", &mut p).map(str::trim);
    let links = match text(files, KEYS_FILE, &mut p).map(crate::keychain::links_from_jsonl) {
        None => Vec::new(),
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            p.push(e.to_string());
            Vec::new()
        }
    };
    // A pinned key may be the first key or any key the chain rotated in;
    // the chain is then followed from it.
    let (key, links) = match (pinned_key.map(str::trim), bundle_key) {
        (Some(k), Some(b)) if k != b => match links.iter().position(|l| l.rotation.new_key == k) {
            Some(i) => (Some(k), &links[i + 1..]),
            None => {
                p.push("verifier.key: differs from the pinned key, and no rotation in keys.jsonl leads to it".into());
                (Some(k), &links[..])
            }
        },
        (Some(k), _) => (Some(k), &links[..]),
        (None, b) => (b, &links[..]),
    };
    let verifier: Option<KeyRing> = key.and_then(|k| match Verifier::parse(k) {
        Ok(v) => match crate::keychain::follow_chain(&v, links) {
            Ok(ring) => Some(ring),
            Err(e) => {
                p.push(format!("{KEYS_FILE}: {e}"));
                None
            }
        },
        Err(e) => {
            p.push(format!("verifier.key: {e}"));
            None
        }
    });
    let cp: Option<SignedCheckpoint> = match (&verifier, text(files, "checkpoint.txt", &mut p)) {
        (Some(v), Some(note)) => match v.open(note) {
            Ok(cp) if cp.note == note => Some(cp),
            Ok(_) => {
                p.push("checkpoint.txt: extra bytes around the signed note".into());
                None
            }
            Err(e) => {
                p.push(format!("checkpoint.txt: signature or format invalid: {e}"));
                None
            }
        },
        _ => None,
    };
    if let Some(cp) = &cp {
        let c = &cp.checkpoint;
        if (c.size, hex::encode(c.root), &c.origin)
            != (manifest.tree_size, manifest.root_hash.clone(), &manifest.origin)
        {
            p.push(format!("{MANIFEST}: tree size/root/origin differ from checkpoint.txt"));
        }
    }

    // The manifest's signature and the export's access record.
    if signed {
        // Signed at seal time by the key that signed the bundle's checkpoint.
        let key = verifier.as_ref().zip(cp.as_ref()).map(|(ring, cp)| ring.key_for(cp.checkpoint.size));
        super::seal::check(files, &manifest, mbytes, key, cp.as_ref(), &mut p);
    }

    // The query.
    let query = text(files, "query.json", &mut p).and_then(|s| {
        let parsed = serde_json::from_str::<serde_json::Value>(s)
            .map_err(|e| e.to_string())
            .and_then(|v| filter_from_json(&v))
            .and_then(|f| Query::new(f).map_err(|e| e.to_string()));
        match parsed {
            Ok(q) => Some(q),
            Err(e) => {
                p.push(format!("query.json: {e}"));
                None
            }
        }
    });

    // Records, their proofs and their rendering.
    let records = text(files, "records.jsonl", &mut p).unwrap_or("");
    let proofs: Vec<&str> = text(files, "proofs.jsonl", &mut p).unwrap_or("").lines().collect();
    let mut rendered = String::new();
    let mut n = 0u64;
    let mut prev: Option<u64> = None;
    for (line_no, line) in records.lines().enumerate() {
        n += 1;
        let at = |what: String| format!("records.jsonl line {}: {what}", line_no + 1);
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                p.push(at(format!("does not parse: {e}")));
                continue;
            }
        };
        let Some(i) = v["leaf_index"].as_u64() else {
            p.push(at("no leaf_index".into()));
            continue;
        };
        let at = |what: String| format!("records.jsonl line {} (record {i}): {what}", line_no + 1);
        if prev.is_some_and(|x| x >= i) {
            p.push(at("records out of order".into()));
        }
        prev = Some(i);
        let leaf = match v["leaf_base64"].as_str().map(|s| base64::engine::general_purpose::STANDARD.decode(s)) {
            Some(Ok(b)) => b,
            _ => {
                p.push(at("leaf_base64 missing or not base64".into()));
                continue;
            }
        };
        let decoded = match StoredLeaf::decode(leaf.as_slice()) {
            Ok(d) => d,
            Err(e) => {
                p.push(at(format!("stored leaf does not decode: {e}")));
                continue;
            }
        };
        if record_line(i, &leaf, &decoded) != v {
            p.push(at("fields differ from the stored leaf bytes".into()));
        }
        if let Some(q) = &query
            && !q.matches(&decoded)
        {
            p.push(at("does not match query.json".into()));
        }
        rendered.push_str(&record_text(i, &decoded));
        match (&cp, proofs.get(line_no)) {
            (_, None) => p.push(at("no inclusion proof in proofs.jsonl".into())),
            (None, _) => {}
            (Some(cp), Some(pl)) => {
                if let Err(e) = check_proof(pl, i, &leaf_hash(&leaf), cp) {
                    p.push(format!("proofs.jsonl line {} (record {i}): {e}", line_no + 1));
                }
            }
        }
    }
    if proofs.len() as u64 > n {
        p.push(format!("proofs.jsonl: {} proofs for {n} records", proofs.len()));
    }
    if n != manifest.records {
        p.push(format!("{MANIFEST}: says {} records, records.jsonl has {n}", manifest.records));
    }
    if !records.is_empty() && !records.ends_with('\n') {
        p.push("records.jsonl: last line not terminated".into());
    }
    if let Some(t) = text(files, "records.txt", &mut p)
        && t != rendered
    {
        let line = t
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(t.lines().count().min(rendered.lines().count()));
        p.push(format!("records.txt: line {} differs from the records it renders", line + 1));
    }
    if !p.is_empty() {
        return reject(p);
    }
    let cp = cp.expect("no problems means a checkpoint");
    Ok(BundleReport {
        records: n,
        origin: cp.checkpoint.origin,
        tree_size: cp.checkpoint.size,
        key_pinned: pinned_key.is_some(),
        manifest_signed: signed,
        access_leaf: manifest.access.map(|a| a.leaf_index),
    })
}

fn check_proof(line: &str, i: u64, leaf: &Hash, cp: &SignedCheckpoint) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        leaf_index: u64,
        tree_size: u64,
        hashes: Vec<String>,
    }
    let l: Line = serde_json::from_str(line).map_err(|e| format!("does not parse: {e}"))?;
    if l.leaf_index != i {
        return Err(format!("proof is for record {}", l.leaf_index));
    }
    if l.tree_size != cp.checkpoint.size {
        return Err(format!("proof is for tree size {}, checkpoint has {}", l.tree_size, cp.checkpoint.size));
    }
    let hashes: Vec<Hash> = l
        .hashes
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|v| v.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or("bad hash in proof")?;
    verify_inclusion(i, l.tree_size, leaf, &hashes, &cp.checkpoint.root)
        .map_err(|e| format!("inclusion proof does not verify against checkpoint.txt: {e}"))
}
