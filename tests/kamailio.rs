//! sav as an extension of a real registrar: Kamailio (Debian's package, the
//! configuration of `examples/kamailio/`) challenges its REGISTER, routes a
//! caller's INVITE for the extension to it, forgets it on a restart, and sees
//! the unREGISTER at shutdown.

mod support;

use std::time::{Duration, Instant};

use support::*;

const PASSWORD: &str = "s3cret";

#[test]
fn registers_with_kamailio_takes_routed_calls_and_survives_a_restart() {
    let dir = workdir("kamailio");
    let ports = Ports::slot(27);
    let kamailio_port = ports.sip + 5;
    let mut kamailio = Kamailio::start(&dir, kamailio_port, PASSWORD);
    utterance(&dir);
    let section = format!(
        "\n[sip.register]\nregistrar = \"sip:127.0.0.1:{kamailio_port}\"\nusername = \"1001\"\npassword_env = \"SAV_KAMAILIO_PASSWORD\"\nexpires = 10\nretry_min_secs = 1\nretry_max_secs = 4\n"
    );
    let mut sav = Sav::start_with_env(
        &dir,
        ports,
        |c| c.replacen("\n[media]", &format!("{section}\n[media]"), 1),
        &[("SAV_KAMAILIO_PASSWORD", PASSWORD)],
    );
    sav.wait_for_log("registered expires=10", Duration::from_secs(10));
    let k = kamailio.log_text();
    assert!(
        k.contains("REGISTER challenged user=1001") && k.contains("REGISTER accepted user=1001"),
        "{k}"
    );

    // A caller dials the extension at Kamailio; Kamailio routes it to sav.
    let call = |name: &str| {
        let call_dir = dir.join(name);
        std::fs::create_dir_all(&call_dir).unwrap();
        utterance(&call_dir);
        let via_kamailio = Ports {
            sip: kamailio_port,
            ..ports
        };
        sipp(
            &call_dir,
            "uac_stream.xml",
            via_kamailio,
            &["-s", "1001", "-m", "1", "-d", "2000"],
            Duration::from_secs(30),
        )
    };
    let first = call("first");
    assert!(
        first.status.success(),
        "call through Kamailio failed:\n{}",
        sipp_report(&dir.join("first"), &first)
    );
    assert!(kamailio.log_text().contains("routing INVITE for 1001"));
    assert_eq!(sav.log_text().matches("call established").count(), 1);

    // Kamailio dies and comes back empty: sav registers again by itself.
    let registrations_before = sav.log_text().matches("registered expires=").count();
    kamailio.restart(PASSWORD);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sav.log_text().matches("registered expires=").count() == registrations_before {
        assert!(
            Instant::now() < deadline,
            "no re-registration after the restart:\n{}",
            sav.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = call("second");
    assert!(
        second.status.success(),
        "call after the restart failed:\n{}",
        sipp_report(&dir.join("second"), &second)
    );
    assert_eq!(sav.log_text().matches("call established").count(), 2);

    // Shutdown: Expires 0 reaches the registrar.
    let status = sav.terminate();
    assert!(status.success(), "{status}");
    let k = kamailio.log_text();
    assert!(
        k.lines()
            .any(|l| l.contains("REGISTER accepted user=1001")
                && l.trim_end().ends_with("expires=0")),
        "no unREGISTER seen by Kamailio:\n{k}"
    );
}
