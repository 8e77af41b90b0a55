//! The installed layout starts: `scripts/install.sh --root` lays out the
//! binary, the read-only configuration and cache, the state directory and
//! the systemd unit in a temporary root; `systemd-analyze verify` checks the
//! unit against it; sav then runs from it the way the unit runs it (another
//! user, who can write the state directory and nothing else), from another
//! working directory, and so does the container's entry point.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The unprivileged user sav runs as when the test is root (the unit's
/// DynamicUser; the image's `sav`).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory every user can reach (the user sav runs as must walk
/// to its files).
fn open_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("sav-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn install(root: &Path) -> String {
    let out = Command::new(Path::new(REPO).join("scripts/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_sav"))
        .output()
        .expect("run scripts/install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

/// What an operator does to /etc/sav/sav.toml before the first start (this
/// test's ports), then the tree made as the unit sees it: configuration and
/// cache read-only, the state directory the service user's.
fn lock_down(root: &Path, ports: Ports) {
    let config = root.join("etc/sav/sav.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = with_ports(&text, ports)
        .replace("code_at_start = true", "code_at_start = false")
        .replace("drain_secs = 30", "drain_secs = 2");
    std::fs::write(&config, text).unwrap();
    for dir in ["etc/sav", "usr/share/sav/cache", "usr/share/sav"] {
        let dir = root.join(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let state = root.join("var/lib/sav");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    if is_root() {
        let c = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) }, 0);
    }
}

/// `program args…` as the service's user (when the test can switch), from
/// `/`.
fn as_service(program: &Path, args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir("/").env("NO_COLOR", "1");
    cmd
}

/// Waits (bounded) for `/readyz` to answer 200.
fn wait_ready(port: u16, child: &mut std::process::Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sav exited at start ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if http_get(port, "/readyz").map(|r| r.0) == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process killed (and reaped) when the test ends, even by a panic: no
/// orphan keeps this test's ports for the next run.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The temporary root, writable again and removed when the test ends.
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_unit_layout_verifies_and_starts_with_only_its_state_directory_writable() {
    let root = open_root("install");
    let _tree = Tree(root.clone());
    let ports = Ports::slot(84);
    let printed = install(&root);
    let config = root.join("etc/sav/sav.toml");
    let state = root.join("var/lib/sav");
    assert!(
        printed.contains(&format!("config ok: {}", config.display())),
        "{printed}"
    );
    for file in [
        "usr/local/bin/sav",
        "usr/share/sav/cache/manifest.toml",
        "usr/share/sav/cache/greet.wav",
        "etc/systemd/system/sav.service",
        "usr/local/share/man/man1/sav.1",
        "usr/local/share/bash-completion/completions/sav",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed");
    }
    let installed = std::fs::read_to_string(&config).unwrap();
    assert!(installed.contains(&format!("url = \"sqlite://{}/sav.db\"", state.display())));

    // The unit, checked by systemd against the tree (its executables, its
    // directives), with the system's own units beside it.
    require_tool("systemd-analyze");
    let system = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&system).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(&system)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy("/usr/bin/kill", root.join("usr/bin/kill")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(root.join("etc/systemd/system/sav.service"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        verify.status
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/sav.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/sav serve --config /etc/sav/sav.toml",
        "StateDirectory=sav",
        "WorkingDirectory=/var/lib/sav",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no {line}");
    }

    // The service: another user, from /, its configuration and cache
    // read-only.
    lock_down(&root, ports);
    let sav = root.join("usr/local/bin/sav");
    let check = as_service(
        &sav,
        &["--config", config.to_str().unwrap(), "check-config"],
    )
    .output()
    .unwrap();
    let checked = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && checked.contains(" phrases, "),
        "{checked}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = root.join("serve.log");
    let mut child = Running(
        as_service(&sav, &["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ready(ports.metrics, &mut child.0, &log);
    // The store is made in the state directory, by the service's user.
    let db = state.join("sav.db");
    assert!(db.is_file(), "no {}", db.display());
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&db).unwrap().uid(), NOBODY);
    }
    // A call runs to its end ('#': goodbye, BYE).
    utterance(&root);
    dtmf_pound_pcap(&root);
    let output = sipp(
        &root,
        "uac_dtmf_hangup.xml",
        ports,
        &["-m", "1"],
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}\n{}",
        sipp_report(&root, &output),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let status = terminate(&mut child.0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
    assert!(
        text.contains("call outcome"),
        "the call ran to its end:\n{text}"
    );
}

/// The container's entry point, run on the installed tree: it refuses a
/// state directory it cannot write with the fix in its message, and
/// otherwise checks the configuration and becomes `sav serve` (SIGTERM
/// drains it, exit 0). Its health check is the Dockerfile's own command.
#[test]
fn the_image_entry_point_checks_its_volume_then_serves() {
    let root = open_root("entrypoint");
    let _tree = Tree(root.clone());
    let ports = Ports::slot(85);
    install(&root);
    lock_down(&root, ports);
    let bin = root.join("usr/local/bin");
    let entrypoint = Path::new(REPO).join("docker/entrypoint.sh");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |state: &Path| {
        let mut cmd = as_service(&entrypoint, &[]);
        cmd.env("PATH", &path)
            .env("SAV_CONFIG", root.join("etc/sav/sav.toml"))
            .env("SAV_STATE_DIR", state);
        cmd
    };
    // The configuration's directory stands for a volume the user cannot
    // write.
    let refused = run(&root.join("etc/sav")).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("is not a directory uid") && said.contains("-v sav-data:"),
        "{said}"
    );

    let log = root.join("entrypoint.log");
    let mut child = Running(
        run(&root.join("var/lib/sav"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ready(ports.metrics, &mut child.0, &log);
    // The Dockerfile's HEALTHCHECK, on this test's metrics port.
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let health = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("HEALTHCHECK "))
        .and_then(|l| l.split_once("CMD "))
        .map(|(_, cmd)| cmd)
        .expect("a HEALTHCHECK");
    let health: Vec<String> = serde_json::from_str(health).expect("exec form");
    let probe = |port: u16| {
        Command::new(&health[0])
            .args(
                health[1..]
                    .iter()
                    .map(|a| a.replace("9464", &port.to_string())),
            )
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(probe(ports.metrics), "the health check fails on a live sav");
    assert!(!probe(1), "the health check passes where nothing listens");
    // sav is the process (exec): SIGTERM reaches it and it drains.
    let status = terminate(&mut child.0);
    assert!(
        status.success(),
        "{status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
