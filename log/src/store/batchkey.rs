//! The batch fields of a stored leaf, decoded without the record's contents.

use prost::Message;

/// The batch key fields of a `StoredLeaf` (record and entry skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeafBatch {
    /// Agent id of the batch.
    #[prost(string, tag = "1")]
    pub agent_id: String,
    /// Boot id of the batch.
    #[prost(string, tag = "2")]
    pub boot_id: String,
    /// Batch seq.
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// Position in the batch.
    #[prost(uint32, tag = "4")]
    pub index_in_batch: u32,
    /// Certificate identity of the sender.
    #[prost(string, tag = "5")]
    pub peer_identity: String,
    /// Records in the batch (0: an entry, or a leaf older than the field).
    #[prost(uint32, tag = "20")]
    pub batch_records: u32,
    /// Content hash of the batch.
    #[prost(bytes = "vec", tag = "21")]
    pub batch_sha256: Vec<u8>,
    /// Last seq the batch stands for (0 = its own seq only).
    #[prost(uint64, tag = "22")]
    pub covers_through_seq: u64,
    /// The record's kind and capture time, when the leaf is a record (its other fields are skipped).
    #[prost(message, optional, tag = "7")]
    pub record: Option<RecordHead>,
    /// The collector entry, when the leaf is one.
    #[prost(message, optional, tag = "8")]
    pub entry: Option<wiretrail_proto::v1::CollectorEntry>,
}

/// The kind and capture time of a `Record` (its other fields skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordHead {
    /// `RecordKind`.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    /// UTC ns at capture.
    #[prost(int64, tag = "2")]
    pub capture_time_ns: i64,
}

impl LeafBatch {
    /// Whether the leaf is a heartbeat record.
    pub fn is_heartbeat(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.kind == wiretrail_proto::v1::RecordKind::Heartbeat as i32)
    }

    /// Decodes the batch fields of leaf bytes.
    pub fn decode_leaf(bytes: &[u8]) -> Result<LeafBatch, prost::DecodeError> {
        LeafBatch::decode(bytes)
    }

    /// Whether the leaf is the last of an incomplete batch: it belongs to a
    /// batch of known size and is not that batch's last record.
    pub fn ends_incomplete_batch(&self) -> bool {
        self.entry.is_none() && self.batch_records > 0 && self.index_in_batch + 1 < self.batch_records
    }
}
