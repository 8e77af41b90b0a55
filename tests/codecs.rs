//! The codecs on the wire: sipp callers offer PCMA, PCMU, G.722, Opus and
//! G.729 alone and in mixed orders; what sav answers, and what its RTP
//! carries (payload type, sizes, timestamp step, gaps, and the cached
//! greeting decoded in the answered codec), captured with tshark.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

/// (the offer's formats, the payload type and codec the answer must take):
/// the caller's order wins, G.729 (unknown to sav) is passed over.
const OFFERS: [(&str, u8, &str); 11] = [
    ("8 101", 8, "PCMA"),
    ("0 101", 0, "PCMU"),
    ("0 8 101", 0, "PCMU"),
    ("8 0 101", 8, "PCMA"),
    ("18 8 0 101", 8, "PCMA"),
    ("9 101", 9, "G722"),
    ("9 8 0 101", 9, "G722"),
    ("0 9 101", 0, "PCMU"),
    ("111 110", 111, "opus"),
    ("18 111 8 101 110", 111, "opus"),
    ("8 111 101 110", 8, "PCMA"),
];

/// What the answer's SDP says of `codec`: its `a=rtpmap` encoding and the
/// telephone-event type at its clock rate.
fn answer_of(codec: &str) -> (&'static str, &'static str) {
    match codec {
        "opus" => ("opus/48000/2", "110"),
        "PCMA" => ("PCMA/8000", "101"),
        "PCMU" => ("PCMU/8000", "101"),
        _ => ("G722/8000", "101"),
    }
}

/// An Opus stream decoded at 8 kHz with sav's decoder (libopus).
fn decode_opus(packets: &[&[u8]]) -> Vec<i16> {
    let mut decoder = sav::media::codec::Decoder::new(sav::media::codec::Codec::Opus);
    let mut pcm = Vec::new();
    let mut frame = [0i16; 960];
    for packet in packets {
        let n = decoder.decode(packet, &mut frame);
        assert_eq!(n, 160, "20 ms in each Opus packet");
        pcm.extend_from_slice(&frame[..n]);
    }
    assert_eq!(decoder.errors(), 0);
    pcm
}

/// The normalised cross-correlation of `b` delayed by up to `max_lag`
/// samples against `a`, at its best lag.
fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
    (0..=max_lag)
        .map(|lag| {
            let b = &b[lag.min(b.len())..];
            let n = a.len().min(b.len());
            let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
            for (&x, &y) in a[..n].iter().zip(&b[..n]) {
                let (x, y) = (f64::from(x), f64::from(y));
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            ab / (aa * bb).sqrt().max(1.0)
        })
        .fold(f64::MIN, f64::max)
}

/// A G.722 payload stream decoded at 16 kHz with sav's decoder, which its
/// unit tests hold to the ITU-T reference sequences.
fn decode_g722(octets: &[u8]) -> Vec<i16> {
    let mut pcm = vec![0i16; 2 * octets.len()];
    sav::media::g722::G722Decoder::new().decode(octets, &mut pcm);
    pcm
}

/// An A-law payload decoded to linear samples (ITU-T G.711 §2), written
/// apart from sav's own tables.
fn decode_alaw(codes: &[u8]) -> Vec<i16> {
    codes
        .iter()
        .map(|&c| {
            let a = c ^ 0x55;
            let mut t = i32::from(a & 0x0F) << 4;
            let segment = (a & 0x70) >> 4;
            t = match segment {
                0 => t + 8,
                1 => t + 0x108,
                s => (t + 0x108) << (s - 1),
            };
            (if a & 0x80 != 0 { t } else { -t }) as i16
        })
        .collect()
}

/// Signal-to-noise ratio (dB) of `decoded` against `reference`.
fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
    let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(decoded)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1.0)).log10()
}

#[test]
fn each_offer_is_answered_in_its_first_known_codec_and_the_rtp_carries_it() {
    let dir = workdir("codecs_offers");
    let ports = Ports::slot(74);
    let sav = Sav::start(&dir, ports, |c| c);
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let template = std::fs::read_to_string(format!("{REPO}/tests/sipp/uac_offer.xml")).unwrap();
    for (n, (formats, pt, codec)) in OFFERS.into_iter().enumerate() {
        let scenario = dir.join(format!("uac_offer_{n}.xml"));
        let (encoding, te) = answer_of(codec);
        let text = template
            .replace("@FORMATS@", formats)
            .replace("@ANSWER_PT@", &pt.to_string())
            .replace("@ANSWER_ENCODING@", encoding)
            .replace("@ANSWER_TE@", te);
        std::fs::write(&scenario, text).unwrap();
        let output = sipp(
            &dir,
            scenario.to_str().unwrap(),
            ports,
            &["-m", "1", "-d", "1500"],
            Duration::from_secs(30),
        );
        assert!(
            output.status.success(),
            "offer {formats:?}: not answered {codec}:\n{}\n{}",
            sipp_report(&dir, &output),
            sav.log_text()
        );
    }
    let packets = capture.stop();

    // sav's streams, one SSRC per call, in the order the calls were made.
    let mut streams: Vec<(u32, Vec<&Datagram>)> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for packet in ports.sav_audio(&packets) {
        let ssrc = u32::from_be_bytes(packet.payload[8..12].try_into().unwrap());
        let at = *index.entry(ssrc).or_insert_with(|| {
            streams.push((ssrc, Vec::new()));
            streams.len() - 1
        });
        streams[at].1.push(packet);
    }
    assert_eq!(streams.len(), OFFERS.len(), "one RTP stream per call");
    let greet = decode_ulaw(&cached_ulaw("greet"));
    let greet_wide = sav::cache::read_phrase(&std::path::Path::new(REPO).join("cache"), "greet")
        .unwrap()
        .expect("cache/greet.wav")
        .samples;
    let mut report = String::from(
        "offer → answer: packets, max gap, inter-departure, lateness on the 20 ms clock, payload octets, SNR (or correlation) of the first 0.5 s\n",
    );
    for ((formats, pt, codec), (_, stream)) in OFFERS.iter().zip(&streams) {
        assert!(stream.len() >= 60, "{formats}: {} packets", stream.len());
        let mut max_gap = Duration::ZERO;
        for pair in stream.windows(2) {
            let (a, b) = (&pair[0].payload, &pair[1].payload);
            assert_eq!(b[1] & 0x7F, *pt, "{formats}: payload type");
            let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
            let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            assert_eq!(seq(b), seq(a).wrapping_add(1), "{formats}: sequence");
            let step = if *codec == "opus" { 960 } else { 160 };
            assert_eq!(ts(b).wrapping_sub(ts(a)), step, "{formats}: timestamp step");
            max_gap = max_gap.max(pair[1].time.saturating_sub(pair[0].time));
        }
        // Inter-departure off the 20 ms period: p50 and p99 (ms), as the
        // foundation's pacing capture reports them.
        let mut off: Vec<f64> = stream
            .windows(2)
            .map(|w| (w[1].time.as_secs_f64() - w[0].time.as_secs_f64() - 0.020).abs() * 1000.0)
            .collect();
        off.sort_by(f64::total_cmp);
        let percentile = |p: f64| off[((off.len() - 1) as f64 * p).round() as usize];
        let (p50, p99) = (percentile(0.5), percentile(0.99));
        // The foundation's pacing bounds, in every codec: no gap over
        // 40 ms, 50 packets a second over the call.
        assert!(
            max_gap <= Duration::from_millis(40),
            "{formats}: a gap of {max_gap:?}"
        );
        let span = stream.last().unwrap().time.as_secs_f64() - stream[0].time.as_secs_f64();
        let rate = (stream.len() - 1) as f64 / span;
        assert!(
            (48.5..=51.5).contains(&rate),
            "{formats}: {rate:.2} packets/s"
        );
        assert_eq!(stream[0].payload[1] & 0x7F, *pt);
        // On the 20 ms clock: no packet more than 40 ms behind its slot (a
        // late wake-up of the machine is caught up, the clock never slips).
        let slot = |n: usize| Duration::from_millis(20 * n as u64);
        let start = stream
            .iter()
            .enumerate()
            .map(|(n, p)| p.time.saturating_sub(slot(n)))
            .min()
            .unwrap();
        let behind = stream
            .iter()
            .enumerate()
            .map(|(n, p)| p.time.saturating_sub(start + slot(n)))
            .max()
            .unwrap();
        assert!(
            behind <= Duration::from_millis(40),
            "{formats}: a packet {behind:?} behind its slot (largest gap {max_gap:?})"
        );
        // The first 0.5 s is the cached greeting, in the answered law.
        let payloads: Vec<u8> = stream
            .iter()
            .take(26)
            .flat_map(|p| p.payload[12..].to_vec())
            .collect();
        let sizes: Vec<usize> = stream.iter().map(|p| p.payload.len() - 12).collect();
        let (smallest, largest) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        if *codec == "opus" {
            // Variable: a few octets of silence, up to ~100 of speech at
            // 32 kbit/s (never the 400 sav allows a frame).
            assert!(
                *smallest >= 1 && *largest <= 400 && smallest < largest,
                "{formats}: Opus packets of {smallest}..{largest} octets"
            );
        } else {
            assert_eq!(
                (*smallest, *largest),
                (160, 160),
                "{formats}: 160 octets of audio per packet"
            );
        }
        // μ-law as sav makes it from the 16 kHz phrase: exact; A-law from
        // the same audio: one other quantisation (G.711 gives ~38 dB on
        // speech); G.722, decoded at 16 kHz as a phone does, against the
        // 16 kHz phrase itself, after its first 50 ms (adaptive coding
        // settles) and the filters' delay (a few samples).
        if *codec == "opus" {
            // A perceptual coder keeps the sound, not each sample: the
            // greeting decoded at 8 kHz correlates with the cached one
            // (after Opus's few milliseconds of delay).
            let packets: Vec<&[u8]> = stream.iter().take(26).map(|p| &p.payload[12..]).collect();
            let decoded = decode_opus(&packets);
            let correlation = best_correlation(&greet[400..4000], &decoded[400..], 160);
            assert!(
                correlation > 0.8,
                "{formats}: correlation {correlation:.3} with the greeting"
            );
            let other = decode_ulaw(&cached_ulaw("menu"));
            assert!(best_correlation(&other[400..4000], &decoded[400..], 160) < 0.5);
            report += &format!(
                "{formats:>16} → {codec} ({pt}): {} packets, max gap {:.1} ms, |inter-departure − 20 ms| p50 {p50:.2} / p99 {p99:.2} ms, at most {:.1} ms behind the clock, {smallest}..{largest} octets, correlation {correlation:.3}\n",
                stream.len(),
                max_gap.as_secs_f64() * 1000.0,
                behind.as_secs_f64() * 1000.0
            );
            continue;
        }
        let snr = match *codec {
            "G722" => {
                let decoded = decode_g722(&payloads);
                (0..64)
                    .map(|lag| snr_db(&greet_wide[800..8000], &decoded[800 + lag..8000 + lag]))
                    .fold(f64::MIN, f64::max)
            }
            "PCMA" => snr_db(&greet[..4000], &decode_alaw(&payloads)[..4000]),
            _ => snr_db(&greet[..4000], &decode_ulaw(&payloads)[..4000]),
        };
        let bound = if *codec == "G722" { 20.0 } else { 30.0 };
        assert!(
            snr > bound,
            "{formats}: SNR {snr:.1} dB against the greeting"
        );
        // Decoded as the wrong codec it is noise: the test can tell.
        let wrong = match *codec {
            "PCMU" => decode_alaw(&payloads),
            _ => decode_ulaw(&payloads),
        };
        assert!(snr_db(&greet[400..4000], &wrong[400..4000]) < 10.0);
        report += &format!(
            "{formats:>16} → {codec} ({pt}): {} packets, max gap {:.1} ms, |inter-departure − 20 ms| p50 {p50:.2} / p99 {p99:.2} ms, at most {:.1} ms behind the clock, {smallest}..{largest} octets, SNR {snr:.1} dB\n",
            stream.len(),
            max_gap.as_secs_f64() * 1000.0,
            behind.as_secs_f64() * 1000.0
        );
    }
    write_report("codecs-report.txt", &report);
}

/// An offer with `a=rtcp-mux` (RFC 5761) is answered with it, and sav's
/// RTCP then leaves from its RTP port to the caller's: sender reports
/// while the call lasts, BYE at its end, told apart from RTP by their
/// packet types (RFC 5761 §4).
#[test]
fn an_offer_with_rtcp_mux_gets_rtcp_on_the_rtp_ports() {
    let dir = workdir("codecs_rtcp_mux");
    let ports = Ports::slot(79);
    let sav = Sav::start(&dir, ports, |c| c);
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max + 1),
    );
    let template = std::fs::read_to_string(format!("{REPO}/tests/sipp/uac_offer.xml")).unwrap();
    let (encoding, te) = answer_of("PCMA");
    let text = template
        .replace("@FORMATS@", "8 101")
        .replace("@ANSWER_PT@", "8")
        .replace("@ANSWER_ENCODING@", encoding)
        .replace("@ANSWER_TE@", te)
        .replace("      a=sendrecv\n", "      a=sendrecv\n      a=rtcp-mux\n")
        .replace(
            r#"assign_to="rtpmap"/>"#,
            r#"assign_to="rtpmap"/>
      <ereg regexp="a=rtcp-mux" search_in="body" check_it="true" assign_to="mux"/>"#,
        )
        .replace(
            r#"<Reference variables="m_line,rtpmap"/>"#,
            r#"<Reference variables="m_line,rtpmap,mux"/>"#,
        );
    assert!(
        text.contains("a=rtcp-mux\n") && text.contains("rtpmap,mux"),
        "the template changed"
    );
    let scenario = dir.join("uac_rtcp_mux.xml");
    std::fs::write(&scenario, text).unwrap();
    // Long enough for the first report (within 3.75 s of the start).
    let output = sipp(
        &dir,
        scenario.to_str().unwrap(),
        ports,
        &["-m", "1", "-d", "6000"],
        Duration::from_secs(40),
    );
    assert!(
        output.status.success(),
        "not answered with a=rtcp-mux:\n{}\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );
    let packets = capture.stop();
    let audio = ports.sav_audio(&packets);
    assert!(audio.len() >= 200, "{} RTP packets", audio.len());
    let rtp_port = audio[0].src_port;
    let rtcp: Vec<&Datagram> = packets
        .iter()
        .filter(|p| p.dst_port == ports.sipp_media && (200..=204).contains(&p.payload[1]))
        .collect();
    assert!(
        rtcp.iter().all(|p| p.src_port == rtp_port),
        "RTCP from a port other than RTP's {rtp_port}"
    );
    // Nothing on the port above: the multiplexed call has no RTCP socket.
    assert!(!packets
        .iter()
        .any(|p| p.src_port == rtp_port + 1 || p.dst_port == ports.sipp_media + 1));
    let types: Vec<u8> = rtcp.iter().map(|p| p.payload[1]).collect();
    assert!(
        types.first() == Some(&200),
        "a sender report first: {types:?}"
    );
    // The BYE goes in a compound packet behind a report (RFC 3550 §6.1):
    // find its type after the first packet's length.
    let last = &rtcp.last().expect("RTCP from sav").payload;
    let kinds: Vec<u8> = std::iter::successors(Some(0usize), |&at| {
        let len =
            4 * (usize::from(u16::from_be_bytes([*last.get(at + 2)?, *last.get(at + 3)?])) + 1);
        Some(at + len).filter(|&next| next < last.len())
    })
    .filter_map(|at| last.get(at + 1).copied())
    .collect();
    assert!(kinds.contains(&203), "the last RTCP holds a BYE: {kinds:?}");
}
