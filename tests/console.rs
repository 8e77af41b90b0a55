//! The console over HTTP, as its pages and a CRM use it: a guided call by
//! keys lands in the store; then sign-in (argon2 hashes made by `sav
//! hash-password`), the calls list and one call as JSON and as a page, the
//! viewer's masked numbers and the supervisor's full ones, search by
//! number, 401 without a session, CSRF on sign-out; and a console beyond
//! loopback without users refused at start.

mod support;

use std::io::Write;
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

#[test]
fn calls_are_listed_searched_and_masked_by_role_behind_a_sign_in() {
    let dir = workdir("console_calls");
    let ports = Ports::slot(90);
    let console_port = ports.sip + 5;
    copy_caller_files(&dir);
    let (ana, vic) = (hash("ana-pw"), hash("vic-pw"));
    let sav = Sav::start(&dir, ports, move |c| {
        let c = c.replace(
            "# recordings_dir = \"recordings\"",
            "recordings_dir = \"recordings\"",
        );
        format!(
            "{c}\n[console]\nlisten = \"127.0.0.1:{console_port}\"\n\
             [[console.users]]\nname = \"ana\"\nrole = \"supervisor\"\npassword_hash = \"{ana}\"\n\
             [[console.users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{vic}\"\n"
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
            "<audio controls preload=\"none\" src=\"{recording}\""
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

    // Signing out needs the page's CSRF token.
    let (_, page) = get(&base, "/calls", Some(&supervisor));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form's token")
        .to_string();
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
