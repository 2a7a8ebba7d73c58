//! The frame codec of `bench collector`, apart from the server: for leaves
//! built like the ingest path's (a `StoredLeaf` with batch fields around the
//! bench's record), the stored bytes per payload byte, the writer's encode
//! cost per leaf (compression included) and one thread's decode + leaf-hash
//! rate, with compression off and at zstd levels -1 (`--fast=1`), 1 and 3.

use std::time::Instant;

use prost::Message;
use wiretrail_log::frame::{self, Encoder, HEADER_LEN};
use wiretrail_proto::v1::StoredLeaf;

use crate::bench_collector::record;
use crate::bench_payload::{PAYLOAD, Payload};

/// Leaves measured.
const LEAVES: u64 = 50_000;

/// One row: a compression setting.
pub struct Row {
    /// "off" or "zstd N".
    pub setting: String,
    /// Frame bytes per payload byte.
    pub bytes_per_payload_byte: f64,
    /// Encode time per leaf (ns), the writer thread's cost.
    pub encode_ns: f64,
    /// Decode + hash check, MB/s of leaf bytes, one thread.
    pub decode_mb_s: f64,
}

fn leaves(kind: Payload) -> Vec<Vec<u8>> {
    (0..LEAVES)
        .map(|i| {
            StoredLeaf {
                agent_id: format!("bench-agent-{}", i % 4),
                boot_id: "bench".into(),
                seq: i / 1000,
                index_in_batch: (i % 1000) as u32,
                received_time_ns: 1_700_000_000_000_000_000 + i as i64 * 1000,
                record: Some(record(i, LEAVES, kind)),
                batch_records: 1000,
                // A content hash: 32 bytes that do not compress.
                batch_sha256: (0..32u64).map(|k| (((i / 1000 + 1) * 0x9e37_79b9 * (k + 1)) >> 7) as u8).collect(),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect()
}

/// Measures the settings on `kind` payloads.
pub fn measure(kind: Payload) -> anyhow::Result<Vec<Row>> {
    let leaves = leaves(kind);
    let leaf_bytes: usize = leaves.iter().map(Vec::len).sum();
    let mut rows = Vec::new();
    for level in [None, Some(-1), Some(1), Some(3)] {
        let mut enc = Encoder::new(level)?;
        let mut out = Vec::with_capacity(leaf_bytes + leaves.len() * HEADER_LEN);
        let t = Instant::now();
        for (i, l) in leaves.iter().enumerate() {
            enc.encode(&mut out, i as u64, l);
        }
        let encode_ns = t.elapsed().as_secs_f64() * 1e9 / leaves.len() as f64;
        let t = Instant::now();
        let mut off = 0;
        let mut checked = 0usize;
        while off < out.len() {
            let h =
                frame::header(out[off..off + HEADER_LEN].try_into()?).ok_or_else(|| anyhow::anyhow!("bad header"))?;
            checked += frame::checked_leaf(&h, &out[off + HEADER_LEN..off + h.frame_len()])?.len();
            off += h.frame_len();
        }
        let decode_mb_s = checked as f64 / 1e6 / t.elapsed().as_secs_f64();
        anyhow::ensure!(checked == leaf_bytes, "decoded {checked} of {leaf_bytes} leaf bytes");
        rows.push(Row {
            setting: level.map_or("off".to_string(), |l| format!("zstd {l}")),
            bytes_per_payload_byte: out.len() as f64 / (leaves.len() * PAYLOAD) as f64,
            encode_ns,
            decode_mb_s,
        });
    }
    Ok(rows)
}

/// Prints the rows (after the main table).
pub fn print(kind: Payload, rows: &[Row]) {
    println!();
    println!("frame codec, {LEAVES} leaves with {kind:?} payloads (one thread; no I/O):");
    println!(
        "{:<10} {:>22} {:>20} {:>26}",
        "setting", "bytes per payload byte", "encode ns per leaf", "decode+hash MB/s of leaves"
    );
    for r in rows {
        println!("{:<10} {:>22.3} {:>20.0} {:>26.0}", r.setting, r.bytes_per_payload_byte, r.encode_ns, r.decode_mb_s);
    }
}
