//! sipp callers against `sav serve`: CANCEL while ringing, a PCMA-only offer,
//! '#' pressed (RFC 4733) → goodbye and BYE from sav, and calls beyond
//! `max_calls`.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn cancel_while_ringing_gets_487_and_the_call_is_forgotten() {
    let dir = workdir("cancel");
    let ports = Ports::slot(1);
    let mut sav = Sav::start(&dir, ports, |c| {
        c.replace("answer_after_ms = 0", "answer_after_ms = 5000")
    });
    let output = sipp(
        &dir,
        "uac_cancel.xml",
        ports,
        &["-m", "1"],
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "CANCEL scenario failed:\n{}",
        sipp_report(&dir, &output)
    );
    // The call ends as cancelled, and sav never established it.
    let log = sav.wait_for_log(
        "call ended before it was established",
        Duration::from_secs(5),
    );
    assert!(log.contains("UacCancel"), "{log}");
    assert!(!log.contains("call established"), "{log}");
    assert!(sav.is_running());
}

#[test]
fn g729_only_offer_is_refused_with_488() {
    let dir = workdir("g729_only");
    let ports = Ports::slot(2);
    let mut sav = Sav::start(&dir, ports, |c| c);
    let output = sipp(
        &dir,
        "uac_g729_only.xml",
        ports,
        &["-m", "1"],
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "488 scenario failed:\n{}",
        sipp_report(&dir, &output)
    );
    let log = sav.log_text();
    assert!(log.contains("no common codec"), "{log}");
    assert!(sav.is_running());
}

#[test]
fn pound_key_gets_the_goodbye_then_bye_from_sav() {
    let dir = workdir("dtmf_hangup");
    let ports = Ports::slot(3);
    utterance(&dir);
    dtmf_pound_pcap(&dir);
    let sav = Sav::start(&dir, ports, |c| c);
    let capture = Capture::start(
        &dir,
        &format!(
            "udp and (port {} or portrange {}-{})",
            ports.sip, ports.rtp_min, ports.rtp_max
        ),
    );
    // '#' 3 s into the call, during the welcome phrase.
    let output = sipp(
        &dir,
        "uac_dtmf_hangup.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(60),
    );
    let packets = capture.stop();
    assert!(
        output.status.success(),
        "'#' scenario failed:\n{}",
        sipp_report(&dir, &output)
    );
    let log = sav.log_text();
    assert!(log.contains("DTMF digit=#"), "{log}");

    // What sav sent after the key press: the goodbye clip, in full, and the
    // BYE only once it was said.
    let goodbye = cached_ulaw("goodbye");
    let rtp = ports.sav_audio(&packets);
    let heard: Vec<u8> = rtp.iter().flat_map(|p| p.payload[12..].to_vec()).collect();
    let at = find(&heard, &goodbye).expect("the goodbye clip is in sav's RTP");
    let goodbye_end_packet = rtp[(at + goodbye.len()) / 160];
    let bye = packets
        .iter()
        .find(|p| p.src_port == ports.sip && p.payload.starts_with(b"BYE "))
        .expect("sav sent BYE");
    assert!(
        bye.time >= goodbye_end_packet.time,
        "BYE left before the goodbye was said"
    );
    let welcome = cached_ulaw("welcome");
    assert!(
        find(&heard, &welcome).is_none(),
        "the welcome phrase was cut short by '#', so it is not in the stream whole"
    );
}

#[test]
fn calls_beyond_max_calls_get_503() {
    let dir = workdir("max_calls");
    let ports = Ports::slot(4);
    utterance(&dir);
    let mut sav = Sav::start(&dir, ports, |c| {
        c.replace("max_calls = 50", "max_calls = 1")
    });
    // The first call holds the only slot for 6 s.
    let first_dir = dir.clone();
    let first = std::thread::spawn(move || {
        sipp(
            &first_dir,
            "uac_stream.xml",
            ports,
            &["-m", "1", "-d", "6000"],
            Duration::from_secs(40),
        )
    });
    sav.wait_for_log("call established", Duration::from_secs(10));
    let second_ports = Ports {
        sipp: ports.sipp + 5,
        sipp_media: ports.sipp_media + 50,
        ..ports
    };
    let busy_dir = dir.join("second");
    std::fs::create_dir_all(&busy_dir).unwrap();
    let output = sipp(
        &busy_dir,
        "uac_busy.xml",
        second_ports,
        &["-m", "1"],
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "503 scenario failed:\n{}",
        sipp_report(&busy_dir, &output)
    );
    let first = first.join().expect("first caller thread");
    assert!(
        first.status.success(),
        "the call in progress failed:\n{}",
        sipp_report(&dir, &first)
    );
    // The slot is free again once the first call ended.
    let third_dir = dir.join("third");
    std::fs::create_dir_all(&third_dir).unwrap();
    utterance(&third_dir);
    let third = sipp(
        &third_dir,
        "uac_stream.xml",
        second_ports,
        &["-m", "1", "-d", "1000"],
        Duration::from_secs(30),
    );
    assert!(
        third.status.success(),
        "a call after the first ended failed:\n{}",
        sipp_report(&third_dir, &third)
    );
    assert!(sav.log_text().contains("at max_calls"));
    assert!(sav.is_running());
}

#[test]
fn a_call_over_tcp_is_answered_and_hung_up() {
    let dir = workdir("tcp");
    let ports = Ports::slot(9);
    utterance(&dir);
    let mut sav = Sav::start(&dir, ports, |c| c);
    let output = sipp(
        &dir,
        "uac_stream.xml",
        ports,
        &["-t", "t1", "-m", "1", "-d", "2000"],
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "TCP call failed:\n{}",
        sipp_report(&dir, &output)
    );
    let log = sav.log_text();
    assert!(log.contains("transport=TCP"), "{log}");
    assert!(log.contains("caller hung up"), "{log}");
    assert!(sav.is_running());
}

#[test]
fn trunk_mode_answers_only_allowed_sources() {
    let dir = workdir("allow");
    let ports = Ports::slot(14);
    utterance(&dir);
    {
        let mut sav = Sav::start(&dir, ports, |c| {
            c.replace("allow = []", "allow = [\"10.9.9.0/24\"]")
        });
        let output = sipp(
            &dir,
            "uac_forbidden.xml",
            ports,
            &["-m", "1"],
            Duration::from_secs(30),
        );
        assert!(
            output.status.success(),
            "expected 403:\n{}",
            sipp_report(&dir, &output)
        );
        let log = sav.log_text();
        assert!(
            log.contains("not in [sip] allow") && log.contains("refused_so_far=1"),
            "{log}"
        );
        assert!(!log.contains("call established"), "{log}");
        assert!(sav.is_running());
    }
    let sav = Sav::start(&dir, ports, |c| {
        c.replace("allow = []", "allow = [\"10.9.9.0/24\", \"127.0.0.0/8\"]")
    });
    let output = sipp(
        &dir,
        "uac_stream.xml",
        ports,
        &["-m", "1", "-d", "1000"],
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "an allowed source was refused:\n{}",
        sipp_report(&dir, &output)
    );
    assert!(sav.log_text().contains("call established"));
}

#[test]
fn sigterm_ends_calls_with_bye_and_exits_zero() {
    let dir = workdir("sigterm");
    let ports = Ports::slot(8);
    let mut sav = Sav::start(&dir, ports, |c| c);
    let call_dir = dir.clone();
    // A caller who waits for sav's BYE.
    let call = std::thread::spawn(move || {
        sipp(
            &call_dir,
            "uac_silent.xml",
            ports,
            &["-m", "1"],
            Duration::from_secs(40),
        )
    });
    sav.wait_for_log("call established", Duration::from_secs(10));
    let status = sav.terminate();
    let call = call.join().expect("caller thread");
    assert!(
        call.status.success(),
        "the caller got no BYE:\n{}",
        sipp_report(&dir, &call)
    );
    assert!(
        status.success(),
        "sav exited with {status}:\n{}",
        sav.log_text()
    );
    assert!(sav.log_text().contains("stopped"));
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn delayed_offer_caller_hears_the_greeting() {
    let dir = workdir("delayed_offer_greeting");
    let ports = Ports::slot(32);
    utterance(&dir);
    let _sav = Sav::start(&dir, ports, |c| c);
    let capture = Capture::start(
        &dir,
        &format!(
            "udp and (port {} or portrange {}-{})",
            ports.sip, ports.rtp_min, ports.rtp_max
        ),
    );
    let output = sipp(
        &dir,
        "uac_delayed_offer.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(30),
    );
    let packets = capture.stop();
    assert!(
        output.status.success(),
        "delayed-offer call failed:\n{}",
        sipp_report(&dir, &output)
    );
    // sav's RTP goes to the port sipp put in its ACK's answer, and starts
    // with the greeting.
    let rtp: Vec<&Datagram> = packets
        .iter()
        .filter(|p| {
            (ports.rtp_min..=ports.rtp_max).contains(&p.src_port)
                && p.dst_port == ports.sipp_media
                && p.payload.len() == 172
        })
        .collect();
    assert!(
        rtp.len() > 100,
        "{} RTP packets to sipp's media port",
        rtp.len()
    );
    let greet = cached_ulaw("greet");
    let heard: Vec<u8> = rtp.iter().flat_map(|p| p.payload[12..].to_vec()).collect();
    assert_eq!(&heard[..greet.len()], &greet[..]);
}
