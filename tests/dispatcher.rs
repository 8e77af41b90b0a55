//! Scale-out on existing engines: Kamailio's dispatcher (Debian's package,
//! `examples/kamailio-dispatcher/kamailio.cfg`) in front of two `sav serve`
//! instances sharing one PostgreSQL database. Calls spread over both,
//! customers and call records are shared, each CRM event is delivered once
//! although both instances poll the outbox, and when one instance is stopped
//! the next calls go to the other without a failed call.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::webhook::Webhook;
use support::*;

/// Kamailio with the dispatcher example, on `port`; killed on drop.
struct Dispatcher {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Dispatcher {
    fn start(dir: &Path, port: u16, instances: &[u16]) -> Dispatcher {
        require_tool("kamailio");
        let list = dir.join("dispatcher.list");
        let mut text = String::new();
        for sip in instances {
            text.push_str(&format!("1 sip:127.0.0.1:{sip}\n"));
        }
        std::fs::write(&list, text).unwrap();
        let run_dir = dir.join("kamailio-run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let log = dir.join("kamailio.log");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(Path::new(REPO).join("examples/kamailio-dispatcher/kamailio.cfg"))
            .args(["-DD", "-E", "-l"])
            .arg(format!("udp:127.0.0.1:{port}"))
            .arg("-Y")
            .arg(&run_dir)
            .arg("-A")
            .arg(format!("DISPATCHER_LIST=\"{}\"", list.display()))
            .args(["-A", "PING_INTERVAL=1", "-A", "CHILDREN=1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kamailio");
        let d = Dispatcher { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while udp_exchange(
            port,
            &sip_request("OPTIONS", port, "", &[]),
            Duration::from_millis(300),
        )
        .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("udp:127.0.0.1:{}", self.port))
            .status();
    }
}

/// Callers from these numbers, through the dispatcher, one after another,
/// each on the line for 2.5 s.
fn calls(dir: &Path, via: Ports, numbers: &[&str]) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("numbers.csv");
    let mut text = String::from("SEQUENTIAL\n");
    for n in numbers {
        text.push_str(&format!("{n};\n"));
    }
    std::fs::write(&file, text).unwrap();
    sipp(
        dir,
        "uac_numbers.xml",
        via,
        &[
            "-inf",
            &file.display().to_string(),
            "-m",
            &numbers.len().to_string(),
            "-l",
            "1",
            "-d",
            "2500",
        ],
        Duration::from_secs(120),
    )
}

fn established(sav: &Sav) -> usize {
    sav.log_text().matches("call established").count()
}

#[test]
fn two_instances_behind_kamailio_share_postgres_and_survive_a_stop() {
    require_tool("kamailio");
    let dir = workdir("dispatcher");
    let url = postgres_db("dispatcher");
    let webhook = Webhook::start();
    let (a_ports, b_ports) = (Ports::slot(70), Ports::slot(71));
    let instance = |name: &'static str| {
        let url = url.clone();
        let crm = webhook.config();
        move |c: String| {
            c.replace("url = \"sqlite://sav.db\"", &format!("url = \"{url}\""))
                .replace("# instance = \"sav-1\"", &format!("instance = \"{name}\""))
                + &crm
        }
    };
    let a_dir = dir.join("a");
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut a = Sav::start(&a_dir, a_ports, instance("sav-a"));
    let b = Sav::start(&b_dir, b_ports, instance("sav-b"));

    // Customers imported once, through either instance's configuration.
    let csv = dir.join("customers.csv");
    std::fs::write(
        &csv,
        "phone,title,first_name,last_name\n+33612345678,Monsieur,Jean,Dupont\n",
    )
    .unwrap();
    let import = sav_import(&a_dir.join("sav.toml"), &csv);
    assert!(import.status.success(), "{import:?}");

    let kamailio_port = a_ports.sip + 5;
    let kamailio = Dispatcher::start(&dir, kamailio_port, &[a_ports.sip, b_ports.sip]);
    let via = Ports {
        sip: kamailio_port,
        ..a_ports
    };

    // Six calls, the known customer each time: three on each instance, and
    // each instance knows him.
    let first = calls(&dir.join("first"), via, &["+33612345678"; 6]);
    assert!(
        first.status.success(),
        "{}\n{}",
        sipp_report(&dir.join("first"), &first),
        kamailio.log_text()
    );
    assert_eq!((established(&a), established(&b)), (3, 3), "round-robin");
    for sav in [&a, &b] {
        assert_eq!(
            sav.log_text().matches("known customer").count(),
            3,
            "customers are shared"
        );
    }

    // Instance A stops (SIGTERM: it drains, answers 503, then exits); the
    // next four calls all go to B, none fails.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(a.pid().to_string())
        .status();
    let second = calls(&dir.join("second"), via, &["+33700000009"; 4]);
    assert!(
        second.status.success(),
        "a call failed while an instance stopped:\n{}\n{}",
        sipp_report(&dir.join("second"), &second),
        kamailio.log_text()
    );
    assert!(a.wait_exit(Duration::from_secs(20)).success());
    assert_eq!((established(&a), established(&b)), (3, 7));

    // The records of both instances are in the one database, and each call's
    // CRM event arrived exactly once.
    webhook.wait_for(10, Duration::from_secs(20));
    // Any duplicate would come within the retry back-off (≤ 1 s).
    std::thread::sleep(Duration::from_secs(2));
    let events = webhook.events();
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {}", e["id"], e["outcome"], e["sip_call_id"]))
        .collect();
    assert_eq!(ids.len(), 10, "one event per call, no more: {summary:#?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each event once");
    let rows = Command::new("psql")
        .args([&url, "-At", "-c"])
        .arg("SELECT instance, count(*) FROM calls GROUP BY instance ORDER BY instance")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "sav-a|3\nsav-b|7"
    );
    let log = kamailio.log_text();
    write_report(
        "dispatcher-report.txt",
        &format!(
            "dispatcher: 6 calls → a 3 / b 3; a stopped; 4 calls → b 4, 0 failed; \
             10 CRM events, each once; INVITEs retried on the next instance: {}\n",
            log.matches("failed the INVITE").count()
        ),
    );
    drop(b);
}
