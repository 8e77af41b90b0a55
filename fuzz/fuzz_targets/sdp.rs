//! An SDP offer: parsed, negotiated against every codec we have, answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sav::media::codec::CodecChoice;
use sav::sip::sdp::{self, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let codecs = CodecChoice::default();
    if let Ok(chosen) = sdp::negotiate(&offer, &codecs) {
        let local = "127.0.0.1:20000".parse().unwrap();
        let answer = sdp::answer(&offer, &chosen, local, sdp::Origin::new(1));
        assert!(answer.starts_with("v=0"));
    }
});
