//! Datagrams on an SRTP call's ports: unprotected as SRTP and as SRTCP
//! with the caller's key, and through the inbound core of an encrypted
//! call. Half of them are first protected with the right key and then
//! damaged where the input says, so the fuzzer reaches past the tag check.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sav::media::codec::Codec;
use sav::media::inbound::{InboundCore, InboundRemote};
use sav::media::rtp::PayloadTypes;
use sav::media::srtp::{MasterKey, SrtpKeys, Suite};

fn key(suite: Suite, fill: u8) -> MasterKey {
    MasterKey {
        suite,
        key: [fill; 16],
        salt: [fill ^ 0x5A; 14],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let suite = if first & 1 == 0 {
        Suite::AesCm128HmacSha1_80
    } else {
        Suite::AesCm128HmacSha1_32
    };
    let theirs = key(suite, 7);
    let keys = SrtpKeys {
        ours: key(suite, 9),
        theirs,
    };
    let caller: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let t0 = Instant::now();
    let remote = InboundRemote {
        expected: caller,
        types: PayloadTypes {
            audio: 0,
            telephone_event: Some(101),
        },
        codec: Codec::Pcmu,
        quiet_allowed: false,
        rtcp_mux: first & 2 != 0,
        srtp: Some(keys),
    };
    let mut core = InboundCore::new(t0, remote, Duration::from_secs(30), None, None);
    let mut rtp = theirs.context();
    let mut rtcp = theirs.context();
    let mut sender = theirs.context();
    // Each datagram: a length byte, a mode byte, then that many bytes.
    let mut rest = rest;
    let mut now = t0;
    while rest.len() >= 2 {
        let taken = usize::from(rest[0]).min(rest.len() - 2);
        let mode = rest[1];
        let mut buf = [0u8; 300];
        buf[..taken].copy_from_slice(&rest[2..2 + taken]);
        let mut len = taken;
        if mode & 1 != 0 {
            // Protected with the caller's key, then one byte damaged.
            let protected = if mode & 2 != 0 {
                sender.protect_rtcp(&mut buf, len)
            } else {
                sender.protect_rtp(&mut buf, len)
            };
            if let Ok(protected) = protected {
                len = protected;
                if mode & 4 != 0 && len > 0 {
                    let at = usize::from(mode >> 3) % len;
                    buf[at] ^= 0x01;
                }
            }
        }
        let mut copy = buf;
        if let Ok(plain) = rtp.unprotect_rtp(&mut copy[..len]) {
            assert!(plain <= len);
        }
        let mut copy = buf;
        if let Ok(plain) = rtcp.unprotect_rtcp(&mut copy[..len]) {
            assert!(plain <= len);
        }
        core.handle_datagram(now, caller, &mut buf[..len]);
        while core.poll_event().is_some() {}
        now += Duration::from_millis(20);
        rest = &rest[2 + taken..];
    }
});
