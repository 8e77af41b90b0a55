//! The console over HTTP, as its pages and a CRM use it: a guided call by
//! keys lands in the store; then sign-in (argon2 hashes made by `sav
//! hash-password`), the calls list and one call as JSON and as a page, the
//! viewer's masked numbers and the supervisor's full ones, search by
//! number, 401 without a session, CSRF on sign-out and on a session's
//! callback, the day's figures, the phrases, a script's bearer token, a
//! callback (sav calls itself) seen live on the board and in the event
//! stream; every JSON answer checked against the served OpenAPI document;
//! and a console beyond loopback without users refused at start.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use support::fake_providers::quickstart_voice;
use support::*;

fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn client() -> Client {
    sav::install_crypto_provider();
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Signs in; the session cookie (`name=value`).
fn login(base: &str, user: &str, password: &str) -> Result<String, StatusCode> {
    let response = client()
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("user", user), ("password", password)]))
        .send()
        .unwrap();
    if response.status() != StatusCode::SEE_OTHER {
        return Err(response.status());
    }
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    Ok(cookie.split(';').next().unwrap().to_string())
}

fn get(base: &str, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = client().get(format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().unwrap();
    (response.status(), response.text().unwrap())
}

/// Checks a JSON answer against what the OpenAPI document says `method
/// template` answers with `status`.
fn conforms(
    doc: &serde_json::Value,
    method: &str,
    template: &str,
    status: u16,
    body: &serde_json::Value,
) {
    let schema = &doc["paths"][template][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} answered {status}, which the document does not describe"
    );
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root).expect("the document's schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: {errors:?}\n{body}"
    );
}

/// An API call as a script makes it (cookie or bearer token), its answer
/// checked against the document.
struct Api<'a> {
    base: &'a str,
    doc: &'a serde_json::Value,
}

enum Who<'a> {
    Nobody,
    Cookie(&'a str),
    Bearer(&'a str),
}

impl Api<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        template: &str,
        who: Who,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "post" => client().post(url),
            _ => client().get(url),
        };
        match who {
            Who::Nobody => {}
            Who::Cookie(cookie) => request = request.header("cookie", cookie),
            Who::Bearer(token) => request = request.bearer_auth(token),
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {text}"));
        conforms(self.doc, method, template, status, &value);
        (status, value)
    }

    fn get(&self, path: &str, template: &str, who: Who) -> (u16, serde_json::Value) {
        self.call("get", path, template, who, &[], None)
    }

    /// A session's 200 answer to `GET path` (its template read off the
    /// path), checked against the document like every other.
    fn json(&self, path: &str, cookie: &str) -> serde_json::Value {
        let (status, body) = self.get(path, template_of(path), Who::Cookie(cookie));
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

/// The document's path template for a request path of the calls API.
fn template_of(path: &str) -> &'static str {
    let bare = path.split('?').next().unwrap_or(path);
    match bare.strip_prefix("/api/calls/") {
        Some(_) => "/api/calls/{id}",
        None if bare == "/api/calls" => "/api/calls",
        None => panic!("no template known for {path}"),
    }
}

/// The CSRF token of a signed-in page (its sign-out form).
fn csrf_of(base: &str, cookie: &str) -> String {
    let (_, page) = get(base, "/calls", Some(cookie));
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form's token")
        .to_string()
}

#[test]
fn calls_are_listed_searched_and_masked_by_role_behind_a_sign_in() {
    let dir = workdir("console_calls");
    let ports = Ports::slot(90);
    let console_port = ports.sip + 5;
    copy_caller_files(&dir);
    let (ana, vic) = (hash("ana-pw"), hash("vic-pw"));
    let token = "7f3a".repeat(16);
    std::fs::write(dir.join("crm.token"), format!("{token}\n")).unwrap();
    let sav = Sav::start(&dir, ports, move |c| {
        let c = c.replace(
            "# recordings_dir = \"recordings\"",
            "recordings_dir = \"recordings\"",
        );
        format!(
            "{c}\n[console]\nlisten = \"127.0.0.1:{console_port}\"\n\
             [[console.users]]\nname = \"ana\"\nrole = \"supervisor\"\npassword_hash = \"{ana}\"\n\
             [[console.users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{vic}\"\n\
             [[console.tokens]]\nname = \"crm\"\nrole = \"supervisor\"\ntoken_file = \"crm.token\"\n"
        )
    });
    // A guided call by keys from +33612345678: resolved.
    let output = sipp(
        &dir,
        "uac_flow_keys.xml",
        ports,
        &["-m", "1", "-d", "3000"],
        Duration::from_secs(90),
    );
    assert!(output.status.success(), "{}", sipp_report(&dir, &output));
    sav.wait_for_log("call outcome", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{console_port}");
    let (status, doc) = get(&base, "/api/openapi.json", None);
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("the OpenAPI document");
    assert_eq!(doc["openapi"], "3.1.0");
    let api = Api {
        base: &base,
        doc: &doc,
    };
    let (status, body) = api.get("/api/calls", "/api/calls", Who::Nobody);
    assert_eq!(status, 401, "{body}");
    let (status, _) = api.get("/api/live", "/api/live", Who::Bearer(&"0".repeat(64)));
    assert_eq!(status, 401, "an unknown token");

    // Nothing without a session.
    assert_eq!(get(&base, "/api/calls", None).0, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&base, "/calls", None);
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the page sends to the sign-in"
    );
    assert_eq!(login(&base, "vic", "wrong"), Err(StatusCode::UNAUTHORIZED));
    assert_eq!(
        login(&base, "nobody", "vic-pw"),
        Err(StatusCode::UNAUTHORIZED)
    );

    // The viewer: the call, its number masked, in the list and the page.
    let viewer = login(&base, "vic", "vic-pw").unwrap();
    // The store writes the record's end in the background.
    let mut list = serde_json::Value::Null;
    for _ in 0..50 {
        list = api.json("/api/calls", &viewer);
        if list["calls"][0]["outcome"] == "resolved" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let calls = list["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["caller"], "…678", "{list}");
    assert_eq!(calls[0]["outcome"], "resolved");
    assert_eq!(calls[0]["problem"], "internet");
    let id = calls[0]["id"].as_str().unwrap().to_string();
    let (status, page) = get(&base, "/calls", Some(&viewer));
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("…678") && !page.contains("612345678"),
        "{page}"
    );
    assert!(page.contains(&format!("data-call=\"{id}\"")), "{page}");
    // Search by the end of the number; a number that called not.
    assert_eq!(
        api.json("/api/calls?search=5678", &viewer)["calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(api.json("/api/calls?search=0999", &viewer)["calls"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(api.json("/api/calls?outcome=transferred", &viewer)["calls"]
        .as_array()
        .unwrap()
        .is_empty());
    // The call's page: its transcript turn by turn, its timeline drawn.
    let (status, page) = get(&base, &format!("/calls/{id}"), Some(&viewer));
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("…678") && !page.contains("612345678"),
        "{page}"
    );
    assert!(
        page.contains("data-speaker=\"caller\""),
        "the caller's keys: {page}"
    );
    assert!(
        page.contains("data-speaker=\"bot\""),
        "the bot's phrases: {page}"
    );
    assert!(page.contains("<svg"), "the timeline drawing: {page}");
    assert!(page.contains("class=\"crm\""), "{page}");
    assert_eq!(
        get(&base, "/calls/no-such-call", Some(&viewer)).0,
        StatusCode::NOT_FOUND
    );
    let one = api.json(&format!("/api/calls/{id}"), &viewer);
    assert_eq!(one["caller"], "…678");
    assert!(
        one["transcript"].as_array().is_some_and(|t| !t.is_empty()),
        "{one}"
    );

    // The supervisor: in full, and found by the full number.
    let supervisor = login(&base, "ana", "ana-pw").unwrap();
    let found = api.json("/api/calls?search=%2B33612345678", &supervisor);
    assert_eq!(found["calls"][0]["caller"], "+33612345678", "{found}");
    assert_eq!(
        api.json(&format!("/api/calls/{id}"), &supervisor)["caller"],
        "+33612345678"
    );
    assert_eq!(
        api.get(
            "/api/calls?day=2026-13-40",
            "/api/calls",
            Who::Cookie(&supervisor)
        )
        .0,
        400
    );

    // The recording: the supervisor's page plays it, each access audited;
    // a viewer gets neither the player nor the audio.
    let recording = format!("/calls/{id}/recording");
    let (_, page) = get(&base, &format!("/calls/{id}"), Some(&supervisor));
    assert!(
        page.contains(&format!(
            "<audio id=\"recording\" controls preload=\"metadata\" src=\"{recording}\""
        )),
        "{page}"
    );
    let (_, page) = get(&base, &format!("/calls/{id}"), Some(&viewer));
    assert!(!page.contains("<audio"), "{page}");
    assert_eq!(
        get(&base, &recording, Some(&viewer)).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(&base, &recording, None).0, StatusCode::UNAUTHORIZED);
    let mut audio = None;
    for _ in 0..50 {
        let response = client()
            .get(format!("{base}{recording}"))
            .header("cookie", &supervisor)
            .send()
            .unwrap();
        if response.status() == StatusCode::OK {
            assert_eq!(response.headers()["content-type"], "audio/wav");
            audio = Some(response.bytes().unwrap());
            break;
        }
        // Written when the call ended, in the background.
        std::thread::sleep(Duration::from_millis(100));
    }
    let audio = audio.expect("the recording is served");
    assert!(
        audio.starts_with(b"RIFF") && audio.len() > 100_000,
        "{} bytes",
        audio.len()
    );
    assert_eq!(
        get(&base, "/calls/../sav.toml/recording", Some(&supervisor)).0,
        StatusCode::NOT_FOUND
    );
    let trail = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = sav::store::Store::open("sqlite://sav.db", &dir, "audit-reader")
            .await
            .unwrap();
        store.audit_trail(10).await.unwrap()
    });
    assert_eq!(trail.len(), 1, "one access, audited: {trail:?}");
    assert_eq!(
        (
            trail[0].1.as_str(),
            trail[0].2.as_str(),
            trail[0].3.as_str()
        ),
        ("ana", "recording", id.as_str())
    );

    // The API's answers as the document describes them.
    let (status, _) = api.get("/api/calls?search=5678", "/api/calls", Who::Cookie(&viewer));
    assert_eq!(status, 200);
    let (status, _) = api.get(
        "/api/calls?day=2026-13-40",
        "/api/calls",
        Who::Cookie(&viewer),
    );
    assert_eq!(status, 400);
    let (status, one) = api.get(
        &format!("/api/calls/{id}"),
        "/api/calls/{id}",
        Who::Bearer(&token),
    );
    assert_eq!(
        (status, one["caller"].as_str()),
        (200, Some("+33612345678")),
        "a supervisor's token"
    );
    // With its timeline: the keys pressed are in it.
    let keys = one["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e.to_string().contains("\"event\":\"dtmf\""))
                .count()
        })
        .unwrap_or(0);
    assert!(keys >= 3, "the keys in the timeline: {}", one["timeline"]);
    let (status, _) = api.get("/api/calls/nope", "/api/calls/{id}", Who::Bearer(&token));
    assert_eq!(status, 404);

    // The day's figures: one call, resolved by keys, every phrase cached.
    let (status, today) = api.get("/api/today", "/api/today", Who::Cookie(&viewer));
    assert_eq!(status, 200, "{today}");
    assert_eq!(
        (today["calls"].as_u64(), today["resolved"].as_u64()),
        (Some(1), Some(1)),
        "{today}"
    );
    assert_eq!(today["resolved_rate"].as_f64(), Some(1.0), "{today}");
    assert_eq!(today["cache_hit_rate"].as_f64(), Some(1.0), "{today}");
    // sipp presses its keys at fixed times, often over a prompt, and a key
    // over the bot's speech is no turn answered (`sav report`'s measure):
    // the per-turn figures are checked on the voice call (the browser test)
    // and in the unit test.
    assert_eq!(
        today["calls_per_hour"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_u64())
            .sum::<u64>(),
        1
    );
    let (status, page) = get(&base, "/today", Some(&viewer));
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.matches("<svg").count() >= 2 && page.contains("Premier son p95"),
        "{page}"
    );
    let (status, _) = api.get(
        "/api/today?day=yesterday",
        "/api/today",
        Who::Cookie(&viewer),
    );
    assert_eq!(status, 400);

    // The phrases: every one listed with its text and a player; the audio
    // of one, and none for a key that is not a phrase.
    let (status, page) = get(&base, "/phrases", Some(&viewer));
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("data-phrase=\"greet\"") && page.contains("vous êtes bien au service"),
        "{page}"
    );
    assert!(page.contains("src=\"/phrases/menu/audio\""), "{page}");
    assert!(
        page.contains("Toutes à jour"),
        "the shipped cache is current: {page}"
    );
    let response = client()
        .get(format!("{base}/phrases/greet/audio"))
        .header("cookie", &viewer)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().unwrap().starts_with(b"RIFF"));
    assert_eq!(
        get(&base, "/phrases/..%2Fsav.toml/audio", Some(&viewer)).0,
        StatusCode::NOT_FOUND
    );

    // A callback asked by a session needs the supervisor's role and the
    // page's CSRF token (a bad target after both checks: 400, not placed).
    let bad = serde_json::json!({"target": "tel:+33612345678"});
    let (status, _) = api.call(
        "post",
        "/api/calls",
        "/api/calls",
        Who::Cookie(&viewer),
        &[],
        Some(bad.clone()),
    );
    assert_eq!(status, 403, "a viewer");
    let (status, _) = api.call(
        "post",
        "/api/calls",
        "/api/calls",
        Who::Cookie(&supervisor),
        &[],
        Some(bad.clone()),
    );
    assert_eq!(status, 403, "no CSRF token");
    let supervisor_csrf = csrf_of(&base, &supervisor);
    let (status, said) = api.call(
        "post",
        "/api/calls",
        "/api/calls",
        Who::Cookie(&supervisor),
        &[("x-csrf-token", &supervisor_csrf)],
        Some(bad),
    );
    assert_eq!(status, 400, "{said}");

    // Signing out needs the page's CSRF token.
    let csrf = supervisor_csrf;
    let logout = |token: &str| {
        client()
            .post(format!("{base}/logout"))
            .header("cookie", &supervisor)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", token)]))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(logout("0000"), StatusCode::FORBIDDEN);
    assert_eq!(
        api.get("/api/calls", "/api/calls", Who::Cookie(&supervisor))
            .0,
        200,
        "a refused sign-out leaves the session"
    );
    assert_eq!(logout(&csrf), StatusCode::SEE_OTHER);
    assert_eq!(
        api.get("/api/calls", "/api/calls", Who::Cookie(&supervisor))
            .0,
        401
    );

    // A CRM's callback with its token: sav calls itself, so the call it
    // answers is on the board while the callback speaks.
    let (status, live) = api.get("/api/live", "/api/live", Who::Cookie(&viewer));
    assert_eq!(
        (status, live["calls"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{live}"
    );
    let target = format!("sip:sav@127.0.0.1:{}", ports.sip);
    let (status, placed) = api.call(
        "post",
        "/api/calls",
        "/api/calls",
        Who::Bearer(&token),
        &[],
        Some(serde_json::json!({"target": target, "phrase": "callback"})),
    );
    assert_eq!(status, 202, "{placed}");
    assert_eq!(
        (placed["state"].as_str(), placed["by"].as_str()),
        (Some("dialing"), Some("crm"))
    );
    let callback = format!("/api/callbacks/{}", placed["id"]);
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, live) = api.get("/api/live", "/api/live", Who::Cookie(&viewer));
        if live["calls"].as_array().is_some_and(|c| !c.is_empty()) {
            seen = live;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let call = &seen["calls"][0];
    assert!(call.is_object(), "the callback's call never showed live");
    assert!(
        call["caller"].as_str().unwrap().starts_with('…'),
        "masked for a viewer: {call}"
    );
    // The event stream sends the board as it is first: the call.
    let stream = client()
        .get(format!("{base}/api/live/events"))
        .header("cookie", &viewer)
        .send()
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut lines = BufReader::new(stream).lines();
    let (mut event, mut data) = (String::new(), String::new());
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(json) = line.strip_prefix("data: ") {
            data = json.to_string();
            break;
        }
    }
    assert_eq!(event, "calls");
    let streamed: serde_json::Value = serde_json::from_str(&data).unwrap();
    conforms(
        &doc,
        "get",
        "/api/live",
        200,
        &serde_json::json!({ "calls": streamed }),
    );
    assert_eq!(streamed[0]["call_id"], call["call_id"], "{data}");
    drop(lines);
    // The callback ends (its phrase said, then BYE); the board empties.
    let mut state = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, now) = api.get(&callback, "/api/callbacks/{id}", Who::Bearer(&token));
        assert_eq!(status, 200);
        if now["state"] != "dialing" {
            state = now;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (state["state"].as_str(), state["status"].as_u64()),
        (Some("ended"), Some(200)),
        "{state}"
    );
    let mut empty = false;
    for _ in 0..100 {
        let (_, live) = api.get("/api/live", "/api/live", Who::Bearer(&token));
        if live["calls"].as_array().is_some_and(Vec::is_empty) {
            empty = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(empty, "the call left the board when it ended");
    let (status, _) = api.get(
        "/api/callbacks/999",
        "/api/callbacks/{id}",
        Who::Bearer(&token),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_console_beyond_loopback_without_users_refuses_to_start() {
    let dir = workdir("console_open");
    let config = dir.join("sav.toml");
    std::fs::write(
        &config,
        sav_toml(Ports::slot(91)) + "\n[console]\nlisten = \"0.0.0.0:25915\"\n",
    )
    .unwrap();
    for command in [&["check-config"][..], &["serve"][..]] {
        let out = Command::new("timeout")
            .args(["-k", "5", "20"])
            .arg(env!("CARGO_BIN_EXE_sav"))
            .arg("--config")
            .arg(&config)
            .args(command)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {said}");
        assert!(
            said.contains("never served there without authentication"),
            "{command:?}: {said}"
        );
    }
}

/// Chromium's WebDriver on a port of this test's, until dropped.
struct ChromeDriver(std::process::Child);

impl ChromeDriver {
    fn start(port: u16) -> ChromeDriver {
        require_tool("chromedriver");
        require_tool("chromium");
        // A process group of its own: the browsers it starts go with it,
        // even when the test fails before closing its session.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let driver = ChromeDriver(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not listen on {port}");
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child's process group.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A headless Chromium session: this machine's flags (no background
/// networking: nothing but loopback is reachable), a fresh profile.
async fn browser(driver_port: u16, profile: &std::path::Path) -> fantoccini::Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session")
}

/// Polls `check` (every 100 ms, at most `tries` times) until it is true.
async fn until<F, Fut>(what: &str, tries: u32, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not after {} s", tries / 10);
}

async fn screenshot(browser: &fantoccini::Client, dir: &std::path::Path, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    // The README shows one (`SAV_WRITE_SCREENSHOTS=1` writes them anew).
    if std::env::var_os("SAV_WRITE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(REPO).join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
    }
}

async fn sign_in(browser: &fantoccini::Client, base: &str, user: &str, password: &str) {
    use fantoccini::Locator;
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser
        .find(Locator::Css("input[name=user]"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("signed in", 100, || async {
        browser
            .current_url()
            .await
            .is_ok_and(|url| url.path() == "/live")
    })
    .await;
}

async fn sign_out(browser: &fantoccini::Client) {
    browser
        .find(fantoccini::Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("signed out", 100, || async {
        browser
            .current_url()
            .await
            .is_ok_and(|url| url.path() == "/login")
    })
    .await;
}

/// The rows of the table `css` (its `tbody tr`), as text.
async fn rows(browser: &fantoccini::Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for row in browser
        .find_all(fantoccini::Locator::Css(&format!("{css} tbody tr")))
        .await
        .unwrap_or_default()
    {
        texts.push(row.text().await.unwrap_or_default());
    }
    texts
}

#[test]
fn in_chromium_the_team_sees_calls_live_reads_them_and_hears_them() {
    use fantoccini::Locator;
    let dir = workdir("console_browser");
    let ports = Ports::slot(92);
    let console_port = ports.sip + 5;
    copy_caller_files(&dir);
    let (ana, vic) = (hash("ana-pw"), hash("vic-pw"));
    // A voice call needs the speech providers: the fake ones, with the
    // quick start's transcripts.
    let caller = std::path::Path::new(REPO).join("examples/caller");
    let (fake, providers) = quickstart_voice();
    let sav = Sav::start(&dir, ports, move |c| {
        let c = c.replace(
            "# recordings_dir = \"recordings\"",
            "recordings_dir = \"recordings\"",
        );
        format!(
            "{c}{}\n[console]\nlisten = \"127.0.0.1:{console_port}\"\n\
             [[console.users]]\nname = \"ana\"\nrole = \"supervisor\"\npassword_hash = \"{ana}\"\n\
             [[console.users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{vic}\"\n",
            providers
        )
    });
    // A finished voice call: the quick start's three sentences.
    let wav = |name: &str| caller.join(format!("{name}.wav")).display().to_string();
    let output = Command::new("timeout")
        .args(["-k", "5", "150"])
        .arg(env!("CARGO_BIN_EXE_sav"))
        .arg("call")
        .arg(format!("sip:sav@127.0.0.1:{}", ports.sip))
        .args([
            "--say",
            &wav("problem"),
            "--say",
            &wav("done"),
            "--say",
            &wav("works"),
        ])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        sav.log_text()
    );
    sav.wait_for_log("call outcome", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{console_port}");
    // Without a session: 401 from the API.
    assert_eq!(get(&base, "/api/live", None).0, StatusCode::UNAUTHORIZED);

    let driver = ChromeDriver::start(ports.sip + 6);
    let shots = dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = browser(ports.sip + 6, &dir.join("chromium-profile")).await;

        // The supervisor: the voice call's page, its transcript, its
        // timeline, and its recording played to the end, the transcript
        // following it.
        sign_in(&browser, &base, "ana", "ana-pw").await;
        browser.goto(&format!("{base}/calls")).await.unwrap();
        let first = browser
            .find(Locator::Css("table tbody tr td a"))
            .await
            .expect("the voice call in the list");
        first.click().await.unwrap();
        let transcript = rows(&browser, "#transcript").await;
        assert!(
            transcript.iter().any(|r| r.contains("caller") && r.contains("box")),
            "the caller's words: {transcript:?}"
        );
        assert!(transcript.iter().any(|r| r.contains("bot")), "{transcript:?}");
        browser
            .find(Locator::Css("figure.timeline svg"))
            .await
            .expect("the timeline drawing");
        // The providers' latencies: the STT of each turn at least.
        browser
            .find(Locator::Css("#requests tr[data-provider=stt]"))
            .await
            .expect("the providers' requests");
        let duration = browser
            .execute(
                "const a = document.getElementById('recording'); a.muted = true; a.playbackRate = 8; \
                 return a.play().then(() => a.duration);",
                vec![],
            )
            .await
            .expect("the recording plays");
        assert!(duration.as_f64().unwrap_or(0.0) > 5.0, "{duration}");
        until("the recording reaches its end", 300, || async {
            browser
                .execute("return document.getElementById('recording').ended;", vec![])
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        })
        .await;
        let current = browser
            .find(Locator::Css("#transcript tr.current"))
            .await
            .expect("the transcript follows the recording");
        let last = rows(&browser, "#transcript").await.pop().unwrap_or_default();
        assert_eq!(current.text().await.unwrap(), last, "at the end, the last turn");
        browser.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        screenshot(&browser, &shots, "call").await;

        // Live: a call placed by sipp shows while it runs and leaves when
        // it ends.
        browser.goto(&format!("{base}/live")).await.unwrap();
        assert!(rows(&browser, "#live").await.is_empty());
        let sipp_dir = dir.clone();
        let placed = std::thread::spawn(move || {
            sipp(
                &sipp_dir,
                "uac_flow_keys.xml",
                ports,
                &["-m", "1", "-d", "3000"],
                Duration::from_secs(90),
            )
        });
        until("the sipp call on the live view", 200, || async {
            rows(&browser, "#live").await.len() == 1
        })
        .await;
        let row = rows(&browser, "#live").await.remove(0);
        assert!(row.contains("+33612345678"), "a supervisor sees the number: {row}");
        // The flow moves on: the phase changes while the page stays.
        let phase = || async {
            browser
                .find(Locator::Css("#live tbody tr td.phase"))
                .await
                .ok()
        };
        let first_phase = match phase().await {
            Some(cell) => cell.text().await.unwrap_or_default(),
            None => String::new(),
        };
        assert!(!first_phase.is_empty(), "the live row shows no phase");
        // Seen while the row is there (a row gone is no phase change).
        until("another phase on the live view", 300, || async {
            match phase().await {
                Some(cell) => {
                    let now = cell.text().await.unwrap_or_default();
                    !now.is_empty() && now != first_phase
                }
                None => false,
            }
        })
        .await;
        screenshot(&browser, &shots, "live").await;
        let output = placed.join().unwrap();
        assert!(output.status.success(), "{}", sipp_report(&dir, &output));
        until("the call leaves the live view", 100, || async {
            rows(&browser, "#live").await.is_empty()
        })
        .await;

        // Search by number finds it.
        browser.goto(&format!("{base}/calls")).await.unwrap();
        browser
            .find(Locator::Css("input[name=search]"))
            .await
            .unwrap()
            .send_keys("612345678")
            .await
            .unwrap();
        browser
            .find(Locator::Css("form.filters button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until("the search's answer", 100, || async {
            browser
                .current_url()
                .await
                .is_ok_and(|url| url.query().is_some_and(|q| q.contains("search=612345678")))
        })
        .await;
        let found = rows(&browser, "table").await;
        assert_eq!(found.len(), 1, "{found:?}: {}", browser.source().await.unwrap_or_default());
        assert!(found[0].contains("+33612345678"), "{found:?}");
        screenshot(&browser, &shots, "search").await;
        sign_out(&browser).await;

        // The viewer: the same search, the number masked; no recording.
        sign_in(&browser, &base, "vic", "vic-pw").await;
        browser
            .goto(&format!("{base}/calls?search=5678"))
            .await
            .unwrap();
        let found = rows(&browser, "table").await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("…678") && !found[0].contains("612345678"),
            "{found:?}"
        );
        browser
            .find(Locator::Css("table tbody tr td a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // On the call's page (its transcript), and no player there.
        browser
            .wait()
            .for_element(Locator::Css("#transcript"))
            .await
            .expect("the call's page for a viewer");
        assert!(
            browser.find(Locator::Css("audio")).await.is_err(),
            "no recording for a viewer"
        );
        screenshot(&browser, &shots, "viewer").await;
        browser.goto(&format!("{base}/today")).await.unwrap();
        browser
            .find(Locator::Css("svg.chart"))
            .await
            .expect("the day's charts");
        // The voice call's turns were answered: their first audio measured.
        let figures = browser
            .find(Locator::Css("section.figures"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let p95 = figures
            .split("Premier son p95")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        assert!(p95.parse::<u64>().is_ok(), "first audio p95 {p95:?} in {figures}");
        screenshot(&browser, &shots, "today").await;
        browser.close().await.unwrap();
    });
    drop(driver);
    drop(fake);
}
