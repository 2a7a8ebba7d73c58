//! Counters of the shipper (every cap and failure is counted here).

use std::sync::atomic::{AtomicU64, Ordering};

/// Shipper counters; read them with [`ShipStats::get`] or the fields directly.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Records received from the agent.
    pub records_in: AtomicU64,
    /// Records written to the spool inside ordinary batches.
    pub records_spooled: AtomicU64,
    /// Batches written to the spool (gap batches included).
    pub batches_spooled: AtomicU64,
    /// Batches acknowledged by the collector and removed from the spool.
    pub batches_acked: AtomicU64,
    /// Acks that said the batch was already stored (a resend after a lost ack or a restart).
    pub batches_duplicate: AtomicU64,
    /// Records not kept because the spool was full or failed (each is covered by a gap record).
    pub records_dropped: AtomicU64,
    /// Serialized bytes of those records.
    pub bytes_dropped: AtomicU64,
    /// Gap records written to the spool for records not kept.
    pub gap_records: AtomicU64,
    /// Gap records that could not be written (logged at error; the loss is then only in the log).
    pub gap_records_unwritten: AtomicU64,
    /// Spooled batch files found corrupt at start (each replaced by a gap batch).
    pub corrupt_batches: AtomicU64,
    /// Acks that said other content was already stored under the batch's seq (kept as a conflict).
    pub batches_conflict: AtomicU64,
    /// Batches found missing from the spool (deleted or quarantined), recorded by gap batches.
    pub batches_lost: AtomicU64,
    /// Records the collector refused as too large, replaced by gap records.
    pub records_too_large: AtomicU64,
    /// Failed connects, streams ended by an error, ack timeouts.
    pub send_errors: AtomicU64,
    /// Streams opened to the collector.
    pub connections: AtomicU64,
    /// Changed TLS files put in force (the certificate reloaded).
    pub tls_reloads: AtomicU64,
    /// Changed TLS files found unusable (the previous certificates stay in force).
    pub tls_rejected: AtomicU64,
}

/// A point-in-time copy of [`ShipStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`ShipStats::records_in`].
    pub records_in: u64,
    /// See [`ShipStats::records_spooled`].
    pub records_spooled: u64,
    /// See [`ShipStats::batches_spooled`].
    pub batches_spooled: u64,
    /// See [`ShipStats::batches_acked`].
    pub batches_acked: u64,
    /// See [`ShipStats::batches_duplicate`].
    pub batches_duplicate: u64,
    /// See [`ShipStats::records_dropped`].
    pub records_dropped: u64,
    /// See [`ShipStats::bytes_dropped`].
    pub bytes_dropped: u64,
    /// See [`ShipStats::gap_records`].
    pub gap_records: u64,
    /// See [`ShipStats::gap_records_unwritten`].
    pub gap_records_unwritten: u64,
    /// See [`ShipStats::corrupt_batches`].
    pub corrupt_batches: u64,
    /// See [`ShipStats::batches_conflict`].
    pub batches_conflict: u64,
    /// See [`ShipStats::batches_lost`].
    pub batches_lost: u64,
    /// See [`ShipStats::records_too_large`].
    pub records_too_large: u64,
    /// See [`ShipStats::send_errors`].
    pub send_errors: u64,
    /// See [`ShipStats::connections`].
    pub connections: u64,
    /// See [`ShipStats::tls_reloads`].
    pub tls_reloads: u64,
    /// See [`ShipStats::tls_rejected`].
    pub tls_rejected: u64,
}

impl ShipStats {
    /// Adds `n` to a counter.
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Current values.
    pub fn get(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            records_in: l(&self.records_in),
            records_spooled: l(&self.records_spooled),
            batches_spooled: l(&self.batches_spooled),
            batches_acked: l(&self.batches_acked),
            batches_duplicate: l(&self.batches_duplicate),
            records_dropped: l(&self.records_dropped),
            bytes_dropped: l(&self.bytes_dropped),
            gap_records: l(&self.gap_records),
            gap_records_unwritten: l(&self.gap_records_unwritten),
            corrupt_batches: l(&self.corrupt_batches),
            batches_conflict: l(&self.batches_conflict),
            batches_lost: l(&self.batches_lost),
            records_too_large: l(&self.records_too_large),
            send_errors: l(&self.send_errors),
            connections: l(&self.connections),
            tls_reloads: l(&self.tls_reloads),
            tls_rejected: l(&self.tls_rejected),
        }
    }
}
