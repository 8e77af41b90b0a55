//! A datagram on a call's RTCP port.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sav::media::rtcp::{parse, RtcpSession};

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let mut session = RtcpSession::new(Instant::now(), 0x5A5A_0001, 7);
    let _ = session.handle_packet(Instant::now(), 0x1234_5678_9ABC_DEF0, data);
});
