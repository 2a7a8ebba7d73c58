#![no_main]
//! Arbitrary bytes through the DNS parser, over UDP (datagrams) and TCP.

use libfuzzer_sys::fuzz_target;
use wiretrail_agent::types::Transport;
use wiretrail_agent::proto::Protocol;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let transport = if first & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    wiretrail_fuzz::drive_parser(Protocol::Dns, transport, rest);
});
