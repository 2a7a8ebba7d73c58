#![no_main]
//! Arbitrary capture events (opens, out-of-order data, gaps, closes, idle
//! flushes) through the flow engine with small caps.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wiretrail_fuzz::drive_engine(data);
});
