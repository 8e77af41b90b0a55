//! Fake LLM, TTS and STT servers for demos and manual tests, speaking the
//! providers' real wire formats on loopback.
//!
//!     cargo run --example fake_providers -- [port] [llm_ttfb_ms] [tts_ttfb_ms]
//!
//! Then point `[llm] base_url` and `[stt] base_url` at
//! `http://127.0.0.1:<port>/v1` and `[tts] base_url` at
//! `http://127.0.0.1:<port>`.

#[path = "../tests/support/fake_providers.rs"]
mod fake_providers;

use std::time::Duration;

use fake_providers::{FakeBehaviour, FakeProviders};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let port = args.next().flatten().unwrap_or(8089) as u16;
    let llm_ttfb = args.next().flatten().unwrap_or(800);
    let tts_ttfb = args.next().flatten().unwrap_or(300);
    let fake = FakeProviders::start(
        port,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(llm_ttfb),
            tts_ttfb: Duration::from_millis(tts_ttfb),
            ..Default::default()
        },
    );
    eprintln!(
        "fake providers on {} (LLM TTFB {llm_ttfb} ms, TTS TTFB {tts_ttfb} ms); Ctrl-C to stop",
        fake.base_url()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
