//! Counters of everything the flow engine did, capped or could not parse.

use serde::Serialize;

/// Monotonic counters; nothing is dropped without one of these moving.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Events pushed into the engine.
    pub events: u64,
    /// Payload bytes pushed.
    pub data_bytes: u64,
    /// Records produced.
    pub records: u64,
    /// Gap records produced (every gap, whatever its source).
    pub gap_records: u64,
    /// Bytes covered by gap records.
    pub gap_bytes: u64,
    /// Gaps declared because the out-of-order window filled up.
    pub reorder_overflows: u64,
    /// Message bytes beyond the message cap that were not kept.
    pub message_cap_bytes: u64,
    /// Messages that hit the message cap.
    pub message_cap_hits: u64,
    /// Connections opened (by an open event or first seen by data).
    pub connections_opened: u64,
    /// Connections seen without an open event (mid-stream or open lost).
    pub connections_without_open: u64,
    /// Connections finished by a close event.
    pub connections_closed: u64,
    /// Connections flushed for being idle.
    pub connections_idle: u64,
    /// Connections evicted by the connection or memory cap.
    pub connections_evicted: u64,
    /// Bytes buffered in connections when they were evicted (parsed into records
    /// or emitted raw, never discarded).
    pub evicted_buffered_bytes: u64,
    /// Data bytes that overlapped bytes already received (contract violation;
    /// the first copy is kept).
    pub overlap_bytes: u64,
    /// Gap bytes announced over bytes already received or already announced
    /// missing (contract violation; the earlier information is kept).
    pub overlap_gap_bytes: u64,
    /// Events with positions or totals out of range (became raw records
    /// with the reason).
    pub invalid_events: u64,
    /// Events with conn_id 0 (untracked by capture; became raw records).
    pub untracked_events: u64,
    /// Messages recorded as malformed by a parser.
    pub malformed_messages: u64,
    /// Messages recorded incomplete (cut by a gap, a cap or the stream end).
    pub incomplete_messages: u64,
    /// Bytes recorded raw while a parser looked for a message boundary.
    pub unparsed_bytes: u64,
    /// Requests forgotten before their response arrived (pairing cap).
    pub exchanges_dropped: u64,
    /// Parser results that broke the parser contract (length 0 or past the
    /// buffer); the bytes became raw records.
    pub parser_contract_violations: u64,
}
