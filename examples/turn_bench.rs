//! Turn-taking benchmark (not a test): a caller (sav's own `sav call` code)
//! speaks to a `sav serve` backed by the fake providers, and the recording of
//! what it hears gives, per turn: end of speech → first bot audio, → first
//! generated audio, and the silent runs in between.
//!
//!     cargo build --release && cargo run --release --example turn_bench -- [turns] [llm_ttfb_ms…]
//!
//! Needs espeak-ng and sox; uses loopback ports 26800-26999.

#[path = "../tests/support/fake_providers.rs"]
mod fake_providers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_providers::{FakeBehaviour, FakeProviders};
use sav::call::outbound::{place_call, CallRequest};
use sav::config::Config;
use sav::media::g711;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SIP_PORT: u16 = 26_800;

fn main() {
    let mut args = std::env::args().skip(1);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut ttfbs: Vec<u64> = args.filter_map(|a| a.parse().ok()).collect();
    if ttfbs.is_empty() {
        ttfbs = vec![800, 3000];
    }
    let dir = std::env::temp_dir().join(format!("sav-turn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = std::env::var("SAV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(REPO).join("target/release/sav"));
    assert!(
        bin.exists(),
        "{} missing: cargo build --release first (or set SAV_BIN)",
        bin.display()
    );
    // What the caller says: 4 s for the greeting, a sentence, then silence.
    let (speech_start, speech_end) = make_speech(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for ttfb in ttfbs {
        let fake = FakeProviders::start(
            0,
            FakeBehaviour {
                llm_ttfb: Duration::from_millis(ttfb),
                tts_ttfb: Duration::from_millis(300),
                ..Default::default()
            },
        );
        let config = dir.join(format!("sav-{ttfb}.toml"));
        std::fs::write(&config, config_text(&fake.base_url())).unwrap();
        let mut sav = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sav");
        std::thread::sleep(Duration::from_millis(800));
        println!("LLM time to first token {ttfb} ms, TTS 300 ms:");
        for turn in 1..=turns {
            let record = dir.join(format!("heard-{ttfb}-{turn}.wav"));
            let caller = Config::load(None).unwrap();
            let summary = runtime.block_on(place_call(
                &caller.sip,
                CallRequest {
                    target: format!("sip:sav@127.0.0.1:{SIP_PORT}"),
                    play: Some(dir.join("caller.wav")),
                    record: Some(record.clone()),
                    duration: Some(Duration::from_secs(16)),
                    turns: Vec::new(),
                    codecs: Default::default(),
                },
            ));
            match summary {
                Ok(_) => report(turn, &record, speech_start, speech_end),
                Err(e) => println!("  turn {turn}: call failed: {e}"),
            }
        }
        let _ = sav.kill();
        let _ = sav.wait();
    }
}

fn config_text(base: &str) -> String {
    let text = std::fs::read_to_string(Path::new(REPO).join("sav.toml")).unwrap();
    // Without the knowledge base: every turn is a generated reply.
    let text = match text.find("\n[[problems]]") {
        Some(at) => text[..at + 1].to_string(),
        None => text,
    };
    text.replace("listen = \"127.0.0.1:5060\"", &format!("listen = \"127.0.0.1:{SIP_PORT}\""))
        .replace("rtp_port_min = 20000", "rtp_port_min = 26900")
        .replace("rtp_port_max = 20999", "rtp_port_max = 26999")
        .replace("dir = \"cache\"", &format!("dir = \"{REPO}/cache\""))
        .replace("greeting = [\"greet\", \"welcome\"]", "greeting = [\"greet\"]")
        + &format!("\n[llm]\nbase_url = \"{base}/v1\"\n\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"v\"\n\n[stt]\nbase_url = \"{base}/v1\"\n")
}

/// The caller's WAV; returns where its speech starts and ends (seconds).
fn make_speech(dir: &Path) -> (f64, f64) {
    let raw = dir.join("speech-22k.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", "fr", "-w"])
        .arg(&raw)
        .arg("Bonjour, ma box internet ne marche plus depuis ce matin.")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "espeak-ng is needed");
    let mut speech = hound::WavReader::open(&raw).unwrap();
    let rate = f64::from(speech.spec().sample_rate);
    let samples: Vec<i16> = speech.samples::<i16>().map(|s| s.unwrap()).collect();
    // Where the voice really is (espeak-ng pads its output with silence).
    let loud = |s: &i16| s.unsigned_abs() > 500;
    let first = samples.iter().position(loud).unwrap_or(0) as f64 / rate;
    let last = samples.iter().rposition(loud).unwrap_or(samples.len()) as f64 / rate;
    let lead = 4.0;
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(dir.join("caller.wav"))
        .args(["pad", &lead.to_string(), "10"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "sox is needed");
    (lead + first, lead + last)
}

/// Per turn: end of speech → first bot audio, → first generated audio, and
/// the silent runs in between, from what the caller recorded.
fn report(turn: usize, record: &Path, _speech_start: f64, speech_end: f64) {
    let samples: Vec<i16> = hound::WavReader::open(record)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let frames: Vec<&[i16]> = samples.chunks_exact(160).collect();
    let level = |f: &[i16]| f.iter().map(|s| s.unsigned_abs() as u32).sum::<u32>() / 160;
    // The fake TTS's voice: only two μ-law codes.
    let generated = |f: &[i16]| f.iter().all(|&s| matches!(g711::encode(s), 0x20 | 0xA0));
    let end_frame = (speech_end * 50.0) as usize;
    let first_audio = frames
        .iter()
        .enumerate()
        .skip(end_frame)
        .find(|(_, f)| level(f) > 100)
        .map(|(i, _)| i);
    let first_generated = frames
        .iter()
        .enumerate()
        .skip(end_frame)
        .find(|(_, f)| generated(f))
        .map(|(i, _)| i);
    let (Some(audio), Some(gen)) = (first_audio, first_generated) else {
        println!("  turn {turn}: no answer heard");
        return;
    };
    let mut runs = Vec::new();
    let mut run = 0;
    for f in &frames[audio..=gen] {
        if level(f) <= 100 {
            run += 1;
        } else if run > 0 {
            runs.push(run * 20);
            run = 0;
        }
    }
    let ms = |frame: usize| (frame as f64 / 50.0 - speech_end) * 1000.0;
    println!(
        "  turn {turn}: end of speech → first bot audio {:.0} ms, → first generated audio {:.0} ms, silent runs {:?} ms (max {} ms)",
        ms(audio),
        ms(gen),
        runs,
        runs.iter().max().unwrap_or(&0)
    );
}
