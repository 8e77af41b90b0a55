//! Registration as an extension, against sipp registrars that challenge the
//! way real ones do.

mod support;

use std::time::Duration;

use support::*;

const PASSWORD: (&str, &str) = ("SAV_TEST_SIP_PASSWORD", "s3cret");

/// sav's config registering to a registrar on loopback `port`.
fn register_config(port: u16, extra: &str) -> impl FnOnce(String) -> String {
    let section = format!(
        "\n[sip.register]\nregistrar = \"sip:127.0.0.1:{port}\"\nusername = \"1001\"\npassword_env = \"{}\"\nexpires = 10\nretry_min_secs = 1\nretry_max_secs = 4\n{extra}",
        PASSWORD.0
    );
    move |config: String| {
        // The section goes right after [sip]'s own keys.
        config.replacen("\n[media]", &format!("{section}\n[media]"), 1)
    }
}

#[test]
fn registers_through_401_and_407_refreshes_and_unregisters_on_shutdown() {
    let dir = workdir("register_401_407");
    let ports = Ports::slot(10);
    let registrar_port = ports.sipp;
    let registrar = sipp_uas(
        &dir,
        "uas_registrar.xml",
        registrar_port,
        &["-m", "1"],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut sav = Sav::start_with_env(
        &dir,
        ports,
        register_config(registrar_port, ""),
        &[PASSWORD],
    );
    sav.wait_for_log("registered expires=10", Duration::from_secs(10));
    // Wait for the refresh (at 8.5 s), then shut down.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sav.log_text().matches("registered expires=10").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh:\n{}",
            sav.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = sav.terminate();
    assert!(status.success(), "{status}\n{}", sav.log_text());
    let output = sipp_wait(registrar);
    assert!(
        output.status.success(),
        "the registrar saw a wrong digest or a missing REGISTER:\n{}\nsav:\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );
    assert!(sav.log_text().contains("unregistered"));
}

/// The parameters of a logged `Digest …` Authorization value.
fn digest_params(value: &str) -> std::collections::HashMap<String, String> {
    let body = value.trim().trim_start_matches("Digest").trim();
    let mut params = std::collections::HashMap::new();
    for part in body.split(", ") {
        if let Some((k, v)) = part.split_once('=') {
            params.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    params
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn answers_sha256_first_of_two_challenges_and_a_stale_nonce() {
    let dir = workdir("register_sha256");
    let ports = Ports::slot(11);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar_sha256.xml",
        ports.sipp,
        &["-m", "1", "-trace_logs"],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sav = Sav::start_with_env(&dir, ports, register_config(ports.sipp, ""), &[PASSWORD]);
    sav.wait_for_log("registered expires=60", Duration::from_secs(10));
    let output = sipp_wait(registrar);
    assert!(output.status.success(), "{}", sipp_report(&dir, &output));

    // Check both SHA-256 responses independently of sav's digest code.
    let logs: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_logs.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for (label, nonce) in [("AUTH1 ", "sha1nonce"), ("AUTH2 ", "sha2nonce")] {
        let line = logs
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label} not logged:\n{logs}"));
        let value = &line[line.find(label).unwrap() + label.len()..];
        let p = digest_params(value);
        assert_eq!(p["algorithm"], "SHA-256", "{value}");
        assert_eq!(p["nonce"], nonce, "{value}");
        assert_eq!(p["qop"], "auth", "{value}");
        assert_eq!(p["opaque"], "op1", "{value}");
        let ha1 = sha256_hex(&format!("1001:sav.test:{}", PASSWORD.1));
        let ha2 = sha256_hex(&format!("REGISTER:{}", p["uri"]));
        let expected = sha256_hex(&format!(
            "{ha1}:{nonce}:{}:{}:auth:{ha2}",
            p["nc"], p["cnonce"]
        ));
        assert_eq!(p["response"], expected, "{label}{value}");
    }
}

#[test]
fn wrong_password_is_logged_and_retried_with_back_off_not_in_a_loop() {
    let dir = workdir("register_reject");
    let ports = Ports::slot(12);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar_reject.xml",
        ports.sipp,
        &[],
        Duration::from_secs(12),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sav = Sav::start_with_env(&dir, ports, register_config(ports.sipp, ""), &[PASSWORD]);
    let _ = sipp_wait(registrar); // ended by its 12 s time limit
    let messages: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let registers = messages.matches("\nREGISTER sip:").count();
    // Back-off from 1 s doubling to 4 s, two REGISTERs per attempt (the
    // challenge answered once): about 10 in 12 s. A tight loop sends thousands.
    assert!(
        (4..=16).contains(&registers),
        "{registers} REGISTERs in 12 s\n{}",
        sav.log_text()
    );
    let log = sav.log_text();
    assert!(log.contains("credentials rejected"), "{log}");
    assert!(log.contains("retry_in_ms"), "{log}");
}

#[test]
fn interval_too_brief_is_retried_with_min_expires() {
    let dir = workdir("register_423");
    let ports = Ports::slot(13);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar_423.xml",
        ports.sipp,
        &["-m", "1"],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sav = Sav::start_with_env(&dir, ports, register_config(ports.sipp, ""), &[PASSWORD]);
    sav.wait_for_log("registered expires=120", Duration::from_secs(10));
    let output = sipp_wait(registrar);
    assert!(output.status.success(), "{}", sipp_report(&dir, &output));
}

#[test]
fn a_natted_registration_moves_contact_to_the_seen_address_at_once() {
    let dir = workdir("register_nat");
    let ports = Ports::slot(33);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar_nat.xml",
        ports.sipp,
        &["-m", "1"],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sav = Sav::start_with_env(&dir, ports, register_config(ports.sipp, ""), &[PASSWORD]);
    let output = sipp_wait(registrar);
    assert!(output.status.success(), "{}", sipp_report(&dir, &output));
    let log = sav.log_text();
    assert!(
        log.contains("registrar sees us at another address"),
        "{log}"
    );
    let messages: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    // The second REGISTER, right after the first 200, names the NAT address.
    assert!(
        messages.contains(&format!("Contact: <sip:1001@10.9.9.9:{}>", ports.sip)),
        "{messages}"
    );
}

#[test]
fn registering_over_tcp_says_tcp_in_via_and_contact_and_learns_nothing() {
    let dir = workdir("register_tcp");
    let ports = Ports::slot(34);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar_once.xml",
        ports.sipp,
        &["-m", "1", "-t", "t1"],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    let tcp = format!("sip:127.0.0.1:{};transport=tcp", ports.sipp);
    let sav = Sav::start_with_env(
        &dir,
        ports,
        move |c| {
            register_config(ports.sipp, "")(c).replace(
                &format!("\"sip:127.0.0.1:{}\"", ports.sipp),
                &format!("\"{tcp}\""),
            )
        },
        &[PASSWORD],
    );
    sav.wait_for_log("registered expires=60", Duration::from_secs(10));
    let _ = sipp_wait(registrar); // its second REGISTER never comes: it times out
    let messages: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let register = messages
        .split("REGISTER sip:")
        .nth(1)
        .expect("a REGISTER in the trace");
    assert!(register.contains("Via: SIP/2.0/TCP"), "{register}");
    assert!(register.contains(";transport=tcp>"), "{register}");
    assert!(
        !sav.log_text()
            .contains("registrar sees us at another address"),
        "{}",
        sav.log_text()
    );
}

/// Even at trace level, the log holds no password, no digest credentials
/// and no caller number in full; nor do `/metrics` and `check-config`. The
/// raw SIP is there, redacted (a REGISTER through its 401, then a call).
#[test]
fn nothing_secret_or_personal_reaches_the_log_even_at_trace() {
    let dir = workdir("register_redacted_log");
    let ports = Ports::slot(41);
    let registrar = sipp_uas(
        &dir,
        "uas_registrar.xml",
        ports.sipp,
        &["-m", "1"],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut sav = Sav::start_with_env(
        &dir,
        ports,
        register_config(ports.sipp, ""),
        &[PASSWORD, ("RUST_LOG", "trace")],
    );
    sav.wait_for_log("registered expires=10", Duration::from_secs(10));
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = media.local_addr().unwrap().port();
    let call = support::raw_uac::RawCall::call(ports.sip, port, "redacted").expect("answered");
    std::thread::sleep(Duration::from_millis(500));
    let _ = call.hang_up();
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sav"))
        .arg("--config")
        .arg(dir.join("sav.toml"))
        .arg("check-config")
        .env(PASSWORD.0, PASSWORD.1)
        .output()
        .expect("run check-config");
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    sav.terminate();
    let _ = sipp_wait(registrar);
    let log = sav.log_text();
    // The raw SIP is logged, redacted.
    assert!(
        log.contains("SIP out") && log.contains("REGISTER sip:127.0.0.1"),
        "no raw SIP at trace"
    );
    assert!(log.contains("Authorization: <redacted>"), "{log}");
    for (place, text) in [
        ("log", &log),
        ("/metrics", &metrics),
        ("check-config", &check),
    ] {
        for secret in [PASSWORD.1, "response=", "cnonce=", "33100000000"] {
            let at = text.find(secret);
            assert!(
                at.is_none(),
                "{secret:?} in the {place}: …{}…",
                &text[at.unwrap_or(0).saturating_sub(300)..(at.unwrap_or(0) + 100).min(text.len())]
            );
        }
    }
}

/// A registrar that grants 10 s to the first REGISTER and then goes silent
/// (a black hole, as a registrar behind a dead link is): readiness turns
/// 503 when the granted 10 s pass, not when the refresh's transaction gives
/// up 32 s after it was sent.
#[test]
fn readiness_follows_the_binding_when_the_registrar_goes_silent() {
    let dir = workdir("register_lapse");
    let ports = Ports::slot(81);
    let registrar = std::net::UdpSocket::bind(("127.0.0.1", ports.sipp)).unwrap();
    registrar
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (len, from) = registrar.recv_from(&mut buf).expect("a REGISTER");
        let request = String::from_utf8_lossy(&buf[..len]).to_string();
        assert!(request.starts_with("REGISTER "), "{request}");
        let h = |name| header(&request, name).unwrap_or_default().to_string();
        let response = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=reg1\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: {};expires=10\r\nContent-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("To"),
            h("Call-ID"),
            h("CSeq"),
            h("Contact"),
        );
        registrar.send_to(response.as_bytes(), from).unwrap();
        // Then silence: every later REGISTER is read and left unanswered.
        let mut unanswered = 0;
        while let Ok((len, _)) = registrar.recv_from(&mut buf) {
            if buf[..len].starts_with(b"REGISTER ") {
                unanswered += 1;
            }
            if unanswered >= 3 {
                break;
            }
        }
        unanswered
    });
    let sav = Sav::start_with_env(&dir, ports, register_config(ports.sipp, ""), &[PASSWORD]);
    sav.wait_for_log("registered expires=10", Duration::from_secs(10));
    let registered_at = std::time::Instant::now();
    assert_eq!(http_get(ports.metrics, "/readyz").map(|r| r.0), Some(200));
    // Ready until the 10 s granted have passed, then not.
    let deadline = registered_at + Duration::from_secs(20);
    let not_ready_after = loop {
        let (status, why) = http_get(ports.metrics, "/readyz").expect("/readyz answers");
        if status == 503 {
            assert!(why.contains("registration failing"), "{why}");
            break registered_at.elapsed();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready 20 s after a 10 s binding:\n{}",
            sav.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        not_ready_after >= Duration::from_secs(8) && not_ready_after < Duration::from_secs(13),
        "not ready {not_ready_after:?} after registering with 10 s granted"
    );
    sav.wait_for_log("registration lapsed", Duration::from_secs(2));
    assert_eq!(http_get(ports.metrics, "/livez").map(|r| r.0), Some(200));
    drop(sav);
    let unanswered = answering.join().unwrap();
    assert!(unanswered >= 1, "the refresh was sent");
}
