//! Export bundles: accepted offline, any one-byte edit rejected with a message
//! naming the file.

mod common;

use common::*;
use tokio_stream::StreamExt;
use wiretrail_collector::export;
use wiretrail_log::bundle::{self, Files, verify_bundle};
use wiretrail_proto::v1::Filter;
use wiretrail_proto::v1::ingest_client::IngestClient;

async fn bundle(filter: Filter) -> (Files, String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let srv = Server::start(plain_config(data.path())).await;
    let mut c = IngestClient::new(channel(srv.addr).await);
    let batches: Vec<_> = (0..6).map(|s| batch("agent-e", "boot", s, 5)).collect();
    let mut acks = c.ingest(tokio_stream::iter(batches)).await.unwrap().into_inner();
    for _ in 0..6 {
        acks.next().await.unwrap().unwrap();
    }
    let mut seen = Vec::new();
    let files = export::export(channel(srv.addr).await, filter, |p| seen.push(p)).await.unwrap();
    assert!(!seen.is_empty(), "progress was reported");
    srv.stop().await;
    let key = std::fs::read_to_string(data.path().join("verifier.key")).unwrap();
    (files, key, data)
}

fn pod_filter() -> Filter {
    Filter { identity: vec!["pod=pod-1".into()], ..Default::default() }
}

#[tokio::test]
async fn bundle_verifies_offline_as_dir_and_tar() {
    let (files, key, _data) = bundle(pod_filter()).await;
    let r = verify_bundle(&files, Some(&key)).unwrap();
    assert_eq!(r.records, 10, "30 records, every third has pod-1");
    assert_eq!(r.tree_size, 31, "30 records and the access entry of the export's search");
    let jsonl = String::from_utf8(files["records.jsonl"].clone()).unwrap();
    assert!(jsonl.contains("payload_base64"));
    assert!(String::from_utf8_lossy(&files["records.txt"]).contains("SELECT 1 FROM accounts"));

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("bundle");
    export::write(&dir, &files).unwrap();
    assert_eq!(bundle::read(&dir).unwrap(), files);
    let tar = out.path().join("bundle.tar");
    export::write(&tar, &files).unwrap();
    assert_eq!(bundle::read(&tar).unwrap(), files);
    assert!(matches!(export::write(&dir, &files), Err(export::ExportError::Exists(_))));

    // Another collector's key is refused.
    let (_, other_key, _other_data) = bundle(pod_filter()).await;
    let e = verify_bundle(&files, Some(&other_key)).unwrap_err();
    assert!(e.to_string().contains("checkpoint.txt"), "{e}");
}

#[tokio::test]
async fn every_one_byte_edit_is_rejected_naming_the_file() {
    let (files, key, _data) = bundle(pod_filter()).await;
    for (name, bytes) in &files {
        let n = bytes.len();
        let mut positions = vec![0, n / 7, n / 3, n / 2, 2 * n / 3, n - 2, n - 1];
        positions.dedup();
        for pos in positions {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut edited = files.clone();
                edited.get_mut(name).unwrap()[pos] ^= flip;
                for pinned in [None, Some(key.as_str())] {
                    let e = match verify_bundle(&edited, pinned) {
                        Ok(_) => panic!("{name} byte {pos} ^ {flip:#x} accepted"),
                        Err(e) => e.to_string(),
                    };
                    assert!(e.contains(name.as_str()), "{name} byte {pos}: message does not name the file: {e}");
                }
            }
        }
    }
    // A record edit that keeps the manifest consistent is still caught by the proof.
    let mut edited = files.clone();
    let jsonl = String::from_utf8(edited["records.jsonl"].clone()).unwrap();
    let first = jsonl.lines().next().unwrap().to_string();
    let mut v: serde_json::Value = serde_json::from_str(&first).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut leaf = b64.decode(v["leaf_base64"].as_str().unwrap()).unwrap();
    let at = leaf.windows(6).position(|w| w == b"SELECT").unwrap();
    leaf[at] = b'D';
    v["leaf_base64"] = b64.encode(&leaf).into();
    let forged = jsonl.replacen(&first, &serde_json::to_string(&v).unwrap(), 1);
    edited.insert("records.jsonl".into(), forged.into_bytes());
    let e = verify_bundle(&edited, Some(&key)).unwrap_err().to_string();
    assert!(e.contains("records.jsonl line 1 (record"), "{e}");
    assert!(e.contains("inclusion proof does not verify"), "{e}");
}

#[tokio::test]
async fn tar_bundle_rejects_byte_flips_anywhere() {
    let (files, key, _data) = bundle(Filter::default()).await;
    let tar = bundle::tar::write(&files);
    let step = tar.len() / 97;
    for pos in (0..tar.len()).step_by(step.max(1)) {
        let mut t = tar.clone();
        t[pos] ^= 0x04;
        let ok = match bundle::tar::read(&t) {
            Err(_) => false,
            Ok(f) => verify_bundle(&f, Some(&key)).is_ok(),
        };
        assert!(!ok, "archive byte {pos} flipped and accepted");
    }
}

#[tokio::test]
async fn the_manifest_is_signed_and_carries_the_exports_access_record() {
    let (files, key, _data) = bundle(pod_filter()).await;
    let r = verify_bundle(&files, Some(&key)).unwrap();
    assert!(r.manifest_signed, "{r:?}");
    assert_eq!(r.access_leaf, Some(30), "the search's access entry follows the 30 records");
    let sig = String::from_utf8(files["manifest.sig"].clone()).unwrap();
    assert!(sig.starts_with("wiretrail-bundle-manifest/v1\n") && sig.contains("\n\n\u{2014} "), "{sig}");
    let access: serde_json::Value = serde_json::from_slice(&files["access.json"]).unwrap();
    assert_eq!((access["leaf_index"].as_u64(), access["tree_size"].as_u64()), (Some(30), Some(31)));
    let d = &access["detail"];
    assert_eq!(
        (d["action"].as_str(), d["purpose"].as_str(), d["returned"].as_u64()),
        (Some("search"), Some("export"), Some(10))
    );

    // A manifest rewritten consistently (hashes, canonical form) but without
    // the access record: only the signature tells.
    let mut m: bundle::Manifest = serde_json::from_slice(&files["manifest.json"]).unwrap();
    m.access = None;
    m.files.remove("access.json");
    let mut stripped = files.clone();
    stripped.remove("access.json");
    stripped.insert("manifest.json".into(), m.canonical());
    for pinned in [None, Some(key.as_str())] {
        let e = verify_bundle(&stripped, pinned).unwrap_err().to_string();
        assert!(e.contains("manifest.sig: signs another manifest"), "{e}");
    }
    // Without the signature.
    let mut unsigned = files.clone();
    unsigned.remove("manifest.sig");
    let e = verify_bundle(&unsigned, Some(&key)).unwrap_err().to_string();
    assert!(e.contains("manifest.sig: missing"), "{e}");
    // A signature by another collector's key.
    let (other, _, _other_data) = bundle(pod_filter()).await;
    let mut foreign = files.clone();
    foreign.insert("manifest.sig".into(), other["manifest.sig"].clone());
    let e = verify_bundle(&foreign, Some(&key)).unwrap_err().to_string();
    assert!(e.contains("manifest.sig: signature invalid"), "{e}");
    // An access record from elsewhere (manifest hashes updated) fails the signature and the leaf hash.
    let mut swapped = files.clone();
    swapped.insert("access.json".into(), other["access.json"].clone());
    let mut m: bundle::Manifest = serde_json::from_slice(&files["manifest.json"]).unwrap();
    m.files.insert("access.json".into(), bundle::sha256_hex(&other["access.json"]));
    swapped.insert("manifest.json".into(), m.canonical());
    let e = verify_bundle(&swapped, Some(&key)).unwrap_err().to_string();
    assert!(e.contains("manifest.sig: signs another manifest"), "{e}");
}
