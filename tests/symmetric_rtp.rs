//! Symmetric RTP: a caller whose RTP comes from another port than its SDP
//! says (a NAT rewrote it) gets sav's RTP at the port it really sends from.
//! A minimal UAC over a raw UDP socket, so the test controls every address.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::raw_uac::{count_rtp, rtp_packet, RawCall};
use support::*;

#[test]
fn sav_sends_rtp_to_where_the_caller_really_sends_from() {
    let dir = workdir("symmetric_rtp");
    let ports = Ports::slot(7);
    let _sav = Sav::start(&dir, ports, |c| c);

    let advertised = UdpSocket::bind("127.0.0.1:0").unwrap(); // in the SDP, never sends
    let real = UdpSocket::bind("127.0.0.1:0").unwrap(); // sends and should receive
    let port = advertised.local_addr().unwrap().port();
    let call = RawCall::call(ports.sip, port, "latch").expect("sav answers 200");
    let sav_rtp = call.sav_rtp;

    // Before the caller sends anything, sav sends where the SDP said.
    assert!(
        count_rtp(&advertised, Duration::from_millis(300)) >= 10,
        "no RTP at the SDP address"
    );

    // The caller's RTP comes from another port: sav latches to it.
    for seq in 0..10u16 {
        let packet = rtp_packet(0x1234_5678, seq, u32::from(seq) * 160, None);
        real.send_to(&packet, ("127.0.0.1", sav_rtp)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = count_rtp(&advertised, Duration::from_millis(100)); // in flight before the latch
    let at_real = count_rtp(&real, Duration::from_millis(400));
    let at_advertised = count_rtp(&advertised, Duration::from_millis(100));
    assert!(
        at_real >= 10,
        "sav did not switch to the real source ({at_real} packets there)"
    );
    assert_eq!(
        at_advertised, 0,
        "sav still sends to the SDP address after latching"
    );

    let done = call.hang_up().expect("an answer to our BYE");
    assert!(done.starts_with("SIP/2.0 200"), "{done}");
}
