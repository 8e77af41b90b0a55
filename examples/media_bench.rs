//! Media-path benchmark, per codec: the per-frame work of N concurrent calls
//! (pacer, playout scheduler, RTP packet writing), in virtual time, without
//! sockets; and the cost of encoding and decoding one 20 ms frame.
//!
//!     cargo run --release --example media_bench -- [calls] [seconds]
//!
//! Prints frames per second of CPU and the cost per frame; the outbound
//! budget is one frame per call every 20 ms. Then the listening side: the
//! turn detector (voice activity) per 20 ms of the caller's audio, while
//! the caller speaks and while the line is quiet.

use std::time::{Duration, Instant};

use sav::media::codec::{transcode, Codec, Decoder, Encoder, SUPPORTED};
use sav::media::echo::EchoCanceller;
use sav::media::pacer::Pacer;
use sav::media::playout::{Clip, PlayoutScheduler, SegmentKind};
use sav::media::rtp::{write_audio_packet, PACKET_LEN};
use sav::media::vad::{TurnDetector, VadConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);

    for codec in SUPPORTED {
        outbound(codec, calls, seconds);
    }
    for codec in SUPPORTED {
        coding(codec);
    }
    echo_cancelling();
    listening();
}

/// The cost of the turn detector per 20 ms frame of the caller's audio:
/// speech (a cached phrase), a quiet line (noise about −65 dBFS) and
/// digital silence.
fn listening() {
    let speech: Vec<i16> =
        match hound::WavReader::open(concat!(env!("CARGO_MANIFEST_DIR"), "/cache/welcome.wav")) {
            Ok(mut reader) => {
                let rate = reader.spec().sample_rate;
                let samples: Vec<i16> = reader.samples::<i16>().filter_map(Result::ok).collect();
                sav::media::resample::resample(&samples, rate, 8000).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
    let mut state = 12345u32;
    let noise: Vec<i16> = (0..8000 * 10)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((state >> 16) % 64) as i16 - 32
        })
        .collect();
    let zeros = vec![0i16; 8000 * 10];
    for (what, audio) in [
        ("caller speaking", &speech),
        ("quiet line", &noise),
        ("digital silence", &zeros),
    ] {
        let frames = audio.len() / 160;
        if frames == 0 {
            println!("listening, {what}: no audio (cache/welcome.wav)");
            continue;
        }
        let rounds = (20_000 / frames).max(1);
        let mut detector = TurnDetector::new(VadConfig::default());
        let t0 = Instant::now();
        let mut turns = 0u64;
        let started = Instant::now();
        for round in 0..rounds {
            for frame in 0..frames {
                let at = t0 + Duration::from_millis(20 * (round * frames + frame) as u64);
                let pcm = &audio[frame * 160..(frame + 1) * 160];
                if detector.push(at, std::hint::black_box(pcm)).is_some() {
                    turns += 1;
                }
            }
        }
        let per_frame = started.elapsed().as_nanos() as f64 / (rounds * frames) as f64;
        println!(
            "listening, {what}: {:.1} µs per 20 ms frame ({:.3} % of one core per call) [{turns} turn events]",
            per_frame / 1000.0,
            per_frame / 20_000_000.0 * 100.0
        );
    }
}

/// The cost of the echo canceller per 20 ms of the caller's audio, while
/// the bot speaks (its whole work: delay search, two filters, adaptation)
/// and while it is silent (nothing to cancel).
fn echo_cancelling() {
    let seconds = 10usize;
    let n = seconds * 8000;
    // A voiced sound as what was sent, its echo 60 ms later at −12 dB.
    let sent: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let pitch = 140.0 + 25.0 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let v: f64 = (1..=10)
                .map(|h| {
                    (2.0 * std::f64::consts::PI * pitch * t * f64::from(h)).sin() / f64::from(h)
                })
                .sum();
            (4000.0 * v) as i16
        })
        .collect();
    let returned: Vec<i16> = (0..n)
        .map(|i| i.checked_sub(480).map_or(0, |j| sent[j] / 4))
        .collect();
    let silence = vec![0i16; n];
    // G.711 A-law's silence decodes to 8.
    let alaw_silence = vec![8i16; n];
    for (what, far) in [
        ("bot speaking", &sent),
        ("bot silent", &silence),
        ("bot silent in A-law", &alaw_silence),
    ] {
        let mut canceller = EchoCanceller::new();
        let mut out = [0i16; 160];
        let mut checksum = 0i64;
        let started = Instant::now();
        for frame in 0..n / 160 {
            let at = frame * 160;
            canceller.far(at as u64, &far[at..at + 160]);
            canceller.process(at as u64, &returned[at..at + 160], &mut out);
            checksum += i64::from(out[7]);
        }
        let per_frame = started.elapsed().as_nanos() as f64 / (n / 160) as f64;
        println!(
            "echo cancelling, {what}: {:.1} µs per 20 ms frame ({:.2} % of one core per call) [checksum {checksum}]",
            per_frame / 1000.0,
            per_frame / 20_000_000.0 * 100.0
        );
    }
}

/// The outbound path of `calls` calls in `codec` for `seconds`.
fn outbound(codec: Codec, calls: usize, seconds: u64) {
    // One shared 3-second clip (encoded in the codec once, as the cache
    // does), replayed every 10 s on each call.
    let ulaw: Vec<u8> = (0..24_000u32).map(|i| (i % 251) as u8).collect();
    let audio = transcode(Codec::Pcmu, codec, &ulaw);
    let clip = Clip::new("greet", codec, audio);
    let t0 = Instant::now();
    let mut streams: Vec<(Pacer, PlayoutScheduler)> = (0..calls)
        .map(|i| {
            let mut scheduler = PlayoutScheduler::new();
            scheduler.set_codec(codec);
            let mut pacer = Pacer::new(t0, i as u16, i as u32);
            pacer.set_timestamp_step(codec.timestamp_step());
            (pacer, scheduler)
        })
        .collect();
    let payload_type = codec.static_payload_type().unwrap_or(96);
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
                    payload_type,
                    1,
                    slot.seq,
                    slot.timestamp,
                    frame.marker,
                    frame.payload(),
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
        "{codec}: {calls} calls × {seconds} s: {frames} frames in {:.3} s of CPU: {:.0} ns/frame, {:.0} frames/s ({:.2} % of one core at {:.0} frames/s real time) [checksum {checksum}]",
        elapsed.as_secs_f64(),
        per_frame,
        frames as f64 / elapsed.as_secs_f64(),
        per_frame * budget / 1e7,
        budget
    );
}

/// The cost of encoding and decoding one 20 ms frame in `codec` (what
/// generated speech in PCM at the codec's own rate and the caller's audio,
/// decoded to 8 kHz for listening, cost per frame).
fn coding(codec: Codec) {
    let samples = (codec.audio_rate() / 50) as usize;
    let pcm: Vec<i16> = (0..samples)
        .map(|n| (9000.0 * (n as f64 * 0.35).sin()) as i16)
        .collect();
    // libopus does hundreds of times G.711's work per frame.
    let rounds = if codec == Codec::Opus {
        20_000
    } else {
        200_000u32
    };
    let mut encoder = Encoder::new(codec);
    let mut decoder = Decoder::new(codec);
    let mut encoded = Vec::with_capacity(512);
    let mut decoded = [0i16; 160];
    let mut checksum = 0i64;
    let started = Instant::now();
    for _ in 0..rounds {
        encoded.clear();
        encoder.encode_audio_extend(std::hint::black_box(&pcm), &mut encoded);
        checksum += i64::from(encoded.last().copied().unwrap_or(0));
    }
    let encode = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    let frame = codec
        .first_frame(&encoded)
        .map_or(&[][..], |(frame, _)| frame);
    let started = Instant::now();
    for _ in 0..rounds {
        decoder.decode(std::hint::black_box(frame), &mut decoded);
        checksum += i64::from(decoded[7]);
    }
    let decode = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!(
        "{codec}: encode {encode:.0} ns/frame, decode {decode:.0} ns/frame [checksum {checksum}]"
    );
}
