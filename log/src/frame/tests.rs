use super::*;

/// A leaf like the store's: text with some repetition.
fn text_leaf(i: u64) -> Vec<u8> {
    format!("GET /api/v1/orders/{i} HTTP/1.1\r\nHost: shop.internal\r\nAccept: application/json\r\n")
        .repeat(8)
        .into_bytes()
}

/// Bytes zstd cannot shrink (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn parse(buf: &[u8]) -> (Header, &[u8]) {
    let h = header(buf[..HEADER_LEN].try_into().unwrap()).unwrap();
    (h, &buf[HEADER_LEN..h.frame_len()])
}

#[test]
fn compressible_leaf_round_trips_compressed_with_the_uncompressed_hash() {
    let mut enc = Encoder::new(Some(1)).unwrap();
    let mut out = Vec::new();
    let leaf = text_leaf(7);
    let hash = enc.encode(&mut out, 42, &leaf);
    assert_eq!(hash, leaf_hash(&leaf));
    let (h, body) = parse(&out);
    assert!(h.compressed, "a repetitive leaf was stored uncompressed");
    assert!(h.len < leaf.len() / 2, "{} bytes for a {}-byte leaf", h.len, leaf.len());
    assert_eq!(out.len(), h.frame_len());
    assert_eq!((h.index, h.hash), (42, hash));
    assert_eq!(&*checked_leaf(&h, body).unwrap(), &leaf[..]);
    // The context is reused: a second leaf encodes as well.
    let mut out2 = Vec::new();
    enc.encode(&mut out2, 43, &text_leaf(8));
    let (h2, body2) = parse(&out2);
    assert_eq!(&*checked_leaf(&h2, body2).unwrap(), &text_leaf(8)[..]);
}

#[test]
fn leaf_that_does_not_shrink_is_stored_in_the_old_format() {
    let leaf = noise(300);
    let mut old = Vec::new();
    encode(&mut old, 5, &leaf);
    let mut new = Vec::new();
    Encoder::new(Some(3)).unwrap().encode(&mut new, 5, &leaf);
    assert_eq!(new, old);
    let (h, body) = parse(&new);
    assert!(!h.compressed);
    assert!(matches!(checked_leaf(&h, body).unwrap(), Cow::Borrowed(_)));
    // With compression off every leaf is written the old way.
    let mut off = Vec::new();
    Encoder::new(None).unwrap().encode(&mut off, 5, &text_leaf(1));
    let mut plain = Vec::new();
    encode(&mut plain, 5, &text_leaf(1));
    assert_eq!(off, plain);
}

#[test]
fn header_reads_the_flag_and_bounds_the_length() {
    let mut b = [0u8; HEADER_LEN];
    b[..4].copy_from_slice(&(100u32 | COMPRESSED).to_le_bytes());
    let h = header(&b).unwrap();
    assert_eq!((h.len, h.compressed), (100, true));
    b[..4].copy_from_slice(&((MAX_LEAF_LEN as u32 + 1) | COMPRESSED).to_le_bytes());
    assert!(header(&b).is_none());
    b[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(header(&b).is_none());
}

#[test]
fn every_flipped_body_byte_is_an_error_naming_the_leaf_or_the_same_leaf() {
    let leaf = text_leaf(3);
    let mut out = Vec::new();
    Encoder::new(Some(1)).unwrap().encode(&mut out, 77, &leaf);
    let (h, body) = parse(&out);
    let mut errors = 0;
    for p in 0..body.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = body.to_vec();
            b[p] ^= bit;
            match checked_leaf(&h, &b) {
                Err(e) => {
                    assert_eq!(e.index(), 77);
                    assert!(e.to_string().starts_with("leaf 77: "), "{e}");
                    errors += 1;
                }
                // Only the leaf is authenticated: an encoding change that decodes to it is no tampering.
                Ok(l) => assert_eq!(&*l, &leaf[..], "flip at {p} gave another leaf"),
            }
        }
    }
    assert!(errors > body.len(), "only {errors} of {} flips detected", 2 * body.len());
    // The magic, the recorded size and the last byte are always caught.
    for p in [0, 5, body.len() - 1] {
        let mut b = body.to_vec();
        b[p] ^= 0x01;
        assert!(checked_leaf(&h, &b).is_err(), "flip at {p}");
    }
}

#[test]
fn bodies_that_are_not_exactly_one_frame_are_refused() {
    let leaf = text_leaf(9);
    let mut out = Vec::new();
    Encoder::new(Some(1)).unwrap().encode(&mut out, 1, &leaf);
    let (h, body) = parse(&out);
    // Trailing bytes after the zstd frame: an empty skippable frame, which
    // zstd alone would decode past without a word.
    let mut longer = body.to_vec();
    longer.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]);
    let e = decode_body(&Header { len: longer.len(), ..h }, &longer).unwrap_err();
    assert!(matches!(e, FrameError::Decompress { index: 1, .. }), "{e}");
    // Cut short.
    let e = decode_body(&Header { len: body.len() - 1, ..h }, &body[..body.len() - 1]).unwrap_err();
    assert!(matches!(e, FrameError::Decompress { index: 1, .. }), "{e}");
    // An uncompressed leaf flagged as compressed.
    let e = decode_body(&Header { len: leaf.len(), ..h }, &leaf).unwrap_err();
    assert!(e.to_string().contains("not a zstd frame"), "{e}");
}

#[test]
fn a_body_claiming_more_than_the_maximum_is_refused_before_decompressing() {
    let big = vec![0u8; MAX_LEAF_LEN + 1];
    let mut out = Vec::new();
    Encoder::new(Some(1)).unwrap().encode(&mut out, 9, &big);
    let (h, body) = parse(&out);
    assert!(h.compressed);
    match decode_body(&h, body) {
        Err(FrameError::TooLarge { index: 9, size }) => assert_eq!(size, MAX_LEAF_LEN as u64 + 1),
        other => panic!("expected TooLarge, got {:?}", other.map(|l| l.len())),
    }
}

/// A frame prepared off the commit thread is byte for byte the frame the
/// writer's own encoder makes, compressed or not, at any level.
#[test]
fn prepared_frames_equal_encoded_frames() {
    let leaves = vec![text_leaf(1), noise(300), Vec::new(), text_leaf(2)];
    for level in [None, Some(-1), Some(3)] {
        let prepared = prepare_all(level, &leaves).unwrap();
        let mut enc = Encoder::new(level).unwrap();
        for (k, (leaf, p)) in leaves.iter().zip(&prepared).enumerate() {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let h = enc.encode(&mut a, 40 + k as u64, leaf);
            push_prepared(&mut b, 40 + k as u64, leaf, p);
            assert_eq!(a, b, "leaf {k} at level {level:?}");
            assert_eq!(h, p.hash);
            assert_eq!(p.compressed.is_some(), level.is_some() && k != 1 && k != 2, "leaf {k} at level {level:?}");
        }
    }
}
