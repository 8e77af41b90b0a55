//! A minimal UAC over raw UDP sockets, so a test controls every address:
//! where its SDP says its media is, where its RTP really comes from, what a
//! stranger sends to the call's port.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// One header's value in a SIP message.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads datagrams until one satisfies `want` (bounded by `timeout`).
pub fn recv_until(
    socket: &UdpSocket,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65_535];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if want(&text) {
            return Some(text);
        }
    }
}

/// sav's RTP packets (PCMU, 172 octets) received on `socket` within `window`.
pub fn count_rtp(socket: &UdpSocket, window: Duration) -> usize {
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

/// One RTP packet: PCMU audio (payload type 0) or, with `event`, an
/// RFC 4733 telephone-event (payload type 101) for `digit`.
pub fn rtp_packet(ssrc: u32, seq: u16, timestamp: u32, event: Option<(char, bool)>) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    match event {
        None => packet.extend_from_slice(&[0xFF; 160]),
        Some((digit, end)) => {
            packet[1] = 101;
            let code = match digit {
                '*' => 10,
                '#' => 11,
                d => d.to_digit(10).expect("a key") as u8,
            };
            let flags = if end { 0x80 | 10 } else { 10 };
            packet.extend_from_slice(&[code, flags, 0x03, 0x20]);
        }
    }
    packet
}

/// The packets of one key press: three updates and three ends, one
/// timestamp (RFC 4733 §2.5).
pub fn key_press(ssrc: u32, first_seq: u16, timestamp: u32, digit: char) -> Vec<Vec<u8>> {
    (0..6u16)
        .map(|n| rtp_packet(ssrc, first_seq + n, timestamp, Some((digit, n >= 3))))
        .collect()
}

/// A call placed by the test over raw UDP, up once `call` returns.
pub struct RawCall {
    pub sip: UdpSocket,
    sav_sip: u16,
    sip_port: u16,
    to: String,
    common: String,
    /// sav's RTP port, from its answer.
    pub sav_rtp: u16,
    cseq: u32,
}

impl RawCall {
    /// INVITE (the SDP says the caller's media is at `media_port`), 200, ACK.
    /// `None` when sav does not answer 200 within 5 s.
    pub fn call(sav_sip: u16, media_port: u16, name: &str) -> Option<RawCall> {
        Self::call_from("127.0.0.1", sav_sip, media_port, name)
    }

    /// The same from another loopback address (`127.0.0.3`: a source sav
    /// does not trust).
    pub fn call_from(ip: &str, sav_sip: u16, media_port: u16, name: &str) -> Option<RawCall> {
        let sdp = offer_sdp(ip, media_port);
        Self::call_offering(ip, sav_sip, &sdp, name).map(|(call, _)| call)
    }

    /// The same with `sdp` as the offer; the call and sav's 200.
    pub fn call_offering(
        ip: &str,
        sav_sip: u16,
        sdp: &str,
        name: &str,
    ) -> Option<(RawCall, String)> {
        let sip = UdpSocket::bind((ip, 0)).unwrap();
        let sip_port = sip.local_addr().unwrap().port();
        let call_id = format!("{name}-{}-{sip_port}@test", std::process::id());
        let invite = invite_text_with(ip, sip_port, sav_sip, &call_id, sdp, None);
        let common = format!(
            "From: <sip:+33100000000@{ip}>;tag=caller1\r\nCall-ID: {call_id}\r\nContact: <sip:t@{ip}:{sip_port}>\r\nMax-Forwards: 70\r\n"
        );
        sip.send_to(invite.as_bytes(), ("127.0.0.1", sav_sip))
            .unwrap();
        let ok = recv_until(&sip, Duration::from_secs(5), |m| {
            m.starts_with("SIP/2.0 200")
        })?;
        let to = header(&ok, "To")?.to_string();
        let sav_rtp: u16 = ok
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())?;
        let call = RawCall {
            sip,
            sav_sip,
            sip_port,
            to,
            common,
            sav_rtp,
            cseq: 1,
        };
        call.send_in_dialog("ACK", 1, &format!("z9hG4bKack{sip_port}"));
        Some((call, ok))
    }

    /// A re-INVITE offering `sdp`; sav's final answer (ACKed when 2xx).
    pub fn reinvite(&mut self, sdp: &str) -> Option<String> {
        self.cseq += 1;
        let branch = format!("z9hG4bKre{}x{}", self.sip_port, self.cseq);
        self.send_in_dialog_with("INVITE", self.cseq, &branch, Some(sdp));
        let cseq = self.cseq;
        let answer = recv_until(&self.sip, Duration::from_secs(5), |m| {
            m.starts_with("SIP/2.0 ")
                && !m.starts_with("SIP/2.0 1")
                && header(m, "CSeq").is_some_and(|c| c == format!("{cseq} INVITE"))
        })?;
        if answer.starts_with("SIP/2.0 2") {
            self.send_in_dialog(
                "ACK",
                cseq,
                &format!("z9hG4bKreack{}x{cseq}", self.sip_port),
            );
        }
        Some(answer)
    }

    fn send_in_dialog(&self, method: &str, cseq: u32, branch: &str) {
        self.send_in_dialog_with(method, cseq, branch, None);
    }

    fn send_in_dialog_with(&self, method: &str, cseq: u32, branch: &str, sdp: Option<&str>) {
        let body = match sdp {
            Some(sdp) => format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
            None => "Content-Length: 0\r\n\r\n".to_string(),
        };
        let request = format!(
            "{method} sip:sav@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{sip_port};branch={branch}\r\nTo: {to}\r\n{common}CSeq: {cseq} {method}\r\n{body}",
            p = self.sav_sip,
            ip = self.sip.local_addr().unwrap().ip(),
            sip_port = self.sip_port,
            to = self.to,
            common = self.common,
        );
        self.sip
            .send_to(request.as_bytes(), ("127.0.0.1", self.sav_sip))
            .unwrap();
    }

    /// A BYE sav sent us since the last look, answered 200 (the call was
    /// ended by sav).
    pub fn bye_from_sav(&self, wait: Duration) -> bool {
        recv_until(&self.sip, wait, |m| m.starts_with("BYE ")).is_some()
    }

    /// Our BYE; sav's final answer to it.
    pub fn hang_up(mut self) -> Option<String> {
        self.cseq += 1;
        let branch = format!("z9hG4bKbye{}", self.sip_port);
        self.send_in_dialog("BYE", self.cseq, &branch);
        recv_until(&self.sip, Duration::from_secs(5), |m| {
            m.starts_with("SIP/2.0 ") && header(m, "CSeq").is_some_and(|c| c.ends_with("BYE"))
        })
    }
}

/// An offer of PCMU and telephone-event at `ip`:`media_port`.
pub fn offer_sdp(ip: &str, media_port: u16) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

/// An INVITE from `ip`:`sip_port` with an offer of PCMU at `media_port`.
pub fn invite_text(
    ip: &str,
    sip_port: u16,
    sav_sip: u16,
    call_id: &str,
    media_port: u16,
    user_agent: Option<&str>,
) -> String {
    let sdp = offer_sdp(ip, media_port);
    invite_text_with(ip, sip_port, sav_sip, call_id, &sdp, user_agent)
}

/// An INVITE from `ip`:`sip_port` offering `sdp` (none when empty).
pub fn invite_text_with(
    ip: &str,
    sip_port: u16,
    sav_sip: u16,
    call_id: &str,
    sdp: &str,
    user_agent: Option<&str>,
) -> String {
    let agent = user_agent
        .map(|a| format!("User-Agent: {a}\r\n"))
        .unwrap_or_default();
    let branch = call_id.replace('@', ".");
    format!(
        "INVITE sip:sav@127.0.0.1:{sav_sip} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{sip_port};branch=z9hG4bK{branch}\r\nTo: <sip:sav@127.0.0.1:{sav_sip}>\r\nFrom: <sip:+33100000000@{ip}>;tag=caller1\r\nCall-ID: {call_id}\r\nContact: <sip:t@{ip}:{sip_port}>\r\nMax-Forwards: 70\r\n{agent}CSeq: 1 INVITE\r\n{}Content-Length: {}\r\n\r\n{sdp}",
        if sdp.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        },
        sdp.len(),
    )
}

/// An OPTIONS from `ip`:`sip_port`, number `n`.
pub fn options_text(
    ip: &str,
    sip_port: u16,
    sav_sip: u16,
    n: u32,
    user_agent: Option<&str>,
) -> String {
    let agent = user_agent
        .map(|a| format!("User-Agent: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "OPTIONS sip:sav@127.0.0.1:{sav_sip} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{sip_port};branch=z9hG4bKopt{n}\r\nTo: <sip:sav@127.0.0.1:{sav_sip}>\r\nFrom: <sip:probe@{ip}>;tag=p{n}\r\nCall-ID: opt{n}-{sip_port}@test\r\n{agent}CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The datagrams `socket` receives within `window`, as text.
pub fn drain(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + window;
    let mut buf = [0u8; 65_535];
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => got.push(String::from_utf8_lossy(&buf[..n]).to_string()),
            Err(_) => break,
        }
    }
    got
}
