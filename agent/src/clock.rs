//! Kernel timestamps (CLOCK_BOOTTIME) to UTC.
//!
//! Method: sample CLOCK_BOOTTIME, CLOCK_REALTIME, CLOCK_BOOTTIME back to back a few
//! times, keep the tightest bracket, and take `realtime - midpoint(boottime)` as the
//! offset; half the bracket is the error bound of the offset at the moment it was
//! measured. The offset is re-measured every second ([`Clock::refresh`]), so
//! NTP/PTP adjustments of the real-time clock are followed: a step (as NTP makes
//! when far off) is in every conversion after the next re-measure, and a slew moves
//! the real-time clock by at most [`MAX_SLEW_PPM`] between measurements, which the
//! error of a conversion ([`ClockSync::error_at`]) includes. Every record carries
//! that error estimate and the clock source.
//!
//! The clocks are read through a [`TimeSource`], so tests drive them (steps,
//! slow reads, the passing of time) without waiting for real time.

/// The kernel clock every event is stamped with.
pub const KERNEL_CLOCK: &str = "CLOCK_BOOTTIME";

/// How often the offset is re-measured (boottime ns).
pub const REMEASURE_NS: u64 = 1_000_000_000;

/// A timer tick may fire this much before a whole period has passed since the
/// last measurement; it still re-measures (else the period would double).
const REMEASURE_SLACK_NS: u64 = 50_000_000;

/// The fastest rate at which Linux slews CLOCK_REALTIME (adjtimex: 500 ppm).
pub const MAX_SLEW_PPM: u64 = 500;

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Where the two clocks are read: the system, or a test's script.
pub trait TimeSource {
    /// CLOCK_BOOTTIME, ns.
    fn boottime_ns(&self) -> i128;
    /// CLOCK_REALTIME, ns since the Unix epoch.
    fn realtime_ns(&self) -> i128;
}

/// The host's clocks (`clock_gettime`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClocks;

impl TimeSource for SystemClocks {
    fn boottime_ns(&self) -> i128 {
        now(libc::CLOCK_BOOTTIME)
    }
    fn realtime_ns(&self) -> i128 {
        now(libc::CLOCK_REALTIME)
    }
}

/// A measured relation between CLOCK_BOOTTIME and UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSync {
    /// UTC ns minus boottime ns.
    pub offset_ns: i128,
    /// Half the tightest sampling bracket: the offset is right within this many
    /// ns when it is measured.
    pub error_ns: u64,
    /// Boottime ns at measurement.
    pub measured_at_boot_ns: u64,
}

impl ClockSync {
    /// Measures the offset of the host's clocks now.
    pub fn measure() -> Self {
        Self::measure_with(&SystemClocks)
    }

    /// Measures the offset of `src`'s clocks (best of 5 brackets).
    pub fn measure_with(src: &(impl TimeSource + ?Sized)) -> Self {
        let mut best: Option<(i128, i128, i128)> = None;
        for _ in 0..5 {
            let b1 = src.boottime_ns();
            let r = src.realtime_ns();
            let b2 = src.boottime_ns();
            if best.is_none_or(|(x1, _, x2)| b2 - b1 < x2 - x1) {
                best = Some((b1, r, b2));
            }
        }
        let (b1, r, b2) = best.expect("five samples");
        ClockSync {
            offset_ns: r - (b1 + b2) / 2,
            // Rounded up: the midpoint's truncation must stay inside the bound.
            error_ns: ((b2 - b1 + 1) / 2).max(1) as u64,
            measured_at_boot_ns: b1 as u64,
        }
    }

    /// UTC nanoseconds since the Unix epoch for a boottime timestamp.
    pub fn to_utc_ns(&self, boot_ns: u64) -> i128 {
        boot_ns as i128 + self.offset_ns
    }

    /// The error bound of [`Self::to_utc_ns`] for `boot_ns`: the measurement's
    /// own error plus how far a slewing real-time clock can have moved between
    /// the measurement and `boot_ns` (either way: events may be older than it).
    pub fn error_at(&self, boot_ns: u64) -> u64 {
        let age = boot_ns.abs_diff(self.measured_at_boot_ns);
        self.error_ns + (age as u128 * MAX_SLEW_PPM as u128 / 1_000_000) as u64
    }
}

/// The agent's current conversion, re-measured every [`REMEASURE_NS`].
#[derive(Debug)]
pub struct Clock<S: TimeSource = SystemClocks> {
    source: S,
    sync: ClockSync,
}

impl Clock<SystemClocks> {
    /// The host's clocks, measured now.
    pub fn system() -> Self {
        Clock::new(SystemClocks)
    }
}

impl<S: TimeSource> Clock<S> {
    /// Measures `source` now.
    pub fn new(source: S) -> Self {
        let sync = ClockSync::measure_with(&source);
        Clock { source, sync }
    }

    /// The conversion in force.
    pub fn sync(&self) -> &ClockSync {
        &self.sync
    }

    /// The clocks this conversion reads.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Re-measures when a period has passed since the last measurement
    /// (called from a once-a-second timer). Returns whether it did.
    pub fn refresh(&mut self) -> bool {
        let boot = self.source.boottime_ns().max(0) as u64;
        if boot.saturating_sub(self.sync.measured_at_boot_ns) + REMEASURE_SLACK_NS < REMEASURE_NS {
            return false;
        }
        self.sync = ClockSync::measure_with(&self.source);
        true
    }
}

/// Current UTC time in ns (CLOCK_REALTIME), for records the agent makes itself.
pub fn now_utc_ns() -> i128 {
    now(libc::CLOCK_REALTIME)
}

/// Current CLOCK_BOOTTIME in ns: the kernel events' clock, and the clock of
/// every timeout in the connection table.
pub fn now_boot_ns() -> u64 {
    now(libc::CLOCK_BOOTTIME) as u64
}

/// Parses what [`rfc3339`] writes (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, or an
/// explicit `±HH:MM` offset) into UTC ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut frac = digits.chars().take(9).collect::<String>();
        while frac.len() < 9 {
            frac.push('0');
        }
        nanos = frac.parse().ok()?;
    }
    let offset_s: i64 = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let hh: i64 = o[1..3].parse().ok()?;
            let mm: i64 = o[4..6].parse().ok()?;
            let v = hh * 3600 + mm * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-21T19:53:00.123456789Z`.
pub fn rfc3339(utc_ns: i128) -> String {
    let secs = utc_ns.div_euclid(1_000_000_000) as i64;
    let nanos = utc_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_290_780_123_456_789), "2026-11-21T19:53:00.123456789Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for t in [0i128, 951_782_400_000_000_001, 1_795_290_780_123_456_789, -1, 1_700_000_000_500_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(parse_rfc3339("2026-11-21T19:53:00Z"), Some(1_795_290_780_000_000_000));
        assert_eq!(parse_rfc3339("2026-11-21T20:53:00.5+01:00"), Some(1_795_290_780_500_000_000));
        for bad in [
            "",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            "2026-11-21T19:53:00",
            "2026-11-21T19:53:00.Z",
            "x026-11-21T19:53:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn converts_boottime_to_now_within_the_error_bound() {
        let sync = ClockSync::measure();
        let b1 = now(libc::CLOCK_BOOTTIME) as u64;
        let real = now(libc::CLOCK_REALTIME);
        let b2 = now(libc::CLOCK_BOOTTIME) as u64;
        // The real-time read happened between b1 and b2.
        let (lo, hi) = (sync.to_utc_ns(b1) - sync.error_at(b1) as i128, sync.to_utc_ns(b2) + sync.error_at(b2) as i128);
        assert!(lo <= real && real <= hi, "real time {real} outside [{lo}, {hi}] ({sync:?})");
        assert!(sync.error_ns < 10_000_000, "{sync:?}");
    }
}

#[cfg(test)]
mod scripted_tests;
