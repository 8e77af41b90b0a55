//! Barge-in: the caller talks over a long generated reply. sav's audio stops
//! within 100 ms of the caller's onset (+ the VAD's minimum speech); a real
//! interruption gets a new reply, a cough or an "mhm" resumes the old one.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::fake_providers::{FakeBehaviour, FakeProviders};
use support::*;

const LONG_REPLY: &str = "Très bien, je vais vous aider à résoudre ce problème de connexion. Commencez par débrancher la box pendant dix secondes. Ensuite rebranchez-la et attendez que tous les voyants soient bien stabilisés. Dites-moi quand c'est fait.";
const MIN_SPEECH_MS: f64 = 120.0;

fn wav(dir: &Path, name: &str, text: &str, lead_s: &str, pad_s: &str) {
    let raw = dir.join(format!("{name}-22k.wav"));
    assert!(Command::new("espeak-ng")
        .args(["-v", "fr", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-e", "mu-law"])
        .arg(dir.join(format!("{name}.wav")))
        .args(["pad", lead_s, pad_s])
        .status()
        .unwrap()
        .success());
}

fn level(payload: &[u8]) -> u32 {
    let codes = &payload[12..];
    decode_ulaw(codes)
        .iter()
        .map(|s| s.unsigned_abs() as u32)
        .sum::<u32>()
        / codes.len().max(1) as u32
}

fn is_generated(payload: &[u8]) -> bool {
    payload[12..].iter().all(|b| *b == 0x20 || *b == 0xA0)
}

/// Runs the call; returns (stop latency ms, generated frames after the
/// interruption ended, LLM requests, sav's log).
fn barge(name: &str, slot: u16, second_transcript: &str) -> (f64, usize, u32, String) {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    utterance(&dir);
    wav(&dir, "speaks", "Ma box ne marche plus.", "0", "4");
    wav(&dir, "interrupts", "Non attendez, attendez.", "0.3", "4");
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            tts_ttfb: Duration::from_millis(100),
            llm_reply: LONG_REPLY.into(),
            stt_transcripts: [
                "Ma box ne marche plus.".to_string(),
                second_transcript.to_string(),
            ]
            .into(),
            ..Default::default()
        },
    );
    let base = fake.base_url();
    let sav = Sav::start(&dir, ports, move |c| {
        c.replace("greeting = [\"greet\", \"welcome\"]", "greeting = [\"greet\"]")
            + &format!("\n[llm]\nbase_url = \"{base}/v1\"\n\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"v\"\n\n[stt]\nbase_url = \"{base}/v1\"\n")
    });
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let output = sipp(
        &dir,
        "uac_barge.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(60),
    );
    let packets = capture.stop();
    let log = sav.log_text();
    assert!(
        output.status.success(),
        "{}\n{log}",
        sipp_report(&dir, &output)
    );
    let ours: Vec<&Datagram> = packets
        .iter()
        .filter(|p| (ports.rtp_min..=ports.rtp_max).contains(&p.src_port) && p.payload.len() == 172)
        .collect();
    let caller: Vec<&Datagram> = packets
        .iter()
        .filter(|p| (ports.rtp_min..=ports.rtp_max).contains(&p.dst_port) && p.payload.len() > 12)
        .collect();
    // The caller's speech runs (three audible packets in a row or more).
    let audible: Vec<bool> = caller.iter().map(|p| level(&p.payload) > 200).collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < audible.len() {
        if audible[i] {
            let start = i;
            while i < audible.len() && audible[i] {
                i += 1;
            }
            if i - start >= 3 {
                match runs.last_mut() {
                    // Gaps under 400 ms are within one utterance.
                    Some(last)
                        if (caller[start].time - caller[last.1 - 1].time)
                            < Duration::from_millis(400) =>
                    {
                        last.1 = i
                    }
                    _ => runs.push((start, i)),
                }
            }
        } else {
            i += 1;
        }
    }
    assert!(runs.len() >= 2, "the caller spoke {} times", runs.len());
    let onset = caller[runs[1].0].time;
    let interruption_end = caller[runs[1].1 - 1].time;
    // sav was speaking when the caller started again...
    let speaking_before = ours
        .iter()
        .filter(|p| p.time < onset && p.time > onset - Duration::from_millis(200))
        .all(|p| is_generated(&p.payload));
    assert!(
        speaking_before,
        "sav was not speaking its reply when the caller barged in:\n{log}"
    );
    // ...and stopped.
    let stop = ours
        .iter()
        .find(|p| p.time > onset && !is_generated(&p.payload))
        .expect("sav stopped")
        .time;
    let latency = (stop - onset).as_secs_f64() * 1000.0;
    let after = ours
        .iter()
        .filter(|p| p.time > interruption_end && is_generated(&p.payload))
        .count();
    (latency, after, fake.counts().llm, log)
}

#[test]
fn talking_over_the_reply_stops_it_and_a_real_interruption_gets_a_new_one() {
    let (latency, after, llm_requests, log) = barge(
        "barge_real",
        37,
        "Non attendez, c'est le téléphone qui ne marche pas.",
    );
    println!("barge-in: sav's audio stopped {latency:.0} ms after the caller's onset");
    write_report(
        "barge-in-report.txt",
        &format!(
            "barge-in: stop {latency:.0} ms after onset (limit {} ms)\n",
            100.0 + MIN_SPEECH_MS
        ),
    );
    assert!(
        latency <= 100.0 + MIN_SPEECH_MS,
        "stopped {latency:.0} ms after the onset"
    );
    assert_eq!(
        llm_requests, 2,
        "a real interruption gets a new reply:\n{log}"
    );
    assert!(after > 0, "no reply after the interruption:\n{log}");
}

#[test]
fn a_backchannel_interruption_resumes_the_reply() {
    let (latency, after, llm_requests, log) = barge("barge_false", 38, "mhm");
    assert!(
        latency <= 100.0 + MIN_SPEECH_MS,
        "stopped {latency:.0} ms after the onset"
    );
    assert_eq!(
        llm_requests, 1,
        "the reply is resumed, not generated again:\n{log}"
    );
    assert!(
        log.contains("resuming the reply after a false interruption"),
        "{log}"
    );
    assert!(
        after > 50,
        "the reply did not go on ({after} frames):\n{log}"
    );
}
