//! What a registry entry declares about *when* its workload may talk:
//! business hours (`hours:`) in a named time zone, and a retirement time
//! (`retired:`) after which it must not talk at all.
//!
//! ```yaml
//! hours: {days: mon-fri, from: "07:00", to: "19:00", tz: America/New_York}
//! retired: 2026-11-30            # or an RFC 3339 time, e.g. 2026-11-30T17:00:00Z
//! ```
//!
//! Time zones are IANA names resolved with jiff from the system's zoneinfo
//! (daylight saving included); `to` at or before `from` is a window that
//! runs past midnight into the next day (`from: "22:00", to: "06:00"`).

use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Declared working hours.
#[derive(Debug, Clone)]
pub struct Hours {
    /// Days the window starts on, Monday = 0.
    days: [bool; 7],
    /// Start and end, minutes after local midnight.
    from: u16,
    to: u16,
    /// The zone the hours are in.
    tz: TimeZone,
    /// The declaration as written (for alerts and equality).
    text: String,
}

impl PartialEq for Hours {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Hours {}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn day(s: &str) -> Result<usize, String> {
    let l = s.trim().to_ascii_lowercase();
    (0..7)
        .find(|&i| l == DAYS[i] || l == FULL[i])
        .ok_or_else(|| format!("unknown day {s:?} (mon, tue, wed, thu, fri, sat, sun)"))
}

/// `mon-fri`, `mon,wed,fri`, `sat-sun`, `*`.
fn days(s: &str) -> Result<[bool; 7], String> {
    let mut out = [false; 7];
    if s.trim() == "*" {
        return Ok([true; 7]);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    out[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out[day(part)?] = true,
        }
    }
    Ok(out)
}

/// `HH:MM` → minutes after midnight (`24:00` allowed as an end).
fn clock(s: &str) -> Result<u16, String> {
    let bad = || format!("bad time {s:?}; expected HH:MM");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Hours {
    /// Parses the parts of an `hours:` declaration.
    pub fn parse(days_s: &str, from: &str, to: &str, tz: &str) -> Result<Hours, String> {
        let tz_zone = TimeZone::get(tz).map_err(|e| format!("unknown time zone {tz:?}: {e}"))?;
        let (f, t) = (clock(from)?, clock(to)?);
        if f == t {
            return Err(format!("empty window {from}-{to}"));
        }
        Ok(Hours { days: days(days_s)?, from: f, to: t, tz: tz_zone, text: format!("{days_s} {from}-{to} {tz}") })
    }

    /// The declaration as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether UTC ns `t` is inside the declared hours.
    pub fn contains(&self, t: i64) -> bool {
        let z = Timestamp::from_nanosecond(t as i128).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(self.tz.clone());
        let wd = z.weekday().to_monday_zero_offset() as usize;
        let m = z.hour() as u16 * 60 + z.minute() as u16;
        if self.from < self.to {
            self.days[wd] && self.from <= m && m < self.to
        } else {
            (self.days[wd] && m >= self.from) || (self.days[(wd + 6) % 7] && m < self.to)
        }
    }

    /// Local date and time of UTC ns `t` in the declared zone.
    pub fn local(&self, t: i64) -> jiff::civil::DateTime {
        Timestamp::from_nanosecond(t as i128).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(self.tz.clone()).datetime()
    }
}

/// A `retired:` value: a date (its start, UTC) or an RFC 3339 time → UTC ns.
pub fn retired_at(s: &str) -> Result<i64, String> {
    if let Ok(t) = Timestamp::from_str(s) {
        return Ok(t.as_nanosecond() as i64);
    }
    let d = jiff::civil::Date::from_str(s)
        .map_err(|_| format!("bad retired value {s:?}; expected a date (2026-11-30) or an RFC 3339 time"))?;
    let t = d.to_zoned(TimeZone::UTC).map_err(|e| format!("retired {s:?}: {e}"))?;
    Ok(t.timestamp().as_nanosecond() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        Timestamp::from_str(s).unwrap().as_nanosecond() as i64
    }

    #[test]
    fn business_hours_in_new_york_follow_daylight_saving() {
        let h = Hours::parse("mon-fri", "07:00", "19:00", "America/New_York").unwrap();
        // Wednesday 2026-07-01: EDT (UTC-4). 10:59Z = 06:59 local, 11:00Z = 07:00.
        assert!(!h.contains(ns("2026-07-01T10:59:00Z")));
        assert!(h.contains(ns("2026-07-01T11:00:00Z")));
        assert!(h.contains(ns("2026-07-01T22:59:00Z")));
        assert!(!h.contains(ns("2026-07-01T23:00:00Z")));
        // Wednesday 2026-12-02: EST (UTC-5): 11:30Z = 06:30 local.
        assert!(!h.contains(ns("2026-12-02T11:30:00Z")));
        assert!(h.contains(ns("2026-12-02T12:00:00Z")));
        // Saturday.
        assert!(!h.contains(ns("2026-07-04T15:00:00Z")));
        assert_eq!(h.local(ns("2026-07-01T10:59:00Z")).to_string(), "2026-07-01T06:59:00");
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let h = Hours::parse("fri", "22:00", "02:00", "UTC").unwrap();
        assert!(h.contains(ns("2026-12-04T23:00:00Z"))); // Friday 23:00
        assert!(h.contains(ns("2026-12-05T01:59:00Z"))); // Saturday 01:59, Friday's window
        assert!(!h.contains(ns("2026-12-05T02:00:00Z")));
        assert!(!h.contains(ns("2026-12-05T23:00:00Z"))); // Saturday's own night
        assert!(!h.contains(ns("2026-12-04T01:00:00Z"))); // Friday 01:00: Thursday's window, not declared
    }

    #[test]
    fn day_lists_and_bad_input() {
        assert_eq!(days("mon,wed,fri").unwrap(), [true, false, true, false, true, false, false]);
        assert_eq!(days("sat-mon").unwrap(), [true, false, false, false, false, true, true]);
        assert_eq!(days("*").unwrap(), [true; 7]);
        assert!(days("mon-fry").unwrap_err().contains("fry"));
        assert!(Hours::parse("mon", "7am", "19:00", "UTC").unwrap_err().contains("7am"));
        assert!(Hours::parse("mon", "07:00", "07:00", "UTC").unwrap_err().contains("empty"));
        assert!(Hours::parse("mon", "07:00", "19:00", "Mars/Olympus").unwrap_err().contains("Mars/Olympus"));
        assert!(Hours::parse("mon", "07:00", "24:00", "UTC").is_ok());
        assert!(Hours::parse("mon", "07:00", "24:30", "UTC").is_err());
    }

    #[test]
    fn retired_takes_a_date_or_a_time() {
        assert_eq!(retired_at("2026-11-30").unwrap(), ns("2026-11-30T00:00:00Z"));
        assert_eq!(retired_at("2026-11-30T17:00:00Z").unwrap(), ns("2026-11-30T17:00:00Z"));
        assert!(retired_at("last week").unwrap_err().contains("last week"));
    }
}
