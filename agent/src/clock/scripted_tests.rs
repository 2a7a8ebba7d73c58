//! The conversion against scripted clocks: the error bound, the
//! once-a-second re-measure, steps of the real-time clock as NTP makes them,
//! and a slewing clock.
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use super::*;

const MS: i128 = 1_000_000;

/// Clocks a test drives. The true boottime advances by a cost on every read
/// (the next scripted cost, else `cost`); the real-time clock reads the true
/// boottime of the moment plus `offset`, plus `slew_ppm` of the boottime since
/// `slew_from`.
struct Scripted {
    boot: Cell<i128>,
    offset: Cell<i128>,
    cost: i128,
    costs: RefCell<VecDeque<i128>>,
    slew_ppm: i128,
    slew_from: i128,
}

impl Scripted {
    fn new(boot: i128, offset: i128, cost: i128) -> Scripted {
        Scripted {
            boot: Cell::new(boot),
            offset: Cell::new(offset),
            cost,
            costs: RefCell::default(),
            slew_ppm: 0,
            slew_from: boot,
        }
    }
    fn read(&self) -> i128 {
        let t = self.boot.get();
        let c = self.costs.borrow_mut().pop_front().unwrap_or(self.cost);
        self.boot.set(t + c);
        t
    }
    /// What the real-time clock says at boottime `t` (the truth a conversion aims at).
    fn real_at(&self, t: i128) -> i128 {
        t + self.offset.get() + (t - self.slew_from) * self.slew_ppm / 1_000_000
    }
    fn advance(&self, ns: i128) {
        self.boot.set(self.boot.get() + ns);
    }
    fn step(&self, ns: i128) {
        self.offset.set(self.offset.get() + ns);
    }
    fn now(&self) -> u64 {
        self.boot.get() as u64
    }
}

impl TimeSource for Scripted {
    fn boottime_ns(&self) -> i128 {
        self.read()
    }
    fn realtime_ns(&self) -> i128 {
        let t = self.read();
        self.real_at(t)
    }
}

/// How far the conversion of boottime `t` is from what the real-time clock said then.
fn off_by(c: &Clock<Scripted>, t: u64) -> i128 {
    c.sync().to_utc_ns(t) - c.source().real_at(t as i128)
}

#[test]
fn error_bound_is_half_the_tightest_bracket_and_holds() {
    // Five brackets (b1 -> r -> b2 costs); the third is the tightest, and its
    // real-time read is as lopsided as it can be.
    let brackets: [(i128, i128); 5] = [(4_000, 9_000), (30_000, 1), (1, 300), (700, 700), (50, 5_000)];
    let src = Scripted::new(5_000 * MS, 1_700_000_000_000 * MS, 20);
    for (a, b) in brackets {
        src.costs.borrow_mut().extend([a, b, 20]);
    }
    let c = Clock::new(src);
    assert_eq!(c.sync().error_ns, 151, "half of the 301 ns bracket, rounded up: {:?}", c.sync());
    let err = off_by(&c, c.sync().measured_at_boot_ns);
    assert!(err.unsigned_abs() <= c.sync().error_ns as u128, "off by {err} ns, bound {:?}", c.sync());
    // The bound is tight: the read sat 1 ns after b1 of a 301 ns bracket.
    assert_eq!(err.abs(), 149);

    // Many brackets, pseudo-random costs: the bound always holds.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2_000 {
        let src = Scripted::new(round * 7 * MS, -round * 13 * MS, 1);
        for _ in 0..15 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            src.costs.borrow_mut().push_back(1 + (x % 100_000) as i128);
        }
        let c = Clock::new(src);
        let err = off_by(&c, c.sync().measured_at_boot_ns);
        assert!(err.unsigned_abs() <= c.sync().error_ns as u128, "round {round}: off by {err}, {:?}", c.sync());
    }
}

#[test]
fn re_measures_once_a_period_has_passed() {
    let src = Scripted::new(1_000 * MS, 42 * MS, 100);
    let mut c = Clock::new(src);
    let first = *c.sync();
    c.source().advance(500 * MS);
    assert!(!c.refresh(), "re-measured after half a period");
    assert_eq!(*c.sync(), first);
    // A timer tick a little early still re-measures.
    c.source().advance(480 * MS);
    assert!(c.refresh(), "no re-measure 980 ms after the last one");
    assert!(c.sync().measured_at_boot_ns >= first.measured_at_boot_ns + 980_000_000);
    let second = *c.sync();
    c.source().advance(REMEASURE_NS as i128);
    assert!(c.refresh());
    assert_eq!(c.sync().measured_at_boot_ns, second.measured_at_boot_ns + REMEASURE_NS + 1_600);
}

/// A step of `step` ns of the real-time clock: conversions after the next
/// re-measure are back within the bound; in between they are off by the step.
fn follows_a_step(step: i128) {
    let src = Scripted::new(10_000 * MS, 1_700_000_000_000 * MS, 100);
    let mut c = Clock::new(src);
    let t = c.source().now();
    assert!(off_by(&c, t).unsigned_abs() <= c.sync().error_at(t) as u128);
    c.source().advance(300 * MS);
    c.source().step(step);
    let t = c.source().now();
    assert_eq!(off_by(&c, t), -step, "before the re-measure, the conversion still uses the old offset");
    assert!(!c.refresh());
    c.source().advance(700 * MS);
    assert!(c.refresh(), "the once-a-second re-measure did not happen");
    for t in [c.source().now(), c.source().now() + 900_000_000, c.source().now() - 700_000_000] {
        let off = off_by(&c, t);
        assert!(
            off.unsigned_abs() <= c.sync().error_at(t) as u128,
            "step {step}: off by {off} ns at {t}, {:?}",
            c.sync()
        );
    }
    assert!(c.sync().error_ns <= 150, "{:?}", c.sync());
}

#[test]
fn follows_a_step_forward_of_100_ms() {
    follows_a_step(100 * MS);
}

#[test]
fn follows_a_step_back_of_100_ms() {
    follows_a_step(-100 * MS);
}

#[test]
fn error_at_covers_a_clock_slewing_at_the_kernel_maximum() {
    for ppm in [MAX_SLEW_PPM as i128, -(MAX_SLEW_PPM as i128)] {
        let mut src = Scripted::new(77_000 * MS, 1_600_000_000_000 * MS, 60);
        src.slew_ppm = ppm;
        let mut c = Clock::new(src);
        for _ in 0..5 {
            let m = c.sync().measured_at_boot_ns;
            // Events up to a period before and after the measurement.
            for dt in [-(REMEASURE_NS as i128), -1, 0, 1, 250 * MS, REMEASURE_NS as i128] {
                let t = (m as i128 + dt) as u64;
                let off = off_by(&c, t);
                assert!(
                    off.unsigned_abs() <= c.sync().error_at(t) as u128,
                    "{ppm} ppm, dt {dt}: off by {off}, bound {}",
                    c.sync().error_at(t)
                );
            }
            c.source().advance(REMEASURE_NS as i128);
            assert!(c.refresh());
        }
        // Without the slew allowance the bound would not hold a period later.
        let m = c.sync().measured_at_boot_ns + REMEASURE_NS;
        assert!(off_by(&c, m).unsigned_abs() > c.sync().error_ns as u128);
    }
}
