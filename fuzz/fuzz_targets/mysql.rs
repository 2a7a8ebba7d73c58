#![no_main]
//! Arbitrary bytes, in both directions, with gaps, through the mysql parser.

use libfuzzer_sys::fuzz_target;
use wiretrail_agent::types::Transport;
use wiretrail_agent::proto::Protocol;

fuzz_target!(|data: &[u8]| {
    wiretrail_fuzz::drive_parser(Protocol::Mysql, Transport::Tcp, data);
});
