//! Symmetric RTP: a caller whose RTP comes from another port than its SDP
//! says (a NAT rewrote it) gets sav's RTP at the port it really sends from.
//! A minimal UAC over a raw UDP socket, so the test controls every address.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::*;

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads datagrams until one satisfies `want` (bounded by `timeout`).
fn recv_until(socket: &UdpSocket, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65_535];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("timed out waiting for sav");
        socket.set_read_timeout(Some(left)).unwrap();
        let (n, _) = socket.recv_from(&mut buf).expect("a SIP message from sav");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if want(&text) {
            return text;
        }
    }
}

/// RTP packets received on `socket` within `window`.
fn count_rtp(socket: &UdpSocket, window: Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 2048];
    let mut count = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((172, _)) => count += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    count
}

#[test]
fn sav_sends_rtp_to_where_the_caller_really_sends_from() {
    let dir = workdir("symmetric_rtp");
    let ports = Ports::slot(7);
    let _sav = Sav::start(&dir, ports, |c| c);

    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sip_port = sip.local_addr().unwrap().port();
    let advertised = UdpSocket::bind("127.0.0.1:0").unwrap(); // in the SDP, never sends
    let real = UdpSocket::bind("127.0.0.1:0").unwrap(); // sends and should receive
    let sdp = format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        advertised.local_addr().unwrap().port()
    );
    let call_id = format!("latch-{}@test", std::process::id());
    let common = format!(
        "From: <sip:+33100000000@127.0.0.1>;tag=caller1\r\nCall-ID: {call_id}\r\nContact: <sip:t@127.0.0.1:{sip_port}>\r\nMax-Forwards: 70\r\n"
    );
    let invite = format!(
        "INVITE sip:sav@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bKinv1\r\nTo: <sip:sav@127.0.0.1:{p}>\r\n{common}CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        p = ports.sip
    );
    sip.send_to(invite.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();
    let ok = recv_until(&sip, Duration::from_secs(5), |m| {
        m.starts_with("SIP/2.0 200")
    });
    let to = header(&ok, "To").expect("To in 200").to_string();
    assert!(to.contains("tag="), "{ok}");
    let sav_rtp: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio in the answer");
    let ack = format!(
        "ACK sip:sav@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bKack1\r\nTo: {to}\r\n{common}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        p = ports.sip
    );
    sip.send_to(ack.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();

    // Before the caller sends anything, sav sends where the SDP said.
    assert!(
        count_rtp(&advertised, Duration::from_millis(300)) >= 10,
        "no RTP at the SDP address"
    );

    // The caller's RTP comes from another port: sav latches to it.
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    for seq in 0..10u16 {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet[12..].fill(0xFF);
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

    let bye = format!(
        "BYE sip:sav@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bKbye1\r\nTo: {to}\r\n{common}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        p = ports.sip
    );
    sip.send_to(bye.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();
    let done = recv_until(&sip, Duration::from_secs(5), |m| {
        m.starts_with("SIP/2.0 ") && header(m, "CSeq").is_some_and(|c| c.ends_with("BYE"))
    });
    assert!(done.starts_with("SIP/2.0 200"), "{done}");
}
