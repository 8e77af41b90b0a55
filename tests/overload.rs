//! Overload: while sav is full (`max_calls`), a trusted PBX sends far more
//! calls than it can take and a stranger floods the live call's RTP port.
//! Every extra INVITE gets 503 with Retry-After and costs no call, every
//! stray packet is dropped and counted, sav's memory stays put, and the
//! live call's RTP, captured on the wire, keeps its pace. Alone in its
//! binary: nothing else of its own runs beside it while it measures.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::raw_uac::{count_rtp, rtp_packet, RawCall};
use support::*;

/// INVITEs the PBX sends beyond capacity, and how fast.
const INVITES: u32 = 2_000;
const INVITE_RATE: u32 = 500;
/// Stray RTP packets at the live call's port, and how fast.
const STRAY_PACKETS: u32 = 60_000;
const STRAY_RATE: u32 = 15_000;

/// One flood (`round` names its directory): the stranger's RTP at the
/// live call's port (`sav_rtp`) and, meanwhile, the PBX's INVITEs; what
/// the stranger sent, and sipp's run.
fn flood(
    dir: &std::path::Path,
    ports: Ports,
    sav_rtp: u16,
    round: u32,
) -> (u32, std::path::PathBuf, std::process::Output) {
    // The stranger: valid RTP (PCMU, its own SSRC) from 127.0.0.5, a few
    // packets every millisecond.
    let stray = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.5:0").unwrap();
        let started = Instant::now();
        let per_ms = STRAY_RATE / 1000;
        let mut sent = 0u32;
        while sent < STRAY_PACKETS && started.elapsed() < Duration::from_secs(20) {
            for _ in 0..per_ms {
                let packet = rtp_packet(0xBAD0_5EED, sent as u16, sent * 160, None);
                if socket.send_to(&packet, ("127.0.0.1", sav_rtp)).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    let pbx_dir = dir.join(format!("pbx{round}"));
    std::fs::create_dir_all(&pbx_dir).unwrap();
    let pbx_ports = Ports {
        sipp: ports.sipp + 5,
        sipp_media: ports.sipp_media + 50,
        ..ports
    };
    let rate = INVITE_RATE.to_string();
    let count = INVITES.to_string();
    let pbx = sipp(
        &pbx_dir,
        "uac_busy.xml",
        pbx_ports,
        &["-r", &rate, "-m", &count, "-l", "2000"],
        Duration::from_secs(60),
    );
    (stray.join().unwrap(), pbx_dir, pbx)
}

/// At `max_calls = 1` with one call up: 2,000 INVITEs from a trusted PBX at
/// 500 a second (each refused 503 with Retry-After, ACKed by the PBX as
/// sipp does) while a stranger sends 60,000 RTP packets at 15,000 a second
/// to the live call's port. Every INVITE is refused and counted, every
/// stray packet dropped and counted, sav's memory grows by less than
/// 32 KiB a refusal while their transactions live, and the same flood
/// again, once they are over, takes no more (bounded: reused, not kept),
/// and the live call's RTP (its clock on real-time
/// scheduling, as `realtime_clock` recommends for a loaded box) keeps its pace (p99 |Δ − 20 ms| within 0.5 ms of
/// the quiet seconds, no gap of 40 ms); a call after the flood is answered.
#[test]
fn a_pbx_beyond_capacity_and_a_stray_rtp_flood_leave_the_live_call_alone() {
    let dir = workdir("overload");
    let ports = Ports::slot(51);
    let mut sav = Sav::start(&dir, ports, |c| {
        c.replace("max_calls = 50", "max_calls = 1")
            .replace("trusted = []", "trusted = [\"127.0.0.1\"]")
            .replace("realtime_clock = false", "realtime_clock = true")
            // The live caller sends no RTP: the call must outlast both floods.
            .replace("rtp_timeout_secs = 30", "rtp_timeout_secs = 120")
            // ... and presses no key: no reprompt ends it either.
            .replace("reprompt_after_s = 10", "reprompt_after_s = 600")
            .replace("escalate_after_s = 10", "escalate_after_s = 600")
    });
    let capture = Capture::start(
        &dir,
        &format!("udp src portrange {}-{}", ports.rtp_min, ports.rtp_max),
    );
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_port = media.local_addr().unwrap().port();
    let call = RawCall::call(ports.sip, media_port, "live").expect("sav answers");
    let sav_rtp = call.sav_rtp;
    // The caller's socket is read all along (its buffer never fills).
    let reader = std::thread::spawn(move || count_rtp(&media, Duration::from_secs(60)));

    std::thread::sleep(Duration::from_secs(4));
    let rss_before = rss_kib(sav.pid());
    let flood_from = since_epoch();
    let (stray_sent, pbx_dir, pbx) = flood(&dir, ports, sav_rtp, 1);
    let flood_to = since_epoch();
    std::thread::sleep(Duration::from_millis(1_500));
    let rss_after = rss_kib(sav.pid());
    // The refusals' transactions end (ACKed: Timer I, 5 s; the stack
    // remembers finished ones for 32 s to absorb retransmissions); the
    // same flood again finds their memory free to reuse.
    std::thread::sleep(Duration::from_secs(36));
    let (_, second_dir, second) = flood(&dir, ports, sav_rtp, 2);
    std::thread::sleep(Duration::from_millis(1_500));
    let rss_again = rss_kib(sav.pid());
    let answer = call.hang_up().expect("an answer to our BYE");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let heard = reader.join().unwrap();
    let packets = capture.stop();

    // The slot is free again: a call after the flood is answered.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let later = RawCall::call(ports.sip, media.local_addr().unwrap().port(), "after")
        .expect("a call after the flood is answered");
    let _ = later.hang_up();

    let rtp = ports.sav_audio(&packets);
    let FloodPacing {
        quiet,
        flood,
        quiet_after,
        baseline_p99: baseline,
    } = flood_pacing(&rtp, flood_from, flood_to, Duration::from_millis(300));
    let p99 = |d: &[f64]| percentile(d, 99.0);
    let (_, metrics) = http_get(ports.metrics, "/metrics").expect("/metrics");
    let refused = counter(&metrics, "sav_calls_refused_total", "reason=\"max_calls\"");
    let stray_dropped = counter(&metrics, "sav_rtp_dropped_total", "reason=\"other_source\"");
    let refused_per_flood = refused / 2;
    let dropped_per_flood = stray_dropped / 2;
    let report = format!(
        "overload: {INVITES} INVITEs at {INVITE_RATE}/s from a trusted PBX at max_calls, and {stray_sent} stray RTP packets at {STRAY_RATE}/s to the live call's port, over {:.1} s, twice: {refused} calls refused (max_calls), {stray_dropped} stray packets dropped (other_source); sav RSS {rss_before} KiB before, {rss_after} KiB after the first flood ({} B per refusal), {rss_again} KiB after the second (its transactions' memory reused); the call's RTP p99 |Δ−20 ms| {:.3} ms quiet before ({} frames), {:.3} ms under the flood ({} frames), {:.3} ms quiet after ({} frames); max gap {:.1} / {:.1} / {:.1} ms; the caller heard {heard} frames\n",
        (flood_to - flood_from).as_secs_f64(),
        rss_after.saturating_sub(rss_before) * 1024 / u64::from(INVITES),
        p99(&quiet.0),
        quiet.0.len(),
        p99(&flood.0),
        flood.0.len(),
        p99(&quiet_after.0),
        quiet_after.0.len(),
        quiet.1,
        flood.1,
        quiet_after.1,
    );
    print!("{report}");
    write_report("overload-report.txt", &report);
    for (dir, pbx) in [(&pbx_dir, &pbx), (&second_dir, &second)] {
        assert!(
            pbx.status.success(),
            "an INVITE beyond capacity did not get its 503 with Retry-After:\n{}",
            sipp_report(dir, pbx)
        );
    }
    assert!(refused_per_flood >= u64::from(INVITES), "{report}");
    assert!(
        dropped_per_flood >= u64::from(stray_sent) * 95 / 100,
        "stray packets not counted: {report}"
    );
    // What a refusal holds while its transaction lives (RFC 3261: the
    // 503 is retransmitted until ACKed, the ACK absorbed), then gives back.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "sav's memory grew beyond 32 KiB per refusal: {report}"
    );
    assert!(
        rss_again < rss_after + 8 * 1024,
        "the second flood took more memory again: {report}"
    );
    assert!(
        sav.log_text()
            .contains("media clock on real-time scheduling")
            || sav.log_text().contains("media clock at normal priority"),
        "sav said nothing of its media clock's scheduling"
    );
    assert!(quiet.0.len() > 100 && flood.0.len() > 100, "{report}");
    assert!(
        pacing_held(p99(&flood.0), baseline),
        "the flood moved the call's pacing: {report}"
    );
    assert!(flood.1 < 40.0, "{report}");
    assert!(heard > 500, "{report}");
    assert!(sav.is_running());
}
