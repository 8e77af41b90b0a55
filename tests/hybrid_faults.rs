//! Provider faults during a turn: each one ends in the cached fallback
//! phrase, and the call goes on (the caller hangs up normally at the end).

mod support;

use std::time::Duration;

use support::fake_providers::{FakeBehaviour, FakeProviders, Fault};
use support::*;

/// The longest silence the caller may hear between the end of their speech
/// and the fallback phrase (DESIGN: no dead air over 700 ms).
const MAX_SILENT_RUN_MS: f64 = 700.0;

fn fault_turn(name: &str, slot: u16, change: impl FnOnce(&mut FakeBehaviour)) {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    utterance(&dir);
    speech_wav(&dir, "speaks", "Ma box ne marche plus.", "0", "4");
    let mut behaviour = FakeBehaviour {
        llm_ttfb: Duration::from_millis(300),
        tts_ttfb: Duration::from_millis(100),
        ..Default::default()
    };
    change(&mut behaviour);
    let fake = FakeProviders::start(0, behaviour);
    let base = fake.base_url();
    let sav = Sav::start(&dir, ports, move |c| {
        // A short greeting, so the caller speaks sooner.
        free_conversation(&c).replace(
            "greeting = [\"greet\", \"welcome\"]",
            "greeting = [\"greet\"]",
        ) + &fake_providers_config(
            &base,
            "model = \"fake\"\nfirst_token_timeout_ms = 2000\nstall_timeout_ms = 1500\n",
            "first_byte_timeout_ms = 2000\nstall_timeout_ms = 1500\n",
            "timeout_ms = 2000\n",
        )
    });
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let output = sipp(
        &dir,
        "uac_speaks.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(60),
    );
    let packets = capture.stop();
    let log = sav.log_text();
    assert!(
        output.status.success(),
        "the call did not go on:\n{}\n{log}",
        sipp_report(&dir, &output)
    );
    assert!(
        log.contains("caller hung up"),
        "the caller, not a failure, ended the call:\n{log}"
    );
    let ours = ports.sav_audio(&packets);
    let speech_end = speech_end(&ports.caller_audio(&packets)).expect("the caller spoke");
    // The caller hears the whole fallback phrase, after their speech.
    let sorry = cached_frames("sorry");
    let after: Vec<&&Datagram> = ours.iter().filter(|p| p.time > speech_end).collect();
    let start = after
        .windows(sorry.len())
        .position(|w| {
            w.iter()
                .zip(&sorry)
                .all(|(p, f)| p.payload[12..].starts_with(f))
        })
        .unwrap_or_else(|| panic!("the caller did not hear the fallback phrase:\n{log}"));
    // ...with no dead air before it.
    let longest = longest_silent_run_ms(after[..start].iter().map(|p| **p));
    let waited = (after[start].time - speech_end).as_secs_f64() * 1000.0;
    println!("{name}: fallback after {waited:.0} ms, longest silent run before it {longest:.0} ms");
    assert!(
        longest <= MAX_SILENT_RUN_MS,
        "{longest:.0} ms of silence before the fallback:\n{log}"
    );
}

#[test]
fn llm_500_gets_the_fallback() {
    fault_turn("fault_llm_500", 42, |b| {
        b.llm_fault = Some(Fault::Status(500))
    });
}

#[test]
fn llm_429_gets_the_fallback() {
    fault_turn("fault_llm_429", 43, |b| {
        b.llm_fault = Some(Fault::Status(429))
    });
}

#[test]
fn llm_stall_gets_the_fallback() {
    fault_turn("fault_llm_stall", 44, |b| {
        b.llm_fault = Some(Fault::StallAfter(2))
    });
}

#[test]
fn llm_disconnect_mid_stream_gets_the_fallback() {
    fault_turn("fault_llm_disconnect", 45, |b| {
        b.llm_fault = Some(Fault::DisconnectAfter(2))
    });
}

#[test]
fn malformed_sse_gets_the_fallback() {
    fault_turn("fault_llm_garbage", 46, |b| {
        b.llm_fault = Some(Fault::Garbage)
    });
}

#[test]
fn tts_garbage_gets_the_fallback() {
    fault_turn("fault_tts_garbage", 47, |b| {
        b.tts_fault = Some(Fault::Garbage)
    });
}

#[test]
fn stt_failure_gets_the_fallback() {
    fault_turn("fault_stt_500", 48, |b| {
        b.stt_fault = Some(Fault::Status(500))
    });
}

#[test]
fn tts_500_gets_the_fallback() {
    fault_turn("fault_tts_500", 19, |b| {
        b.tts_fault = Some(Fault::Status(500))
    });
}

#[test]
fn tts_stall_gets_the_fallback() {
    fault_turn("fault_tts_stall", 39, |b| {
        b.tts_fault = Some(Fault::StallAfter(3))
    });
}

#[test]
fn tts_disconnect_mid_stream_gets_the_fallback() {
    fault_turn("fault_tts_disconnect", 49, |b| {
        b.tts_fault = Some(Fault::DisconnectAfter(3))
    });
}
