//! Heartbeats: every interval (≤ 10 s) the agent ships a
//! `RECORD_KIND_HEARTBEAT` record stating its counters (kernel events and
//! losses, bytes, records, gaps), its spool state (bytes and batches waiting
//! for acks, when the oldest was spooled) and its clock state (the
//! boottime→UTC offset and its error bound as measured by [`crate::clock`],
//! and the kernel's adjtimex(2) sync status).
//!
//! Heartbeats are log leaves at the collector, like every record: the
//! completeness report and the silence/return alerts read them, and `verify`
//! covers them. They go through the shipper's spool (in their own batch,
//! allowed into the gap reserve, see [`crate::ship`]), so they keep being
//! produced with no traffic at all and while the collector is away; the ones
//! made during an outage arrive, in order, once it is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiretrail_proto::v1 as pb;

use crate::clock::ClockSync;
use crate::metrics::Metrics;
use crate::ship::ShipStats;
use crate::spool::Spool;

/// Shortest and longest heartbeat interval (ms).
pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=10_000;

/// Heartbeat errors.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The interval is outside [`INTERVAL_MS`].
    #[error("heartbeat interval {0} ms is outside 100..=10000 ms")]
    Interval(u64),
}

/// The kernel's time status (adjtimex(2), read only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    /// STA_UNSYNC is clear and the state is not TIME_ERROR.
    pub synced: bool,
    /// adjtimex's return value (TIME_OK, TIME_INS, ..., TIME_ERROR = 5); -1 when it failed.
    pub state: i32,
    /// The status bits (STA_*).
    pub status: u32,
    /// Maximum error (µs).
    pub max_error_us: i64,
    /// Estimated error (µs).
    pub est_error_us: i64,
}

impl KernelClock {
    /// Reads the kernel's status (modes = 0: nothing is changed).
    pub fn read() -> KernelClock {
        // SAFETY: a zeroed timex with modes 0 is a valid read-only request.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid, writable timex.
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "adjtimex failed; heartbeats report the clock as unsynchronized");
            return KernelClock { synced: false, state, status: 0, max_error_us: 0, est_error_us: 0 };
        }
        KernelClock {
            synced: t.status & libc::STA_UNSYNC == 0 && state != libc::TIME_ERROR,
            state,
            status: t.status as u32,
            max_error_us: t.maxerror as i64,
            est_error_us: t.esterror as i64,
        }
    }
}

/// What a heartbeat reads its values from.
pub struct Sources {
    /// The agent's counters.
    pub metrics: Arc<Metrics>,
    /// The shipper's counters.
    pub ship: Arc<ShipStats>,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Host stamped on the record.
    pub host: String,
    /// UTC ns when this boot started.
    pub boot_start_ns: i64,
    /// Test hook: added to the reported clock error bound (ns).
    pub extra_error_ns: u64,
}

impl Sources {
    /// Heartbeat number `number`, stamped now with the clock `sync` and the kernel's status `kernel`.
    pub fn record(&self, number: u64, interval_ms: u64, sync: &ClockSync, kernel: &KernelClock) -> pb::Record {
        let m = &self.metrics;
        let ship = self.ship.get();
        let now_boot = crate::clock::now_boot_ns();
        let error_ns = sync.error_at(now_boot).saturating_add(self.extra_error_ns);
        let hb = pb::Heartbeat {
            number,
            interval_ms,
            boot_start_ns: self.boot_start_ns,
            kernel_events: m.kernel_events.get(),
            kernel_lost_events: m.kernel_lost_events.get(),
            kernel_lost_bytes: m.kernel_lost_bytes.get(),
            data_bytes: m.data_bytes.get(),
            data_events: m.data_events.get(),
            records: m.records_out.get(),
            record_payload_bytes: m.record_payload_bytes.get(),
            gap_records: m.gap_records.get(),
            gap_bytes: m.gap_lost_bytes.get()
                + m.gap_truncated_bytes.get()
                + m.gap_unreadable_bytes.get()
                + m.gap_other_bytes.get(),
            spool_bytes: self.spool.used_bytes(),
            spool_batches: self.spool.len() as u64,
            spool_oldest_ns: self.spool.oldest_ns().unwrap_or(0),
            batches_acked: ship.batches_acked,
            spool_records_dropped: ship.records_dropped,
            clock_offset_ns: sync.offset_ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            clock_error_ns: error_ns,
            kernel_clock_synced: kernel.synced,
            kernel_clock_state: kernel.state,
            kernel_clock_status: kernel.status,
            kernel_max_error_us: kernel.max_error_us,
            kernel_est_error_us: kernel.est_error_us,
        };
        let mut r = pb::Record {
            capture_time_ns: sync.to_utc_ns(now_boot).clamp(0, i64::MAX as i128) as i64,
            clock_error_ns: error_ns,
            kernel_time_ns: now_boot,
            host: self.host.clone(),
            heartbeat: Some(hb),
            ..Default::default()
        };
        r.set_kind(pb::RecordKind::Heartbeat);
        r.set_clock_source(pb::ClockSource::BoottimeOffset);
        r
    }
}

/// Sends a heartbeat every `interval_ms` (the first at once) until `shutdown`.
pub fn spawn(
    sources: Sources,
    interval_ms: u64,
    tx: mpsc::Sender<pb::Record>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, HeartbeatError> {
    if !INTERVAL_MS.contains(&interval_ms) {
        return Err(HeartbeatError::Interval(interval_ms));
    }
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut number = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let r = sources.record(number, interval_ms, &ClockSync::measure(), &KernelClock::read());
            number += 1;
            if tx.send(r).await.is_err() {
                tracing::warn!("shipper stopped; no more heartbeats");
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolConfig;

    #[test]
    fn heartbeat_states_counters_spool_and_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path().into())).unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.kernel_events.add(10);
        metrics.kernel_lost_events.add(2);
        metrics.data_bytes.add(300);
        metrics.gap_lost_bytes.add(7);
        metrics.gap_other_bytes.add(1);
        let s = Sources {
            metrics,
            ship: Arc::new(ShipStats::default()),
            spool: Arc::new(spool),
            host: "h".into(),
            boot_start_ns: 5,
            extra_error_ns: 80_000_000,
        };
        let sync = ClockSync { offset_ns: 1_000, error_ns: 20, measured_at_boot_ns: crate::clock::now_boot_ns() };
        let k = KernelClock { synced: true, state: 0, status: 0, max_error_us: 3, est_error_us: 1 };
        let r = s.record(4, 5_000, &sync, &k);
        assert_eq!(r.kind(), pb::RecordKind::Heartbeat);
        let hb = r.heartbeat.unwrap();
        assert_eq!((hb.number, hb.interval_ms, hb.boot_start_ns), (4, 5_000, 5));
        assert_eq!((hb.kernel_events, hb.kernel_lost_events, hb.data_bytes, hb.gap_bytes), (10, 2, 300, 8));
        assert_eq!((hb.spool_batches, hb.spool_oldest_ns), (0, 0));
        assert_eq!(hb.clock_offset_ns, 1_000);
        assert!(hb.clock_error_ns >= 80_000_020, "{}", hb.clock_error_ns);
        assert!(hb.kernel_clock_synced && hb.kernel_max_error_us == 3);
    }

    #[test]
    fn interval_above_ten_seconds_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _g = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path().into())).unwrap();
        let s = Sources {
            metrics: Arc::default(),
            ship: Arc::default(),
            spool: Arc::new(spool),
            host: "h".into(),
            boot_start_ns: 0,
            extra_error_ns: 0,
        };
        let (tx, _rx) = mpsc::channel(1);
        let e = spawn(s, 10_001, tx, CancellationToken::new()).unwrap_err();
        assert!(e.to_string().contains("10001 ms"), "{e}");
    }
}
