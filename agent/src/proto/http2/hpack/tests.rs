use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn pairs(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (String::from_utf8_lossy(&f.name).into_owned(), String::from_utf8_lossy(&f.value).into_owned()))
        .collect()
}

fn want(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// RFC 7541 C.1: integer representation examples.
#[test]
fn integers() {
    let mut i = Input { b: &[0b0000_1010], at: 0 };
    assert_eq!(i.int(5).unwrap(), 10);
    let mut i = Input { b: &[0b0001_1111, 0b1001_1010, 0b0000_1010], at: 0 };
    assert_eq!(i.int(5).unwrap(), 1337);
    let mut i = Input { b: &[42], at: 0 };
    assert_eq!(i.int(8).unwrap(), 42);
    let mut i = Input { b: &[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], at: 0 };
    assert!(matches!(i.int(5), Err(HpackError::Integer { .. })));
    let mut i = Input { b: &[0x1f, 0xff], at: 0 };
    assert!(matches!(i.int(5), Err(HpackError::Truncated { .. })));
}

/// RFC 7541 C.2.1-C.2.4: single literal representations.
#[test]
fn literal_representations() {
    let mut d = Decoder::new(4096, 64, 4096);
    let f = d.decode(&hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")).unwrap();
    assert_eq!(pairs(&f), want(&[("custom-key", "custom-header")]));
    assert_eq!(d.table_size(), 55);
    let mut d = Decoder::new(4096, 64, 4096);
    let f = d.decode(&hex("040c 2f73 616d 706c 652f 7061 7468")).unwrap();
    assert_eq!(pairs(&f), want(&[(":path", "/sample/path")]));
    assert_eq!(d.table_size(), 0);
    let f = d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74")).unwrap();
    assert_eq!(pairs(&f), want(&[("password", "secret")]));
    assert_eq!(d.table_size(), 0);
    let f = d.decode(&hex("82")).unwrap();
    assert_eq!(pairs(&f), want(&[(":method", "GET")]));
}

/// RFC 7541 C.3 (without Huffman) and C.4 (with Huffman): three requests on
/// one connection sharing the dynamic table.
#[test]
fn request_sequences() {
    for blocks in [
        [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ],
        [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ],
    ] {
        let mut d = Decoder::new(4096, 64, 4096);
        let f = d.decode(&hex(blocks[0])).unwrap();
        assert_eq!(
            pairs(&f),
            want(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        );
        assert_eq!(d.table_size(), 57);
        let f = d.decode(&hex(blocks[1])).unwrap();
        assert_eq!(
            pairs(&f),
            want(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table_size(), 110);
        let f = d.decode(&hex(blocks[2])).unwrap();
        assert_eq!(
            pairs(&f),
            want(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table_size(), 164);
    }
}

/// RFC 7541 C.5: responses with a 256-byte table, exercising eviction.
#[test]
fn response_sequence_with_eviction() {
    let mut d = Decoder::new(4096, 64, 4096);
    // Size update to 256 first, as the RFC's encoder was configured.
    d.decode(&hex("3fe1 01")).unwrap();
    let f = d
        .decode(&hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        ))
        .unwrap();
    assert_eq!(
        pairs(&f),
        want(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com")
        ])
    );
    assert_eq!(d.table_size(), 222);
    let f = d.decode(&hex("4803 3330 37c1 c0bf")).unwrap();
    assert_eq!(
        pairs(&f),
        want(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com")
        ])
    );
    assert_eq!(d.table_size(), 222);
}

#[test]
fn errors_are_reported() {
    let mut d = Decoder::new(4096, 64, 4096);
    assert_eq!(d.decode(&hex("80")), Err(HpackError::Index { index: 0 }));
    assert_eq!(d.decode(&hex("be")), Err(HpackError::Index { index: 62 }));
    assert!(matches!(d.decode(&hex("4085")), Err(HpackError::Truncated { .. })));
    let mut d = Decoder::new(64, 64, 4096);
    assert_eq!(d.decode(&hex("3fe1 01")), Err(HpackError::SizeUpdate { size: 256, max: 64 }));
    // State lost: dynamic references refuse, static ones still work.
    let mut d = Decoder::new(4096, 64, 4096);
    d.decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).unwrap();
    d.lose_state();
    assert_eq!(d.decode(&hex("be")), Err(HpackError::StateLost { index: 62 }));
    assert_eq!(pairs(&d.decode(&hex("82")).unwrap()), want(&[(":method", "GET")]));
    // A size update to 0 clears the table and restores trust.
    d.decode(&hex("20")).unwrap();
    assert_eq!(d.decode(&hex("be")), Err(HpackError::Index { index: 62 }));
    // Header caps.
    let mut d = Decoder::new(4096, 2, 4096);
    assert!(matches!(d.decode(&hex("828684")), Err(HpackError::TooLarge { .. })));
}

proptest! {
    #[test]
    fn arbitrary_blocks_never_panic(block in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut d = Decoder::new(4096, 64, 8192);
        let _ = d.decode(&block);
        prop_assert!(d.table_size() <= 4096);
    }
}
