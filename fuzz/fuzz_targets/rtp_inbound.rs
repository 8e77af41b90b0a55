//! Datagrams on a call's RTP port from two sources (the caller's and a
//! stranger's), 20 ms apart: the latch, the jitter buffer, RFC 4733 keys,
//! the decoder and the voice detector see them all.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sav::media::codec::Codec;
use sav::media::inbound::{InboundCore, InboundRemote};
use sav::media::rtp::{parse_inbound, PayloadTypes};
use sav::media::vad::VadConfig;

fuzz_target!(|data: &[u8]| {
    let types = PayloadTypes {
        audio: 0,
        telephone_event: Some(101),
    };
    let caller: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
    let t0 = Instant::now();
    let remote = InboundRemote {
        expected: caller,
        types,
        codec: Codec::Pcmu,
        quiet_allowed: false,
        rtcp_mux: false,
        srtp: None,
    };
    let mut core = InboundCore::new(
        t0,
        remote,
        Duration::from_secs(30),
        Some(VadConfig::default()),
        None,
    );
    // Each datagram: one length byte, one source byte, then that many bytes.
    let mut rest = data;
    let mut now = t0;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        let source = if rest[1] & 1 == 0 { caller } else { stranger };
        let datagram = &rest[2..2 + len];
        let _ = parse_inbound(datagram, &types);
        core.handle_packet(now, source, datagram);
        while core.poll_event().is_some() {}
        now += Duration::from_millis(20);
        if rest[1] & 2 != 0 {
            core.handle_timeout(now);
        }
        rest = &rest[2 + len..];
    }
});
