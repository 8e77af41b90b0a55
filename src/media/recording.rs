//! Call recording: both sides of a call on one clock, written at the end as
//! a stereo WAV (caller left, bot right, 8 kHz 16-bit).
//!
//! Each side is a [`RecordingTrack`]: μ-law bytes placed by their position
//! in media time (sample 0 = when the call was established), so that a late
//! packet, a gap or a hold lands where it happened and both sides stay
//! aligned. Bounded: audio past [`MAX_SECONDS`] is not kept.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::media::g711;

/// Longest recording kept (2 hours: 57.6 MB of μ-law per side at most).
pub const MAX_SECONDS: usize = 2 * 3600;
const RATE: usize = 8000;
const FRAME: usize = 160;

/// Samples per chunk of a track: one second. A track grows a chunk at a
/// time, so the media task never copies a long recording to grow it.
const CHUNK: usize = RATE;

#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Box<[u8]>>,
    /// Samples written up to (the track's length).
    len: usize,
}

/// One side of a recording; cheap to clone, shared between the task that
/// produces the audio and the call that writes the file.
#[derive(Debug, Clone, Default)]
pub struct RecordingTrack {
    inner: Arc<Mutex<Chunks>>,
}

impl RecordingTrack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places frame `index` (20 ms frames from the start of the call).
    pub fn put(&self, index: u64, payload: &[u8]) {
        if let Ok(offset) = usize::try_from(index) {
            self.put_at(offset.saturating_mul(FRAME), payload);
        }
    }

    /// Places frame `index` of 8 kHz linear audio (turned into μ-law, the
    /// recording's own format).
    pub fn put_pcm(&self, index: u64, pcm: &[i16]) {
        if let Ok(offset) = usize::try_from(index) {
            self.put_at_pcm(offset.saturating_mul(FRAME), pcm);
        }
    }

    /// Places 8 kHz linear audio starting at sample `offset`.
    pub fn put_at_pcm(&self, offset: usize, pcm: &[i16]) {
        let mut ulaw = [0u8; FRAME];
        for (n, chunk) in pcm.chunks(FRAME).enumerate() {
            let part = &mut ulaw[..chunk.len()];
            for (code, &sample) in part.iter_mut().zip(chunk) {
                *code = g711::encode(sample);
            }
            self.put_at(offset.saturating_add(n * FRAME), part);
        }
    }

    /// Places μ-law samples starting at sample `offset`.
    pub fn put_at(&self, offset: usize, payload: &[u8]) {
        let limit = MAX_SECONDS * RATE;
        if offset >= limit {
            return;
        }
        let payload = &payload[..payload.len().min(limit - offset)];
        let Ok(mut track) = self.inner.lock() else {
            return;
        };
        let end = offset + payload.len();
        while track.chunks.len() * CHUNK < end {
            track
                .chunks
                .push(vec![g711::SILENCE; CHUNK].into_boxed_slice());
        }
        // A packet may straddle two chunks.
        let (mut at, mut rest) = (offset, payload);
        while !rest.is_empty() {
            let (chunk, within) = (at / CHUNK, at % CHUNK);
            let n = rest.len().min(CHUNK - within);
            track.chunks[chunk][within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at += n;
        }
        track.len = track.len.max(end);
    }

    /// The samples so far (μ-law).
    pub fn snapshot(&self) -> Vec<u8> {
        let Ok(track) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out: Vec<u8> = track
            .chunks
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        out.truncate(track.len);
        out
    }
}

/// Where the caller's packets go in media time: the first packet of a
/// stream (SSRC) is placed by its arrival, the next ones by their RTP
/// timestamps from it, so network jitter does not smear the recording. A
/// timestamp that strays more than [`MAX_DRIFT`] samples from the arrival
/// clock (a sender restarting its clock) anchors again.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallerPlacer {
    anchor: Option<(u32, u32, u64)>,
    /// RTP clock ticks per 8 kHz sample (0 until set means 1; Opus: 6).
    ticks_per_sample: u32,
}

/// Samples (8 kHz) a timestamp may stray from arrival before re-anchoring.
pub const MAX_DRIFT: u64 = 2 * 8000;

impl CallerPlacer {
    /// The stream's RTP clock runs at `rate` Hz; a change anchors again.
    pub fn set_clock_rate(&mut self, rate: u32) {
        let ticks = (rate / 8000).max(1);
        if ticks != self.ticks_per_sample.max(1) {
            self.anchor = None;
        }
        self.ticks_per_sample = ticks;
    }

    /// The sample offset of a packet with `ssrc`/`timestamp` that arrived
    /// `arrival` samples after the start of the call.
    pub fn place(&mut self, ssrc: u32, timestamp: u32, arrival: u64) -> u64 {
        if let Some((s, ts0, pos0)) = self.anchor {
            if s == ssrc {
                let ticks = u64::from(timestamp.wrapping_sub(ts0));
                let delta = ticks / u64::from(self.ticks_per_sample.max(1));
                let pos = pos0.saturating_add(delta);
                if pos.abs_diff(arrival) <= MAX_DRIFT {
                    return pos;
                }
            }
        }
        self.anchor = Some((ssrc, timestamp, arrival));
        arrival
    }
}

/// Both sides of a call.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub caller: RecordingTrack,
    pub bot: RecordingTrack,
}

impl Recording {
    /// Interleaved 16-bit samples, caller left and bot right, as long as the
    /// longer side (the shorter is padded with silence).
    pub fn stereo_samples(&self) -> Vec<i16> {
        let caller = self.caller.snapshot();
        let bot = self.bot.snapshot();
        let len = caller.len().max(bot.len());
        let mut out = Vec::with_capacity(len * 2);
        for i in 0..len {
            let left = caller.get(i).copied().unwrap_or(g711::SILENCE);
            let right = bot.get(i).copied().unwrap_or(g711::SILENCE);
            out.push(g711::decode(left));
            out.push(g711::decode(right));
        }
        out
    }

    /// Writes the stereo WAV (blocking: call it off the runtime's workers).
    pub fn write_wav(&self, path: &Path) -> Result<(), hound::Error> {
        crate::media::wav::write_file(path, 2, &self.stereo_samples())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_aligned_by_media_time_and_gaps_are_silence() {
        let recording = Recording::default();
        let loud = g711::encode(8000);
        // Bot frames 0 and 2 (frame 1 missing: silence), caller from 30 ms.
        recording.bot.put(0, &[loud; 160]);
        recording.bot.put(2, &[loud; 160]);
        recording.caller.put_at(240, &[loud; 80]);
        let samples = recording.stereo_samples();
        assert_eq!(samples.len(), 480 * 2, "as long as the bot side");
        let (left, right): (Vec<i16>, Vec<i16>) =
            samples.chunks(2).map(|lr| (lr[0], lr[1])).unzip();
        let silence = g711::decode(g711::SILENCE);
        assert!(right[..160].iter().all(|&s| s != silence));
        assert!(right[160..320].iter().all(|&s| s == silence));
        assert!(right[320..].iter().all(|&s| s != silence));
        assert!(left[..240].iter().all(|&s| s == silence));
        assert!(left[240..320].iter().all(|&s| s != silence));
        assert!(left[320..].iter().all(|&s| s == silence));
    }

    #[test]
    fn caller_packets_are_placed_by_timestamp_not_by_jittery_arrival() {
        let mut placer = CallerPlacer::default();
        assert_eq!(placer.place(7, 1000, 800), 800, "first packet: its arrival");
        // Arrives 15 ms late: still right behind the first.
        assert_eq!(placer.place(7, 1160, 1080), 960);
        // A new stream (SSRC) anchors again.
        assert_eq!(placer.place(9, 50, 5000), 5000);
        // A timestamp jump of an hour: re-anchored at arrival.
        assert_eq!(placer.place(9, 50 + 8000 * 3600, 5160), 5160);
    }

    #[test]
    fn a_packet_across_two_chunks_lands_whole() {
        let track = RecordingTrack::new();
        let payload: Vec<u8> = (0..160u8).collect();
        track.put_at(CHUNK - 60, &payload);
        let samples = track.snapshot();
        assert_eq!(samples.len(), CHUNK + 100);
        assert_eq!(&samples[CHUNK - 60..], &payload[..]);
        assert!(samples[..CHUNK - 60].iter().all(|&b| b == g711::SILENCE));
    }

    #[test]
    fn audio_past_the_bound_is_not_kept() {
        let track = RecordingTrack::new();
        track.put_at(MAX_SECONDS * RATE - 10, &[0u8; 160]);
        assert_eq!(track.snapshot().len(), MAX_SECONDS * RATE);
        track.put(u64::MAX, &[0u8; 160]);
        assert_eq!(track.snapshot().len(), MAX_SECONDS * RATE);
    }

    #[test]
    fn writes_a_stereo_wav() {
        let dir = std::env::temp_dir().join(format!("sav-rec-{}", std::process::id()));
        let path = dir.join("call.wav");
        let recording = Recording::default();
        recording.bot.put(0, &[g711::encode(1000); 160]);
        recording.write_wav(&path).unwrap();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.len(), 320);
        let _ = std::fs::remove_dir_all(dir);
    }
}
