#![no_main]
//! Arbitrary header blocks through one HPACK decoder (state carried across
//! blocks), and arbitrary Huffman strings.

use libfuzzer_sys::fuzz_target;
use wiretrail_agent::proto::http2::{hpack::Decoder, huffman};

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(4096, 64, 8192);
    for block in data.split(|b| *b == 0xA5) {
        if let Ok(fields) = d.decode(block) {
            assert!(fields.len() <= 64);
        }
        assert!(d.table_size() <= 4096, "dynamic table over its limit");
    }
    let mut out = Vec::new();
    let _ = huffman::decode(data, &mut out);
    assert!(out.len() <= data.len() * 8 / 5 + 1);
});
