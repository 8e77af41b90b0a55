//! The edges of a call's life that real networks produce and sipp cannot
//! script: requests crossing each other, a caller who leaves while it rings,
//! shutdown between our 200 and the ACK. Raw UDP, so every timing is ours.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn bye_while_ringing_gets_200_and_the_invite_a_487_with_the_same_tag() {
    let dir = workdir("bye_ringing");
    let ports = Ports::slot(20);
    let sav = Sav::start(&dir, ports, |c| {
        c.replace("answer_after_ms = 0", "answer_after_ms = 4000")
    });
    let mut uac = RawUac::new(ports.sip, "bye-ringing");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let ringing = uac.response(WAIT, 180, "INVITE");
    let tagged_to = header(&ringing, "To").unwrap().to_string();
    let tag = tag_of(&tagged_to).expect("tag in 180").to_string();
    uac.send("BYE", 2, &tagged_to, None, &[], "");
    uac.response(WAIT, 200, "BYE");
    let terminated = uac.response(WAIT, 487, "INVITE");
    assert_eq!(
        tag_of(header(&terminated, "To").unwrap()),
        Some(tag.as_str()),
        "{terminated}"
    );
    assert!(!sav.log_text().contains("call established"));
}

#[test]
fn cancel_gets_a_487_with_the_tag_of_the_180() {
    let dir = workdir("cancel_tag");
    let ports = Ports::slot(21);
    let _sav = Sav::start(&dir, ports, |c| {
        c.replace("answer_after_ms = 0", "answer_after_ms = 4000")
    });
    let mut uac = RawUac::new(ports.sip, "cancel-tag");
    let to = uac.sav_to();
    let branch = uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let ringing = uac.response(WAIT, 180, "INVITE");
    let tag = tag_of(header(&ringing, "To").unwrap()).unwrap().to_string();
    uac.send("CANCEL", 1, &to, Some(&branch), &[], "");
    let terminated = uac.response(WAIT, 487, "INVITE");
    assert_eq!(
        tag_of(header(&terminated, "To").unwrap()),
        Some(tag.as_str()),
        "{terminated}"
    );
}

#[test]
fn invite_in_a_dialog_not_yet_acked_gets_500_with_retry_after() {
    let dir = workdir("invite_before_ack");
    let ports = Ports::slot(22);
    let _sav = Sav::start(&dir, ports, |c| c);
    let mut uac = RawUac::new(ports.sip, "early-reinvite");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let ok = uac.response(WAIT, 200, "INVITE");
    let tagged_to = header(&ok, "To").unwrap().to_string();
    // No ACK yet: a second INVITE in the dialog.
    uac.send(
        "INVITE",
        2,
        &tagged_to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let refused = uac.recv_until(WAIT, |m| {
        m.starts_with("SIP/2.0 5") && header(m, "CSeq").is_some_and(|c| c.starts_with("2 "))
    });
    assert!(refused.starts_with("SIP/2.0 500"), "{refused}");
    let retry: u32 = header(&refused, "Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry <= 10);
}

#[test]
fn refused_invites_do_not_hold_a_call_slot() {
    let dir = workdir("refusal_slot");
    let ports = Ports::slot(23);
    let _sav = Sav::start(&dir, ports, |c| {
        c.replace("max_calls = 50", "max_calls = 1")
    });
    // A G.729-only offer, refused with 488 and never ACKed.
    let mut bad = RawUac::new(ports.sip, "g729");
    let to = bad.sav_to();
    let g729 = sdp_offer(9)
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    bad.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &g729,
    );
    bad.response(WAIT, 488, "INVITE");
    // The only slot is still free.
    let mut good = RawUac::new(ports.sip, "good");
    let to = good.sav_to();
    good.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let answer = good.recv_until(WAIT, |m| {
        m.starts_with("SIP/2.0 200") || m.starts_with("SIP/2.0 503")
    });
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
}

#[test]
fn shutdown_after_our_200_sends_bye_once_the_ack_comes() {
    let dir = workdir("shutdown_waitack");
    let ports = Ports::slot(24);
    let mut sav = Sav::start(&dir, ports, |c| c);
    let mut uac = RawUac::new(ports.sip, "waitack");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let ok = uac.response(WAIT, 200, "INVITE");
    let tagged_to = header(&ok, "To").unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(sav.pid().to_string())
        .status();
    std::thread::sleep(Duration::from_millis(200));
    uac.send("ACK", 1, &tagged_to, None, &[], "");
    let bye = uac.recv_until(WAIT, |m| m.starts_with("BYE "));
    assert!(bye.contains(&uac.call_id), "{bye}");
    let status = sav.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn unsupported_required_extension_gets_420() {
    let dir = workdir("require");
    let ports = Ports::slot(25);
    let _sav = Sav::start(&dir, ports, |c| c);
    let mut uac = RawUac::new(ports.sip, "require");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &[
            "Content-Type: application/sdp",
            "Require: timer",
            "Require: 100rel",
        ],
        &sdp_offer(9),
    );
    let refused = uac.response(WAIT, 420, "INVITE");
    assert_eq!(header(&refused, "Unsupported"), Some("100rel"), "{refused}");
}

#[test]
fn delayed_offer_sends_rtp_where_the_ack_answer_says() {
    let dir = workdir("delayed_offer_addr");
    let ports = Ports::slot(26);
    let _sav = Sav::start(&dir, ports, |c| c);
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    let mut uac = RawUac::new(ports.sip, "delayed");
    let to = uac.sav_to();
    uac.send("INVITE", 1, &to, None, &[], "");
    let ok = uac.response(WAIT, 200, "INVITE");
    assert!(
        ok.contains("m=audio ") && ok.contains("a=rtpmap:101 telephone-event/8000"),
        "{ok}"
    );
    let tagged_to = header(&ok, "To").unwrap().to_string();
    // The answer renumbers telephone-event: we still send PCMU as PT 0.
    let answer = sdp_offer(rtp_port)
        .replace("0 101", "0 96")
        .replace("rtpmap:101", "rtpmap:96");
    uac.send(
        "ACK",
        1,
        &tagged_to,
        None,
        &["Content-Type: application/sdp"],
        &answer,
    );
    rtp.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = rtp
        .recv_from(&mut buf)
        .expect("RTP at the answer's address");
    assert_eq!(n, 172);
    assert_eq!(buf[1] & 0x7F, 0, "PCMU");
}

#[test]
fn session_timers_are_negotiated_as_rfc4028_says() {
    let dir = workdir("session_timers");
    let ports = Ports::slot(35);
    let _sav = Sav::start(&dir, ports, |c| c);
    let invite = |headers: &[&str]| {
        let mut uac = RawUac::new(ports.sip, "timer");
        let to = uac.sav_to();
        let mut all = vec!["Content-Type: application/sdp"];
        all.extend_from_slice(headers);
        uac.send("INVITE", 1, &to, None, &all, &sdp_offer(9));
        uac.recv_until(WAIT, |m| {
            m.starts_with("SIP/2.0 2") || m.starts_with("SIP/2.0 4")
        })
    };
    // Too short: 422 with our minimum.
    let refused = invite(&["Supported: timer", "Session-Expires: 30"]);
    assert!(refused.starts_with("SIP/2.0 422"), "{refused}");
    assert_eq!(header(&refused, "Min-SE"), Some("90"));
    // The caller supports timers: it refreshes, and we require the extension.
    let ok = invite(&["Supported: timer", "Session-Expires: 1800"]);
    assert_eq!(
        header(&ok, "Session-Expires"),
        Some("1800;refresher=uac"),
        "{ok}"
    );
    assert_eq!(header(&ok, "Require"), Some("timer"));
    // It asks us to refresh.
    let ok = invite(&["Supported: timer", "Session-Expires: 600;refresher=uas"]);
    assert_eq!(
        header(&ok, "Session-Expires"),
        Some("600;refresher=uas"),
        "{ok}"
    );
    // A proxy added Session-Expires for a caller without the extension: we
    // refresh, and require nothing of the caller.
    let ok = invite(&["Session-Expires: 90"]);
    assert_eq!(
        header(&ok, "Session-Expires"),
        Some("90;refresher=uas"),
        "{ok}"
    );
    assert_eq!(header(&ok, "Require"), None, "{ok}");
}

#[test]
fn an_offerless_reinvite_moves_the_media_where_the_ack_answer_says() {
    let dir = workdir("offerless_reinvite");
    let ports = Ports::slot(36);
    let _sav = Sav::start(&dir, ports, |c| c);
    let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port_of = |s: &std::net::UdpSocket| s.local_addr().unwrap().port();
    let mut uac = RawUac::new(ports.sip, "offerless");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(port_of(&first)),
    );
    let ok = uac.response(WAIT, 200, "INVITE");
    let tagged_to = header(&ok, "To").unwrap().to_string();
    uac.send("ACK", 1, &tagged_to, None, &[], "");
    first.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        first.recv_from(&mut buf).is_ok(),
        "RTP at the first address"
    );
    // A re-INVITE without SDP: sav offers in its 200, we answer in the ACK
    // with another port.
    uac.send("INVITE", 2, &tagged_to, None, &[], "");
    let offer = uac.recv_until(WAIT, |m| {
        m.starts_with("SIP/2.0 200") && header(m, "CSeq").is_some_and(|c| c.starts_with("2 "))
    });
    assert!(offer.contains("m=audio "), "{offer}");
    uac.send(
        "ACK",
        2,
        &tagged_to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(port_of(&second)),
    );
    second.set_read_timeout(Some(WAIT)).unwrap();
    let (n, _) = second
        .recv_from(&mut buf)
        .expect("RTP at the address of the ACK's answer");
    assert_eq!(n, 172);
}
