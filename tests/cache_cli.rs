//! `sav cache build` / `sav cache check` / `sav check-config` as a user runs
//! them: espeak-ng synthesis of what is missing or changed, and nothing else.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn sav(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sav"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sav")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn config(welcome: &str) -> String {
    let base = std::fs::read_to_string(Path::new(REPO).join("sav.toml")).unwrap();
    let head = &base[..base.find("[cache.phrases]").expect("phrase table")];
    // Only the three phrases below: the keys-only greeting says those too.
    let head = head
        .replacen(
            "greeting_dtmf = [\"greet\", \"menu\"]",
            "greeting_dtmf = [\"greet\", \"welcome\"]",
            1,
        )
        // No reprompt: its phrases are not among the three.
        .replacen(
            "enabled = true\nreprompt_after_s",
            "enabled = false\nreprompt_after_s",
            1,
        );
    format!(
        "{head}[cache.phrases]\ngreet = \"Bonjour.\"\nwelcome = \"{welcome}\"\ngoodbye = \"Au revoir.\"\n"
    )
}

#[test]
fn build_synthesises_only_missing_or_changed_phrases_and_check_tells() {
    require_tool("espeak-ng");
    let dir = workdir("cache_cli");
    let config_path = dir.join("sav.toml");
    std::fs::write(&config_path, config("Je vous écoute.")).unwrap();

    // No cache directory yet: the cause, once (not "no audio" per phrase).
    let check = sav(&config_path, &["cache", "check"]);
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    let cache_dir = dir.join("cache");
    assert!(
        text(&check).contains(&format!(
            "the phrase cache directory {} does not exist",
            cache_dir.display()
        )) && !text(&check).contains("no audio"),
        "{}",
        text(&check)
    );
    std::fs::create_dir_all(&cache_dir).unwrap();
    let check = sav(&config_path, &["cache", "check"]);
    // 3: it ran and found phrases to build (not 1, an error; not 2, usage).
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    assert!(text(&check).contains("greet: no audio"), "{}", text(&check));

    let build = sav(&config_path, &["cache", "build"]);
    assert!(build.status.success(), "{}", text(&build));
    for key in ["greet", "welcome", "goodbye"] {
        assert!(
            text(&build).contains(&format!("built     {key}")),
            "{}",
            text(&build)
        );
        let phrase = sav::cache::read_phrase(&dir.join("cache"), key)
            .unwrap()
            .expect("a readable phrase");
        // A short French phrase: between 0.3 s and 5 s of 16 kHz audio.
        assert_eq!(phrase.rate, 16_000, "{key}: wideband");
        assert!(
            (0.3..5.0).contains(&phrase.seconds()),
            "{key}: {:.2} s",
            phrase.seconds()
        );
        assert!(
            phrase.samples.iter().any(|s| s.unsigned_abs() > 1000),
            "{key} is not silence"
        );
    }
    let greet_before = std::fs::read(dir.join("cache/greet.wav")).unwrap();
    assert!(sav(&config_path, &["cache", "check"]).status.success());
    assert!(sav(&config_path, &["check-config"]).status.success());

    // Change one phrase: check fails on it alone, build redoes it alone.
    std::fs::write(&config_path, config("Décrivez-moi votre problème.")).unwrap();
    let check = sav(&config_path, &["cache", "check"]);
    assert!(!check.status.success());
    assert!(
        text(&check).contains("welcome: stale audio"),
        "{}",
        text(&check)
    );
    assert!(!text(&check).contains("greet:"), "{}", text(&check));
    let build = sav(&config_path, &["cache", "build"]);
    let out = text(&build);
    assert!(out.contains("built     welcome"), "{out}");
    assert!(
        out.contains("unchanged greet") && out.contains("unchanged goodbye"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(dir.join("cache/greet.wav")).unwrap(),
        greet_before
    );
    assert!(sav(&config_path, &["cache", "check"]).status.success());

    // Audio replaced behind the manifest's back is caught.
    let other = sav::cache::PhraseAudio {
        rate: 16_000,
        samples: vec![1000; 8000],
    };
    std::fs::write(dir.join("cache/goodbye.wav"), other.to_wav()).unwrap();
    let check = sav(&config_path, &["cache", "check"]);
    assert!(
        text(&check).contains("goodbye: audio differs"),
        "{}",
        text(&check)
    );
}

#[test]
fn committed_cache_matches_the_repository_phrase_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_sav"))
        .args(["cache", "check"])
        .current_dir(REPO)
        .output()
        .expect("run sav");
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn bad_config_fails_with_key_and_value() {
    let dir = workdir("bad_config");
    let path = dir.join("sav.toml");
    std::fs::write(
        &path,
        config("x").replace("rtp_port_max = 20999", "rtp_port_max = 100"),
    )
    .unwrap();
    let output = sav(&path, &["check-config"]);
    assert!(!output.status.success());
    let out = text(&output);
    assert!(
        out.contains("media.rtp_port_min") && out.contains("20000..=100"),
        "{out}"
    );
}

#[test]
fn a_sec1_tls_key_is_refused_with_the_conversion_to_make() {
    require_tool("openssl");
    let dir = workdir("tls_sec1");
    let (_, cert, _) = make_certs(&dir);
    let sec1 = dir.join("sec1.key");
    let out = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&sec1)
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.join("sav.toml");
    // (check-config binds nothing: the TLS port is never opened.)
    let toml = with_tls(config("x"), 5061, &cert, &sec1);
    std::fs::write(&path, toml).unwrap();
    let output = sav(&path, &["check-config"]);
    assert!(!output.status.success());
    let out = text(&output);
    assert!(
        out.contains("SEC1") && out.contains("openssl pkcs8 -topk8"),
        "{out}"
    );
}

#[test]
fn a_phrase_file_that_is_not_the_layout_is_reported_unreadable_and_refused() {
    let dir = workdir("cache_unreadable");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // The older layout's μ-law clip alone: the phrase has no audio.
    std::fs::write(cache.join("greet.raw"), [0x55; 4000]).unwrap();
    // A stereo 44.1 kHz file where a phrase should be.
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(cache.join("goodbye.wav"), spec).unwrap();
    for _ in 0..1000 {
        writer.write_sample(0i16).unwrap();
    }
    writer.finalize().unwrap();
    let config = sav::cache::config::CacheConfig {
        dir: cache.clone(),
        phrases: [
            ("greet".to_string(), "Bonjour.".to_string()),
            ("goodbye".to_string(), "Au revoir.".to_string()),
        ]
        .into_iter()
        .collect(),
        voice: "fr".into(),
        speed: 165,
        code_at_start: false,
    };
    let problems = sav::cache::check(&config).unwrap();
    let text: Vec<String> = problems.iter().map(|(k, p)| format!("{k}: {p}")).collect();
    assert!(text.iter().any(|t| t == "greet: no audio"), "{text:?}");
    assert!(
        text.iter()
            .any(|t| t.starts_with("goodbye: unreadable audio (2 channel(s), 16-bit at 44100 Hz")),
        "{text:?}"
    );
    let err = sav::cache::PhraseCache::load(&config).unwrap_err();
    assert!(err.to_string().contains("goodbye: unreadable"), "{err}");
}

/// A configuration file that holds a password and that every user may read
/// is pointed out by `check-config` (without printing the password); once
/// only its owner and group may read it, nothing is said.
#[test]
#[cfg(unix)]
fn check_config_warns_of_a_secret_in_a_world_readable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = workdir("config_secret");
    let path = dir.join("sav.toml");
    let toml = sav_toml(Ports::slot(44)).replace(
        "url = \"sqlite://sav.db\"",
        "url = \"postgres://sav:hunter2-secret@127.0.0.1:5432/sav\"",
    );
    assert!(
        toml.contains("hunter2-secret"),
        "the store url line changed"
    );
    std::fs::write(&path, toml).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = text(&sav(&path, &["check-config"]));
    assert!(
        out.contains("warning") && out.contains("[store] url's password"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = text(&sav(&path, &["check-config"]));
    assert!(
        out.contains("config ok") && !out.contains("warning"),
        "{out}"
    );
}

/// The configuration sav reads: `--config`, else `SAV_CONFIG`, else the
/// embedded copy; check-config says which, and run from another directory
/// the embedded copy's missing cache is reported as what it is.
#[test]
fn check_config_names_the_file_it_read_from_any_directory() {
    let dir = workdir("cache_cli_config_source");
    let config_path = dir.join("sav.toml");
    // The repository's configuration with its cache where it is.
    let text_of = std::fs::read_to_string(format!("{}/sav.toml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace(
            "dir = \"cache\"",
            &format!("dir = \"{}/cache\"", env!("CARGO_MANIFEST_DIR")),
        );
    std::fs::write(&config_path, text_of).unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = |args: &[&str], env: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sav"));
        command
            .args(args)
            .current_dir(&elsewhere)
            .env_remove("SAV_CONFIG")
            .env("NO_COLOR", "1");
        if let Some(path) = env {
            command.env("SAV_CONFIG", path);
        }
        command.output().expect("run sav")
    };
    let by_flag = run(
        &["check-config", "--config", config_path.to_str().unwrap()],
        None,
    );
    assert!(by_flag.status.success(), "{}", text(&by_flag));
    assert!(
        text(&by_flag).contains(&format!("config ok: {}", config_path.display())),
        "{}",
        text(&by_flag)
    );
    let by_env = run(&["check-config"], Some(&config_path));
    assert!(by_env.status.success(), "{}", text(&by_env));
    assert!(
        text(&by_env).contains(&format!("config ok: {}", config_path.display())),
        "{}",
        text(&by_env)
    );
    // The embedded copy from a directory without a cache: one error that
    // says where it looked and why there.
    let embedded = run(&["check-config"], None);
    assert_eq!(embedded.status.code(), Some(1), "{}", text(&embedded));
    let said = text(&embedded);
    assert!(
        said.contains("does not exist") && said.contains("SAV_CONFIG"),
        "{said}"
    );
    assert!(!said.contains("no audio"), "{said}");
}
