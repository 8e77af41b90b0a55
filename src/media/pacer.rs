//! The RTP pacer: which frame is due, and with which sequence number and
//! timestamp (sans-IO; time is passed in).
//!
//! Frame `n` of a call is due at `t0 + n × 20 ms` on an absolute schedule, so
//! the first frame leaves as soon as the call is established and a late
//! wake-up never accumulates drift. A late tick is caught up: every frame that
//! is due is handed out, in order, on the next poll. Only after a stall longer
//! than its catch-up bound (`with_max_catch_up`) in frames (a process freeze, not a late timer) are
//! the oldest frames dropped; the RTP timestamp then jumps by the media time
//! that was lost (RFC 3550 §5.1) while the sequence number stays continuous,
//! since no packet was lost on the wire.
//!
//! Sequence numbers and timestamps are computed from integer frame counts and
//! wrapped into u16/u32 only for the wire (RFC 3550 §5.1), so a call of any
//! length stays exact.

use std::time::{Duration, Instant};

/// Packet time: 20 ms, the ptime we answer with.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// The timestamp step of an 8 kHz clock (G.711, G.722): 8 kHz × 20 ms. An
/// Opus stream steps 960 ([`Pacer::set_timestamp_step`]).
pub const SAMPLES_PER_FRAME: u32 = 160;
/// Default bound on catch-up after a stall: one second of audio.
pub const DEFAULT_MAX_CATCH_UP: u64 = 50;

/// One frame the pacer says is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSlot {
    /// Media-time index of the frame (0 = first frame of the call).
    pub index: u64,
    /// RTP sequence number for this packet.
    pub seq: u16,
    /// RTP timestamp for this packet.
    pub timestamp: u32,
    /// When the frame was due; `now - due` is how late it leaves.
    pub due: Instant,
}

/// How the RTP timestamp follows media time: frame `index` carries
/// `timestamp`, and each frame after it `step` more. A codec change to
/// another clock rate starts a new one at the next frame, so the
/// timestamp goes on from where it was (no jump back, no gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpClock {
    pub index: u64,
    pub timestamp: u32,
    pub step: u32,
}

impl RtpClock {
    /// The timestamp of frame `index` (at or after this clock's start).
    pub fn timestamp_of(&self, index: u64) -> u32 {
        let frames = index.wrapping_sub(self.index);
        self.timestamp
            .wrapping_add(frames.wrapping_mul(u64::from(self.step)) as u32)
    }

    /// The timestamp of any instant, `elapsed` after frame 0 was due
    /// (between frames too: RTCP pairs it with the wallclock, RFC 3550
    /// §6.4.1).
    pub fn timestamp_at(&self, elapsed: Duration) -> u32 {
        let since = elapsed.as_micros() as i128 - i128::from(self.index) * 20_000;
        let ticks = since * i128::from(self.step) / 20_000;
        self.timestamp.wrapping_add(ticks as u32)
    }
}

/// Paces one outbound RTP stream.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// When frame 0 is due (the instant the call was established).
    t0: Instant,
    /// Index (media time, in frames) of the next frame to hand out.
    next_index: u64,
    /// Packets handed out so far: the sequence-number offset.
    sent: u64,
    /// Random initial sequence number (RFC 3550 §5.1).
    seq0: u16,
    /// Where the timestamps come from (a random initial one, RFC 3550
    /// §5.1, stepping by the codec's clock).
    clock: RtpClock,
    /// Frames further behind than this are dropped rather than burst out.
    max_catch_up: u64,
    /// Frames handed out after their due time had already passed by a whole
    /// frame period (a late tick that was caught up).
    late_frames: u64,
    /// Frames dropped after a stall longer than `max_catch_up`.
    skipped_frames: u64,
}

impl Pacer {
    pub fn new(t0: Instant, seq0: u16, ts0: u32) -> Self {
        Self {
            t0,
            next_index: 0,
            sent: 0,
            seq0,
            clock: RtpClock {
                index: 0,
                timestamp: ts0,
                step: SAMPLES_PER_FRAME,
            },
            max_catch_up: DEFAULT_MAX_CATCH_UP,
            late_frames: 0,
            skipped_frames: 0,
        }
    }

    /// Sets the stall bound (in frames, at least 1).
    pub fn with_max_catch_up(mut self, frames: u64) -> Self {
        self.max_catch_up = frames.max(1);
        self
    }

    /// The timestamp moves `step` per frame from the next frame on (the
    /// codec's clock rate × 20 ms: a re-offer may change it mid-call).
    pub fn set_timestamp_step(&mut self, step: u32) {
        if step == self.clock.step {
            return;
        }
        self.clock = RtpClock {
            index: self.next_index,
            timestamp: self.clock.timestamp_of(self.next_index),
            step,
        };
    }

    /// How the timestamps follow media time now.
    pub fn clock(&self) -> RtpClock {
        self.clock
    }

    /// When the next frame is due: the instant to sleep until.
    pub fn poll_timeout(&self) -> Instant {
        self.due(self.next_index)
    }

    /// The next due frame, if one is due at `now`. Call until `None` after
    /// every wake-up: several frames are due after a late tick.
    pub fn poll_frame(&mut self, now: Instant) -> Option<FrameSlot> {
        let due = self.due(self.next_index);
        if now < due {
            return None;
        }
        let behind = self.frames_elapsed(now) - self.next_index;
        if behind > self.max_catch_up {
            // A stall, not a late tick: keep the last `max_catch_up` frames.
            let skip = behind - self.max_catch_up;
            self.skipped_frames += skip;
            self.next_index += skip;
        }
        let index = self.next_index;
        let due = self.due(index);
        if now.saturating_duration_since(due) >= FRAME_DURATION {
            self.late_frames += 1;
        }
        let slot = FrameSlot {
            index,
            seq: self.seq0.wrapping_add(self.sent as u16),
            timestamp: self.clock.timestamp_of(index),
            due,
        };
        self.next_index += 1;
        self.sent += 1;
        Some(slot)
    }

    /// Lets every frame due at `now` pass unsent (the stream is on hold):
    /// media time runs on, the sequence number does not, so when sending
    /// resumes the sequence stays continuous and the timestamp tells how long
    /// the pause was (RFC 3550 §5.1). Returns how many frames were skipped.
    pub fn skip_due(&mut self, now: Instant) -> u64 {
        if now < self.due(self.next_index) {
            return 0;
        }
        let newest = self.frames_elapsed(now);
        let skipped = newest + 1 - self.next_index;
        self.next_index = newest + 1;
        skipped
    }

    /// Packets handed out so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn late_frames(&self) -> u64 {
        self.late_frames
    }

    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// Due time of frame `index`, from integer arithmetic on the frame count.
    fn due(&self, index: u64) -> Instant {
        self.t0 + Duration::from_micros(index.saturating_mul(20_000))
    }

    /// Index of the newest frame due at `now` (frames `0..=result` are due).
    fn frames_elapsed(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.t0).as_micros();
        (elapsed / 20_000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_frame_is_due_at_once() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 100, 1000);
        assert_eq!(pacer.poll_timeout(), t0);
        let slot = pacer.poll_frame(t0).expect("frame 0 is due at t0");
        assert_eq!((slot.index, slot.seq, slot.timestamp), (0, 100, 1000));
        assert!(pacer.poll_frame(t0).is_none());
        assert_eq!(pacer.poll_timeout(), t0 + ms(20));
    }

    /// A one-hour call (180,000 frames) stepped in virtual time: sequence
    /// numbers cross the u16 wrap twice and timestamps cross the u32 wrap,
    /// and every packet is exactly +1 / +160 from the one before.
    #[test]
    fn one_hour_call_keeps_seq_and_timestamp_exact_across_wraps() {
        let t0 = Instant::now();
        let seq0 = 0xFF00;
        let ts0 = u32::MAX - 50 * 160;
        let mut pacer = Pacer::new(t0, seq0, ts0);
        let mut previous: Option<FrameSlot> = None;
        let (mut seq_wraps, mut ts_wraps) = (0, 0);
        for n in 0..180_000u64 {
            let now = pacer.poll_timeout();
            assert_eq!(
                now,
                t0 + Duration::from_millis(20 * n),
                "due time of frame {n}"
            );
            let slot = pacer.poll_frame(now).expect("due");
            assert!(pacer.poll_frame(now).is_none(), "one frame per tick");
            if let Some(prev) = previous {
                assert_eq!(slot.seq, prev.seq.wrapping_add(1));
                assert_eq!(slot.timestamp, prev.timestamp.wrapping_add(160));
                seq_wraps += u32::from(slot.seq < prev.seq);
                ts_wraps += u32::from(slot.timestamp < prev.timestamp);
            }
            previous = Some(slot);
        }
        let last = previous.expect("frames were sent");
        assert_eq!(last.index, 179_999);
        assert_eq!(last.seq, seq0.wrapping_add((179_999u64 % 65_536) as u16));
        assert_eq!(last.timestamp, ts0.wrapping_add((179_999u64 * 160) as u32));
        assert_eq!(seq_wraps, 3, "0xFF00 + 180,000 crosses 65,536 three times");
        assert_eq!(ts_wraps, 1);
        assert_eq!(pacer.sent(), 180_000);
        assert_eq!(pacer.late_frames(), 0);
    }

    #[test]
    fn late_tick_is_caught_up_not_skipped() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 0, 0);
        assert!(pacer.poll_frame(t0).is_some());
        // The next wake-up comes 95 ms late: frames 1..=5 are due (20..100 ms).
        let now = t0 + ms(100) + ms(15);
        let mut caught_up = Vec::new();
        while let Some(slot) = pacer.poll_frame(now) {
            caught_up.push(slot);
        }
        let indices: Vec<u64> = caught_up.iter().map(|s| s.index).collect();
        assert_eq!(indices, vec![1, 2, 3, 4, 5]);
        let seqs: Vec<u16> = caught_up.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(caught_up[4].timestamp, 5 * 160);
        assert_eq!(pacer.skipped_frames(), 0);
        assert_eq!(
            pacer.late_frames(),
            4,
            "frames 1-4 left a whole period late"
        );
        // Back on the absolute schedule, not drifted by the late tick.
        assert_eq!(pacer.poll_timeout(), t0 + ms(120));
    }

    #[test]
    fn jittery_wakeups_do_not_drift() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 7, 7);
        // Every wake-up 0-9 ms late, deterministic pattern.
        for n in 0..10_000u64 {
            let now = pacer.poll_timeout() + Duration::from_micros((n * 7919) % 9_000);
            let slot = pacer.poll_frame(now).expect("due");
            assert_eq!(slot.index, n);
            assert!(pacer.poll_frame(now).is_none());
        }
        assert_eq!(pacer.poll_timeout(), t0 + ms(20 * 10_000));
    }

    #[test]
    fn stall_beyond_bound_keeps_seq_continuous_and_jumps_timestamp() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 10, 0).with_max_catch_up(5);
        assert!(pacer.poll_frame(t0).is_some()); // frame 0
                                                 // Frozen for 1 s: frames 1..=50 are due; only the last 5 are sent.
        let now = t0 + ms(1000);
        let slots: Vec<FrameSlot> = std::iter::from_fn(|| pacer.poll_frame(now)).collect();
        assert_eq!(slots.len(), 6, "the bound plus the frame due now");
        assert_eq!(slots[0].seq, 11, "sequence stays continuous");
        assert_eq!(slots[0].index, 45);
        assert_eq!(
            slots[0].timestamp,
            45 * 160,
            "timestamp reflects media time"
        );
        assert_eq!(pacer.skipped_frames(), 44);
    }

    #[test]
    fn hold_keeps_seq_continuous_and_timestamp_in_media_time() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 500, 8000);
        let before: Vec<FrameSlot> = (0..5u64)
            .map(|n| pacer.poll_frame(t0 + ms(20 * n)).unwrap())
            .collect();
        // On hold from 100 ms to 1 s: nothing sent, time runs on.
        let mut skipped = 0;
        for n in 5..50u64 {
            skipped += pacer.skip_due(t0 + ms(20 * n));
        }
        assert_eq!(skipped, 45);
        assert_eq!(pacer.skip_due(t0 + ms(20 * 49)), 0, "nothing due twice");
        let resumed = pacer.poll_frame(t0 + ms(1000)).unwrap();
        assert_eq!(resumed.seq, before[4].seq + 1, "sequence continuous");
        assert_eq!(
            resumed.timestamp,
            8000 + 50 * 160,
            "timestamp in media time"
        );
        assert_eq!(resumed.index, 50);
        assert_eq!(pacer.sent(), 6);
        assert_eq!(pacer.late_frames(), 0);
    }

    #[test]
    fn clock_before_t0_hands_out_nothing() {
        let t0 = Instant::now() + ms(500);
        let mut pacer = Pacer::new(t0, 0, 0);
        assert!(pacer.poll_frame(t0 - ms(1)).is_none());
    }

    #[test]
    fn a_codec_change_to_another_clock_steps_on_from_where_the_timestamp_was() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 7, u32::MAX - 200);
        let a = pacer.poll_frame(t0).unwrap();
        let b = pacer.poll_frame(t0 + ms(20)).unwrap();
        // A re-offer moves the call to Opus (48 kHz) before frame 2.
        pacer.set_timestamp_step(960);
        let c = pacer.poll_frame(t0 + ms(40)).unwrap();
        let d = pacer.poll_frame(t0 + ms(60)).unwrap();
        let steps = [
            b.timestamp.wrapping_sub(a.timestamp),
            c.timestamp.wrapping_sub(b.timestamp),
            d.timestamp.wrapping_sub(c.timestamp),
        ];
        // Frame 2 starts where frame 1 ended on the old clock; from there
        // each frame is 960 ticks (through the wrap at 2^32).
        assert_eq!(steps, [160, 160, 960]);
        assert_eq!((c.seq, d.seq), (9, 10), "the sequence goes on");
        // RTCP reads the same clock between frames (RFC 3550 §6.4.1).
        let clock = pacer.clock();
        assert_eq!(clock.timestamp_at(ms(40)), c.timestamp);
        assert_eq!(clock.timestamp_at(ms(50)), c.timestamp.wrapping_add(480));
        // The same step again changes nothing.
        pacer.set_timestamp_step(960);
        assert_eq!(pacer.clock(), clock);
    }
}
