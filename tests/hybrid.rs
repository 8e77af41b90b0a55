//! Hybrid speech end to end: a sipp caller says one sentence after the
//! greeting; sav answers with a cached filler at once and streams the
//! generated reply (fake LLM/TTS/STT speaking the real wire formats) behind
//! it. The capture of sav's RTP shows how fast the filler came, how long the
//! line stayed silent, and that the RTP clock never stalled.

mod support;

use std::path::Path;
use std::time::Duration;

use support::fake_providers::{FakeBehaviour, FakeProviders};
use support::*;

/// Bytes of the fake TTS's voice (it alternates these two codes).
const GENERATED: [u8; 2] = [0x20, 0xA0];

/// speech (espeak-ng) followed by `silence_s` of silence, 8 kHz μ-law WAV.
fn speaks(dir: &Path, silence_s: u32) {
    speech_wav(
        dir,
        "speaks",
        "Bonjour, ma box internet ne marche plus depuis ce matin.",
        "0",
        &silence_s.to_string(),
    );
}

fn is_generated(payload: &[u8]) -> bool {
    payload[12..].iter().all(|b| GENERATED.contains(b))
}

struct Turn {
    /// Caller's last audible packet → sav's first audible packet.
    reaction_ms: f64,
    /// Longest run of silent frames from sav's first answer frame to the end
    /// of the generated reply.
    max_silent_run_ms: f64,
    first_generated_ms: f64,
    max_gap_ms: f64,
    fillers_heard: usize,
    generated_frames: usize,
}

/// The timing tests run one at a time: two calls with captures side by side
/// on two cores would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_turn(name: &str, slot: u16, behaviour: FakeBehaviour) -> (Turn, String) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    utterance(&dir);
    speaks(&dir, 5);
    let fake = FakeProviders::start(0, behaviour);
    let base = fake.base_url();
    let sav = Sav::start(&dir, ports, move |c| {
        format!(
            "{}{}",
            free_conversation(&c),
            fake_providers_config(
                &base,
                "model = \"fake\"\nfirst_token_timeout_ms = 6000\n",
                "output_format = \"ulaw_8000\"\n",
                "model = \"whisper\"\n"
            )
        )
        .replacen("[cache]", "[cache]", 1)
    });
    let capture = Capture::start(
        &dir,
        &format!(
            "udp and (portrange {}-{} or portrange {}-{})",
            ports.rtp_min,
            ports.rtp_max,
            ports.sipp_media,
            ports.sipp_media + 3
        ),
    );
    // The greeting lasts about 6.5 s: the caller speaks after it.
    let output = sipp(
        &dir,
        "uac_speaks.xml",
        ports,
        &["-m", "1", "-d", "7000"],
        Duration::from_secs(60),
    );
    let packets = capture.stop();
    assert!(
        output.status.success(),
        "call failed:\n{}\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );

    // The call's token usage is counted for cost (the fake reports 42
    // prompt tokens per request).
    let log = sav.wait_for_log("usage of the call", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("usage of the call") && l.contains("prompt_tokens=42")),
        "no token count:\n{log}"
    );
    let sav_rtp = ports.sav_audio(&packets);
    let caller = ports.caller_audio(&packets);
    let speech_end = speech_end(&caller).expect("the caller spoke");
    let after: Vec<&&Datagram> = sav_rtp.iter().filter(|p| p.time > speech_end).collect();
    let first_audible = after
        .iter()
        .find(|p| level(&p.payload) > 100)
        .expect("sav answered");
    let reaction_ms = (first_audible.time - speech_end).as_secs_f64() * 1000.0;
    let generated: Vec<&&&Datagram> = after.iter().filter(|p| is_generated(&p.payload)).collect();
    assert!(
        !generated.is_empty(),
        "no generated audio reached the caller:\n{}",
        sav.log_text()
    );
    let first_generated_ms = (generated[0].time - speech_end).as_secs_f64() * 1000.0;
    let last_generated = generated.last().unwrap().time;
    // Silent runs from the first answer frame to the end of the reply.
    let max_run = longest_silent_run_ms(
        after
            .iter()
            .filter(|p| p.time >= first_audible.time && p.time <= last_generated)
            .map(|p| **p),
    );
    let max_gap_ms = sav_rtp
        .windows(2)
        .map(|w| (w[1].time - w[0].time).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    // Which fillers were heard, whole, after the caller spoke.
    let heard: Vec<u8> = after
        .iter()
        .flat_map(|p| p.payload[12..].to_vec())
        .collect();
    let fillers_heard = [
        "filler_hum",
        "filler_ok",
        "filler_one_moment",
        "filler_let_me_see",
    ]
    .iter()
    .filter(|key| {
        let clip = cached_ulaw(key);
        heard.windows(clip.len()).any(|w| w == &clip[..])
    })
    .count();
    let turn = Turn {
        reaction_ms,
        max_silent_run_ms: max_run,
        first_generated_ms,
        max_gap_ms,
        fillers_heard,
        generated_frames: generated.len(),
    };
    let report = format!(
        "{name}: end of speech → first bot audio {:.0} ms, → first generated audio {:.0} ms, longest silent run {:.0} ms, fillers {}, generated frames {}, max RTP gap {:.1} ms\n",
        turn.reaction_ms, turn.first_generated_ms, turn.max_silent_run_ms, turn.fillers_heard, turn.generated_frames, turn.max_gap_ms
    );
    print!("{report}");
    (turn, report)
}

#[test]
fn a_filler_answers_at_once_and_the_reply_follows_without_dead_air() {
    let (turn, report) = run_turn(
        "hybrid_fast",
        40,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(800),
            tts_ttfb: Duration::from_millis(300),
            ..Default::default()
        },
    );
    write_report("hybrid-report.txt", &report);
    assert!(turn.reaction_ms <= 500.0 + 40.0, "{report}");
    assert!(turn.max_silent_run_ms <= 300.0, "{report}");
    assert!(turn.max_gap_ms <= 40.0, "{report}");
    assert!(turn.fillers_heard >= 1, "{report}");
}
