//! Barge-in on the wire: the caller's real speech (espeak-ng through sipp)
//! over a long generated reply. sav's audio stops within 100 ms of the
//! caller's onset (+ the VAD's minimum speech) and a real interruption gets
//! a new reply. (The decisions themselves, and the backchannel that resumes
//! the reply, are whole calls in process in `tests/calls.rs`.)

mod support;

use std::time::Duration;

use support::fake_providers::{tts_codes, FakeBehaviour, FakeProviders};
use support::*;

const LONG_REPLY: &str = "Très bien, je vais vous aider à résoudre ce problème de connexion. Commencez par débrancher la box pendant dix secondes. Ensuite rebranchez-la et attendez que tous les voyants soient bien stabilisés. Dites-moi quand c'est fait.";
const SECOND_REPLY: &str = "Ah, c'est le téléphone alors. Vérifiez que le combiné est bien branché sur la prise grise de la box.";
const MIN_SPEECH_MS: f64 = 120.0;

/// What a frame of sav's audio is: generated speech of one TTS text (by its
/// index in the fake's `tts_texts`), or anything else (cached phrase, silence).
fn source(payload: &[u8], tags: &[(u8, u8)]) -> Option<usize> {
    let codes = &payload[12..];
    tags.iter()
        .position(|&(low, high)| codes.iter().all(|b| *b == low || *b == high))
}

/// What one barge-in call showed.
struct Barge {
    /// ms from the caller's onset to sav's first non-generated frame.
    latency: f64,
    /// Generated frames heard between onset + the allowed latency and the end
    /// of the caller's interruption (must be none).
    during: usize,
    /// The TTS text that was playing when the caller barged in.
    interrupted: String,
    /// TTS texts of the generated frames heard after the interruption, in
    /// order of first appearance, with their frame counts.
    after: Vec<(String, usize)>,
    llm_requests: u32,
    log: String,
}

fn barge(name: &str, slot: u16, second_transcript: &str) -> Barge {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    utterance(&dir);
    speech_wav(&dir, "speaks", "Ma box ne marche plus.", "0", "4");
    speech_wav(&dir, "interrupts", "Non attendez, attendez.", "0.3", "4");
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            tts_ttfb: Duration::from_millis(100),
            llm_replies: [LONG_REPLY.to_string(), SECOND_REPLY.to_string()].into(),
            llm_reply: SECOND_REPLY.into(),
            tts_tag_by_text: true,
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
        free_conversation(&c).replace(
            "greeting = [\"greet\", \"welcome\"]",
            "greeting = [\"greet\"]",
        ) + &fake_providers_config(&base, "", "", "")
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
    let counts = fake.counts();
    let texts: Vec<String> = counts.tts_texts.clone();
    let tags: Vec<(u8, u8)> = texts.iter().map(|t| tts_codes(t)).collect();
    for (i, a) in texts.iter().enumerate() {
        for (j, b) in texts.iter().enumerate().skip(i + 1) {
            assert!(
                a.trim() == b.trim() || tags[i] != tags[j],
                "the fake speaks {a:?} and {b:?} in the same codes: change a text"
            );
        }
    }
    let ours = ports.sav_audio(&packets);
    let caller = ports.caller_audio(&packets);
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
    // sav was speaking its reply when the caller started again...
    let before: Vec<Option<usize>> = ours
        .iter()
        .filter(|p| p.time < onset && p.time > onset - Duration::from_millis(200))
        .map(|p| source(&p.payload, &tags))
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(Option::is_some),
        "sav was not speaking its reply when the caller barged in:\n{log}"
    );
    let interrupted = texts[before.last().copied().flatten().unwrap_or(0)].clone();
    // ...and stopped...
    let stop = ours
        .iter()
        .find(|p| p.time > onset && source(&p.payload, &tags).is_none())
        .expect("sav stopped")
        .time;
    let latency = (stop - onset).as_secs_f64() * 1000.0;
    // ...and stayed quiet while the caller talked.
    let allowed = onset + Duration::from_millis((100.0 + MIN_SPEECH_MS) as u64);
    let during = ours
        .iter()
        .filter(|p| p.time > allowed && p.time < interruption_end)
        .filter(|p| source(&p.payload, &tags).is_some())
        .count();
    let mut after: Vec<(String, usize)> = Vec::new();
    for p in ours.iter().filter(|p| p.time > interruption_end) {
        if let Some(k) = source(&p.payload, &tags) {
            let text = texts[k].trim().to_string();
            match after.iter_mut().find(|(t, _)| *t == text) {
                Some((_, n)) => *n += 1,
                None => after.push((text, 1)),
            }
        }
    }
    Barge {
        latency,
        during,
        interrupted: interrupted.trim().to_string(),
        after,
        llm_requests: counts.llm,
        log,
    }
}

#[test]
fn talking_over_the_reply_stops_it_and_a_real_interruption_gets_a_new_one() {
    let b = barge(
        "barge_real",
        37,
        "Non attendez, c'est le téléphone qui ne marche pas.",
    );
    let log = &b.log;
    println!(
        "barge-in: sav's audio stopped {:.0} ms after the caller's onset",
        b.latency
    );
    write_report(
        "barge-in-report.txt",
        &format!(
            "barge-in: stop {:.0} ms after onset (limit {} ms)\n",
            b.latency,
            100.0 + MIN_SPEECH_MS
        ),
    );
    assert!(
        b.latency <= 100.0 + MIN_SPEECH_MS,
        "stopped {:.0} ms after the onset",
        b.latency
    );
    assert_eq!(b.during, 0, "the reply played over the caller:\n{log}");
    assert_eq!(
        b.llm_requests, 2,
        "a real interruption gets a new reply:\n{log}"
    );
    assert!(
        LONG_REPLY.contains(&b.interrupted),
        "{:?} is not of the first reply",
        b.interrupted
    );
    let new: usize = b
        .after
        .iter()
        .filter(|(t, _)| SECOND_REPLY.contains(t.as_str()))
        .map(|(_, n)| n)
        .sum();
    let old: Vec<&(String, usize)> = b
        .after
        .iter()
        .filter(|(t, _)| !SECOND_REPLY.contains(t.as_str()))
        .collect();
    assert!(
        new > 50,
        "the new reply was not heard ({new} frames):\n{log}"
    );
    assert!(old.is_empty(), "the old reply came back: {old:?}\n{log}");
}
