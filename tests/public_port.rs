//! sav on a port the whole internet reaches: what a stranger can and cannot
//! do to a call in progress, tried on the wire with raw sockets of the
//! test's own.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::raw_uac::{count_rtp, drain, key_press, rtp_packet, RawCall};
use support::*;

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

/// 200 INVITEs from one source that never ACKs (127.0.0.2): it gets only
/// its share of calls, each 200 is sent at most 5 times and dropped after
/// 8 s, the rest are met with silence and counted; a caller from another
/// untrusted address is answered meanwhile; memory comes back.
#[test]
fn two_hundred_unacked_invites_from_one_source_leave_the_door_open() {
    let dir = workdir("public_port_unacked");
    let ports = Ports::slot(38);
    let sav = Sav::start(&dir, ports, |c| c);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(sav.pid());

    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    let attacker_port = attacker.local_addr().unwrap().port();
    for n in 0..200 {
        let invite = support::raw_uac::invite_text(
            "127.0.0.2",
            attacker_port,
            ports.sip,
            &format!("noack{n}@attacker"),
            40_000,
            None,
        );
        attacker
            .send_to(invite.as_bytes(), ("127.0.0.1", ports.sip))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    // A caller from another untrusted address, during the attack.
    let media = UdpSocket::bind("127.0.0.3:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    let call = RawCall::call_from("127.0.0.3", ports.sip, media_port, "legit")
        .expect("a legitimate caller is answered during the attack");
    assert!(count_rtp(&media, Duration::from_millis(500)) >= 15);
    let answer = call.hang_up().expect("an answer to our BYE");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    // Everything the attacker gets until every unACKed call is dropped.
    let got = drain(&attacker, Duration::from_secs(10));
    let mut oks: std::collections::BTreeMap<String, usize> = Default::default();
    for message in got.iter().filter(|m| m.starts_with("SIP/2.0 200")) {
        let call_id = support::raw_uac::header(message, "Call-ID")
            .unwrap_or("")
            .to_string();
        *oks.entry(call_id).or_default() += 1;
    }
    let others = got
        .iter()
        .filter(|m| !m.starts_with("SIP/2.0 200") && !m.starts_with("SIP/2.0 1"))
        .count();
    let peak = rss_kib(sav.pid());
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(sav.pid());
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let refused: u64 = ["rate_limited", "invite_rate", "calls_per_source", "banned"]
        .iter()
        .map(|r| {
            counter(
                &metrics,
                "sav_sip_refused_total",
                &format!("reason=\"{r}\""),
            )
        })
        .sum();
    let active = metrics
        .lines()
        .find(|l| l.starts_with("sav_active_calls "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    let most_sends = oks.values().copied().max().unwrap_or(0);
    let report = format!(
        "unacked INVITEs: 200 sent from one source; {} answered 200 (most sends of one 200: {most_sends}), {others} other final answers, {refused} refused and counted; RSS {before} KiB before, {after} KiB 2 s after the last call was dropped (peak seen {peak} KiB)\n",
        oks.len()
    );
    print!("{report}");
    write_report("unacked-invites-report.txt", &report);
    assert!(
        (1..=10).contains(&oks.len()),
        "calls answered to one source: {}",
        oks.len()
    );
    assert!(
        (3..=5).contains(&most_sends),
        "one 200 sent {most_sends} times without an ACK"
    );
    assert_eq!(others, 0, "refusals are silent by default");
    assert!(refused >= 150, "{refused} refusals counted");
    assert_eq!(active, Some(0.0), "unACKed calls still up:\n{metrics}");
    assert!(
        after < before + 8 * 1024,
        "RSS {before} KiB before, {after} KiB after"
    );
}

/// A trusted source (the PBX) that never ACKs our 200 is sent our BYE once
/// the 200's retransmissions are over (RFC 3261 §13.3.1.4), not silence.
#[test]
fn a_200_never_acked_by_a_trusted_source_ends_with_our_bye() {
    let dir = workdir("public_port_trusted_noack");
    let ports = Ports::slot(50);
    let sav = Sav::start(&dir, ports, |c| c);
    let pbx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pbx_port = pbx.local_addr().unwrap().port();
    let call_id = format!("noack-{pbx_port}@pbx");
    let invite =
        support::raw_uac::invite_text("127.0.0.1", pbx_port, ports.sip, &call_id, 40_100, None);
    pbx.send_to(invite.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();
    // The 200 and its retransmissions, then the BYE (within 20 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (mut oks, mut bye) = (0, None);
    while bye.is_none() {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            break;
        };
        let Some(message) = support::raw_uac::recv_until(&pbx, left, |_| true) else {
            break;
        };
        if message.starts_with("SIP/2.0 200") {
            oks += 1;
        } else if message.starts_with("BYE ") {
            bye = Some(message);
        }
    }
    let bye = bye.expect("sav's BYE for the call never ACKed");
    assert_eq!(
        support::raw_uac::header(&bye, "Call-ID"),
        Some(call_id.as_str())
    );
    assert!((3..=5).contains(&oks), "the 200 sent {oks} times");
    let log = sav.wait_for_log("no ACK for our 200", Duration::from_secs(2));
    assert!(log.contains("bye=true"), "{log}");
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Room for `wanted` descriptors in this process (the soft limit raised
/// toward the hard one).
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// 2,000 TCP connections from one untrusted source that never send a byte:
/// its bucket lets a few in, the rest are closed at once and counted; UDP
/// SIP is answered all along; the ones let in are closed at the idle bound
/// and sav's descriptors come back to what they were.
#[test]
fn two_thousand_idle_tcp_connections_neither_stop_udp_nor_stay() {
    raise_fd_limit(8192);
    let dir = workdir("public_port_tcp");
    let ports = Ports::slot(43);
    let sav = Sav::start(&dir, ports, |c| {
        c.replace("tcp_idle_secs = 300", "tcp_idle_secs = 3")
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = fds(sav.pid());
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", ports.sip).parse().unwrap();
    let from: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..2_000 {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        socket.bind(&from.into()).expect("bind 127.0.0.2");
        match socket.connect_timeout(&target.into(), Duration::from_secs(2)) {
            Ok(()) => held.push(std::net::TcpStream::from(socket)),
            Err(_) => failed += 1,
        }
    }
    let during = fds(sav.pid());
    // UDP SIP meanwhile.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let options = support::raw_uac::options_text("127.0.0.1", port, ports.sip, 1, None);
    udp.send_to(options.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();
    let answered = support::raw_uac::recv_until(&udp, Duration::from_secs(2), |m| {
        m.starts_with("SIP/2.0 200")
    });
    // Past the idle bound, every connection is closed by sav.
    std::thread::sleep(Duration::from_secs(5));
    let after = fds(sav.pid());
    let mut open = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(stream, &mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            _ => open += 1,
        }
    }
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let refused = counter(&metrics, "sav_sip_refused_total", "reason=\"rate_limited\"")
        + counter(&metrics, "sav_sip_refused_total", "reason=\"banned\"");
    let report = format!(
        "idle TCP: 2,000 connections from one source ({failed} not made), {refused} refused and counted; sav's descriptors {before} before, {during} with them open, {after} after the idle bound; {open} still open on our side\n"
    );
    print!("{report}");
    write_report("idle-tcp-report.txt", &report);
    assert!(answered.is_some(), "UDP SIP not answered: {report}");
    assert!(refused >= 1_500, "{report}");
    assert_eq!(open, 0, "{report}");
    assert!(after <= before + 2, "{report}");
}
