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
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
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

fn json(base: &str, path: &str, cookie: &str) -> serde_json::Value {
    let (status, body) = get(base, path, Some(cookie));
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
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
        list = json(&base, "/api/calls", &viewer);
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
        json(&base, "/api/calls?search=5678", &viewer)["calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(json(&base, "/api/calls?search=0999", &viewer)["calls"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        json(&base, "/api/calls?outcome=transferred", &viewer)["calls"]
            .as_array()
            .unwrap()
            .is_empty()
    );
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
    let one = json(&base, &format!("/api/calls/{id}"), &viewer);
    assert_eq!(one["caller"], "…678");
    assert!(
        one["transcript"].as_array().is_some_and(|t| !t.is_empty()),
        "{one}"
    );

    // The supervisor: in full, and found by the full number.
    let supervisor = login(&base, "ana", "ana-pw").unwrap();
    let found = json(&base, "/api/calls?search=%2B33612345678", &supervisor);
    assert_eq!(found["calls"][0]["caller"], "+33612345678", "{found}");
    assert_eq!(
        json(&base, &format!("/api/calls/{id}"), &supervisor)["caller"],
        "+33612345678"
    );
    assert_eq!(
        get(&base, "/api/calls?day=2026-13-40", Some(&supervisor)).0,
        StatusCode::BAD_REQUEST
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
    assert!(
        today["turns"].as_u64().unwrap_or(0) >= 3,
        "three keys answered: {today}"
    );
    assert!(today["first_audio_p95_ms"].as_u64().is_some(), "{today}");
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
        get(&base, "/api/calls", Some(&supervisor)).0,
        StatusCode::OK,
        "a refused sign-out leaves the session"
    );
    assert_eq!(logout(&csrf), StatusCode::SEE_OTHER);
    assert_eq!(
        get(&base, "/api/calls", Some(&supervisor)).0,
        StatusCode::UNAUTHORIZED
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
