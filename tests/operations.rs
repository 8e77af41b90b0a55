//! What a team running sav sees and does: `/metrics` after scripted calls
//! (exact counts, parsed as Prometheus text), `/healthz`, the timeline of a
//! call drawn by `sav report`, the stereo recording, a SIGTERM with calls up
//! (drained, then BYE at the bound, unREGISTER, exit 0) and a SIGHUP with a
//! changed phrase (the next call hears it, the call in progress does not).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::fake_providers::{FakeBehaviour, FakeProviders};
use support::*;

/// Two known customers and their numbers; a third number nobody knows.
const KNOWN: [&str; 2] = ["+33612345678", "+33700000001"];
const UNKNOWN: &str = "+33699999999";

fn import_customers(dir: &Path) {
    let csv = dir.join("customers.csv");
    std::fs::write(
        &csv,
        format!(
            "phone,title,first_name,last_name,product,problem\n\
             {},Monsieur,Jean,Dupont,box internet,plus de connexion\n\
             {},Madame,Marie,Curie,décodeur,écran noir\n",
            KNOWN[0], KNOWN[1]
        ),
    )
    .unwrap();
    let output = sav_import(&dir.join("sav.toml"), &csv);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The callers' numbers, one per call, for sipp's `-inf`.
fn numbers_file(dir: &Path, numbers: &[&str]) -> String {
    let path = dir.join("numbers.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for n in numbers {
        text.push_str(n);
        text.push_str(";\n");
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A TTS (fake, fast, 4× real time), no STT (keys only), no LLM; the CRM
/// unset. Known callers hear their name through the TTS.
fn tts_only(base: String) -> impl Fn(String) -> String + Clone {
    move |c: String| c + &format!("\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"voice\"\n")
}

/// Every sample of an OpenMetrics/Prometheus text exposition, checked line
/// by line: a `# TYPE` for its family first, a well-formed name, labels and a
/// number. Returns (name with labels, value).
fn strict_samples(text: &str) -> Vec<(String, f64)> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            families.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
            }
        }
        let family = families
            .iter()
            .rev()
            .find(|(f, _)| name.starts_with(f.as_str()))
            .unwrap_or_else(|| panic!("sample before its # TYPE: {line}"));
        let suffix = &name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{name} in a {} family", family.1);
        samples.push((series.to_string(), value));
    }
    samples
}

/// The exposition parsed by a Prometheus text-format parser, as
/// `name{labels}` → value (histograms by their `_count`).
fn parsed(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",");
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{labels}}}", sample.metric)
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

/// What Prometheus sends when it scrapes.
const OPENMETRICS: &str = "Accept: application/openmetrics-text;version=1.0.0,\
                           text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `promtool check metrics` (Prometheus's own linter: naming, units, help,
/// suffixes) has nothing to say about the exposition.
fn promtool_is_clean(text: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the exposition");
    let out = promtool.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    *metrics
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the exposition: {:?}", metrics.keys()))
}

#[test]
fn metrics_count_what_three_calls_did() {
    let dir = workdir("ops_metrics");
    let ports = Ports::slot(66);
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            tts_ttfb: Duration::from_millis(100),
            tts_speed: 4,
            ..Default::default()
        },
    );
    // Logs as JSON lines this time.
    let tts = tts_only(fake.base_url());
    let edit = move |c: String| tts(c.replace("format = \"text\"", "format = \"json\""));
    let mut first = Sav::start(&dir, ports, edit.clone());
    first.terminate();
    import_customers(&dir);
    let sav = Sav::start(&dir, ports, edit);

    let (status, health) = http_get(ports.metrics, "/healthz").expect("/healthz answers");
    assert_eq!((status, health.trim()), (200, "ready"));
    assert_eq!(http_get(ports.metrics, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(http_get(ports.metrics, "/livez").map(|r| r.0), Some(200));

    // Before any call, every family is there: each outcome, refusal,
    // provider and drop reason at zero, the build and the process.
    let (_, text) = http_get(ports.metrics, "/metrics").expect("/metrics answers");
    let at_start = parsed(&text);
    for series in [
        "sav_calls_total{outcome=\"resolved\"}",
        "sav_calls_total{outcome=\"abandoned\"}",
        "sav_calls_refused_total{reason=\"max_calls\"}",
        "sav_provider_errors_total{provider=\"llm\"}",
        "sav_provider_errors_total{provider=\"stt\"}",
        "sav_rtp_dropped_total{reason=\"malformed\"}",
        "sav_sip_refused_total{reason=\"banned\"}",
        "sav_api_cost_usd_total",
        "sav_late_ticks_total",
    ] {
        assert_eq!(value(&at_start, series), 0.0, "{series}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(
            &at_start,
            &format!("sav_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    assert!(value(&at_start, "process_resident_memory_bytes") > 1e6);
    assert!(value(&at_start, "process_open_fds") >= 3.0);
    assert!(value(&at_start, "process_start_time_seconds") > 1.7e9);
    promtool_is_clean(&text);

    // Three callers at once, two of them known; each silent for 18 s (the
    // known greeting, spoken by the TTS, is long), then hangs up.
    let numbers = numbers_file(&dir, &[KNOWN[0], UNKNOWN, KNOWN[1]]);
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let output = sipp(
        &dir,
        "uac_numbers.xml",
        ports,
        &[
            "-inf", &numbers, "-m", "3", "-l", "3", "-r", "3", "-d", "18000",
        ],
        Duration::from_secs(60),
    );
    let packets = capture.stop();
    assert!(
        output.status.success(),
        "{}\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );
    // The calls' ends are counted once sav has seen every BYE.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) =
            http_get_with(ports.metrics, "/metrics", &[OPENMETRICS]).expect("/metrics answers");
        assert_eq!(status, 200);
        if text.contains("sav_calls_total{outcome=\"abandoned\"} 3") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    write_report("metrics-exposition.txt", &text);
    let strict = strict_samples(&text);
    assert!(strict.len() > 40, "{} samples", strict.len());
    // The same figures in the Prometheus text format, which promtool reads.
    let (_, prometheus_text) = http_get(ports.metrics, "/metrics").expect("/metrics answers");
    promtool_is_clean(&prometheus_text);
    let m = parsed(&prometheus_text);

    // What the calls did: everyone heard greet and the menu from the cache;
    // the two known callers also heard their name and ticket, generated.
    let spoken = fake.counts().tts_texts;
    assert_eq!(
        value(&m, "sav_phrases_total{source=\"cache\"}"),
        6.0,
        "{text}"
    );
    assert_eq!(value(&m, "sav_phrases_total{source=\"generated\"}"), 2.0);
    assert_eq!(value(&m, "sav_phrases_total{source=\"filler\"}"), 0.0);
    assert_eq!(value(&m, "sav_calls_total{outcome=\"abandoned\"}"), 3.0);
    assert_eq!(value(&m, "sav_active_calls"), 0.0);
    assert_eq!(value(&m, "sav_ready"), 1.0);
    assert_eq!(
        value(&m, "sav_registration_state{state=\"not_configured\"}"),
        1.0
    );
    // Each sentence sent to the TTS is a first byte from the API; each
    // cached phrase one from the cache.
    assert_eq!(
        value(&m, "sav_tts_first_byte_seconds{source=\"api\"}"),
        spoken.len() as f64
    );
    assert_eq!(
        value(&m, "sav_tts_first_byte_seconds{source=\"cache\"}"),
        6.0
    );
    let characters: usize = spoken.iter().map(|t| t.chars().count()).sum();
    assert_eq!(
        value(&m, "sav_tts_characters_total"),
        characters as f64,
        "{spoken:?}"
    );
    assert_eq!(
        value(&m, "sav_llm_tokens_total{kind=\"prompt\"}"),
        0.0,
        "no LLM"
    );
    assert_eq!(value(&m, "sav_stt_audio_seconds_total"), 0.0);
    assert_eq!(value(&m, "sav_dtmf_total"), 0.0);
    assert_eq!(value(&m, "sav_barge_ins_total"), 0.0);
    assert_eq!(value(&m, "sav_call_cost_usd"), 3.0, "one cost per call");
    // RTP frames: the capture saw what the counter counted.
    let sent = value(&m, "sav_rtp_frames_sent_total");
    let captured = ports.sav_audio(&packets).len() as f64;
    let late = value(&m, "sav_late_ticks_total");
    write_report(
        "metrics-report.txt",
        &format!(
            "metrics after 3 calls (2 known): phrases cache 6 / generated 2, \
             rtp frames sent {sent} (captured {captured}), late ticks {late}, \
             tts characters {characters}\n"
        ),
    );
    assert!(
        (sent - captured).abs() <= sent * 0.005,
        "frames counted {sent}, captured {captured}"
    );
    assert!(
        sent > 3.0 * 17.0 * 50.0,
        "{sent} frames for 3 calls of 18 s"
    );

    // Every log line is a JSON object; every line about a call names it
    // (its call_id, from the call's span), and no line of sav's shows a
    // caller's number. (The tests log rsipstack at info, which prints whole
    // SIP messages; the default filter keeps it at warn.)
    let log = sav.log_text();
    let mut call_lines = 0;
    let mut own = String::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("sav"))
        {
            own.push_str(line);
        }
        if entry["target"] == "sav::call" {
            call_lines += 1;
            assert!(
                entry["call_id"].is_string(),
                "a call's line without its call_id: {line}"
            );
        }
    }
    assert!(call_lines >= 3 * 4, "{call_lines} call lines");
    for number in KNOWN.iter().chain([&UNKNOWN]) {
        let digits = &number[1..];
        assert!(
            !own.contains(digits),
            "a caller number in the log: {number}"
        );
    }
}

#[test]
fn a_call_timeline_is_kept_and_drawn_and_the_call_recorded() {
    let dir = workdir("ops_timeline");
    let ports = Ports::slot(67);
    // A TTS slow to answer: the known caller's name comes a while after the
    // greeting has ended (dead air, on purpose).
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            tts_ttfb: Duration::from_millis(3600),
            tts_speed: 4,
            ..Default::default()
        },
    );
    let base = fake.base_url();
    // One sentence for the known caller, no filler over the wait: one
    // stretch of dead air, between the greeting and the name.
    let edit = move |c: String| {
        let fillers = "fillers = [\"filler_hum\", \"filler_ok\", \"filler_one_moment\", \"filler_let_me_see\"]";
        let greeting = "known_greeting = \"{title} {last_name}, je vois votre ticket concernant votre {product} : {problem}. Est-ce pour cela que vous appelez ? Décrivez-moi ce qui se passe.\"";
        assert!(c.contains(fillers) && c.contains(greeting));
        c.replace(
            "# recordings_dir = \"recordings\"",
            "recordings_dir = \"recordings\"",
        )
        .replace(fillers, "fillers = []")
        .replace(
            greeting,
            "known_greeting = \"{title} {last_name}, je vois votre ticket sur votre {product}.\"",
        ) + &format!(
            "\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"voice\"\nfirst_byte_timeout_ms = 8000\n"
        )
    };
    let mut first = Sav::start(&dir, ports, edit.clone());
    first.terminate();
    import_customers(&dir);
    let sav = Sav::start(&dir, ports, edit);
    let numbers = numbers_file(&dir, &[KNOWN[0]]);
    let output = sipp(
        &dir,
        "uac_numbers.xml",
        ports,
        &["-inf", &numbers, "-m", "1", "-d", "12000"],
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", sipp_report(&dir, &output));
    let log = sav.wait_for_log("call ended", Duration::from_secs(10));
    let mut sav = sav;
    assert!(sav.terminate().success());

    // The call by its SIP Call-ID, as the PBX's logs show it.
    let call_id = call_id_in(&log);
    let report = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
            .arg("--config")
            .arg(dir.join("sav.toml"))
            .arg("report")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run sav report")
    };
    let json = report(&[&call_id, "--json"]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let timeline: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let events = timeline["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let starts: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "segment_start")
        .map(|e| (e["label"].as_str().unwrap(), e["source"].as_str().unwrap()))
        .collect();
    assert_eq!(timeline["outcome"], "abandoned");
    assert_eq!(kinds[0], "answered", "{kinds:?}");
    assert_eq!(starts[0], ("greet", "cache"), "{starts:?}");
    assert_eq!(starts.last().unwrap(), &("menu", "cache"), "{starts:?}");
    let generated = starts.iter().filter(|(_, s)| *s == "generated").count();
    assert_eq!(
        starts,
        [
            ("greet", "cache"),
            ("reply#1.0", "generated"),
            ("menu", "cache")
        ],
        "{:?}",
        fake.counts().tts_texts
    );
    let tts_requests = events
        .iter()
        .filter(|e| e["event"] == "request" && e["provider"] == "tts")
        .count();
    assert_eq!(tts_requests, generated);
    assert!(kinds.contains(&"first_byte") && kinds.contains(&"starved"));
    assert_eq!(
        timeline["usage"]["tts_characters"].as_u64(),
        Some(fake.counts().tts_texts[0].chars().count() as u64)
    );

    // The picture: five lanes, one bar per segment, the wait for the TTS
    // marked as dead air, the TTS's time to first byte written on it.
    let out = report(&[&call_id, "--out", "call.svg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(dir.join("call.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("class=\"lane\"").count(), 5);
    for lane in ["caller", "bot", "llm", "tts", "stt"] {
        assert!(svg.contains(&format!("data-lane=\"{lane}\"")), "{lane}");
    }
    assert_eq!(svg.matches("class=\"segment\"").count(), starts.len());
    assert_eq!(
        svg.matches("class=\"segment\" data-source=\"generated\"")
            .count(),
        generated
    );
    let dead_air: Vec<u64> = svg
        .split("class=\"dead-air\" data-ms=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(dead_air.len(), 1, "the wait for the name: {dead_air:?}");
    assert!(
        (500..3000).contains(&dead_air[0]),
        "greet ends at 2.4 s, the name's audio comes at 3.6 s: {dead_air:?}"
    );
    assert!(
        svg.contains("ttfb 3"),
        "the TTS's 3.6 s to first byte is written"
    );
    std::fs::copy(
        dir.join("call.svg"),
        Path::new(REPO).join("target/call-timeline.svg"),
    )
    .unwrap();
    if dir.join("call.png").exists() {
        let png = std::fs::read(dir.join("call.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    // A call that does not exist is an error that says so.
    let missing = report(&["no-such-call"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no call"));

    // The recording: stereo, caller (silent here) left, bot right.
    let recordings: Vec<_> = std::fs::read_dir(dir.join("recordings"))
        .expect("a recordings directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let mut reader = hound::WavReader::open(&recordings[0]).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let seconds = samples.len() as f64 / 2.0 / 8000.0;
    assert!((11.0..14.0).contains(&seconds), "{seconds} s recorded");
    let loud = |channel: usize| {
        samples
            .chunks(2)
            .filter(|lr| lr[channel].unsigned_abs() > 1000)
            .count()
    };
    assert_eq!(loud(0), 0, "the caller said nothing");
    assert!(loud(1) > 8000, "the bot spoke: {}", loud(1));
}

#[test]
fn sigterm_with_five_calls_drains_then_byes_unregisters_and_exits_zero() {
    let dir = workdir("ops_sigterm");
    let ports = Ports::slot(68);
    let kamailio_port = ports.sip + 5;
    let _kamailio = Kamailio::start(&dir, kamailio_port, "s3cret");
    let section = format!(
        "\n[sip.register]\nregistrar = \"sip:127.0.0.1:{kamailio_port}\"\nusername = \"1001\"\npassword_env = \"SAV_KAMAILIO_PASSWORD\"\nexpires = 60\n"
    );
    let mut sav = Sav::start_with_env(
        &dir,
        ports,
        |c| {
            c.replacen("\n[media]", &format!("{section}\n[media]"), 1)
                .replace("drain_secs = 2", "drain_secs = 6")
        },
        &[("SAV_KAMAILIO_PASSWORD", "s3cret")],
    );
    sav.wait_for_log("registered expires=60", Duration::from_secs(10));
    // Ready once registered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(ports.metrics, "/healthz").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            sav.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Five calls through the registrar: two hang up by themselves during
    // the drain, three would stay and are ended by sav at the bound.
    let via_kamailio = Ports {
        sip: kamailio_port,
        ..ports
    };
    let short_dir = dir.join("short");
    let long_dir = dir.join("long");
    std::fs::create_dir_all(&short_dir).unwrap();
    std::fs::create_dir_all(&long_dir).unwrap();
    let short_numbers = numbers_file(&short_dir, &["+33600000001", "+33600000002"]);
    let short = {
        let dir = short_dir.clone();
        std::thread::spawn(move || {
            sipp(
                &dir,
                "uac_numbers.xml",
                Ports {
                    sipp: ports.sipp + 2,
                    sipp_media: ports.sipp_media + 40,
                    ..via_kamailio
                },
                &[
                    "-s",
                    "1001",
                    "-inf",
                    &short_numbers,
                    "-m",
                    "2",
                    "-l",
                    "2",
                    "-r",
                    "2",
                    "-d",
                    "5000",
                ],
                Duration::from_secs(60),
            )
        })
    };
    let long = {
        let dir = long_dir.clone();
        std::thread::spawn(move || {
            sipp(
                &dir,
                "uac_silent.xml",
                via_kamailio,
                &["-s", "1001", "-m", "3", "-l", "3", "-r", "3"],
                Duration::from_secs(60),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while sav.log_text().matches("call established").count() < 5 {
        assert!(
            Instant::now() < deadline,
            "five calls not up:\n{}",
            sav.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http_get(ports.metrics, "/metrics").unwrap();
    assert!(metrics.contains("sav_active_calls 5"), "{metrics}");

    let stopped_at = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(sav.pid().to_string())
        .status();
    sav.wait_for_log("shutting down", Duration::from_secs(5));
    // Draining: a new call gets 503, OPTIONS 503, /healthz 503.
    let mut uac = RawUac::new(ports.sip, "late-caller");
    let to = uac.sav_to();
    uac.send(
        "INVITE",
        1,
        &to,
        None,
        &["Content-Type: application/sdp"],
        &sdp_offer(9),
    );
    let refused = uac.response(Duration::from_secs(5), 503, "INVITE");
    assert!(header(&refused, "Retry-After").is_some(), "{refused}");
    let options = udp_exchange(
        ports.sip,
        &sip_request("OPTIONS", ports.sip, "", &[]),
        Duration::from_secs(2),
    )
    .expect("OPTIONS answered");
    assert!(options.starts_with("SIP/2.0 503"), "{options}");
    let (status, why) = http_get(ports.metrics, "/healthz").unwrap();
    assert_eq!(status, 503);
    assert!(why.contains("shutting down"), "{why}");
    assert_eq!(http_get(ports.metrics, "/readyz").map(|r| r.0), Some(503));
    // Alive all the same: a liveness probe must not kill it mid-drain.
    assert_eq!(
        http_get(ports.metrics, "/livez"),
        Some((200, "alive\n".to_string()))
    );

    let status = sav.wait_exit(Duration::from_secs(20));
    let took = stopped_at.elapsed();
    assert!(status.success(), "exit {status}:\n{}", sav.log_text());
    let short = short.join().unwrap();
    let long = long.join().unwrap();
    assert!(
        short.status.success(),
        "the calls that hung up themselves:\n{}",
        sipp_report(&short_dir, &short)
    );
    assert!(
        long.status.success(),
        "the calls sav ended at the bound (BYE):\n{}",
        sipp_report(&long_dir, &long)
    );
    let log = sav.log_text();
    assert!(log.contains("drain bound reached"), "{log}");
    assert_eq!(log.matches("call outcome").count(), 5, "{log}");
    assert_eq!(
        log.matches("outcome=\"interrupted\"").count() + log.matches("outcome=interrupted").count(),
        3,
        "{log}"
    );
    assert!(
        took >= Duration::from_secs(6),
        "the calls had their drain time: {took:?}"
    );
    let k = _kamailio.log_text();
    assert!(
        k.lines()
            .any(|l| l.contains("REGISTER accepted user=1001")
                && l.trim_end().ends_with("expires=0")),
        "no unREGISTER seen by Kamailio:\n{k}"
    );
    write_report(
        "sigterm-report.txt",
        &format!("SIGTERM with 5 calls: 2 ended by the callers, 3 by sav at the 6 s bound; exit 0 after {took:?}\n"),
    );
}

/// Where `needle` (a stretch of a cached clip, frame-aligned) is in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sighup_with_a_changed_phrase_reaches_the_next_call_not_the_one_in_progress() {
    let dir = workdir("ops_sighup");
    let ports = Ports::slot(69);
    // A cache of this test's own, which the operator rebuilds.
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(Path::new(REPO).join("cache"))
        .arg(dir.join("cache"))
        .status()
        .unwrap();
    assert!(status.success());
    let own_cache = dir.join("cache").display().to_string();
    let mut sav = Sav::start(&dir, ports, |c| {
        c.replace(
            &format!("dir = \"{REPO}/cache\""),
            &format!("dir = \"{own_cache}\""),
        )
    });
    let old_goodbye = cached_ulaw_in(&dir.join("cache"), "goodbye");

    // Call A: on the line before the change, presses '#' after it.
    let call = |name: &str, wait_ms: &str, sipp_port: u16, media: u16| {
        let call_dir = dir.join(name);
        std::fs::create_dir_all(&call_dir).unwrap();
        utterance(&call_dir);
        dtmf_pound_pcap(&call_dir);
        let wait_ms = wait_ms.to_string();
        std::thread::spawn(move || {
            sipp(
                &call_dir,
                "uac_dtmf_hangup.xml",
                Ports {
                    sipp: sipp_port,
                    sipp_media: media,
                    ..ports
                },
                &["-m", "1", "-d", &wait_ms],
                Duration::from_secs(60),
            )
        })
    };
    let capture = Capture::start(
        &dir,
        &format!("udp and portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let call_a = call("a", "9000", ports.sipp, ports.sipp_media);
    sav.wait_for_log("call established", Duration::from_secs(10));

    // The operator changes the goodbye, rebuilds the cache, sends SIGHUP.
    let config = dir.join("sav.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace(
        "goodbye = \"Merci de votre appel, au revoir.\"",
        "goodbye = \"Au revoir, et bonne journée.\"",
    );
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    let build = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("--config")
        .arg(&config)
        .args(["cache", "build"])
        .output()
        .unwrap();
    let built = String::from_utf8_lossy(&build.stdout);
    assert!(
        build.status.success() && built.contains("built     goodbye"),
        "{built}"
    );
    let new_goodbye = cached_ulaw_in(&dir.join("cache"), "goodbye");
    assert_ne!(old_goodbye, new_goodbye);
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(sav.pid().to_string())
        .status();
    sav.wait_for_log("reloaded", Duration::from_secs(5));

    // Call B comes after the reload and presses '#' at once.
    let call_b = call("b", "1000", ports.sipp + 2, ports.sipp_media + 40);
    let a = call_a.join().unwrap();
    let b = call_b.join().unwrap();
    let packets = capture.stop();
    assert!(a.status.success(), "{}", sipp_report(&dir.join("a"), &a));
    assert!(b.status.success(), "{}", sipp_report(&dir.join("b"), &b));
    assert!(sav.is_running(), "SIGHUP does not stop sav");
    assert_eq!(sav.log_text().matches("call ended").count(), 2);

    // Each call's audio, by sav's RTP port (one per call), in order.
    let mut by_port: Vec<(u16, Vec<u8>)> = Vec::new();
    for p in ports.sav_audio(&packets) {
        match by_port.iter_mut().find(|(port, _)| *port == p.src_port) {
            Some((_, audio)) => audio.extend_from_slice(&p.payload[12..]),
            None => by_port.push((p.src_port, p.payload[12..].to_vec())),
        }
    }
    assert_eq!(by_port.len(), 2, "two calls");
    let (a_audio, b_audio) = (&by_port[0].1, &by_port[1].1);
    let old = &old_goodbye[1600..2080];
    let new = &new_goodbye[1600..2080];
    assert!(
        contains(a_audio, old),
        "call A says the goodbye it started with"
    );
    assert!(!contains(a_audio, new), "call A is untouched by the reload");
    assert!(contains(b_audio, new), "call B says the new goodbye");
    assert!(!contains(b_audio, old));
}

#[test]
fn exit_codes_tell_an_incomplete_run_from_an_error_and_a_usage_error() {
    let dir = workdir("ops_exit_codes");
    let config = dir.join("sav.toml");
    std::fs::write(&config, sav_toml(Ports::slot(80))).unwrap();
    let csv = dir.join("customers.csv");
    std::fs::write(
        &csv,
        format!(
            "phone,first_name,last_name\n{},Jean,Dupont\nbonjour,Marie,Curie\n",
            KNOWN[0]
        ),
    )
    .unwrap();
    let import = sav_import(&config, &csv);
    let said = String::from_utf8_lossy(&import.stdout);
    assert_eq!(import.status.code(), Some(3), "rows skipped: {said}");
    assert!(
        said.contains("1 customers imported") && said.contains("1 rows skipped"),
        "{said}"
    );

    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
            .args(args)
            .output()
            .expect("run sav")
    };
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2), "usage");
    let missing = dir.join("missing.toml");
    let error = run(&["--config", missing.to_str().unwrap(), "check-config"]);
    assert_eq!(error.status.code(), Some(1), "an error");
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line_itself() {
    let dir = workdir("ops_manual");
    let sav = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
            .args(args)
            // No configuration is read for these.
            .env("SAV_CONFIG", dir.join("absent.toml"))
            .output()
            .expect("run sav")
    };
    let bash = sav(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout).to_string();
    for word in ["serve", "check-config", "customers", "--config"] {
        assert!(script.contains(word), "{word} not completed");
    }
    let path = dir.join("sav.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash reads the completion script");
    let zsh = sav(&["completions", "zsh"]);
    assert!(zsh.status.success() && String::from_utf8_lossy(&zsh.stdout).contains("#compdef sav"));

    let page = sav(&["man"]);
    assert!(page.status.success());
    let page = String::from_utf8_lossy(&page.stdout).to_string();
    assert!(page.contains(".TH sav 1"), "{page}");
    assert!(
        page.contains("SAV_CONFIG"),
        "the page names the variable: {page}"
    );
    let out = dir.join("man1");
    let pages = sav(&["man", "--out", out.to_str().unwrap()]);
    assert!(pages.status.success());
    for name in [
        "sav.1",
        "sav-serve.1",
        "sav-call.1",
        "sav-customers-import.1",
    ] {
        let text = std::fs::read_to_string(out.join(name)).unwrap_or_default();
        assert!(text.contains(".TH"), "{name}");
    }
}

#[test]
fn sav_purge_says_what_it_would_remove_and_what_it_removed() {
    let dir = workdir("ops_purge");
    let config = dir.join("sav.toml");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run sav");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    std::fs::write(&config, sav_toml(Ports::slot(82))).unwrap();
    assert!(run(&["purge"]).contains("no [retention]: everything is kept"));
    let with_retention = sav_toml(Ports::slot(82)).replace(
        "drain_secs = 2",
        "drain_secs = 2\nrecordings_dir = \"recordings\"",
    ) + "\n[retention]\nrecordings_days = 30\n";
    std::fs::write(&config, with_retention).unwrap();
    std::fs::create_dir_all(dir.join("recordings")).unwrap();
    // An orphan recording written 40 days ago: past; a fresh one: kept.
    let old = dir
        .join("recordings")
        .join(format!("{}.wav", "ab".repeat(16)));
    let file = std::fs::File::create(&old).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(40 * 86_400))
        .unwrap();
    drop(file);
    let fresh = dir
        .join("recordings")
        .join(format!("{}.wav", "cd".repeat(16)));
    std::fs::write(&fresh, b"RIFF").unwrap();
    let dry = run(&["purge", "--dry-run"]);
    assert!(dry.contains("would remove: 1 recordings"), "{dry}");
    assert!(dry.contains(&old.display().to_string()), "{dry}");
    assert!(old.exists(), "a dry run removes nothing");
    let done = run(&["purge"]);
    assert!(done.contains("removed: 1 recordings"), "{done}");
    assert!(!old.exists() && fresh.exists());
}
