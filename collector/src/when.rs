//! Time as people read and write it, for the CLI and the console.
//!
//! In: `--since 90s|15m|1h|2d|1w` (a window ending now), `--from`/`--to` as
//! RFC 3339 (`2026-12-06T09:00:00Z`, `2026-12-06T10:00:00+01:00`) or a date
//! (`2026-12-06`, midnight UTC). Out: RFC 3339 in UTC with the fraction the
//! value needs (`2026-12-06T09:00:00.000123Z`). The wire and the store keep
//! nanoseconds since the epoch; only the edges convert.
//!
//! `now` is always passed in, so the parsing is testable without a clock.

use std::time::Duration;

/// Errors of reading a time or a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhenError {
    /// Not a duration of the form `<number><unit>`.
    #[error("{0:?} is not a duration: write a number and a unit, e.g. 90s, 15m, 1h, 2d, 1w, 3y")]
    Duration(String),
    /// Neither RFC 3339 nor a date.
    #[error(
        "{0:?} is not a time: write RFC 3339 (2026-12-06T09:00:00Z, 2026-12-06T10:00:00+01:00) or a date (2026-12-06)"
    )]
    Time(String),
    /// Outside what nanoseconds since 1970 in an i64 can hold (years 1970..2262).
    #[error("{0:?} is outside the years 1970..2262")]
    Range(String),
    /// The window ends before it starts.
    #[error("the window is empty: --from {from} is not before --to {to}")]
    Empty {
        /// The start, as written back in RFC 3339.
        from: String,
        /// The end.
        to: String,
    },
}

/// A duration such as `90s`, `15m`, `1h`, `2d`, `1w`, `3y` (also `ms`; one
/// unit). A year counts 366 days, so a retention period in years is never a
/// day short of a calendar-year rule.
pub fn parse_duration(s: &str) -> Result<Duration, WhenError> {
    let err = || WhenError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "y" | "year" | "years" => 366 * 86_400,
        _ => return Err(err()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(err)
}

/// A time in RFC 3339 (any offset) or a date (midnight UTC), as ns since the epoch.
pub fn parse_time(s: &str) -> Result<i64, WhenError> {
    let t = s.trim();
    let ts: jiff::Timestamp = match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) => {
            // Only a bare date: a date and time without an offset is ambiguous.
            if t.len() != 10 {
                return Err(WhenError::Time(s.to_string()));
            }
            let d: jiff::civil::Date = t.parse().map_err(|_| WhenError::Time(s.to_string()))?;
            d.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| WhenError::Range(s.to_string()))?.timestamp()
        }
    };
    let ns = ts.as_nanosecond();
    if !(0..=i64::MAX as i128).contains(&ns) {
        return Err(WhenError::Range(s.to_string()));
    }
    Ok(ns as i64)
}

/// `ns` since the epoch in RFC 3339 UTC; 0 (unset) prints as `-`.
pub fn fmt_ns(ns: i64) -> String {
    if ns == 0 {
        return "-".into();
    }
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("{ns}ns"),
    }
}

/// Where "now" comes from: the system clock, or a test's (silence
/// detection, retention expiry).
pub trait Clock: Send + Sync {
    /// UTC ns now.
    fn now_ns(&self) -> i64;
}

/// The system clock, shifted by `offset_ns` (0 in production; tests move time forward).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    /// Added to the system time.
    pub offset_ns: i64,
}

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        wiretrail_log::store::now_ns().saturating_add(self.offset_ns)
    }
}

/// A window `[from, to)` in ns since the epoch; 0 means open on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Inclusive start, 0 = from the first record.
    pub from_ns: i64,
    /// Exclusive end, 0 = open (now, or following).
    pub to_ns: i64,
}

/// The parts of a window as given on a command line.
#[derive(Debug, Clone, Default)]
pub struct WindowInput {
    /// `--since`: the window is the last `since`, ending now.
    pub since: Option<Duration>,
    /// `--from` (ns since the epoch, already parsed).
    pub from_ns: Option<i64>,
    /// `--to`.
    pub to_ns: Option<i64>,
}

impl WindowInput {
    /// The window, given the time now.
    pub fn resolve(&self, now_ns: i64) -> Result<Window, WhenError> {
        let from = match (self.since, self.from_ns) {
            (Some(d), _) => now_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).max(1),
            (None, Some(f)) => f,
            (None, None) => 0,
        };
        let to = self.to_ns.unwrap_or(0);
        if to != 0 && from >= to {
            return Err(WhenError::Empty { from: fmt_ns(from), to: fmt_ns(to) });
        }
        Ok(Window { from_ns: from, to_ns: to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_547_600_000_000_000; // 2026-12-06T09:00:00Z

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3y"), Ok(Duration::from_secs(3 * 366 * 86_400)));
        for bad in ["", "h", "1", "1q", "-1h", "1.5h", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), Err(WhenError::Duration(bad.into())), "{bad}");
        }
    }

    #[test]
    fn times_in_and_out() {
        assert_eq!(parse_time("2026-12-06T09:00:00Z"), Ok(T0));
        assert_eq!(parse_time("2026-12-06T10:00:00+01:00"), Ok(T0));
        assert_eq!(parse_time("2026-12-06T09:00:00.000000123Z"), Ok(T0 + 123));
        assert_eq!(parse_time("2026-12-06"), Ok(T0 - 9 * 3_600_000_000_000));
        assert_eq!(fmt_ns(T0), "2026-12-06T09:00:00Z");
        assert_eq!(fmt_ns(T0 + 123_000), "2026-12-06T09:00:00.000123Z");
        assert_eq!(fmt_ns(0), "-");
        assert_eq!(parse_time(&fmt_ns(T0 + 7)), Ok(T0 + 7));
        assert!(matches!(parse_time("yesterday"), Err(WhenError::Time(_))));
        assert!(matches!(parse_time("1969-12-31T00:00:00Z"), Err(WhenError::Range(_))));
        // A time without an offset is ambiguous: refused rather than guessed.
        assert!(matches!(parse_time("2026-12-06T09:00:00"), Err(WhenError::Time(_))));
    }

    #[test]
    fn windows() {
        let w = |since, from, to| WindowInput { since, from_ns: from, to_ns: to }.resolve(T0);
        assert_eq!(w(None, None, None), Ok(Window { from_ns: 0, to_ns: 0 }));
        assert_eq!(
            w(Some(Duration::from_secs(3600)), None, None),
            Ok(Window { from_ns: T0 - 3_600_000_000_000, to_ns: 0 })
        );
        assert_eq!(w(None, Some(5), Some(9)), Ok(Window { from_ns: 5, to_ns: 9 }));
        assert!(matches!(w(None, Some(9), Some(9)), Err(WhenError::Empty { .. })));
        assert!(matches!(
            w(Some(Duration::from_secs(1)), None, Some(T0 - 2_000_000_000)),
            Err(WhenError::Empty { .. })
        ));
    }
}
