//! Provider faults during a turn: each one ends in the cached fallback
//! phrase, and the call goes on (the caller hangs up normally at the end).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::fake_providers::{FakeBehaviour, FakeProviders, Fault};
use support::*;

fn speaks(dir: &Path) {
    let raw = dir.join("speaks-22k.wav");
    assert!(Command::new("espeak-ng")
        .args(["-v", "fr", "-w"])
        .arg(&raw)
        .arg("Ma box ne marche plus.")
        .status()
        .unwrap()
        .success());
    assert!(Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-e", "mu-law"])
        .arg(dir.join("speaks.wav"))
        .args(["pad", "0", "4"])
        .status()
        .unwrap()
        .success());
}

fn fault_turn(name: &str, slot: u16, change: impl FnOnce(&mut FakeBehaviour)) {
    let dir = workdir(name);
    let ports = Ports::slot(slot);
    utterance(&dir);
    speaks(&dir);
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
        c.replace("greeting = [\"greet\", \"welcome\"]", "greeting = [\"greet\"]")
            + &format!(
                "\n[llm]\nbase_url = \"{base}/v1\"\nmodel = \"fake\"\nfirst_token_timeout_ms = 2000\nstall_timeout_ms = 1500\n\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"voice\"\nfirst_byte_timeout_ms = 2000\nstall_timeout_ms = 1500\n\n[stt]\nbase_url = \"{base}/v1\"\ntimeout_ms = 2000\n"
            )
    });
    let output = sipp(
        &dir,
        "uac_speaks.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(60),
    );
    let log = sav.log_text();
    assert!(
        output.status.success(),
        "the call did not go on:\n{}\n{log}",
        sipp_report(&dir, &output)
    );
    assert!(
        log.contains("label: \"sorry\""),
        "no fallback phrase:\n{log}"
    );
    assert!(
        log.contains("caller hung up"),
        "the caller, not a failure, ended the call:\n{log}"
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
