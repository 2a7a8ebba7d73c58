//! How far ingest may run ahead of the index: a lag in records worth at most
//! [`IndexConfig::max_lag_secs`] of the indexer's measured rate, between
//! [`MIN_LAG`] and [`IndexConfig::max_lag`].
//!
//! Why a time: the lag is what searches scan from the log instead of the
//! index, and what the index must still do once ingest stops. A count alone
//! (1M records) meant 8–20 s of catch-up on this machine kind and a search
//! during heavy ingest scanning up to 1M leaves; how many records the index
//! does in a few seconds depends on the machine and the records.
//!
//! The rate is measured over the indexer's busy time only (from the first
//! leaves of a transaction to its commit), never over time spent waiting for
//! new leaves, so an idle spell does not make the next burst wait.

use std::time::Duration;

use super::IndexConfig;

/// The lag never limits ingest below this many records (a rate measured on
/// a few slow transactions must not stall ingest).
pub const MIN_LAG: u64 = 50_000;

/// Weight of the newest transaction in the smoothed rate.
const ALPHA: f64 = 0.2;

/// The indexer's smoothed rate, in leaves per second of busy time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rate(Option<f64>);

impl Rate {
    /// Accounts a transaction of `leaves` leaves that kept the indexer busy for `busy`.
    pub fn observe(&mut self, leaves: u64, busy: Duration) {
        let secs = busy.as_secs_f64();
        if leaves == 0 || secs <= 0.0 {
            return;
        }
        let now = leaves as f64 / secs;
        self.0 = Some(match self.0 {
            None => now,
            Some(r) => r + ALPHA * (now - r),
        });
    }

    /// Leaves per second, once a transaction was measured.
    pub fn per_sec(&self) -> Option<f64> {
        self.0
    }

    /// The lag ingest may reach under `config` (its `max_lag` until a rate is known).
    pub fn lag_limit(&self, config: &IndexConfig) -> u64 {
        let Some(rate) = self.0 else { return config.max_lag };
        let by_time = (rate * config.max_lag_secs.max(0.0)) as u64;
        by_time.clamp(MIN_LAG.min(config.max_lag), config.max_lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_lag: u64, secs: f64) -> IndexConfig {
        IndexConfig { max_lag, max_lag_secs: secs, ..IndexConfig::default() }
    }

    #[test]
    fn the_limit_is_the_rate_times_the_seconds_within_the_bounds() {
        let mut r = Rate::default();
        assert_eq!(r.lag_limit(&config(1_000_000, 4.0)), 1_000_000, "no rate yet: the count");
        r.observe(20_000, Duration::from_millis(200)); // 100k/s
        assert_eq!(r.per_sec(), Some(100_000.0));
        assert_eq!(r.lag_limit(&config(1_000_000, 4.0)), 400_000);
        assert_eq!(r.lag_limit(&config(300_000, 4.0)), 300_000, "the count caps it");
        assert_eq!(r.lag_limit(&config(1_000_000, 0.1)), MIN_LAG, "never below the floor");
        assert_eq!(r.lag_limit(&config(10_000, 0.1)), 10_000, "a count below the floor wins");
    }

    #[test]
    fn ingest_waits_only_past_the_limit_the_indexer_set() {
        use super::super::IndexProgress;
        use std::sync::atomic::Ordering;
        let p = IndexProgress::default();
        // Before the indexer starts: the default count.
        assert!(!p.behind(IndexConfig::default().max_lag));
        assert!(p.behind(IndexConfig::default().max_lag + 1));
        p.lag_limit.store(400_000, Ordering::Release);
        p.indexed.store(1_000, Ordering::Release);
        assert!(!p.behind(401_000));
        assert!(p.behind(401_001));
        assert!(!p.behind(10), "a log behind the mark (never) is not a lag");
    }

    #[test]
    fn the_rate_is_smoothed_and_ignores_empty_transactions() {
        let mut r = Rate::default();
        r.observe(10_000, Duration::from_millis(100)); // 100k/s
        r.observe(0, Duration::from_secs(5));
        r.observe(10, Duration::ZERO);
        assert_eq!(r.per_sec(), Some(100_000.0));
        r.observe(20_000, Duration::from_millis(100)); // 200k/s
        assert_eq!(r.per_sec(), Some(100_000.0 + ALPHA * 100_000.0));
        for _ in 0..100 {
            r.observe(20_000, Duration::from_millis(100));
        }
        assert!((r.per_sec().unwrap() - 200_000.0).abs() < 1.0, "{:?}", r.per_sec());
    }
}
