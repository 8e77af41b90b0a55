//! SRTP (SDES, RFC 4568) on the wire, with a raw UAC of the test's own that
//! protects and reads with sav's own SRTP core: what sav answers, that its
//! RTP reads only with the key it gave, that a key press counts only under
//! the caller's key, that a re-offer keeps or renews keys as it should, and
//! what is refused when the keys would travel in clear.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use sav::media::srtp::{SrtpContext, Suite};
use sav::sip::sdp::Crypto;
use support::raw_uac::{header, key_press, recv_until, RawCall};
use support::*;

/// An offer of PCMU and telephone-event at `media_port` in `proto` with
/// one crypto line.
fn offer(media_port: u16, proto: &str, crypto: &Crypto) -> String {
    format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media_port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:{}\r\n",
        crypto.attribute()
    )
}

/// The crypto line of sav's answer, and its profile.
fn answered(ok: &str) -> (Crypto, String) {
    let lines: Vec<&str> = ok.lines().filter(|l| l.starts_with("a=crypto:")).collect();
    assert_eq!(lines.len(), 1, "one crypto line in the answer:\n{ok}");
    let crypto = Crypto::parse(lines[0]["a=crypto:".len()..].trim()).expect("a usable crypto line");
    let proto = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').nth(1))
        .expect("an audio line")
        .to_string();
    (crypto, proto)
}

/// Reads sav's packets on `media` (at most `max`, 3 s) until one
/// authenticates with `reader`; its length, and how many did not before.
fn first_readable(
    media: &UdpSocket,
    reader: &mut SrtpContext,
    max: usize,
) -> Option<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    let mut unreadable = 0;
    for _ in 0..max {
        let left = deadline.checked_duration_since(Instant::now())?;
        media.set_read_timeout(Some(left)).unwrap();
        let (len, _) = media.recv_from(&mut buf).ok()?;
        match reader.unprotect_rtp(&mut buf[..len]) {
            Ok(_) => return Some((len, unreadable)),
            Err(_) => unreadable += 1,
        }
    }
    None
}

/// Sends the packets of a key press, protected with `writer` when given.
fn press(media: &UdpSocket, sav_rtp: u16, writer: Option<&mut SrtpContext>, seq: u16, digit: char) {
    let mut writer = writer;
    for packet in key_press(0xCA11_0001, seq, 8000 * u32::from(seq), digit) {
        let mut buf = [0u8; 64];
        buf[..packet.len()].copy_from_slice(&packet);
        let len = match writer.as_deref_mut() {
            Some(writer) => writer.protect_rtp(&mut buf, packet.len()).unwrap(),
            None => packet.len(),
        };
        media.send_to(&buf[..len], ("127.0.0.1", sav_rtp)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_srtp_call_reads_and_obeys_only_its_keys_and_renews_ours_for_a_new_suite() {
    let dir = workdir("srtp_raw");
    let ports = Ports::slot(48);
    let sav = Sav::start(&dir, ports, |c| {
        c.replace(
            "srtp = \"off\"\nsrtp_without_tls = false",
            "srtp = \"optional\"\nsrtp_without_tls = true",
        )
    });
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    let ours_80 = Crypto::ours(7, Suite::AesCm128HmacSha1_80);
    let (mut call, ok) = RawCall::call_offering(
        "127.0.0.1",
        ports.sip,
        &offer(media_port, "RTP/SAVP", &ours_80),
        "srtp",
    )
    .expect("sav answers the SRTP offer");
    // The answer: our profile, our tag and suite, a key of sav's own.
    let (savs, proto) = answered(&ok);
    assert_eq!(proto, "RTP/SAVP");
    assert_eq!((savs.tag, savs.key.suite), (7, Suite::AesCm128HmacSha1_80));
    assert_ne!(savs.key.key, ours_80.key.key, "sav sends with its own key");
    // sav's RTP reads with the key it gave, from the first packet.
    let mut reader = savs.key.context();
    let (len, unreadable) = first_readable(&media, &mut reader, 5).expect("sav's SRTP reads");
    assert_eq!((len, unreadable), (12 + 160 + 10, 0));

    // '#' (the key that hangs up) in clear: not obeyed.
    press(&media, call.sav_rtp, None, 10, '#');
    assert!(
        !call.bye_from_sav(Duration::from_millis(1500)),
        "a key press without the caller's key hung up"
    );

    // The same offer again: the same key goes on.
    let again = call
        .reinvite(&offer(media_port, "RTP/SAVP", &ours_80))
        .expect("an answer to the re-INVITE");
    assert!(again.starts_with("SIP/2.0 200"), "{again}");
    assert_eq!(answered(&again).0, savs);

    // Another suite under another tag: sav answers with a new key (its
    // stream starts again: the old key must not encrypt it twice).
    let ours_32 = Crypto::ours(8, Suite::AesCm128HmacSha1_32);
    let renewed = call
        .reinvite(&offer(media_port, "RTP/SAVP", &ours_32))
        .expect("an answer to the re-INVITE");
    assert!(renewed.starts_with("SIP/2.0 200"), "{renewed}");
    let (savs_32, _) = answered(&renewed);
    assert_eq!(
        (savs_32.tag, savs_32.key.suite),
        (8, Suite::AesCm128HmacSha1_32)
    );
    assert_ne!(
        savs_32.key.key, savs.key.key,
        "a new key for the new stream"
    );
    let mut reader_32 = savs_32.key.context();
    let (len, _) = first_readable(&media, &mut reader_32, 200).expect("SRTP under the new key");
    assert_eq!(len, 12 + 160 + 4);

    // Plain RTP, then SRTP again in the same suite: a key sav has not
    // used before (its stream starts again).
    let plain = call
        .reinvite(&support::raw_uac::offer_sdp("127.0.0.1", media_port))
        .expect("an answer to the re-INVITE");
    assert!(
        plain.starts_with("SIP/2.0 200") && !plain.contains("a=crypto"),
        "{plain}"
    );
    let ours_again = Crypto::ours(9, Suite::AesCm128HmacSha1_32);
    let again = call
        .reinvite(&offer(media_port, "RTP/SAVP", &ours_again))
        .expect("an answer to the re-INVITE");
    let (savs_again, _) = answered(&again);
    assert_eq!(savs_again.tag, 9);
    assert!(
        savs_again.key.key != savs_32.key.key && savs_again.key.key != savs.key.key,
        "SRTP back after plain RTP under a key already used"
    );
    let mut reader_again = savs_again.key.context();
    first_readable(&media, &mut reader_again, 200).expect("SRTP under the newest key");

    // '#' under the caller's current key: sav says goodbye and hangs up.
    let mut writer = ours_again.key.context();
    press(&media, call.sav_rtp, Some(&mut writer), 20, '#');
    assert!(
        call.bye_from_sav(Duration::from_secs(10)),
        "the caller's own key press was not obeyed"
    );
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let refused = counter(&metrics, "sav_rtp_dropped_total", "reason=\"srtp_auth\"");
    assert!(
        refused >= 6,
        "the clear key press counted: {refused}\n{metrics}"
    );
    drop(sav);
}

#[test]
fn keys_that_would_travel_in_clear_sip_are_refused_with_488() {
    let dir = workdir("srtp_refusals");
    let ports = Ports::slot(49);
    let (_ca, cert, key) = make_certs(&dir);
    let _sav = Sav::start(&dir, ports, |c| {
        with_tls(c, ports.sip + 4, &cert, &key).replace("srtp = \"off\"", "srtp = \"mandatory\"")
    });
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sip_port = sip.local_addr().unwrap().port();
    let media_port = 15_000 + 49 * 100;
    let crypto = Crypto::ours(1, Suite::AesCm128HmacSha1_80);
    // Over UDP: SRTP offered (its key came in clear), plain RTP offered
    // (SRTP is mandatory), no offer at all (ours would carry our key).
    for (name, sdp, why) in [
        (
            "savp",
            offer(media_port, "RTP/SAVP", &crypto),
            "unencrypted signalling",
        ),
        (
            "plain",
            support::raw_uac::offer_sdp("127.0.0.1", media_port),
            "mandatory",
        ),
        ("none", String::new(), "unencrypted signalling"),
    ] {
        let call_id = format!("srtp-{name}-{sip_port}@test");
        let invite = support::raw_uac::invite_text_with(
            "127.0.0.1",
            sip_port,
            ports.sip,
            &call_id,
            &sdp,
            None,
        );
        sip.send_to(invite.as_bytes(), ("127.0.0.1", ports.sip))
            .unwrap();
        let answer = recv_until(&sip, Duration::from_secs(5), |m| {
            m.starts_with("SIP/2.0 ")
                && !m.starts_with("SIP/2.0 1")
                && header(m, "Call-ID") == Some(call_id.as_str())
        })
        .unwrap_or_else(|| panic!("{name}: no final answer"));
        assert!(answer.starts_with("SIP/2.0 488"), "{name}:\n{answer}");
        let warning = header(&answer, "Warning").unwrap_or_default();
        assert!(warning.contains(why), "{name}: {warning}");
        assert!(!answer.contains("a=crypto"), "{name}: no key in a refusal");
    }
}
