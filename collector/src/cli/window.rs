//! The time window flags every listing command shares: `--since`, `--from`,
//! `--to` as people write them (see [`crate::when`]), and `--from-ns` /
//! `--to-ns` for scripts.

use std::time::Duration;

use crate::when::{self, Window, WindowInput};

/// `--since`, `--from`, `--to` (and their nanosecond forms).
#[derive(clap::Args, Clone, Default)]
pub(super) struct WindowArgs {
    /// Only the last DURATION, ending now: 90s, 15m, 1h, 2d, 1w.
    #[arg(long, value_parser = when::parse_duration, conflicts_with_all = ["from", "from_ns"])]
    since: Option<Duration>,
    /// From (inclusive): RFC 3339 (2026-12-06T09:00:00Z, 2026-12-06T10:00:00+01:00) or a date (midnight UTC).
    #[arg(long, value_parser = when::parse_time, conflicts_with = "from_ns")]
    from: Option<i64>,
    /// To (exclusive): RFC 3339 or a date.
    #[arg(long, value_parser = when::parse_time, conflicts_with = "to_ns")]
    to: Option<i64>,
    /// From (inclusive) as UTC ns since the epoch, for scripts.
    #[arg(long)]
    from_ns: Option<i64>,
    /// To (exclusive) as UTC ns since the epoch, for scripts.
    #[arg(long)]
    to_ns: Option<i64>,
}

impl WindowArgs {
    /// The window, resolved against the clock now.
    pub(super) fn window(&self) -> anyhow::Result<Window> {
        self.window_at(wiretrail_log::store::now_ns())
    }

    /// The window, resolved against `now_ns`.
    pub(super) fn window_at(&self, now_ns: i64) -> anyhow::Result<Window> {
        let input =
            WindowInput { since: self.since, from_ns: self.from.or(self.from_ns), to_ns: self.to.or(self.to_ns) };
        Ok(input.resolve(now_ns)?)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::WindowArgs;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        w: WindowArgs,
    }

    const T0: i64 = 1_796_547_600_000_000_000; // 2026-12-06T09:00:00Z

    fn parse(args: &[&str]) -> Result<T, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn human_and_script_forms() {
        let w = parse(&["--since", "1h"]).unwrap().w.window_at(T0).unwrap();
        assert_eq!((w.from_ns, w.to_ns), (T0 - 3_600_000_000_000, 0));
        let w = parse(&["--from", "2026-12-06T10:00:00+01:00", "--to", "2026-12-06T09:30:00Z"]).unwrap().w;
        let w = w.window_at(T0).unwrap();
        assert_eq!((w.from_ns, w.to_ns), (T0, T0 + 1_800_000_000_000));
        let w = parse(&["--from-ns", "5", "--to-ns", "9"]).unwrap().w.window_at(T0).unwrap();
        assert_eq!((w.from_ns, w.to_ns), (5, 9));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let e = parse(&["--since", "1q"]).err().unwrap().to_string();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse(&["--from", "yesterday"]).err().unwrap().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse(&["--since", "1h", "--from", "2026-12-06"]).is_err());
        assert!(parse(&["--from", "2026-12-06", "--from-ns", "5"]).is_err());
        let e = parse(&["--from", "2026-12-07", "--to", "2026-12-06"]).unwrap().w.window_at(T0).unwrap_err();
        assert!(e.to_string().contains("window is empty"), "{e}");
    }
}
