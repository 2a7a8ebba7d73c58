//! Counters of everything the connection table did, bounded or could not
//! parse: nothing is dropped without one of these moving.

use serde::Serialize;

/// Monotonic counters (exported as metrics with the `conn_` prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnStats {
    /// Events taken.
    pub events: u64,
    /// Payload bytes taken.
    pub data_bytes: u64,
    /// Records made (every kind).
    pub records: u64,
    /// Exchange records made (whole or not).
    pub exchanges: u64,
    /// Exchange records holding less than a whole exchange.
    pub exchanges_incomplete: u64,
    /// Exchanges recorded in several records (age or size bound).
    pub exchanges_cut: u64,
    /// Exchanges recorded without their response because too many were in progress.
    pub exchanges_unanswered_bound: u64,
    /// Segment records made (unparsed bytes).
    pub segments: u64,
    /// Gap records made (missing bytes no other record holds).
    pub gap_records: u64,
    /// Bytes known missing (every gap, wherever it is recorded).
    pub gap_bytes: u64,
    /// TLS ciphertext counted and not kept (its plaintext is captured): not a gap.
    pub not_kept_bytes: u64,
    /// Bytes declared missing by the table itself (reorder window, close, flush).
    pub lost_bytes: u64,
    /// Gaps declared because the out-of-order window filled up.
    pub reorder_overflows: u64,
    /// Bytes of messages larger than the parse limit handed on in pieces
    /// (kept in their exchange's record; their fields come from the first bytes).
    pub message_cap_bytes: u64,
    /// Messages larger than the parse limit.
    pub message_cap_hits: u64,
    /// Connections tracked (opened, or first seen by another event).
    pub conns_opened: u64,
    /// Connections first seen without an open event (mid-stream or open lost).
    pub conns_without_open: u64,
    /// Connections finished by a close.
    pub conns_closed: u64,
    /// Connections finished for being idle.
    pub conns_idle: u64,
    /// Connections finished by the connection or memory bound.
    pub conns_evicted: u64,
    /// Bytes held by connections when they were evicted (recorded, never dropped).
    pub evicted_buffered_bytes: u64,
    /// Data bytes that overlapped bytes already received (first copy kept).
    pub overlap_bytes: u64,
    /// Gap bytes announced over bytes already known.
    pub overlap_gap_bytes: u64,
    /// Events with positions or totals out of range (recorded raw).
    pub invalid_events: u64,
    /// Events of sockets the kernel could not track (recorded raw).
    pub untracked_events: u64,
    /// Messages a parser rejected or found malformed.
    pub malformed_messages: u64,
    /// Messages cut short (a gap, the cap, the end of the stream).
    pub incomplete_messages: u64,
    /// Bytes recorded raw while a parser looked for a message boundary.
    pub unparsed_bytes: u64,
    /// Parser results that broke the parser contract (recorded raw).
    pub parser_contract_violations: u64,
    /// Conversations whose two ends were both captured and paired.
    pub twins: u64,
    /// Parts where the two ends saw different bytes.
    pub witness_mismatches: u64,
    /// Bytes one end saw and the other did not.
    pub witness_missing_bytes: u64,
    /// Bytes of the witness end no record of the primary claimed (recorded as segments).
    pub witness_unclaimed_bytes: u64,
    /// Endpoint pairs dropped from the peer index (bound reached).
    pub peer_index_evicted: u64,
}
