//! SIP scanners against sav on an untrusted address: sipvicious's `svmap`
//! (which SIP devices answer, and what they are) and `svwar` (which
//! extensions exist). The policy this test states: a scanner that names
//! itself ("friendly-scanner", sipvicious's own user agent) is banned at its
//! first message (here each of its messages is refused, bans off) and
//! learns nothing, not even that a SIP device is there; a
//! prober that hides its name learns that a device answers OPTIONS, with
//! `sav` and no version, and that INVITEs to users that are not ours meet
//! silence, as do those of a source over its limits.

mod support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use support::raw_uac::{drain, header, invite_text, options_text};
use support::*;

fn run(tool: &str, args: &[&str]) -> String {
    require_tool(tool);
    let output = Command::new("timeout")
        .arg("60")
        .arg(tool)
        .args(args)
        .output()
        .expect("run the scanner");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn scanners_learn_what_the_policy_allows() {
    let dir = workdir("scanners");
    let ports = Ports::slot(40);
    // The scanners send from 127.0.0.1 whatever their -b says: it is not
    // trusted here. Without bans, each tool is judged on its own messages.
    let _sav = Sav::start(&dir, ports, |c| {
        c.replace("users = []", "users = [\"1001\"]")
            .replace("trusted = [\"127.0.0.1\", \"::1\"]", "trusted = []")
            .replace("ban_secs = 600", "ban_secs = 0")
    });
    let target = format!("127.0.0.1:{}", ports.sip);

    // svmap: is there a SIP device, and which?
    let sip_port = ports.sip.to_string();
    let svmap = run("svmap", &["-p", &sip_port, "-t", "0.2", "127.0.0.1"]);
    // svwar: which extensions of 1000-1010 exist (INVITE, then the default
    // REGISTER)?
    let svwar_invite = run(
        "svwar",
        &[
            "-m",
            "INVITE",
            "-e",
            "1000-1010",
            "-t",
            "0.2",
            &format!("udp://{target}"),
        ],
    );
    let svwar_register = run(
        "svwar",
        &["-e", "1000-1010", "-t", "0.2", &format!("udp://{target}")],
    );
    let report = format!(
        "svmap:\n{svmap}\nsvwar -m INVITE:\n{svwar_invite}\nsvwar (REGISTER):\n{svwar_register}\n"
    );
    write_report("scanners-report.txt", &report);
    assert!(svmap.contains("found nothing"), "{report}");
    assert!(
        !svmap.contains(&target) && !svmap.contains("sav"),
        "{report}"
    );
    assert!(!svwar_invite.contains("1001"), "{report}");
    assert!(!svwar_register.contains("1001"), "{report}");

    // A prober that hides its name (127.0.0.7).
    let prober = UdpSocket::bind("127.0.0.7:0").unwrap();
    let port = prober.local_addr().unwrap().port();
    let options = options_text("127.0.0.7", port, ports.sip, 1, Some("Mozilla/5.0"));
    prober
        .send_to(options.as_bytes(), ("127.0.0.1", ports.sip))
        .unwrap();
    let answers = drain(&prober, Duration::from_millis(1_000));
    let ok = answers
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("OPTIONS answered: {answers:?}"));
    let agent = header(ok, "User-Agent").or_else(|| header(ok, "Server"));
    assert_eq!(agent, Some("sav"), "{ok}");
    // An INVITE to a user that is not ours: silence. To ours: answered.
    for (user, answered) in [("1002", false), ("1001", true)] {
        let invite = invite_text(
            "127.0.0.7",
            port,
            ports.sip,
            &format!("probe-{user}@x"),
            40_000,
            Some("Mozilla/5.0"),
        )
        .replace("INVITE sip:sav@", &format!("INVITE sip:{user}@"));
        prober
            .send_to(invite.as_bytes(), ("127.0.0.1", ports.sip))
            .unwrap();
        let got = drain(&prober, Duration::from_millis(1_000));
        assert_eq!(
            got.iter().any(|m| m.starts_with("SIP/2.0 200")),
            answered,
            "INVITE to {user}: {got:?}"
        );
        if !answered {
            assert!(got.is_empty(), "INVITE to {user}: {got:?}");
        }
    }

    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let scanners = counter(&metrics, "sav_sip_refused_total", "reason=\"scanner\"");
    let unknown = counter(&metrics, "sav_sip_refused_total", "reason=\"unknown_user\"");
    assert!(scanners >= 3, "{scanners} scanners' messages refused");
    assert_eq!(unknown, 1);
}
