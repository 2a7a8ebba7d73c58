//! Limits and timeouts of flow reassembly.

use crate::proto::ProtoConfig;

/// Every bound of the flow engine; [`Default`] gives sane production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Connections tracked at once; beyond it the least recently active are
    /// evicted (counted, and each evicted connection becomes a record).
    pub max_connections: usize,
    /// Bytes buffered across all connections (out-of-order and partial
    /// messages); beyond it the least recently active connections are evicted.
    pub max_buffered_bytes: usize,
    /// Out-of-order bytes buffered per direction while waiting for a missing
    /// range; beyond it the missing range becomes a `ReorderOverflow` gap.
    pub max_reorder_bytes: usize,
    /// A connection with no event for this long (kernel ns) is flushed.
    pub idle_timeout_ns: u64,
    /// After a close event, how long (kernel ns) to wait for chunks still in
    /// flight on other CPUs before the missing bytes become gaps.
    pub close_linger_ns: u64,
    /// Bytes buffered before protocol detection gives up and picks unknown.
    pub detect_max_bytes: usize,
    /// Requests awaiting a response per connection (for latency pairing);
    /// the oldest is forgotten beyond it (counted).
    pub max_pending_exchanges: usize,
    /// Parser limits.
    pub proto: ProtoConfig,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_connections: 65_536,
            max_buffered_bytes: 512 << 20,
            max_reorder_bytes: 4 << 20,
            idle_timeout_ns: 300 * 1_000_000_000,
            close_linger_ns: 2 * 1_000_000_000,
            detect_max_bytes: 64,
            max_pending_exchanges: 1024,
            proto: ProtoConfig::default(),
        }
    }
}
