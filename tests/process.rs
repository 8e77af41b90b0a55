//! The process run inside the test (`app::run` told what to do through a
//! channel instead of signals), called by `sav call`'s code on loopback:
//! the drain and the reload without a binary or sipp.

mod support;

use std::time::{Duration, Instant};

use sav::app::{run, Control};
use sav::call::outbound::{place_call, CallError, CallRequest};
use sav::config::Config;
use sav::media::codec::CodecChoice;
use sav::sip::outbound::DialError;
use support::{sav_toml, workdir, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// GET `path` on sav's metrics listener: (status, body).
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Waits (at most 10 s) until `check` holds on `/metrics`.
async fn until_metrics(port: u16, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, body)) = http_get(port, "/metrics").await {
            if check(&body) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn active_calls(metrics: &str) -> Option<u32> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sav_active_calls "))
        .and_then(|v| v.trim().parse().ok())
}

/// `run` on `ports` in a task, ready for calls.
async fn start(
    name: &str,
    ports: Ports,
    config_path: Option<std::path::PathBuf>,
) -> (
    Config,
    mpsc::Sender<Control>,
    tokio::task::JoinHandle<Result<(), sav::app::ServeError>>,
) {
    // SAV_TEST_LOG=debug shows sav's log lines of the failing test.
    if let Ok(filter) = std::env::var("SAV_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = workdir(name);
    let config = Config::from_toml(&sav_toml(ports), "test", &dir).expect("test config");
    let (control, controlled) = mpsc::channel(4);
    let process = tokio::spawn(run(config.clone(), config_path, controlled));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(ports.metrics, "/healthz").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (config, control, process)
}

fn call_sav(ports: Ports, seconds: u64) -> CallRequest {
    CallRequest {
        target: format!("sip:sav@127.0.0.1:{}", ports.sip),
        play: None,
        record: None,
        duration: Some(Duration::from_secs(seconds)),
        turns: Vec::new(),
        codecs: CodecChoice::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_refuses_new_calls_lets_the_call_in_progress_drain_then_ends_it() {
    let ports = Ports::slot(72);
    let (config, control, process) = start("process_drain", ports, None).await;
    let caller = config.sip.clone();
    let call = tokio::spawn(async move { place_call(&caller, call_sav(ports, 30)).await });
    until_metrics(ports.metrics, "one call up", |m| active_calls(m) == Some(1)).await;

    let stopped = Instant::now();
    control.send(Control::Stop).await.unwrap();
    // Draining: a new call is refused with 503.
    let late = place_call(&config.sip, call_sav(ports, 1)).await;
    assert!(
        matches!(&late, Err(CallError::Dial(DialError::NotAnswered(why))) if why.starts_with("503")),
        "{:?}",
        late.map(|s| s.to_string())
    );
    let summary = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call ended")
        .unwrap()
        .expect("the call was answered");
    let took = stopped.elapsed();
    assert!(summary.remote_hung_up, "sav ended the call:\n{summary}");
    assert!(
        took >= Duration::from_secs(2),
        "the call had its 2 s of drain: {took:?}"
    );
    assert!(summary.received > 50, "the greeting was heard:\n{summary}");
    let ended = tokio::time::timeout(Duration::from_secs(20), process)
        .await
        .expect("the process stopped");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_does_not_load_changes_nothing_and_calls_go_on() {
    let ports = Ports::slot(73);
    let broken = workdir("process_reload_file").join("sav.toml");
    std::fs::write(&broken, "[sip\nlisten = ").unwrap();
    let (config, control, process) = start("process_reload", ports, Some(broken)).await;
    control.send(Control::Reload).await.unwrap();
    let summary = place_call(&config.sip, call_sav(ports, 2))
        .await
        .expect("answered after the refused reload");
    assert_eq!(summary.status, 200);
    assert!(
        summary.first_audio.is_some() && summary.received > 50,
        "the greeting was heard:\n{summary}"
    );
    control.send(Control::Stop).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), process)
        .await
        .expect("the process stopped");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
}
