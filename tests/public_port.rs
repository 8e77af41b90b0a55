//! sav on a port the whole internet reaches: what a stranger can and cannot
//! do to a call in progress, tried on the wire with raw sockets of the
//! test's own.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::raw_uac::{count_rtp, key_press, rtp_packet, RawCall};
use support::*;

/// A counter of `/metrics` with one label (0 when absent).
fn counter(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// What a stranger sends to a call's RTP port: audio, then `#` (the key that
/// hangs up), with `ssrc`; returns the packets sent.
fn inject(stranger: &UdpSocket, sav_rtp: u16, ssrc: u32) -> u64 {
    let mut sent = 0;
    for seq in 0..25u16 {
        let packet = rtp_packet(ssrc, 40_000 + seq, 900_000 + u32::from(seq) * 160, None);
        stranger.send_to(&packet, ("127.0.0.1", sav_rtp)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for packet in key_press(ssrc, 40_025, 904_000, '#') {
        stranger.send_to(&packet, ("127.0.0.1", sav_rtp)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    sent
}

/// The caller's own RTP: `count` packets of audio from `from`.
fn speak(from: &UdpSocket, sav_rtp: u16, ssrc: u32, first: u16, count: u16) {
    for seq in first..first + count {
        let packet = rtp_packet(ssrc, seq, u32::from(seq) * 160, None);
        from.send_to(&packet, ("127.0.0.1", sav_rtp)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two callers, each attacked by a stranger: one who has sent no RTP yet
/// (past the 2 s in which a NAT'd caller's real source is learnt), one
/// silent for 10 s after talking from behind a NAT with the SSRC the
/// stranger reuses. Each keeps the call and sav's audio; the stranger gets
/// none, its `#` hangs nobody up, and every one of its packets is counted.
#[test]
fn a_stranger_s_rtp_and_keys_are_dropped_and_counted_however_quiet_the_caller() {
    let dir = workdir("public_port_rtp");
    let ports = Ports::slot(37);
    let _sav = Sav::start(&dir, ports, |c| c);

    let never_sent = std::thread::spawn(move || {
        let media = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = media.local_addr().unwrap().port();
        let call = RawCall::call(ports.sip, port, "never-sent").expect("sav answers");
        assert!(count_rtp(&media, Duration::from_millis(2_500)) >= 100);
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = inject(&stranger, call.sav_rtp, 0xBAD_0001);
        assert!(
            count_rtp(&media, Duration::from_millis(1_000)) >= 40,
            "sav stopped sending to the caller who had not sent yet"
        );
        assert_eq!(
            count_rtp(&stranger, Duration::from_millis(200)),
            0,
            "sav sent the call's audio to the stranger"
        );
        assert!(
            !call.bye_from_sav(Duration::from_millis(500)),
            "the stranger's # hung the caller up"
        );
        let answer = call.hang_up().expect("an answer to our BYE");
        assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        sent
    });

    let silent = std::thread::spawn(move || {
        let advertised = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = advertised.local_addr().unwrap().port();
        // Behind a NAT: the caller's RTP comes from another port.
        let real = UdpSocket::bind("127.0.0.1:0").unwrap();
        let call = RawCall::call(ports.sip, port, "silent").expect("sav answers");
        const SSRC: u32 = 0x5AFE_0001;
        speak(&real, call.sav_rtp, SSRC, 0, 25);
        let _ = count_rtp(&advertised, Duration::from_millis(100));
        assert!(count_rtp(&real, Duration::from_millis(500)) >= 15);
        // Ten seconds of silence: the stranger takes the caller's SSRC.
        std::thread::sleep(Duration::from_secs(10));
        let _ = count_rtp(&real, Duration::from_millis(1)); // what came meanwhile
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = inject(&stranger, call.sav_rtp, SSRC);
        assert!(
            count_rtp(&real, Duration::from_millis(1_000)) >= 40,
            "sav stopped sending to the caller silent for 10 s"
        );
        assert_eq!(count_rtp(&stranger, Duration::from_millis(200)), 0);
        assert_eq!(count_rtp(&advertised, Duration::from_millis(100)), 0);
        assert!(!call.bye_from_sav(Duration::from_millis(500)));
        // The caller speaks again: still its call.
        speak(&real, call.sav_rtp, SSRC, 25, 10);
        assert!(count_rtp(&real, Duration::from_millis(300)) >= 10);
        let answer = call.hang_up().expect("an answer to our BYE");
        assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        sent
    });

    // The NAT'd caller's first packets wait for its source to be confirmed
    // (three in a row): the first two are dropped as another source too.
    let probation = 2;
    let sent = never_sent.join().unwrap() + silent.join().unwrap() + probation;
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let dropped = counter(&metrics, "sav_rtp_dropped_total", "reason=\"other_source\"");
    assert_eq!(dropped, sent, "every stranger's packet counted:\n{metrics}");
}
