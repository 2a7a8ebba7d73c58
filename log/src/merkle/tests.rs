//! Known-answer tests (RFC 6962 / certificate-transparency vectors) and
//! cross-checks against a second, recursive reference implementation.

use super::*;
use sha2::{Digest, Sha256};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The 8 leaves of the RFC 6962 test tree.
fn leaves() -> Vec<Vec<u8>> {
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
}

/// Known roots of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Reference MTH straight from RFC 9162 §2.1.1 (recursive, on raw leaves).
fn ref_mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => Sha256::digest([]).into(),
        1 => {
            let mut v = vec![0u8];
            v.extend_from_slice(&d[0]);
            Sha256::digest(v).into()
        }
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut v = vec![1u8];
            v.extend_from_slice(&ref_mth(&d[..k]));
            v.extend_from_slice(&ref_mth(&d[k..]));
            Sha256::digest(v).into()
        }
    }
}

fn hashes(d: &[Vec<u8>]) -> Vec<Hash> {
    d.iter().map(|l| leaf_hash(l)).collect()
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(hex::encode(EMPTY_ROOT), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(EMPTY_ROOT, ref_mth(&[]));
    assert_eq!(root_of_leaf_hashes(&[]), EMPTY_ROOT);
}

#[test]
fn known_roots_of_rfc6962_tree() {
    let d = leaves();
    let lh = hashes(&d);
    for n in 1..=8 {
        assert_eq!(hex::encode(root_of_leaf_hashes(&lh[..n])), ROOTS[n - 1], "size {n}");
        assert_eq!(hex::encode(ref_mth(&d[..n])), ROOTS[n - 1], "reference, size {n}");
        assert_eq!(subtree_hash(&lh[..], 0, n as u64).unwrap(), ref_mth(&d[..n]));
    }
}

#[test]
fn known_inclusion_proofs() {
    let lh = hashes(&leaves());
    let cases: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (idx, size, want) in cases {
        let got = inclusion_proof(&lh[..], idx, size).unwrap();
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(got, want, "inclusion {idx} in {size}");
        verify_inclusion(idx, size, &lh[idx as usize], &got, &h(ROOTS[size as usize - 1])).unwrap();
    }
}

#[test]
fn known_consistency_proofs() {
    let lh = hashes(&leaves());
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (m, n, want) in cases {
        let got = consistency_proof(&lh[..], m, n).unwrap();
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        assert_eq!(got, want, "consistency {m} -> {n}");
        verify_consistency(m, n, &h(ROOTS[m as usize - 1]), &h(ROOTS[n as usize - 1]), &got).unwrap();
    }
}

/// Every proof in trees of up to 70 leaves verifies against the reference root,
/// and every single-hash corruption of it is rejected.
#[test]
fn all_proofs_verify_and_corruptions_fail() {
    let d: Vec<Vec<u8>> = (0u32..70).map(|i| i.to_le_bytes().to_vec()).collect();
    let lh = hashes(&d);
    for n in 1..=d.len() as u64 {
        let root = ref_mth(&d[..n as usize]);
        assert_eq!(root_of_leaf_hashes(&lh[..n as usize]), root);
        for i in 0..n {
            let p = inclusion_proof(&lh[..], i, n).unwrap();
            verify_inclusion(i, n, &lh[i as usize], &p, &root).unwrap();
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][0] ^= 1;
                assert!(verify_inclusion(i, n, &lh[i as usize], &bad, &root).is_err());
            }
            if n > 1 {
                assert!(
                    verify_inclusion((i + 1) % n, n, &lh[i as usize], &p, &root).is_err()
                        || lh[i as usize] == lh[((i + 1) % n) as usize]
                );
            }
        }
        for m in 1..=n {
            let old_root = ref_mth(&d[..m as usize]);
            let p = consistency_proof(&lh[..], m, n).unwrap();
            verify_consistency(m, n, &old_root, &root, &p).unwrap();
            for j in 0..p.len() {
                let mut bad = p.clone();
                bad[j][5] ^= 0x80;
                assert!(verify_consistency(m, n, &old_root, &root, &bad).is_err());
            }
            if !p.is_empty() {
                assert!(verify_consistency(m, n, &old_root, &root, &p[..p.len() - 1]).is_err());
            }
        }
    }
}

#[test]
fn signed_note_roundtrip_and_tamper() {
    let signer = Signer::from_seed("wiretrail.test/log", &[7u8; 32]).unwrap();
    let v = signer.verifier();
    let v2 = Verifier::parse(&v.key_string()).unwrap();
    let cp = Checkpoint { origin: "wiretrail.test/log".into(), size: 8, root: h(ROOTS[7]) };
    let sc = signer.sign(&cp);
    assert!(sc.note.starts_with(
        "wiretrail.test/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} wiretrail.test/log "
    ));
    assert_eq!(v2.open(&sc.note).unwrap().checkpoint, cp);
    let bad = sc.note.replace("\n8\n", "\n9\n");
    assert!(matches!(v2.open(&bad), Err(NoteError::BadSignature(_))));
    let other = Signer::from_seed("wiretrail.test/log", &[8u8; 32]).unwrap();
    assert!(other.verifier().open(&sc.note).is_err());
}
