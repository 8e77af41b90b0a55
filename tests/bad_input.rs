//! Bad input from the network: each gets a clear log line and a protocol
//! answer where one applies, and sav goes on serving calls.

mod support;

use std::time::Duration;

use support::*;

const MALFORMED_SDP: &str =
    "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\nthis line is not SDP\r\nm=audio 4000 RTP/AVP 0\r\n";

#[test]
fn bad_sip_sdp_and_rtp_get_answers_and_logs_and_calls_go_on() {
    let dir = workdir("bad_input");
    let mut ports = Ports::slot(5);
    // One RTP port, so the test knows where the call's media is.
    ports.rtp_max = ports.rtp_min;
    utterance(&dir);
    let mut sav = Sav::start(&dir, ports, |c| c);

    // A malformed SDP offer: 400 with a Warning saying where.
    let invite = sip_request(
        "INVITE",
        ports.sip,
        MALFORMED_SDP,
        &["Content-Type: application/sdp"],
    );
    let response = udp_exchange(ports.sip, &invite, Duration::from_secs(5))
        .expect("an answer to the bad INVITE");
    assert!(response.starts_with("SIP/2.0 400"), "{response}");
    assert!(
        response.contains("Warning: 399") && response.contains("line 3"),
        "{response}"
    );

    // A body that is not SDP at all: 415 with Accept.
    let invite = sip_request(
        "INVITE",
        ports.sip,
        "<xml/>",
        &["Content-Type: application/xml"],
    );
    let response = udp_exchange(ports.sip, &invite, Duration::from_secs(5)).expect("an answer");
    assert!(response.starts_with("SIP/2.0 415"), "{response}");
    assert!(response.contains("Accept: application/sdp"), "{response}");

    // Not SIP at all, and a method we do not serve.
    send_udp(ports.sip, b"\x00\x01garbage\r\n\r\n");
    let register = sip_request("REGISTER", ports.sip, "", &[]);
    let response =
        udp_exchange(ports.sip, &register, Duration::from_secs(5)).expect("an answer to REGISTER");
    assert!(response.starts_with("SIP/2.0 405"), "{response}");
    assert!(response.contains("Allow:"), "{response}");

    // An INVITE with no body (delayed offer): sav offers in the 200 OK and
    // takes the caller's answer from the ACK. During that call, RTP with a
    // wrong payload type, a truncated header and a wrong version arrive on
    // the call's port.
    let call_dir = dir.clone();
    let call = std::thread::spawn(move || {
        sipp(
            &call_dir,
            "uac_delayed_offer.xml",
            ports,
            &["-m", "1", "-d", "4000"],
            Duration::from_secs(40),
        )
    });
    sav.wait_for_log("call established", Duration::from_secs(10));
    let mut pcma = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    pcma.extend_from_slice(&[0xD5; 160]);
    send_udp(ports.rtp_min, &pcma);
    send_udp(ports.rtp_min, &[0x80, 0, 0, 1, 0]);
    send_udp(ports.rtp_min, &[0x40; 40]);
    let call = call.join().expect("caller thread");
    assert!(
        call.status.success(),
        "the delayed-offer call failed:\n{}",
        sipp_report(&dir, &call)
    );

    let log = sav.log_text();
    for expected in [
        "offer refused",
        "malformed SDP line 3",
        "INVITE body is not SDP",
        "unexpected payload type 8",
        "datagram of 5 bytes is shorter than an RTP header",
        "RTP version 1, expected 2",
    ] {
        assert!(log.contains(expected), "no `{expected}` in the log:\n{log}");
    }

    // sav still serves: a normal call succeeds.
    let again = sipp(
        &dir,
        "uac_stream.xml",
        ports,
        &["-m", "1", "-d", "1000"],
        Duration::from_secs(30),
    );
    assert!(
        again.status.success(),
        "a call after the bad input failed:\n{}",
        sipp_report(&dir, &again)
    );
    assert!(sav.is_running());
}

#[test]
fn caller_without_rtp_is_hung_up_after_rtp_timeout() {
    let dir = workdir("rtp_timeout");
    let ports = Ports::slot(6);
    let sav = Sav::start(&dir, ports, |c| {
        c.replace("rtp_timeout_secs = 30", "rtp_timeout_secs = 2")
    });
    let output = sipp(
        &dir,
        "uac_silent.xml",
        ports,
        &["-m", "1"],
        Duration::from_secs(40),
    );
    assert!(
        output.status.success(),
        "sav did not hang up the silent call:\n{}",
        sipp_report(&dir, &output)
    );
    let log = sav.log_text();
    assert!(log.contains("no RTP from the caller"), "{log}");
    assert!(log.contains("reason=RtpTimeout"), "{log}");
}
