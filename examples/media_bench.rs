//! Media-path benchmark: the per-frame work of N concurrent calls (pacer,
//! playout scheduler, RTP packet writing), in virtual time, without sockets.
//!
//!     cargo run --release --example media_bench -- [calls] [seconds]
//!
//! Prints frames per second of CPU and the cost per frame; the outbound
//! budget is one frame per call every 20 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sav::media::pacer::Pacer;
use sav::media::playout::{Clip, PlayoutScheduler, SegmentKind};
use sav::media::rtp::{write_audio_packet, PACKET_LEN};

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);

    // One shared 3-second clip, replayed every 10 s on each call.
    let clip = Clip {
        key: Arc::from("greet"),
        audio: Arc::from((0..24_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    };
    let t0 = Instant::now();
    let mut streams: Vec<(Pacer, PlayoutScheduler)> = (0..calls)
        .map(|i| (Pacer::new(t0, i as u16, i as u32), PlayoutScheduler::new()))
        .collect();
    let mut packet = [0u8; PACKET_LEN];
    let mut checksum = 0u64;
    let mut frames = 0u64;
    let started = Instant::now();
    for tick in 0..seconds * 50 {
        let now = t0 + Duration::from_millis(20 * tick);
        for (pacer, scheduler) in &mut streams {
            if tick % 500 == 0 {
                let _ = scheduler.enqueue(SegmentKind::Clip(clip.clone()));
            }
            while let Some(slot) = pacer.poll_frame(now) {
                let frame = scheduler.next_frame();
                let len = write_audio_packet(
                    &mut packet,
                    0,
                    1,
                    slot.seq,
                    slot.timestamp,
                    frame.marker,
                    &frame.payload,
                );
                checksum = checksum.wrapping_add(u64::from(packet[len - 1]));
                frames += 1;
            }
            while scheduler.poll_event().is_some() {}
        }
    }
    let elapsed = started.elapsed();
    let per_frame = elapsed.as_nanos() as f64 / frames as f64;
    let budget = calls as f64 * 50.0;
    println!(
        "{calls} calls × {seconds} s: {frames} frames in {:.3} s of CPU: {:.0} ns/frame, {:.0} frames/s ({:.2} % of one core at {:.0} frames/s real time) [checksum {checksum}]",
        elapsed.as_secs_f64(),
        per_frame,
        frames as f64 / elapsed.as_secs_f64(),
        per_frame * budget / 1e7,
        budget
    );
}
