//! Fake LLM, TTS and STT servers for demos and manual tests, speaking the
//! providers' real wire formats on loopback.
//!
//!     cargo run --example fake_providers -- [port] [llm_ttfb_ms] [tts_ttfb_ms]
//!         [--transcripts FILE]
//!
//! The STT "hears" the lines of FILE in turn (the last one repeats), e.g.
//! `examples/caller/transcripts.txt`, the words of the caller's WAVs there.
//!
//! Then point `[llm] base_url` and `[stt] base_url` at
//! `http://127.0.0.1:<port>/v1` and `[tts] base_url` at
//! `http://127.0.0.1:<port>`.
//!
//! Faults are switched on and off by lines on stdin (`scripts/chaos.py`):
//! `llm 500`, `llm stall`, `llm ok`, `tts 500`, `tts stall`, `tts ok`,
//! `stt 500`, `stt ok`.

#[path = "../tests/support/fake_providers.rs"]
mod fake_providers;

use std::time::Duration;

use fake_providers::{FakeBehaviour, FakeProviders, Fault};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut behaviour = FakeBehaviour::default();
    if let Some(at) = args.iter().position(|a| a == "--transcripts") {
        let Some(path) = args.get(at + 1).cloned() else {
            eprintln!("--transcripts needs a file");
            std::process::exit(2);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("cannot read {path}: {error}");
                std::process::exit(1);
            }
        };
        behaviour.stt_transcripts = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        args.drain(at..at + 2);
    }
    let mut numbers = args.iter().map(|a| a.parse::<u64>().ok());
    let port = numbers.next().flatten().unwrap_or(8089) as u16;
    let llm_ttfb = numbers.next().flatten().unwrap_or(800);
    let tts_ttfb = numbers.next().flatten().unwrap_or(300);
    behaviour.llm_ttfb = Duration::from_millis(llm_ttfb);
    behaviour.tts_ttfb = Duration::from_millis(tts_ttfb);
    let fake = FakeProviders::start(port, behaviour);
    eprintln!(
        "fake providers on {} (LLM TTFB {llm_ttfb} ms, TTS TTFB {tts_ttfb} ms); Ctrl-C to stop",
        fake.base_url()
    );
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().read_line(&mut line) {
            // No stdin (or it closed): serve on as set.
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_secs(3600)),
            Ok(_) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let fault = match words.get(1).copied() {
                    Some("ok") => None,
                    Some("stall") => Some(Fault::StallAfter(2)),
                    Some(code) => code.parse().ok().map(Fault::Status),
                    None => continue,
                };
                match words.first().copied() {
                    Some("llm") => fake.set(|b| b.llm_fault = fault),
                    Some("tts") => fake.set(|b| b.tts_fault = fault),
                    Some("stt") => fake.set(|b| b.stt_fault = fault),
                    _ => eprintln!("unknown command: {}", line.trim()),
                }
                eprintln!("fault now: {}", line.trim());
            }
        }
    }
}
