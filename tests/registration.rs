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
