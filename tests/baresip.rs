//! baresip, a real softphone, calls sav over UDP and over TLS, talks, and
//! records what it hears; the recording must hold the cached greeting.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// The recording (8 kHz) must hold the cached greeting, early in the call
/// (see [`assert_heard_greeting_at`]).
fn assert_heard_greeting(recording: &Path) {
    assert_heard_greeting_at(recording, 8000, G711_WAVEFORM);
}

/// The least waveform correlation of a G.711 recording with the greeting
/// (the same 8 kHz audio through two G.711 codings).
const G711_WAVEFORM: f64 = 0.95;

/// The recording made at `rate` (8 kHz, 16 kHz from a G.722 call, 48 kHz
/// from an Opus one) holds the cached greeting within the call's first
/// second: its 20 ms energy envelope correlates with the greeting's above
/// 0.9, and its waveform, brought to 8 kHz, correlates with the greeting's
/// (the cached clip decoded) above `min_waveform` at the best sample lag
/// near the envelope's. Returns the waveform correlation.
fn assert_heard_greeting_at(recording: &Path, rate: u32, min_waveform: f64) -> f64 {
    let mut reader = hound::WavReader::open(recording).expect("read recording");
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels), (rate, 1), "{spec:?}");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let heard = if rate == 8000 {
        samples
    } else {
        sav::media::resample::resample(&samples, rate, 8000).expect("resampled to 8 kHz")
    };
    let greet = decode_ulaw(&cached_ulaw("greet"));
    assert!(
        heard.len() > greet.len(),
        "recording of {} samples",
        heard.len()
    );
    let (correlation, lag) = best_correlation(&envelope(&heard), &envelope(&greet));
    assert!(
        correlation > 0.9,
        "the recording does not hold the greeting (best correlation {correlation:.3} at {} ms)",
        lag * 20
    );
    assert!(
        lag * 20 < 1000,
        "the greeting came {} ms into the call",
        lag * 20
    );
    let waveform = waveform_correlation(&heard, &greet, lag * 160);
    // The control: another phrase does not correlate there.
    let other = waveform_correlation(&heard, &decode_ulaw(&cached_ulaw("goodbye")), lag * 160);
    eprintln!(
        "{}: waveform correlation with the greeting {waveform:.4}, with another phrase {other:.4}",
        recording.display()
    );
    assert!(
        other < 0.5,
        "another phrase correlates at {other:.3}: the measure tells nothing"
    );
    assert!(
        waveform > min_waveform,
        "the recording's waveform is not the greeting's: best correlation {waveform:.3} (bound {min_waveform})"
    );
    waveform
}

/// How the greeting's first second sounds in the recording: cut in ten
/// 100 ms blocks, each placed at its own best lag within 25 ms of `near`
/// (samples at 8 kHz), so a frame the phone's jitter buffer dropped or
/// repeated moves the blocks after it without spoiling them; the
/// correlation of the blocks so placed, weighted by their energy.
fn waveform_correlation(heard: &[i16], greet: &[i16], near: usize) -> f64 {
    const BLOCK: usize = 800;
    const REACH: usize = 200;
    let greet = &greet[..greet.len().min(10 * BLOCK)];
    let sums = |block: &[i16], at: usize| {
        let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in block.iter().zip(&heard[at..at + block.len()]) {
            let (a, b) = (f64::from(a), f64::from(b));
            ab += a * b;
            aa += a * a;
            bb += b * b;
        }
        (ab, aa, bb)
    };
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (n, block) in greet.chunks(BLOCK).enumerate() {
        let centre = near + n * BLOCK;
        let lags = centre.saturating_sub(REACH)..=centre + REACH;
        let best = lags
            .filter(|&at| at + block.len() <= heard.len())
            .map(|at| sums(block, at))
            .max_by(|x, y| {
                let score = |(ab, aa, bb): (f64, f64, f64)| ab / (aa * bb).sqrt().max(1.0);
                score(*x).total_cmp(&score(*y))
            })
            .expect("the recording reaches past the greeting's place");
        ab += best.0;
        aa += best.1;
        bb += best.2;
    }
    ab / (aa * bb).sqrt().max(1.0)
}

/// The measure itself, without a phone: the greeting 300 ms into a
/// recording, with a 20 ms frame repeated at 450 ms and one dropped at
/// 750 ms (what a phone's jitter buffer may do), still correlates; another
/// phrase in the same place does not.
#[test]
fn the_waveform_measure_rides_over_a_slipped_frame() {
    let greet = decode_ulaw(&cached_ulaw("greet"));
    let mut heard = vec![0i16; 2400];
    heard.extend_from_slice(&greet[..3600]);
    heard.extend_from_slice(&greet[3440..3600]);
    heard.extend_from_slice(&greet[3600..6000]);
    heard.extend_from_slice(&greet[6160..]);
    let slipped = waveform_correlation(&heard, &greet, 2400);
    assert!(slipped > G711_WAVEFORM, "{slipped:.4}");
    let other = decode_ulaw(&cached_ulaw("goodbye"));
    let control = waveform_correlation(&heard, &other, 2400);
    assert!(control < 0.5, "{control:.4}");
}

#[test]
fn baresip_over_udp_hears_the_cached_greeting() {
    let dir = workdir("baresip_udp");
    let ports = Ports::slot(28);
    let sav = Sav::start(&dir, ports, |c| c);
    let uri = format!("sip:sav@127.0.0.1:{}", ports.sip);
    let recording = baresip_call(&dir, &uri, ports.sip + 7, ports.sipp_media, 5, None, None);
    assert_heard_greeting(&recording);
    // The BYE may still be on its way through sav when baresip is done.
    let log = sav.wait_for_log("caller hung up", Duration::from_secs(5));
    assert!(
        log.contains("call established") && log.contains("caller hung up"),
        "{log}"
    );
}

#[test]
fn baresip_and_sav_exchange_rtcp_reports_on_the_ports_above_rtp() {
    let dir = workdir("baresip_rtcp");
    let ports = Ports::slot(76);
    let sav = Sav::start(&dir, ports, |c| c);
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max + 1),
    );
    let uri = format!("sip:sav@127.0.0.1:{}", ports.sip);
    baresip_call(&dir, &uri, ports.sip + 7, ports.sipp_media, 9, None, None);
    let (_, pcap) = capture.stop_keeping_file();
    // tshark decodes sav's side: its RTCP port is the odd one above its RTP.
    // sav's RTP port is drawn at random from its range: its log says which.
    let log = sav.wait_for_log("call established", Duration::from_secs(5));
    let sav_rtp: u16 = log
        .split("local_rtp=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|port| port.parse().ok())
        .expect("sav's RTP port in its log");
    let decoded = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("udp.port=={},rtcp", sav_rtp + 1)])
        .args([
            "-Y",
            "rtcp",
            "-T",
            "fields",
            "-e",
            "udp.srcport",
            "-e",
            "rtcp.pt",
            "-e",
            "rtcp.rc",
            "-e",
            "rtcp.ssrc.lsr",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&decoded.stdout);
    let from_sav: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{}\t", sav_rtp + 1)))
        .collect();
    let to_sav = text.lines().count() - from_sav.len();
    // A sender report (with SDES) every 2.5 to 7.5 s, then BYE at the end.
    assert!(
        from_sav.iter().any(|l| l.contains("200")),
        "no SR from sav:\n{text}"
    );
    assert!(
        from_sav.last().is_some_and(|l| l.contains("203")),
        "sav's last RTCP is not a BYE:\n{text}"
    );
    assert!(to_sav >= 1, "baresip sent sav no RTCP:\n{text}");
    // Fields: source port, packet types, report counts, LSR of each block.
    let fields = |line: &str| -> Vec<String> { line.split('\t').map(str::to_string).collect() };
    // sav's sender reports carry a reception report block on baresip's
    // stream (RC = 1): SR with the receiver part, RFC 3550 §6.4.1.
    // (The first may come before baresip's first packet reached sav.)
    let blocks: Vec<bool> = from_sav
        .iter()
        .map(|l| fields(l))
        .filter(|f| f[1].starts_with("200"))
        .map(|f| f.get(2).is_some_and(|rc| rc.split(',').next() == Some("1")))
        .collect();
    assert!(
        blocks.len() >= 2 && blocks[1..].iter().all(|&b| b),
        "an SR from sav without a reception block ({blocks:?}):\n{text}"
    );
    // baresip's reports answer one of sav's SRs (a non-zero LSR): what the
    // round trip is computed from.
    let answered = text
        .lines()
        .filter(|l| !from_sav.contains(l))
        .map(fields)
        .any(|f| {
            (f[1].starts_with("200") || f[1].starts_with("201"))
                && f.get(3)
                    .is_some_and(|lsr| lsr.split(',').any(|v| !v.is_empty() && v != "0"))
        });
    assert!(answered, "no report from baresip echoing sav's SR:\n{text}");
    let log = sav.wait_for_log("call ended", Duration::from_secs(5));
    assert!(log.contains("media of the call"), "{log}");
    assert!(
        log.contains("rtt_ms="),
        "no round trip from baresip's reports:\n{log}"
    );
    // The round trip in the metrics: one call observed, on loopback (well
    // under a second).
    let (status, metrics) = http_get(ports.metrics, "/metrics").expect("sav's /metrics");
    assert_eq!(status, 200);
    let sample = |name: &str| -> f64 {
        metric_sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert_eq!(sample("sav_rtp_round_trip_seconds_count"), 1.0, "{metrics}");
    let rtt = sample("sav_rtp_round_trip_seconds_sum");
    assert!((0.0..1.0).contains(&rtt), "round trip {rtt} s on loopback");
    // And in the call's record: its timeline's media carries it.
    let call_id = call_id_in(&log);
    let begun = std::time::Instant::now();
    let media = loop {
        let report = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
            .arg("--config")
            .arg(dir.join("sav.toml"))
            .args(["report", &call_id, "--json"])
            .current_dir(&dir)
            .output()
            .expect("run sav report");
        let timeline: Option<serde_json::Value> = report
            .status
            .success()
            .then(|| serde_json::from_slice(&report.stdout).ok())
            .flatten();
        match timeline.map(|t| t["media"].clone()) {
            Some(media) if media.is_object() => break media,
            other => assert!(
                begun.elapsed() < Duration::from_secs(10),
                "no media in the call's record: {other:?} {}",
                String::from_utf8_lossy(&report.stderr)
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let round_trip = media["round_trip_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no round trip in the record: {media}"));
    assert!((0.0..1000.0).contains(&round_trip), "{media}");
    assert!(
        (round_trip - rtt * 1000.0).abs() < 1.0,
        "the record's round trip {round_trip} ms is not the metrics' {rtt} s"
    );
}

#[test]
fn baresip_in_a_law_hears_the_cached_greeting() {
    let dir = workdir("baresip_pcma");
    let ports = Ports::slot(75);
    let sav = Sav::start(&dir, ports, |c| c);
    let uri = format!("sip:sav@127.0.0.1:{}", ports.sip);
    let recording = baresip_call(
        &dir,
        &uri,
        ports.sip + 7,
        ports.sipp_media,
        5,
        None,
        Some("PCMA"),
    );
    assert_heard_greeting(&recording);
    let log = sav.log_text();
    assert!(log.contains("codec=PCMA"), "{log}");
}

/// baresip calls in `codec` (its name for it) and records at `rate`: the
/// log says sav answered in `answered`, the recording holds the greeting.
fn baresip_in(name: &str, slot: u16, codec: &str, answered: &str, rate: u32, min_waveform: f64) {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    let sav = Sav::start(&dir, ports, |c| c);
    let uri = format!("sip:sav@127.0.0.1:{}", ports.sip);
    // The first G.722 or Opus call of a process rings while the phrases
    // are coded (tens of milliseconds to 1.5 s optimised, a few seconds in
    // this test build, which does not code them at start): a longer call
    // leaves the greeting whole after the answer.
    let recording = baresip_call(
        &dir,
        &uri,
        ports.sip + 7,
        ports.sipp_media,
        9,
        None,
        Some(codec),
    );
    let log = sav.log_text();
    assert!(log.contains(&format!("codec={answered}")), "{log}");
    assert_heard_greeting_at(&recording, rate, min_waveform);
}

#[test]
fn baresip_in_g722_hears_the_cached_greeting() {
    baresip_in("baresip_g722", 77, "G722/16000/1", "G722", 16_000, 0.95);
}

#[test]
fn baresip_in_opus_hears_the_cached_greeting() {
    // baresip's mono Opus (`opus_stereo no`), decoded at 48 kHz. Opus keeps
    // the waveform less closely than G.711 or G.722 (0.94 measured).
    baresip_in("baresip_opus", 78, "opus/48000/1", "opus", 48_000, 0.8);
}

#[test]
fn baresip_over_tls_hears_the_cached_greeting() {
    let dir = workdir("baresip_tls");
    let ports = Ports::slot(29);
    let (ca, cert, key) = make_certs(&dir);
    let tls_port = ports.sip + 4;
    let sav = Sav::start(&dir, ports, |c| with_tls(c, tls_port, &cert, &key));
    let uri = format!("sip:sav@127.0.0.1:{tls_port};transport=tls");
    let recording = baresip_call(
        &dir,
        &uri,
        ports.sip + 7,
        ports.sipp_media,
        5,
        Some(&ca),
        None,
    );
    assert_heard_greeting(&recording);
    let log = sav.wait_for_log("caller hung up", Duration::from_secs(5));
    assert!(log.contains("transport=TLS"), "{log}");
    assert!(log.contains("caller hung up"), "{log}");
}

/// sav on TLS with `[media] srtp = mode` and recordings on.
fn sav_with_srtp(dir: &Path, ports: Ports, tls_port: u16, mode: &str) -> (Sav, PathBuf) {
    let (ca, cert, key) = make_certs(dir);
    let sav = Sav::start(dir, ports, |c| {
        with_tls(c, tls_port, &cert, &key)
            .replace("srtp = \"off\"", &format!("srtp = \"{mode}\""))
            .replace(
                "# recordings_dir = \"recordings\"",
                "recordings_dir = \"recordings\"",
            )
    });
    (sav, ca)
}

/// The caller's side (left) of sav's one recording: 8 kHz samples.
fn callers_side_of_the_recording(dir: &Path) -> Vec<i16> {
    let recordings: Vec<PathBuf> = std::fs::read_dir(dir.join("recordings"))
        .expect("the recordings directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let mut reader = hound::WavReader::open(&recordings[0]).expect("read sav's recording");
    assert_eq!(reader.spec().channels, 2);
    reader
        .samples::<i16>()
        .map(|s| s.unwrap())
        .step_by(2)
        .collect()
}

/// baresip calls over TLS with `mediaenc`; sav with `[media] srtp = mode`
/// answers in SRTP: baresip hears the greeting, sav hears baresip's
/// words (its recording's caller side holds them), nothing fails to
/// authenticate.
fn srtp_call(name: &str, slot: u16, mode: &str, mediaenc: &str) {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    let tls_port = ports.sip + 4;
    let (sav, ca) = sav_with_srtp(&dir, ports, tls_port, mode);
    let uri = format!("sip:sav@127.0.0.1:{tls_port};transport=tls");
    let recording = baresip_call_with(
        &dir,
        &uri,
        ports.sip + 7,
        ports.sipp_media,
        6,
        Some(&ca),
        Some("PCMU/8000/1"),
        Some(mediaenc),
    );
    // What baresip sent and was answered, as its log has it.
    let baresip_log = std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();
    assert_heard_greeting(&recording);
    let log = sav.wait_for_log("media of the call", Duration::from_secs(10));
    assert!(
        log.contains("srtp=\"AES_CM_128_HMAC_SHA1_80\"")
            || log.contains("srtp=AES_CM_128_HMAC_SHA1_80")
            || log.contains("srtp=\"AES_CM_128_HMAC_SHA1_32\"")
            || log.contains("srtp=AES_CM_128_HMAC_SHA1_32"),
        "the call was not SRTP:\n{log}\n{baresip_log}"
    );
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    for reason in ["srtp_auth", "srtp_replay"] {
        assert_eq!(
            counter(
                &metrics,
                "sav_rtp_dropped_total",
                &format!("reason=\"{reason}\"")
            ),
            0,
            "{reason}:\n{metrics}"
        );
    }
    // baresip's words reached sav in clear: the caller's side of the
    // recording follows the utterance baresip sent (read once sav has
    // written it out).
    sav.wait_for_log("call recorded", Duration::from_secs(10));
    drop(sav);
    let heard = callers_side_of_the_recording(&dir);
    let said = hound::WavReader::open(dir.join("baresip").join("source.wav"))
        .expect("baresip's source")
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect::<Vec<_>>();
    // The utterance, without the (dithered) silence it was padded with.
    let end = said.iter().rposition(|s| s.abs() > 100).unwrap_or(0) + 1;
    let said = &said[..end];
    assert!(heard.len() > said.len(), "{} samples recorded", heard.len());
    let (correlation, lag) = best_correlation(&envelope(&heard), &envelope(said));
    assert!(
        correlation > 0.8,
        "sav's recording does not hold what baresip said (best correlation {correlation:.3} at {} ms)",
        lag * 20
    );
}

#[test]
fn baresip_in_srtp_over_tls_hears_the_greeting_and_is_heard() {
    // RTP/SAVP offered (baresip's "srtp-mand"), sav requires SRTP.
    srtp_call("baresip_srtp_mand", 45, "mandatory", "srtp-mand");
}

#[test]
fn baresip_in_best_effort_srtp_is_answered_in_srtp_when_optional() {
    // RTP/AVP with crypto lines (baresip's "srtp"), sav takes SRTP when
    // offered.
    srtp_call("baresip_srtp_best_effort", 46, "optional", "srtp");
}

#[test]
fn srtp_keys_over_udp_signalling_are_refused() {
    // The same RTP/SAVP offer over plain UDP: its keys travelled in clear,
    // so sav answers 488 and says why.
    let dir = workdir("baresip_srtp_udp");
    let ports = Ports::slot(47);
    let (sav, _ca) = sav_with_srtp(&dir, ports, ports.sip + 4, "optional");
    let uri = format!("sip:sav@127.0.0.1:{}", ports.sip);
    let conf = std::panic::catch_unwind(|| {
        baresip_call_with(
            &dir,
            &uri,
            ports.sip + 7,
            ports.sipp_media,
            3,
            None,
            Some("PCMU/8000/1"),
            Some("srtp-mand"),
        )
    });
    assert!(conf.is_err(), "baresip recorded a call sav should refuse");
    let baresip_log = std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();
    assert!(baresip_log.contains("488"), "{baresip_log}");
    let log = sav.wait_for_log("offer refused", Duration::from_secs(5));
    assert!(log.contains("unencrypted signalling"), "{log}");
    assert!(!log.contains("call established"), "{log}");
}
