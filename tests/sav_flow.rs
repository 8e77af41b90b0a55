//! The guided after-sales calls end to end: sipp callers (by voice with
//! scripted transcripts, or by keys), the real sav binary with its store,
//! fake providers, and a CRM webhook that counts what it receives. What the
//! caller heard is read from a capture (which cached phrases started, in
//! which order; generated audio by its TTS tag); what the team gets is read
//! from the webhook's event (outcome, problem, steps, transcript).

mod support;

use std::time::Duration;

use support::call_harness::caller_turns;
use support::fake_providers::{tts_codes, FakeBehaviour, FakeProviders};
use support::webhook::Webhook;
use support::*;

/// Where each phrase of `keys` starts in sav's audio, in capture order: its
/// first voiced frames found among the packets (every occurrence).
fn phrase_starts(payloads: &[&[u8]], keys: &[&str]) -> Vec<(usize, String)> {
    let mut starts = Vec::new();
    for key in keys {
        let frames = cached_frames(key);
        // The first frame with sound, and the two after it: a signature no
        // other phrase shares.
        let Some(first) = frames
            .iter()
            .position(|f| level(&[&[0u8; 12][..], f].concat()) > 200)
        else {
            continue;
        };
        let signature = &frames[first..(first + 3).min(frames.len())];
        let mut i = 0;
        while i + signature.len() <= payloads.len() {
            if signature
                .iter()
                .enumerate()
                .all(|(k, frame)| payloads[i + k] == frame.as_slice())
            {
                starts.push((i, key.to_string()));
                i += frames.len().max(1);
            } else {
                i += 1;
            }
        }
    }
    starts.sort();
    starts
}

/// The phrases heard, in order (several occurrences of one phrase each count).
fn heard(payloads: &[&[u8]], keys: &[&str]) -> Vec<String> {
    phrase_starts(payloads, keys)
        .into_iter()
        .map(|(_, key)| key)
        .collect()
}

/// Frames of generated speech of `text` (the fake TTS's tag).
fn generated_frames(payloads: &[&[u8]], text: &str) -> Vec<usize> {
    let (low, high) = tts_codes(text);
    payloads
        .iter()
        .enumerate()
        .filter(|(_, p)| p.iter().all(|b| *b == low || *b == high))
        .map(|(i, _)| i)
        .collect()
}

/// Runs the sipp `scenario` against `sav` with a capture of the RTP; the
/// call must end as the scenario expects (sav's BYE). Returns the capture
/// and sav's log.
fn captured_call(
    sav: &Sav,
    scenario: &str,
    args: &[&str],
    timeout: Duration,
) -> (Vec<Datagram>, String) {
    let ports = sav.ports;
    let capture = Capture::start(
        &sav.dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let output = sipp(&sav.dir, scenario, ports, args, timeout);
    let packets = capture.stop();
    let log = sav.log_text();
    assert!(
        output.status.success(),
        "the call did not end with sav's BYE:\n{}\n{log}",
        sipp_report(&sav.dir, &output)
    );
    (packets, log)
}

/// Payloads (RTP header stripped) of sav's audio.
fn sav_payloads<'a>(ports: &Ports, packets: &'a [Datagram]) -> Vec<&'a [u8]> {
    ports
        .sav_audio(packets)
        .into_iter()
        .map(|p| &p.payload[12..])
        .collect()
}

const PHRASES: &[&str] = &[
    "greet",
    "welcome",
    "menu",
    "internet_restart",
    "internet_cables",
    "verify",
    "reprompt",
    "filler_ok",
    "congratulations",
    "goodbye",
    "transfer",
    "callback",
    "problem_unknown",
];

const CONGRATULATION: &str = "Bravo, excellent travail !";

#[test]
fn a_new_customer_fixes_the_box_with_the_second_step_by_voice() {
    let dir = workdir("flow_voice_fix");
    let ports = Ports::slot(60);
    let said = [
        "Bonjour, ma box internet ne marche plus.",
        "C'est fait.",
        "Non, ça ne marche toujours pas.",
        "Voilà, c'est fait.",
        "Oui, ça marche !",
    ];
    // Each answer after the bot's phrase (greet 2.4 s; filler + step 8.4 s;
    // filler + verify 4.8 s; filler + step 6.5 s; …).
    timed_speech(
        &dir,
        "caller",
        &[
            (3.5, said[0]),
            (17.5, said[1]),
            (25.5, said[2]),
            (36.5, said[3]),
            (45.0, said[4]),
        ],
        70.0,
    );
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            llm_reply: CONGRATULATION.into(),
            tts_ttfb: Duration::from_millis(100),
            tts_tag_by_text: true,
            stt_latency: Duration::from_millis(100),
            stt_transcripts: said.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    let webhook = Webhook::start();
    let base = fake.base_url();
    let crm = webhook.config();
    let sav = Sav::start(&dir, ports, move |c| {
        c.replace(
            "greeting = [\"greet\", \"welcome\"]",
            "greeting = [\"greet\"]",
        ) + &fake_providers_config(&base, "model = \"fake\"\n", "", "")
            + &crm
    });
    let (packets, log) = captured_call(
        &sav,
        "uac_flow_voice.xml",
        &["-m", "1"],
        Duration::from_secs(120),
    );
    let payloads = sav_payloads(&ports, &packets);
    let order = heard(&payloads, PHRASES);
    let steps: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with("filler"))
        .collect();
    assert_eq!(
        steps,
        [
            "greet",
            "internet_restart",
            "verify",
            "internet_cables",
            "verify",
            "goodbye"
        ],
        "phrases heard: {order:?}\n{log}"
    );
    // The congratulation: filler_ok at once, the generated line behind it,
    // before the goodbye.
    let starts = phrase_starts(&payloads, PHRASES);
    let filler_ok = starts
        .iter()
        .rev()
        .find(|(_, k)| k == "filler_ok")
        .map(|(i, _)| *i)
        .expect("filler_ok before the congratulation");
    let goodbye = starts.iter().find(|(_, k)| k == "goodbye").unwrap().0;
    let congratulation = generated_frames(&payloads, CONGRATULATION);
    assert!(
        congratulation.len() > 20,
        "the generated congratulation was not heard\n{log}"
    );
    assert!(
        filler_ok < congratulation[0] && *congratulation.last().unwrap() < goodbye,
        "filler_ok at {filler_ok}, congratulation {:?}, goodbye at {goodbye}",
        (congratulation[0], congratulation.last())
    );
    let counts = fake.counts();
    assert_eq!(counts.stt, 5, "one transcription per answer");
    assert_eq!(
        counts.llm, 1,
        "no classification needed: only the congratulation"
    );
    let chat = counts
        .last_chat
        .expect("the congratulation request")
        .to_string();
    assert!(chat.contains("a résolu son problème"), "{chat}");

    let events = webhook.wait_for(1, Duration::from_secs(10));
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["outcome"], "resolved", "{event}");
    assert_eq!(event["problem"], "internet");
    assert_eq!(
        event["steps"],
        serde_json::json!(["internet_restart", "internet_cables"])
    );
    assert_eq!(event["caller"], "+33612345678");
    assert!(event["customer"].is_null());
    let caller: Vec<String> = caller_turns(event).into_iter().map(|(_, t)| t).collect();
    assert_eq!(caller, said, "{event}");
    let generated: Vec<&serde_json::Value> = event["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "generated")
        .collect();
    assert_eq!(generated.len(), 1);
    assert_eq!(generated[0]["text"], CONGRATULATION);
    write_report(
        "flow-voice-report.txt",
        &format!(
            "guided call by voice: phrases heard {order:?}; outcome {}, problem {}, steps {}, {} turns recorded\n",
            event["outcome"],
            event["problem"],
            event["steps"],
            event["transcript"].as_array().map_or(0, Vec::len)
        ),
    );

    // The call's timeline, drawn: five turns of the caller, five
    // transcriptions, the congratulation generated (LLM then TTS).
    let record = event["id"].as_str().unwrap().trim_start_matches("call-");
    let svg_path = std::path::Path::new(REPO).join("target/flow-voice-timeline.svg");
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("--config")
        .arg(dir.join("sav.toml"))
        .args(["report", record, "--out"])
        .arg(&svg_path)
        .output()
        .expect("run sav report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    // An export carries no caller number (the CRM event, above, is where
    // it goes in full).
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("--config")
        .arg(dir.join("sav.toml"))
        .args(["report", record, "--json"])
        .output()
        .expect("run sav report --json");
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(json.contains("\"events\""), "{json}");
    for export in [&svg, &json.to_string()] {
        assert!(
            !export.contains("612345678"),
            "a caller number in an export"
        );
    }
    assert!(
        !log.contains("612345678"),
        "the caller's number in full in the log"
    );
    assert_eq!(svg.matches("class=\"lane\"").count(), 5);
    assert_eq!(svg.matches("class=\"speech\"").count(), said.len());
    assert_eq!(
        svg.matches("class=\"request\" data-provider=\"stt\"")
            .count(),
        said.len()
    );
    assert!(svg.contains("class=\"segment\" data-source=\"generated\""));
    assert!(svg.contains("class=\"segment\" data-source=\"filler\""));
    assert!(svg.contains("class=\"request\" data-provider=\"llm\""));
}

/// The caller's side of `uac_flow_keys.xml`: silence, and the presses 1, 2,
/// 1, 1 (each its own event timestamp).
fn caller_keys(dir: &std::path::Path) {
    silence_wav(dir, "silence", 30.0);
    for (n, digit) in ['1', '2', '1', '1'].into_iter().enumerate() {
        dtmf_press_pcap(
            dir,
            &format!("key{}", n + 1),
            digit,
            16_000 + 40_000 * n as u32,
        );
    }
}

#[test]
fn a_kill_mid_call_leaves_an_interrupted_record_delivered_once_after_restart() {
    let dir = workdir("flow_kill");
    let ports = Ports::slot(65);
    caller_keys(&dir);
    let webhook = Webhook::start();
    let crm = webhook.config();
    let edit = move |c: String| c + &crm;
    let sav = Sav::start(&dir, ports, edit.clone());
    let caller = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            sipp(
                &dir,
                "uac_flow_keys.xml",
                ports,
                &["-m", "1", "-d", "3000"],
                Duration::from_secs(15),
            )
        })
    };
    // Two keys in: the second step is being said.
    sav.wait_for_log("step=internet_cables", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    drop(sav); // SIGKILL: no goodbye, no BYE, no end written.
    let _ = caller.join();
    assert!(
        webhook.events().is_empty(),
        "nothing delivered before the restart"
    );

    let sav = Sav::start(&dir, ports, edit.clone());
    let events = webhook.wait_for(1, Duration::from_secs(15));
    let log = sav.log_text();
    assert_eq!(events.len(), 1, "{events:?}\n{log}");
    let event = &events[0];
    assert_eq!(event["outcome"], "interrupted", "{event}");
    assert_eq!(event["problem"], "internet");
    assert_eq!(
        event["steps"],
        serde_json::json!(["internet_restart", "internet_cables"])
    );
    assert_eq!(
        caller_turns(event),
        ["1", "2"].map(|k| ("dtmf".to_string(), k.to_string()))
    );
    let bot: Vec<&str> = event["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["speaker"] == "bot")
        .filter_map(|t| t["text"].as_str())
        .collect();
    assert!(
        bot.last()
            .is_some_and(|t| t.starts_with("Vérifiez maintenant que le câble")),
        "the turns up to the kill: {bot:?}"
    );
    // Delivered once: neither time nor another restart sends it again.
    std::thread::sleep(Duration::from_secs(2));
    drop(sav);
    let _sav = Sav::start(&dir, ports, edit);
    std::thread::sleep(Duration::from_secs(2));
    let events = webhook.events();
    assert_eq!(events.len(), 1, "{events:?}");
}
