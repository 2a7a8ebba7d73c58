//! Every bound and timeout of the connection table. All times are kernel
//! CLOCK_BOOTTIME nanoseconds: the events' own clock is the table's only clock.

use crate::proto::ProtoConfig;

const SEC: u64 = 1_000_000_000;

/// Bounds of the connection table; [`Default`] gives production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    /// Connections tracked at once; beyond it the least recently active are
    /// finished (their records made, counted as evicted).
    pub max_conns: usize,
    /// Bytes held across all connections (out-of-order bytes, partial
    /// messages, exchanges waiting for their response or their witness);
    /// beyond it the least recently active connections are finished.
    pub max_buffered_bytes: usize,
    /// Out-of-order bytes held per direction while waiting for a missing
    /// range; beyond it the missing range becomes a `reorder_overflow` gap.
    pub max_reorder_bytes: usize,
    /// How long a missing range may wait for a late event (other CPUs)
    /// before it is a `lost` gap; also how long a closed connection waits
    /// for its last events, and a record for the other end's observation.
    pub reorder_window_ns: u64,
    /// A connection with no event for this long is finished (`idle`).
    pub idle_timeout_ns: u64,
    /// A connection still open this long after it opened gets one
    /// `connection_open` record.
    pub open_record_delay_ns: u64,
    /// Unparsed bytes are coalesced into segments of at most this many bytes...
    pub segment_max_bytes: usize,
    /// ...spanning at most this long from their first byte.
    pub segment_max_age_ns: u64,
    /// An exchange not complete after this long is recorded so far (its
    /// record says it continues).
    pub exchange_max_age_ns: u64,
    /// An exchange holding more bytes than this is recorded so far.
    pub exchange_max_bytes: usize,
    /// Exchanges in progress per connection; the oldest is recorded without
    /// its response beyond it.
    pub max_pending_exchanges: usize,
    /// Bytes buffered before protocol detection gives up and picks unknown.
    pub detect_max_bytes: usize,
    /// Pair the two ends of a conversation seen on this host into one record
    /// per exchange (two witnesses).
    pub twins: bool,
    /// Parser limits.
    pub proto: ProtoConfig,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            max_conns: 100_000,
            max_buffered_bytes: 512 << 20,
            max_reorder_bytes: 4 << 20,
            reorder_window_ns: 2 * SEC,
            idle_timeout_ns: 300 * SEC,
            open_record_delay_ns: 5 * SEC,
            segment_max_bytes: 64 << 10,
            segment_max_age_ns: SEC,
            exchange_max_age_ns: 60 * SEC,
            exchange_max_bytes: 4 << 20,
            max_pending_exchanges: 1024,
            detect_max_bytes: 64,
            twins: true,
            proto: ProtoConfig::default(),
        }
    }
}
