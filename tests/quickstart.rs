//! The README's quick start, as a newcomer runs it: a whole guided call by
//! keys (`sav call --dtmf 1,1,1`, and sipp pressing RFC 4733 keys from the
//! shipped captures) and by voice (`sav call --say` with the shipped WAVs,
//! sav on `examples/caller/voice.toml` and the fake providers hearing
//! `examples/caller/transcripts.txt`). Each ends resolved.
//!
//! The shipped files are checked against what makes them: the key captures
//! against `dtmf_press_pcap`, `voice.toml` against the repository's
//! `sav.toml` with the fake providers added (`SAV_WRITE_QUICKSTART=1`
//! writes them again).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::fake_providers::quickstart_voice;
use support::*;

fn caller_dir() -> PathBuf {
    Path::new(REPO).join("examples/caller")
}

/// Where the quick start's fake providers listen.
const FAKE: &str = "http://127.0.0.1:8089";

/// `examples/caller/voice.toml`: the repository's sav.toml, its cache and
/// store found from examples/caller, and the three providers on the fake.
fn voice_toml() -> String {
    let base = std::fs::read_to_string(Path::new(REPO).join("sav.toml")).unwrap();
    let header = "# The quick start's voice call: the repository's sav.toml (written from it by\n\
                  # tests/quickstart.rs with SAV_WRITE_QUICKSTART=1), its cache and store found\n\
                  # from here, and the speech providers on the fake ones\n\
                  # (`cargo run --example fake_providers -- --transcripts\n\
                  # examples/caller/transcripts.txt`, port 8089).\n\n";
    format!(
        "{header}{}\n# The fake providers (no key needed).\n[llm]\nbase_url = \"{FAKE}/v1\"\nmodel = \"fake\"\n\n[tts]\nbase_url = \"{FAKE}\"\nvoice_id = \"voice\"\noutput_format = \"ulaw_8000\"\n\n[stt]\nbase_url = \"{FAKE}/v1\"\nmodel = \"whisper\"\n",
        base.replace("dir = \"cache\"", "dir = \"../../cache\"")
            .replace("url = \"sqlite://sav.db\"", "url = \"sqlite://voice.db\"")
            .trim_end()
    )
}

/// The shipped key presses: 1 (internet), 2 (still broken: the next
/// step), 1 (done), 1 (it works), each its own event timestamp.
const KEYS: [char; 4] = ['1', '2', '1', '1'];

#[test]
fn the_shipped_caller_files_are_what_makes_them() {
    let dir = workdir("quickstart_files");
    let write = std::env::var_os("SAV_WRITE_QUICKSTART").is_some();
    for (n, digit) in KEYS.into_iter().enumerate() {
        let name = format!("key{}", n + 1);
        dtmf_press_pcap(&dir, &name, digit, 16_000 + 40_000 * n as u32);
        let made = std::fs::read(dir.join(format!("{name}.pcap"))).unwrap();
        let shipped = caller_dir().join(format!("{name}.pcap"));
        if write {
            std::fs::write(&shipped, &made).unwrap();
        }
        assert_eq!(
            std::fs::read(&shipped).ok(),
            Some(made),
            "{} differs (SAV_WRITE_QUICKSTART=1 writes it)",
            shipped.display()
        );
    }
    let voice = caller_dir().join("voice.toml");
    if write {
        std::fs::write(&voice, voice_toml()).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&voice).ok(),
        Some(voice_toml()),
        "{} is not sav.toml with the fake providers (SAV_WRITE_QUICKSTART=1 writes it)",
        voice.display()
    );
    // It is a configuration sav takes, read from elsewhere.
    let check = Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("--config")
        .arg(&voice)
        .arg("check-config")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The words the fake STT hears, one per shipped WAV, in order.
    let lines: Vec<String> = std::fs::read_to_string(caller_dir().join("transcripts.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3);
    for name in ["problem", "done", "works"] {
        let wav = hound::WavReader::open(caller_dir().join(format!("{name}.wav"))).unwrap();
        assert_eq!(wav.spec().bits_per_sample, 16);
        assert!(wav.duration() > 4_000, "{name}.wav holds speech");
    }
}

/// `sav call <sav> args…` from `dir`, bounded.
fn sav_call(dir: &Path, ports: Ports, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", "150"])
        .arg(env!("CARGO_BIN_EXE_sav"))
        .arg("call")
        .arg(format!("sip:sav@127.0.0.1:{}", ports.sip))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sav call")
}

fn assert_resolved(sav: &Sav, output: &Output) -> String {
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "sav call failed:\n{printed}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        sav.log_text()
    );
    assert!(
        printed.contains("ended_by          remote BYE"),
        "{printed}"
    );
    let log = sav.wait_for_log("call outcome", Duration::from_secs(10));
    assert!(
        log.lines()
            .any(|l| l.contains("call outcome") && l.contains("outcome=\"resolved\"")),
        "not resolved:\n{printed}\n{log}"
    );
    printed
}

#[test]
fn by_keys_sav_call_presses_1_1_1_to_a_resolved_call() {
    let dir = workdir("quickstart_keys");
    let ports = Ports::slot(86);
    let sav = Sav::start(&dir, ports, |c| c);
    let output = sav_call(&dir, ports, &["--dtmf", "1,1,1"]);
    let printed = assert_resolved(&sav, &output);
    let turns = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("turns"))
        .unwrap_or_default();
    assert_eq!(turns.matches("key 1 at").count(), 3, "{printed}");
    let log = sav.log_text();
    assert_eq!(log.matches("DTMF digit=1").count(), 3, "{log}");
    write_report(
        "quickstart-keys.txt",
        &format!("sav call --dtmf 1,1,1:\n{printed}"),
    );
}

#[test]
fn by_keys_sipp_plays_the_shipped_presses_to_a_resolved_call() {
    let dir = workdir("quickstart_sipp_keys");
    let ports = Ports::slot(87);
    copy_caller_files(&dir);
    let sav = Sav::start(&dir, ports, |c| c);
    let output = sipp(
        &dir,
        "uac_flow_keys.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(90),
    );
    assert!(
        output.status.success(),
        "{}\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );
    let log = sav.wait_for_log("call outcome", Duration::from_secs(10));
    assert!(log.contains("outcome=\"resolved\""), "{log}");
}

#[test]
fn by_voice_sav_call_says_the_shipped_wavs_to_a_resolved_call() {
    let dir = workdir("quickstart_voice");
    let ports = Ports::slot(88);
    // The shipped providers' sections on this test's fake.
    let (fake, providers) = quickstart_voice();
    let sav = Sav::start(&dir, ports, move |c| c + &providers);
    let wav = |name: &str| caller_dir().join(format!("{name}.wav"));
    let (problem, done, works) = (wav("problem"), wav("done"), wav("works"));
    let output = sav_call(
        &dir,
        ports,
        &[
            "--say",
            problem.to_str().unwrap(),
            "--say",
            done.to_str().unwrap(),
            "--say",
            works.to_str().unwrap(),
        ],
    );
    let printed = assert_resolved(&sav, &output);
    let log = sav.log_text();
    assert_eq!(fake.counts().stt, 3, "one transcription a turn\n{log}");
    assert!(printed.contains("said "), "{printed}");
    write_report(
        "quickstart-voice.txt",
        &format!("sav call --say problem, done, works:\n{printed}"),
    );
}
