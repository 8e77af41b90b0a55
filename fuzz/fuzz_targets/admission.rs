//! Packets and INVITEs from any source at any pace: the admission never
//! panics and never tracks more sources than its bound.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sav::sip::admission::{Admission, MAX_SOURCES};
use sav::sip::config::AdmissionConfig;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut admission = Admission::new(AdmissionConfig::default(), &[], vec!["1001".into()], t0);
    let mut now = t0;
    for chunk in data.chunks(4) {
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| chunk.get(i).copied().unwrap_or(0));
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, b, c));
        now += Duration::from_millis(u64::from(d));
        match a % 4 {
            0 => {
                admission.handle_packet(now, ip);
            }
            1 => {
                admission.handle_invite(now, ip, None, if d & 1 == 0 { "1001" } else { "x" });
            }
            2 => {
                admission.handle_request(now, ip, Some("friendly-scanner"));
            }
            _ => admission.call_ended(ip),
        }
        assert!(admission.tracked() <= MAX_SOURCES);
    }
});
