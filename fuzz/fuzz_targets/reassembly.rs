#![no_main]
//! Arbitrary capture events (opens, out-of-order data, gaps, closes, ticks)
//! on two loopback pairs through the connection table with small bounds.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wiretrail_fuzz::drive_engine(data);
});
