//! A datagram on the SIP port, as sav receives it: the socket's precheck
//! and normalisation, the redacted trace log, then the stack's parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sav::sip::wire::{normalize, precheck, redacted, stateless_response, Precheck};

fuzz_target!(|data: &[u8]| {
    let _ = redacted(&String::from_utf8_lossy(data));
    match precheck(data) {
        Precheck::Reply(status, why) => {
            let response = stateless_response(data, status, why, "fuzz");
            assert!(response.starts_with(b"SIP/2.0 "));
        }
        Precheck::Drop(_) => {}
        Precheck::Pass => {
            let plain = normalize(data);
            let message = plain.as_deref().unwrap_or(data);
            let _ = rsipstack::sip::SipMessage::try_from(message);
        }
    }
});
