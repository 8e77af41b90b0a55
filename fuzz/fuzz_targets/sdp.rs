//! An SDP offer: parsed, negotiated against every codec we have and every
//! SRTP policy, answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sav::media::codec::CodecChoice;
use sav::media::srtp::SrtpMode;
use sav::sip::sdp::{self, SessionDescription, SrtpPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let codecs = CodecChoice::default();
    for mode in [SrtpMode::Off, SrtpMode::Optional, SrtpMode::Mandatory] {
        for keys_may_travel in [false, true] {
            let policy = SrtpPolicy::new(mode, keys_may_travel);
            if let Ok(chosen) = sdp::negotiate(&offer, &codecs, &policy) {
                // Keys are agreed only where they may travel.
                assert!(chosen.srtp.is_none() || (keys_may_travel && mode != SrtpMode::Off));
                let local = "127.0.0.1:20000".parse().unwrap();
                let answer = sdp::answer(&offer, &chosen, local, sdp::Origin::new(1));
                assert!(answer.starts_with("v=0"));
                assert_eq!(answer.contains("a=crypto:"), chosen.srtp.is_some());
            }
        }
    }
});
