//! `sav call` as a user runs it: against a second `sav serve` and against a
//! sipp callee, with the summary's figures checked for sanity.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

fn sav_call(dir: &Path, uri: &str, play: &Path, seconds: u32) -> Output {
    Command::new("timeout")
        .args(["-k", "5", &(seconds + 40).to_string()])
        .arg(env!("CARGO_BIN_EXE_sav"))
        .args(["call", uri, "--duration", &seconds.to_string(), "--play"])
        .arg(play)
        .arg("--record")
        .arg(dir.join("heard.wav"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run sav call")
}

/// The `key value…` lines of the summary.
fn summary(output: &Output) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sav call failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter_map(|l| l.trim().split_once(char::is_whitespace))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn number(s: &HashMap<String, String>, key: &str) -> f64 {
    let v = s.get(key).unwrap_or_else(|| panic!("no {key} in {s:?}"));
    v.split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {v}"))
}

#[test]
fn calls_a_second_sav_and_hears_its_greeting() {
    let dir = workdir("sav_call_sav");
    let ports = Ports::slot(30);
    utterance(&dir);
    let play = dir.join("utterance-22k.wav"); // 16-bit PCM at espeak-ng's rate
    let callee = Sav::start(&dir, ports, |c| c);
    let output = sav_call(&dir, &format!("sip:sav@127.0.0.1:{}", ports.sip), &play, 4);
    let s = summary(&output);
    assert!(s["call"].ends_with("answered 200"), "{s:?}");
    // Both offer PCMA first: the call is in A-law end to end.
    assert_eq!(s["codec"], "PCMA", "{s:?}");
    let setup = number(&s, "setup_ms");
    assert!((0.0..1000.0).contains(&setup), "setup {setup} ms");
    let first = number(&s, "first_packet");
    assert!(
        (0.0..100.0).contains(&first),
        "first packet {first} ms after the answer"
    );
    let received = number(&s, "rtp_received");
    assert!(
        (190.0..=205.0).contains(&received),
        "{received} packets in 4 s"
    );
    assert!(s["rtp_received"].contains("lost 0"), "{s:?}");
    let gap = number(&s, "max_gap_ms");
    assert!(gap < 100.0, "max gap {gap} ms");
    let sent = number(&s, "rtp_sent");
    assert!(
        (190.0..=205.0).contains(&sent),
        "{sent} packets sent in 4 s"
    );
    assert_eq!(s["ended_by"], "us (BYE)");
    // The callee's RTCP (its first report within 3.75 s) reached us: it
    // lost none of our packets.
    assert!(s["callee_lost"].starts_with("0 "), "{s:?}");
    // What we recorded is sav's greeting.
    let mut reader = hound::WavReader::open(dir.join("heard.wav")).unwrap();
    let heard: Vec<i16> = reader.samples::<i16>().map(|x| x.unwrap()).collect();
    let greet = decode_ulaw(&cached_ulaw("greet"));
    let (correlation, lag) = best_correlation(&envelope(&heard), &envelope(&greet));
    assert!(
        correlation > 0.95 && lag < 5,
        "correlation {correlation:.3} at frame {lag}"
    );
    assert!(callee.log_text().contains("caller hung up"));
}

#[test]
fn calls_a_sipp_callee_and_reports_its_stream() {
    let dir = workdir("sav_call_sipp");
    let ports = Ports::slot(31);
    utterance(&dir);
    let play = dir.join("utterance-22k.wav");
    let callee = sipp_uas(
        &dir,
        "uas_answer.xml",
        ports.sipp,
        &[
            "-m",
            "1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &ports.sipp_media.to_string(),
        ],
        Duration::from_secs(40),
    );
    std::thread::sleep(Duration::from_millis(300));
    let output = sav_call(&dir, &format!("sip:bob@127.0.0.1:{}", ports.sipp), &play, 3);
    let s = summary(&output);
    let callee = sipp_wait(callee);
    assert!(callee.status.success(), "{}", sipp_report(&dir, &callee));
    assert!(s["call"].ends_with("answered 200"), "{s:?}");
    // sipp answers PCMU, the second codec of the offer.
    assert_eq!(s["codec"], "PCMU", "{s:?}");
    let received = number(&s, "rtp_received");
    assert!(received > 50.0, "{received} packets from sipp's stream");
    let first_audio = number(&s, "first_audio");
    assert!(
        (0.0..500.0).contains(&first_audio),
        "first audio {first_audio} ms"
    );
    assert!(number(&s, "setup_ms") < 1000.0);
}

/// Keys on an Opus call go out as 48 kHz telephone-events on the payload
/// type the callee's answer gave them (ours is 110 there, not 101): the
/// callee, a second sav, hears the '#' and says goodbye.
#[test]
fn a_key_pressed_on_an_opus_call_reaches_the_callee() {
    let dir = workdir("sav_call_opus_key");
    let ports = Ports::slot(89);
    let callee = Sav::start(&dir, ports, |c| c);
    let output = Command::new("timeout")
        .args(["-k", "5", "100"])
        .arg(env!("CARGO_BIN_EXE_sav"))
        .args(["call", &format!("sip:sav@127.0.0.1:{}", ports.sip)])
        .args(["--codec", "opus", "--dtmf", "#", "--duration", "60"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run sav call");
    let s = summary(&output);
    assert_eq!(s["codec"], "opus", "{s:?}");
    assert!(s["turns"].starts_with("key # at"), "{s:?}");
    assert_eq!(s["ended_by"], "remote BYE", "{s:?}");
    let log = callee.wait_for_log("call outcome", Duration::from_secs(10));
    assert!(log.contains("DTMF digit=#"), "{log}");
}
