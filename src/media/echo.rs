//! The bot's own voice taken back out of what the caller's line returns
//! (sans-IO): a line echo canceller in the manner of ITU-T G.168, at 8 kHz.
//!
//! On a PSTN line the hybrid (2-wire/4-wire) sends part of what sav says
//! back towards sav, tens to hundreds of milliseconds later and 6 to 30 dB
//! down. sav knows every sample it sent, so it holds the perfect reference:
//! what it sent is fed in with [`EchoCanceller::far`], the caller's samples
//! go through [`EchoCanceller::process`], placed on the same media clock
//! (sample positions since the call began).
//!
//! - **Bulk delay** by cross-correlation of the caller's signal with what
//!   was sent, on both decimated by 4 (2 kHz), over the last second, for
//!   delays up to [`MAX_DELAY`]: the filter's window is placed there.
//! - **Adaptive filter**: NLMS over [`TAIL`] taps (128 ms) from just before
//!   that delay, estimating the echo path and subtracting its estimate.
//! - **Double talk**: two filters (as in Speex's MDF and many network
//!   cancellers): a background one adapts on every sample; the foreground
//!   one, which makes the output, takes the background's weights only when
//!   they cancel better over a frame. When the caller talks over the bot the
//!   background's error grows, so the foreground keeps what it learnt and
//!   the caller's voice goes through; a background that went astray is
//!   reset from the foreground.
//! - **Idle** while nothing was sent within the filter's reach, and until a
//!   delay is found (what the caller says is not the bot's echo unless the
//!   two correlate): the caller's samples pass untouched.
//! - **A gate** (a G.168 canceller's non-linear processor): before the
//!   filter has converged (the first second or two of the bot speaking),
//!   the caller's signal well below what the bot lately sent may be its
//!   echo alone; after, what is left well below the echo the filter took
//!   out is its residue (never while double talk holds). Either is taken
//!   30 dB down and comfort noise at the line's noise floor added, so what
//!   follows hears the same noise whether the bot speaks or not. A line on
//!   which no echo is found within the bot's first 2 s of speech has no
//!   gate.
//! - **The line's noise floor** (the quietest frames once the echo is out,
//!   followed up at 3 dB a second): double talk must stand above it, the
//!   filter learns little where the echo would be under it, and the ERLE
//!   that says the filter has converged is measured on the echo above it.
//!
//! Storage is fixed at construction; nothing allocates per frame. The bulk
//! delay search is in `delay.rs`, the filter's vector kernels in
//! `kernels.rs`.

mod delay;
mod kernels;

use kernels::*;

/// Samples per second (the listening side's rate).
pub const RATE: usize = 8000;
/// Taps of the adaptive filter: 160 ms, of which [`LEAD`] before the bulk
/// delay and 128 ms after it (the echo path's tail).
pub const TAIL: usize = 1280;
const _: () = assert!(
    TAIL.is_multiple_of(16),
    "the filter's sums run over sixteen lanes"
);
/// The largest bulk delay searched: 500 ms (a VoIP leg's round trip and the
/// hybrid's own delay).
pub const MAX_DELAY: usize = 4000;
/// Taps of the window placed before the estimated delay: 32 ms, so a
/// delay found a pitch period off (voiced speech correlates with itself
/// there) still leaves the path inside the window.
const LEAD: usize = 256;
/// A sample sent this quiet or quieter (G.711 A-law's silence decodes to
/// ±8) cannot make the filter active: a whole window of them (TAIL + a
/// frame) holds less than IDLE_POWER per tap.
const QUIET_SAMPLE: u16 = 9;
const _: () = assert!(
    (QUIET_SAMPLE as f64) * (QUIET_SAMPLE as f64) * ((TAIL + FRAME) as f64)
        < (IDLE_POWER as f64) * (TAIL as f64) * 32768.0 * 32768.0
);
/// What was sent, kept (a power of two past MAX_DELAY + TAIL + a frame).
const HISTORY: usize = 8192;
/// The decimation of the delay search.
const DECIMATE: usize = 4;
/// The caller's signal the delay search looks at: 1 s, decimated.
const SEARCH_WINDOW: usize = RATE / DECIMATE;
/// The decimated history of what was sent: the window and the delays.
const FAR_DECIMATED: usize = 4096;
/// Samples between two delay searches while the bot speaks.
const SEARCH_EVERY: usize = RATE;
/// A delay is taken when the normalised correlation at it, averaged over
/// the searches so far, is at least this.
const MIN_CORRELATION: f32 = 0.3;
/// Weight of the newest search in that average.
const SEARCH_WEIGHT: f32 = 0.4;
/// Step size of the background filter (IPNLMS) while it learns the path,
/// and once the foreground cancels (smaller: less noise in the weights).
const STEP: f32 = 0.5;
const STEP_CONVERGED: f32 = 0.25;
/// IPNLMS's balance between NLMS (−1) and proportionate updates (+1): an
/// echo path is a few milliseconds of a 160 ms window, and the taps that
/// matter learn fastest when each tap's step follows its weight (Benesty
/// and Gay, 2002).
const PROPORTION: f32 = -0.5;
/// Regularisation of the NLMS normalisation (per tap, full scale = 1),
/// and its share that follows the line's noise: where what was sent is so
/// quiet that its echo would be under the caller's noise, the filter learns
/// next to nothing (it would learn the noise: a noisy line's weights
/// scattered, and an estimate of echo where none comes back).
const REGULARISATION: f32 = 1e-6;
const NOISE_REGULARISATION: f32 = 16.0;
/// Far-end power (per tap, full scale = 1) under which the bot is silent
/// within the filter's reach: about −70 dBFS.
const IDLE_POWER: f32 = 1e-7;
/// Samples of one frame (the output is judged per frame).
const FRAME: usize = 160;
/// Smoothing of the short-term powers the double-talk detector compares
/// (a time constant of 10 ms).
const POWER_SMOOTHING: f32 = 1.0 / 80.0;
/// The caller's signal this much above the filter's echo estimate (6 dB)
/// is the caller talking, once the filter has converged.
const DOUBLE_TALK_RATIO: f32 = 4.0;
/// Power (full scale = 1) always allowed above the estimate: the line's
/// noise, about −54 dBFS, or [`NOISE_MARGIN`] times the noise floor of a
/// noisier line.
const NOISE_POWER: f32 = 4e-6;
/// The line's noise floor (the quietest frames of the caller's signal once
/// the echo is taken out) is
/// followed down at once and up by this much a frame (+3 dB a second): a
/// minimum that the bot's echo or the caller's voice can hardly lift.
const NOISE_RISE: f32 = 1.014;
/// What stands this far above the noise floor (6 dB) is more than noise.
const NOISE_MARGIN: f32 = 4.0;
/// The line's mean noise power over its floor (the floor follows the
/// quietest 20 ms frames, some 13 % under the mean for white noise).
const NOISE_MEAN: f32 = 1.15;
/// Frames judged for the ERLE stand this far above the noise (12 dB).
const ERLE_ABOVE_NOISE: f32 = 16.0;
/// Power (per sample) under which a frame is digital silence, not noise:
/// −90 dBFS.
const DIGITAL_SILENCE: f32 = 1e-9;
/// The noise floor before the first frame: unknown (the first frame sets
/// it; it would take long to rise from below).
const NOISE_UNKNOWN: f32 = f32::INFINITY;
/// Adaptation stays frozen this long after double talk was last seen
/// (100 ms).
const DOUBLE_TALK_HOLD: u32 = 800;
/// Double talk seen without a break for this long (3 s) while the bot
/// speaks is more likely an echo path that changed: the filter learns again.
const DOUBLE_TALK_LONGEST: u32 = 3 * RATE as u32;
/// The foreground has converged once it cancels this much, averaged over
/// the frames without double talk (15 dB), and no longer has when that
/// average falls under the second figure (an echo path that changed).
const CONVERGED_ERLE: f32 = 15.0;
const DIVERGED_ERLE: f32 = 6.0;
/// Weight of each frame in that average.
const ERLE_WEIGHT: f32 = 0.1;
/// Until it has, the caller's signal below this share of the loudest the
/// bot was lately (−3 dB; a line returns its echo at least 6 dB down,
/// G.168) may be nothing but echo, and is let through this much lower
/// (−30 dB): the bot's first words are not taken for the caller.
const GATE_RATIO: f32 = 0.5;
const GATE_GAIN: f32 = 0.03;
/// Until an echo is found, the gate holds for the bot's first 2 s of
/// speech only: after that with no delay found, the line has no echo to
/// speak of, and a caller quieter than the bot must be heard.
const GATE_UNPROVEN: u64 = 2 * RATE as u64;
/// Once it has, what is left this far below the filter's echo estimate
/// (−10 dB) is the echo's residue, let through 30 dB lower too (the
/// non-linear processor of a G.168 canceller).
const RESIDUE_RATIO: f32 = 0.1;
/// How long the loudest of what was sent is remembered: per sample, the
/// held power decays by this (a time constant of 500 ms, the longest echo).
const HELD_DECAY: f32 = 1.0 - 1.0 / MAX_DELAY as f32;

/// How the canceller has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct EchoStats {
    /// Bulk delay found (samples), once found.
    pub delay: Option<usize>,
    /// Frames processed while the bot spoke within the filter's reach.
    pub active_frames: u64,
    /// Times the foreground filter took the background's weights.
    pub adopted: u64,
    /// Times a background filter gone astray was reset.
    pub resets: u64,
    /// Frames the caller talked over the bot (adaptation frozen).
    pub double_talk_frames: u64,
    /// Frames' worth of samples let through 30 dB lower as echo alone (or
    /// its residue).
    pub gated_frames: u64,
    /// Echo return loss enhancement over the last active frame (dB): how
    /// much the output is below the caller's signal.
    pub erle_db: f32,
}

/// One call's line echo canceller (see the module doc).
pub struct EchoCanceller {
    /// What was sent, by position modulo HISTORY.
    far: Vec<i16>,
    /// The position after the newest sample sent.
    far_end: u64,
    /// The newest sample sent louder than [`QUIET_SAMPLE`].
    far_last_sound: Option<u64>,
    /// What was sent, decimated (sums of DECIMATE samples), by decimated
    /// position modulo FAR_DECIMATED.
    far_low: Vec<f32>,
    /// The caller's signal, decimated: the last SEARCH_WINDOW values and
    /// the decimated position after the newest.
    near_low: Vec<f32>,
    near_low_end: u64,
    /// Partial sums being decimated (near side), and how many are in.
    near_acc: (f32, usize),
    /// Samples of the caller's signal until the next delay search.
    until_search: usize,
    /// The normalised correlation at each decimated delay, averaged over
    /// the searches (the true delay holds from one to the next; a pitch
    /// period's alias moves with the pitch).
    correlation: Vec<f32>,
    searched: bool,
    /// The newest tap weighs the sample sent `offset` before; the oldest,
    /// `offset + TAIL - 1` before. Weights are kept oldest first.
    offset: usize,
    /// What was sent within reach of a block, oldest first, and the
    /// energy of the taps of the sample being filtered.
    window: Vec<f32>,
    window_energy: f64,
    window_energy_at: Option<usize>,
    foreground: Vec<f32>,
    background: Vec<f32>,
    /// Each background tap's share of the step (IPNLMS), from its weight;
    /// made again at the end of a frame in which the weights changed.
    shares: Vec<f32>,
    shares_stale: bool,
    /// Frames in a row the background did much worse than the foreground.
    astray: u32,
    /// The frame being judged: energies of the input and of both errors.
    frame: FrameEnergy,
    /// Short-term powers of the caller's signal and of the echo estimate.
    near_power: f32,
    estimate_power: f32,
    /// Samples adaptation stays frozen (double talk), and of double talk in
    /// a row.
    hold: u32,
    talk_run: u32,
    /// The foreground cancels (the double-talk detector trusts its
    /// estimate).
    converged: bool,
    /// Short-term power of what was sent, and the loudest of it lately
    /// (held, decaying); short-term power of the caller's signal for the
    /// gate.
    far_short: f32,
    far_held: f32,
    near_short: f32,
    /// Samples the gate let through lower.
    gated: u64,
    /// Short-term power of the output.
    out_short: f32,
    /// Samples sent with the bot's voice in them.
    spoken: u64,
    /// The foreground's ERLE, averaged over frames without double talk.
    erle_average: f32,
    /// The line's noise floor: power per sample of its quietest frames.
    noise: f32,
    /// The comfort noise generator's state.
    comfort: u32,
    /// Tests measure the adaptive filter alone (ERLE as G.168 defines it,
    /// before the gate and its comfort noise).
    #[cfg(test)]
    linear_only: bool,
    /// Tests compare the quiet blocks' closed form with the sample by
    /// sample path.
    #[cfg(test)]
    sample_by_sample: bool,
    /// Blocks taken in closed form.
    #[cfg(test)]
    quiet_blocks: u64,
    stats: EchoStats,
}

#[derive(Debug, Default, Clone, Copy)]
struct FrameEnergy {
    samples: usize,
    near: f32,
    foreground: f32,
    background: f32,
    active: bool,
    double_talk: bool,
}

impl Default for EchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoCanceller {
    pub fn new() -> Self {
        Self {
            far: vec![0; HISTORY],
            far_end: 0,
            far_last_sound: None,
            far_low: vec![0.0; FAR_DECIMATED],
            near_low: vec![0.0; SEARCH_WINDOW],
            near_low_end: 0,
            near_acc: (0.0, 0),
            until_search: SEARCH_EVERY,
            correlation: vec![0.0; MAX_DELAY / DECIMATE + 1],
            searched: false,
            offset: 0,
            window: vec![0.0; TAIL - 1 + FRAME],
            window_energy: 0.0,
            window_energy_at: None,
            foreground: vec![0.0; TAIL],
            background: vec![0.0; TAIL],
            shares: vec![1.0 / TAIL as f32; TAIL],
            // Made from the (zero) weights at the first frame's end.
            shares_stale: true,
            astray: 0,
            frame: FrameEnergy::default(),
            near_power: 0.0,
            estimate_power: 0.0,
            hold: 0,
            talk_run: 0,
            converged: false,
            far_short: 0.0,
            far_held: 0.0,
            near_short: 0.0,
            gated: 0,
            out_short: 0.0,
            spoken: 0,
            erle_average: 0.0,
            noise: NOISE_UNKNOWN,
            comfort: 0x2545_F491,
            #[cfg(test)]
            linear_only: false,
            #[cfg(test)]
            sample_by_sample: false,
            #[cfg(test)]
            quiet_blocks: 0,
            stats: EchoStats::default(),
        }
    }

    pub fn stats(&self) -> EchoStats {
        EchoStats {
            gated_frames: self.gated / FRAME as u64,
            ..self.stats
        }
    }

    /// What sav sent, from sample `position` of the call on. Positions only
    /// go forward; a gap (a frame not sent) is silence.
    pub fn far(&mut self, position: u64, samples: &[i16]) {
        if position + (samples.len() as u64) <= self.far_end {
            return;
        }
        // Silence over a gap, then the samples.
        if self.far_end < position {
            self.push_far_steady(0, (position - self.far_end) as usize);
        }
        let skip = (self.far_end - position) as usize;
        let samples = &samples[skip.min(samples.len())..];
        match samples.first() {
            // The bot silent (most of a call), in μ-law (0) or A-law (±8):
            // the same as sample by sample, in a few operations.
            Some(&first)
                if first.unsigned_abs() <= QUIET_SAMPLE && samples.iter().all(|&s| s == first) =>
            {
                self.push_far_steady(first, samples.len());
            }
            _ => {
                for &s in samples {
                    self.push_far(s);
                }
            }
        }
    }

    /// `n` samples of the same quiet value sent (`sample`, at most
    /// [`QUIET_SAMPLE`]: a codec's silence): as `n` calls of `push_far`,
    /// but once the short-term power is under the idle level (where no
    /// sample counts as spoken any more) in closed form: the power goes
    /// geometrically to the sample's own, the held loudest decays (both
    /// stay under the idle level, where only that they are under it
    /// counts); the history holds the sample, its decimated sums the sums
    /// of it (added one by one where a sum began before the run, so they
    /// are the same to the bit).
    fn push_far_steady(&mut self, sample: i16, mut n: usize) {
        while n > 0 && self.far_short > IDLE_POWER {
            self.push_far(sample);
            n -= 1;
        }
        if n == 0 {
            return;
        }
        let value = f32::from(sample) / 32768.0;
        let level = value * value;
        let steps = i32::try_from(n).unwrap_or(i32::MAX);
        let fall = (1.0 - POWER_SMOOTHING).powi(steps);
        self.far_short = level + (self.far_short - level) * fall;
        self.far_held = (self.far_held * HELD_DECAY.powi(steps)).max(self.far_short);
        let start = self.far_end;
        let end = start + n as u64;
        if n >= HISTORY {
            self.far.fill(sample);
        } else {
            let (from, to) = ((start as usize) % HISTORY, (end as usize) % HISTORY);
            if from < to {
                self.far[from..to].fill(sample);
            } else {
                self.far[from..].fill(sample);
                self.far[..to].fill(sample);
            }
        }
        // Decimated sums: one that began before the run goes on adding the
        // sample; each one that begins in it is the sample times the
        // samples of it in the run (the ring keeps the last FAR_DECIMATED).
        let mut at = start;
        while at < end && !at.is_multiple_of(DECIMATE as u64) {
            self.far_low[(at / DECIMATE as u64) as usize % FAR_DECIMATED] += value;
            at += 1;
        }
        let whole = (end - at) / DECIMATE as u64;
        let skipped = whole.saturating_sub(FAR_DECIMATED as u64);
        let full = ((value + value) + value) + value;
        for low in (at / DECIMATE as u64 + skipped)..(at / DECIMATE as u64 + whole) {
            self.far_low[(low as usize) % FAR_DECIMATED] = full;
        }
        at += whole * DECIMATE as u64;
        if at < end {
            let low = (at / DECIMATE as u64) as usize % FAR_DECIMATED;
            self.far_low[low] = 0.0;
            while at < end {
                self.far_low[low] += value;
                at += 1;
            }
        }
        self.far_end = end;
    }

    fn push_far(&mut self, sample: i16) {
        let value = f32::from(sample) / 32768.0;
        self.far_short += POWER_SMOOTHING * (value * value - self.far_short);
        self.far_held = (self.far_held * HELD_DECAY).max(self.far_short);
        if self.far_short > IDLE_POWER {
            self.spoken += 1;
        }
        let at = self.far_end;
        if sample.unsigned_abs() > QUIET_SAMPLE {
            self.far_last_sound = Some(at);
        }
        self.far[(at as usize) % HISTORY] = sample;
        let low = (at / DECIMATE as u64) as usize % FAR_DECIMATED;
        if at.is_multiple_of(DECIMATE as u64) {
            self.far_low[low] = 0.0;
        }
        self.far_low[low] += value;
        self.far_end = at + 1;
    }

    /// `window[m]` ← what was sent at `base + m` for m < `span` (silence
    /// where nothing was or it is out of reach); whether it holds enough
    /// energy for any sample's taps to be active (else every sample of the
    /// block passes as it would one by one).
    fn fill_window(&mut self, base: i64, span: usize) -> bool {
        let end = base + span as i64;
        let kept_from = self.far_end.saturating_sub(HISTORY as u64) as i64;
        let lo = base.max(kept_from).max(0).min(end);
        let hi = end.min(self.far_end as i64).max(lo);
        let (lo_m, hi_m) = ((lo - base) as usize, (hi - base) as usize);
        self.window[..lo_m].fill(0.0);
        self.window[hi_m..span].fill(0.0);
        let mut m = lo_m;
        while m < hi_m {
            let at = ((base + m as i64) as usize) % HISTORY;
            let n = (hi_m - m).min(HISTORY - at);
            for (x, &sample) in self.window[m..m + n].iter_mut().zip(&self.far[at..at + n]) {
                *x = f32::from(sample) / 32768.0;
            }
            m += n;
        }
        // Loud enough that some sample's taps could be active (the span's
        // energy bounds every window's within it).
        energy_exact(&self.window[lo_m..hi_m]) > f64::from(IDLE_POWER * TAIL as f32)
    }

    /// The caller's `near` samples from `position` on, with the echo of
    /// what was sent taken out, into `out` (the same length). True when
    /// most of them were the bot's echo alone (the gate held them back:
    /// what comes out is comfort noise, no voice of the caller's).
    pub fn process(&mut self, position: u64, near: &[i16], out: &mut [i16]) -> bool {
        let gated = self.gated;
        let mut done = 0;
        while done < near.len().min(out.len()) {
            let n = (near.len() - done).min(FRAME);
            self.process_block(
                position + done as u64,
                &near[done..done + n],
                &mut out[done..done + n],
            );
            done += n;
        }
        (self.gated - gated) * 2 >= done.max(1) as u64
    }

    /// At most FRAME samples: the window of what was sent that they may
    /// echo is copied out once, oldest first, so each sample's filter is a
    /// dot product of two contiguous slices.
    fn process_block(&mut self, position: u64, near: &[i16], out: &mut [i16]) {
        // window[m] is what was sent at `base + m`; sample i's taps are
        // window[i..i + TAIL] (the weights are kept oldest first too).
        let span = TAIL - 1 + near.len();
        let base = position as i64 - self.offset as i64 - (TAIL as i64 - 1);
        #[cfg(test)]
        let quiet_path = !self.sample_by_sample;
        #[cfg(not(test))]
        let quiet_path = true;
        let silent_window = self.far_last_sound.is_none_or(|at| (at as i64) < base);
        if quiet_path && silent_window && self.far_held <= IDLE_POWER {
            return self.process_quiet(near, out);
        }
        // A line on which the bot has spoken its first 2 s and no echo was
        // found: nothing is taken out and the gate never acts, until a
        // search finds one (none falls in this block).
        let no_echo_line = self.stats.delay.is_none()
            && !self.converged
            && self.spoken >= GATE_UNPROVEN
            && self.until_search > near.len();
        if quiet_path && no_echo_line {
            return self.process_quiet(near, out);
        }
        let loud = self.fill_window(base, span);
        self.window_energy_at = None;
        if quiet_path && !loud && self.far_held <= IDLE_POWER {
            return self.process_quiet(near, out);
        }
        for (i, (&sample, out)) in near.iter().zip(out.iter_mut()).enumerate() {
            let y = f32::from(sample) / 32768.0;
            self.track_near(y);
            // Nothing is learnt or taken out before a delay is found: the
            // caller's voice must not be fitted by what the bot says (a
            // periodic voice spans the harmonics a voice has too).
            let e = if loud && self.stats.delay.is_some() {
                self.cancel(i, y)
            } else {
                self.pass(y)
            };
            let e = self.gate(y, e);
            *out = (e * 32768.0).clamp(-32768.0, 32767.0) as i16;
        }
    }

    /// A block with nothing sent within the filter's reach and the bot
    /// silent lately, or on a line found without echo (no filter, no
    /// gate): every sample passes untouched, and the powers and the
    /// frame's figures move as [`Self::pass`] and [`Self::gate`] would move
    /// them sample by sample, in closed form.
    fn process_quiet(&mut self, near: &[i16], out: &mut [i16]) {
        #[cfg(test)]
        {
            self.quiet_blocks += 1;
        }
        for (&sample, out) in near.iter().zip(out.iter_mut()) {
            self.track_near(f32::from(sample) / 32768.0);
            *out = sample;
        }
        let decay = quiet_decay();
        let mut rest = near;
        while !rest.is_empty() {
            let n = rest.len().min(FRAME - self.frame.samples);
            let (segment, after) = rest.split_at(n);
            rest = after;
            // p ← (1 − k)ⁿ·p + k·Σ (1 − k)ⁿ⁻¹⁻ⁱ·yᵢ² for each smoothed power
            // of the caller's signal (the output is the same signal).
            let mut energy = 0.0f32;
            let mut weighted = 0.0f32;
            for (i, &sample) in segment.iter().enumerate() {
                let y = f32::from(sample) / 32768.0;
                energy += y * y;
                weighted += decay[n - 1 - i] * y * y;
            }
            let fall = decay[n - 1] * (1.0 - POWER_SMOOTHING);
            self.near_power = fall * self.near_power + POWER_SMOOTHING * weighted;
            self.near_short = fall * self.near_short + POWER_SMOOTHING * weighted;
            self.out_short = fall * self.out_short + POWER_SMOOTHING * weighted;
            self.estimate_power *= fall;
            self.hold = self.hold.saturating_sub(n as u32);
            let f = &mut self.frame;
            f.samples += n;
            f.near += energy;
            f.foreground += energy;
            f.background += energy;
            if f.samples >= FRAME {
                self.end_frame();
            }
        }
    }

    /// Before the filter has converged, a caller's signal quiet enough to
    /// be the bot's echo alone is let through 30 dB lower; after, what is
    /// left well below the echo the filter took out.
    fn gate(&mut self, y: f32, e: f32) -> f32 {
        self.near_short += POWER_SMOOTHING * (y * y - self.near_short);
        self.out_short += POWER_SMOOTHING * (e * e - self.out_short);
        #[cfg(test)]
        if self.linear_only {
            return e;
        }
        let speaking = self.far_held > IDLE_POWER;
        let echo_alone = if self.converged {
            // The residue of an echo the filter takes out, over the line's
            // noise; not while the caller talks over the bot (the
            // double-talk detector's hold: their quieter syllables between
            // the loud ones are theirs, not the echo's).
            self.hold == 0
                && self.out_short
                    < RESIDUE_RATIO * self.estimate_power + self.noise_allowance() / 2.0
        } else if self.stats.delay.is_some() || self.spoken < GATE_UNPROVEN {
            // An echo found and not yet cancelled, or not yet known.
            self.near_short < GATE_RATIO * self.far_held
        } else {
            // No echo on this line.
            false
        };
        if speaking && echo_alone {
            self.gated += 1;
            // With comfort noise at the line's noise floor (as a G.168
            // canceller's): what follows hears the same noise whether the
            // bot speaks or not, so the gate opening and closing is not
            // taken for a voice.
            e * GATE_GAIN + self.comfort_noise()
        } else {
            e
        }
    }

    /// A sample with nothing sent within reach: it passes untouched.
    fn pass(&mut self, y: f32) -> f32 {
        // No echo expected: the estimate's power falls away with it.
        self.near_power += POWER_SMOOTHING * (y * y - self.near_power);
        self.estimate_power -= POWER_SMOOTHING * self.estimate_power;
        // Double talk's hold runs out here too (the caller talking on as
        // the bot stops must not leave the next turn's echo unlearnt).
        self.hold = self.hold.saturating_sub(1);
        self.judge(y, y, y, false);
        y
    }

    /// Sample `i` of the block (`y`): the output, the background adapted.
    fn cancel(&mut self, i: usize, y: f32) -> f32 {
        let x = &self.window[i..i + TAIL];
        // The window's energy, slid along the block: in f64, where the
        // squares of 16-bit samples (multiples of 2⁻³⁰) add up exactly, so
        // the slide is the sum itself.
        self.window_energy = match self.window_energy_at {
            Some(at) if at + 1 == i => {
                let (entering, leaving) = (f64::from(x[TAIL - 1]), f64::from(self.window[i - 1]));
                self.window_energy + entering * entering - leaving * leaving
            }
            _ => energy_exact(x),
        };
        self.window_energy_at = Some(i);
        let active = self.window_energy > f64::from(IDLE_POWER * TAIL as f32);
        if !active {
            return self.pass(y);
        }
        let fore = dot(&self.foreground, x);
        let back = dot(&self.background, x);
        let (e_fore, e_back) = (y - fore, y - back);
        // Double talk: the caller's signal well above the echo the
        // converged filter expects.
        self.near_power += POWER_SMOOTHING * (y * y - self.near_power);
        self.estimate_power += POWER_SMOOTHING * (fore * fore - self.estimate_power);
        let talking = self.converged
            && self.near_power > DOUBLE_TALK_RATIO * self.estimate_power + self.noise_allowance();
        if talking {
            self.hold = DOUBLE_TALK_HOLD;
            self.talk_run += 1;
            if self.talk_run >= DOUBLE_TALK_LONGEST {
                // Not a caller talking for 3 s over every word: the echo
                // path changed under the filter. Learn again.
                self.converged = false;
                self.talk_run = 0;
            }
        } else {
            self.talk_run = 0;
        }
        let frozen = self.hold > 0;
        self.hold = self.hold.saturating_sub(1);
        if !frozen {
            let weighted = weighted_energy(&self.shares, x);
            let step = if self.converged { STEP_CONVERGED } else { STEP };
            let regularisation = REGULARISATION + NOISE_REGULARISATION * self.noise_floor();
            let gain = step * e_back / (weighted + regularisation);
            adapt(&mut self.background, &self.shares, x, gain);
            self.shares_stale = true;
        }
        self.frame.double_talk |= frozen;
        self.judge(y, e_fore, e_back, true);
        e_fore
    }

    /// Frame by frame, which filter cancels better.
    fn judge(&mut self, y: f32, e_fore: f32, e_back: f32, active: bool) {
        let f = &mut self.frame;
        f.samples += 1;
        f.near += y * y;
        f.foreground += e_fore * e_fore;
        f.background += e_back * e_back;
        f.active |= active;
        if f.samples >= FRAME {
            self.end_frame();
        }
    }

    /// A frame's figures are in: the noise floor, the ERLE, and which
    /// filter cancels better.
    fn end_frame(&mut self) {
        let f = std::mem::take(&mut self.frame);
        if self.shares_stale {
            self.share_steps();
            self.shares_stale = false;
        }
        // The floor the frame is judged by is the one before it.
        let floor = self.noise_floor() * FRAME as f32;
        // The noise floor from what is left after the echo is taken out
        // (before the gate), so the bot's echo does not lift it; digital
        // silence (no packet, a concealed gap, a muted phone) is not the
        // line's noise.
        let power = f.foreground.min(f.near) / FRAME as f32;
        if power >= DIGITAL_SILENCE {
            self.noise = if power < self.noise {
                power
            } else {
                self.noise * NOISE_RISE
            };
        }
        if !f.active {
            return;
        }
        self.stats.active_frames += 1;
        let out = f.foreground.min(f.near);
        let erle = 10.0 * (f.near.max(1e-12) / out.max(1e-12)).log10();
        if f.double_talk {
            // The caller's voice is in both errors: nothing to judge by.
            self.stats.double_talk_frames += 1;
            self.stats.erle_db = erle;
            return;
        }
        // Whether the filter cancels is judged on the echo, not on the
        // line's noise that no filter takes out: on frames whose echo
        // stands well above the noise, with the noise taken from both sides
        // (its mean: the floor is its quietest frames; at most 40 dB is
        // counted).
        if f.near > NOISE_POWER * FRAME as f32 && f.near > ERLE_ABOVE_NOISE * floor {
            let echo_in = f.near - NOISE_MEAN * floor;
            let echo_out = (out - NOISE_MEAN * floor).max(echo_in * 1e-4);
            let erle = 10.0 * (echo_in / echo_out).log10();
            self.erle_average += ERLE_WEIGHT * (erle - self.erle_average);
            if self.erle_average >= CONVERGED_ERLE {
                self.converged = true;
            } else if self.erle_average < DIVERGED_ERLE {
                self.converged = false;
            }
        }
        // The background cancels better, and cancels something: adopt it.
        if f.background < 0.8 * f.foreground && f.background < f.near {
            self.foreground.copy_from_slice(&self.background);
            self.stats.adopted += 1;
            self.astray = 0;
        } else if f.background > 4.0 * f.foreground && f.background > f.near {
            // The background went astray (the caller talked over the bot):
            // after a few such frames, start it again from the foreground.
            self.astray += 1;
            if self.astray >= 3 {
                self.background.copy_from_slice(&self.foreground);
                self.shares_stale = true;
                self.stats.resets += 1;
                self.astray = 0;
            }
        } else {
            self.astray = 0;
        }
        self.stats.erle_db = erle;
    }

    /// The line's noise floor (power per sample), 0 before the first frame.
    fn noise_floor(&self) -> f32 {
        if self.noise.is_finite() {
            self.noise
        } else {
            0.0
        }
    }

    /// One sample of white noise at the line's noise floor.
    fn comfort_noise(&mut self) -> f32 {
        self.comfort = self
            .comfort
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        // Uniform on [-1, 1): power 1/3.
        let uniform = (self.comfort >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
        uniform * (3.0 * self.noise_floor()).sqrt()
    }

    /// Power above the echo estimate that may still be the line's noise.
    fn noise_allowance(&self) -> f32 {
        (NOISE_MARGIN * self.noise_floor()).max(NOISE_POWER)
    }

    /// Each tap's share of the background's step (IPNLMS): a uniform part
    /// and a part in proportion to the tap's weight; they sum to 1.
    fn share_steps(&mut self) {
        let total: f32 = self.background.iter().map(|w| w.abs()).sum();
        let uniform = (1.0 - PROPORTION) / (2.0 * TAIL as f32);
        let proportional = (1.0 + PROPORTION) / (2.0 * total + 1e-6);
        for (g, w) in self.shares.iter_mut().zip(&self.background) {
            *g = uniform + proportional * w.abs();
        }
    }

    /// The caller's signal, decimated for the delay search; searches when due.
    fn track_near(&mut self, y: f32) {
        self.near_acc.0 += y;
        self.near_acc.1 += 1;
        if self.near_acc.1 == DECIMATE {
            let at = (self.near_low_end as usize) % SEARCH_WINDOW;
            self.near_low[at] = self.near_acc.0;
            self.near_low_end += 1;
            self.near_acc = (0.0, 0);
        }
        self.until_search = self.until_search.saturating_sub(1);
        if self.until_search == 0 {
            self.until_search = SEARCH_EVERY;
            self.search_delay();
        }
    }
}

/// A PSTN line's echo of what sav sends, for tests here and of the
/// inbound path.
#[cfg(test)]
pub(crate) mod line {
    /// The echo of `sent` through `path` (an impulse response starting
    /// `delay` samples late).
    pub(crate) fn echo_of(sent: &[i16], delay: usize, path: &[f32]) -> Vec<i16> {
        (0..sent.len())
            .map(|n| {
                let mut v = 0.0;
                for (k, &h) in path.iter().enumerate() {
                    if let Some(i) = n.checked_sub(delay + k) {
                        v += h * f32::from(sent[i]);
                    }
                }
                v as i16
            })
            .collect()
    }

    /// The line's own noise: uniform, about −65 dBFS.
    pub(crate) fn line_noise(len: usize) -> Vec<i16> {
        let mut state = 12345u32;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((state >> 16) % 64) as i16 - 32
            })
            .collect()
    }

    /// Sample by sample sum (saturating).
    pub(crate) fn plus(a: &[i16], b: &[i16]) -> Vec<i16> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x.saturating_add(y))
            .collect()
    }

    /// Sample by sample difference (saturating).
    pub(crate) fn minus(a: &[i16], b: &[i16]) -> Vec<i16> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x.saturating_sub(y))
            .collect()
    }

    /// A hybrid's echo path at `loss_db` below what was sent: a short
    /// dispersive response (a few milliseconds), with its gain such that
    /// its energy is `loss_db` down.
    pub(crate) fn hybrid(loss_db: f32) -> Vec<f32> {
        let shape = [
            0.0, 0.5, 1.0, 0.6, -0.3, -0.4, 0.2, 0.15, -0.1, 0.05, 0.03, -0.02,
        ];
        let energy: f32 = shape.iter().map(|h| h * h).sum();
        let gain = 10f32.powf(-loss_db / 20.0) / energy.sqrt();
        shape.iter().map(|h| h * gain).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::line::*;
    use super::*;

    /// Energy ratio (dB) of `a` over `b`.
    fn ratio_db(a: &[i16], b: &[i16]) -> f32 {
        let energy = |s: &[i16]| {
            s.iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .max(1.0)
        };
        (10.0 * (energy(a) / energy(b)).log10()) as f32
    }

    /// Runs `sent` and what the line returned through a canceller, 20 ms at
    /// a time, as a call would: what was sent first, then the caller's frame
    /// at the same position.
    fn run(canceller: &mut EchoCanceller, sent: &[i16], returned: &[i16]) -> Vec<i16> {
        run_from(canceller, 0, sent, returned)
    }

    fn speech(seconds: usize) -> Vec<i16> {
        let phrase = crate::media::wav::cached_phrase_8k("welcome");
        phrase
            .iter()
            .copied()
            .cycle()
            .take(seconds * RATE)
            .collect()
    }

    #[test]
    fn silence_sent_is_taken_in_as_sample_by_sample_only_cheaper() {
        // Speech, μ-law silence (0) long and short, a gap, speech again,
        // A-law silence (8), a silence longer than the history: the fast
        // path and the sample-by-sample reference hold the same history,
        // decimated sums and powers (the held loudest alike, or both under
        // the idle level, where only that counts).
        let talk = speech(1);
        let mut fast = EchoCanceller::new();
        let mut reference = EchoCanceller::new();
        let mut position = 0u64;
        // (length, what): None is speech, Some(v) a steady value.
        let runs: [(usize, Option<i16>); 9] = [
            (4000, None),
            (3, Some(0)),
            (1597, Some(0)),
            (2400, None),
            (10_000, Some(0)),
            (1203, None),
            (5001, Some(8)),
            (800, None),
            (9000, Some(-8)),
        ];
        for (i, &(len, what)) in runs.iter().enumerate() {
            let block: Vec<i16> = match what {
                None => talk.iter().copied().cycle().take(len).collect(),
                Some(v) => vec![v; len],
            };
            // A gap of 37 samples before the fifth run (frames not sent).
            if i == 4 {
                position += 37;
            }
            for chunk in block.chunks(160) {
                fast.far(position, chunk);
                while reference.far_end < position {
                    reference.push_far(0);
                }
                for &s in chunk {
                    reference.push_far(s);
                }
                position += chunk.len() as u64;
            }
            assert_eq!(fast.far_end, reference.far_end, "run {i}");
            assert_eq!(fast.spoken, reference.spoken, "run {i}");
            assert_eq!(fast.far, reference.far, "run {i}");
            assert_eq!(fast.far_low, reference.far_low, "run {i}");
            assert_eq!(fast.far_last_sound, reference.far_last_sound, "run {i}");
            let alike = |a: f32, b: f32| {
                (a - b).abs() <= 1e-4 * b.abs() + 1e-12 || (a <= IDLE_POWER && b <= IDLE_POWER)
            };
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs() + 1e-12;
            assert!(close(fast.far_short, reference.far_short), "run {i}");
            assert!(alike(fast.far_held, reference.far_held), "run {i}");
        }
        assert!(reference.spoken > 0 && reference.far_held > IDLE_POWER);
    }

    #[test]
    fn a_quiet_line_is_processed_as_sample_by_sample_only_cheaper() {
        // The bot speaks 3 s over an echoing line, is silent 12 s while
        // the caller talks (noise, then a voice), then speaks again; the
        // blocks taken in closed form (nothing sent within reach, the bot
        // silent lately) pass the caller as the reference does and leave
        // the same powers, frames and noise floor behind.
        let talk = speech(3);
        let caller = crate::media::wav::cached_phrase_8k("menu");
        let mut sent = talk.clone();
        sent.extend(vec![0i16; 12 * RATE]);
        sent.extend(&talk);
        let mut returned = plus(
            &echo_of(&sent, 480, &hybrid(12.0)),
            &noise_at(-60.0, sent.len()),
        );
        let from = 9 * RATE;
        for (r, &c) in returned[from..].iter_mut().zip(&caller) {
            *r = r.saturating_add(c);
        }
        let quiet_end = 15 * RATE;
        let mut fast = EchoCanceller::new();
        let mut reference = EchoCanceller::new();
        reference.sample_by_sample = true;
        let fast_out = run(&mut fast, &sent[..quiet_end], &returned[..quiet_end]);
        let reference_out = run(&mut reference, &sent[..quiet_end], &returned[..quiet_end]);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * b.abs() + 1e-12;
        assert_eq!(fast_out, reference_out);
        for (what, a, b) in [
            ("near power", fast.near_power, reference.near_power),
            ("near short", fast.near_short, reference.near_short),
            ("out short", fast.out_short, reference.out_short),
            ("estimate", fast.estimate_power, reference.estimate_power),
            ("noise", fast.noise, reference.noise),
            ("erle", fast.erle_average, reference.erle_average),
        ] {
            assert!(close(a, b), "{what}: {a} against {b}");
        }
        assert_eq!(fast.hold, reference.hold);
        assert_eq!(fast.stats.delay, reference.stats.delay);
        assert_eq!(fast.stats.active_frames, reference.stats.active_frames);
        assert_eq!(fast.until_search, reference.until_search);
        assert_eq!(fast.near_low, reference.near_low);
        assert!(fast.stats.delay.is_some(), "the echo was found");
        // The bot again: both cancel its echo alike.
        let fast_out = run_from(&mut fast, quiet_end, &sent, &returned);
        let reference_out = run_from(&mut reference, quiet_end, &sent, &returned);
        let tail = 2 * RATE..fast_out.len();
        let a = level_db(&fast_out[tail.clone()]);
        let b = level_db(&reference_out[tail]);
        assert!((a - b).abs() < 1.0, "{a} dBFS against {b} dBFS");
    }

    #[test]
    fn a_line_without_echo_is_processed_as_sample_by_sample_only_cheaper() {
        // The bot speaks 6 s on a line that returns no echo (noise, then
        // the caller's voice over the bot): past the bot's first 2 s, the
        // blocks are taken in closed form; the caller passes as with the
        // reference, and the powers and the noise floor end alike.
        let sent = speech(6);
        let mut returned = noise_at(-60.0, sent.len());
        let caller = crate::media::wav::cached_phrase_8k("menu");
        for (r, &c) in returned[3 * RATE..].iter_mut().zip(&caller) {
            *r = r.saturating_add(c);
        }
        let mut fast = EchoCanceller::new();
        let mut reference = EchoCanceller::new();
        reference.sample_by_sample = true;
        let fast_out = run(&mut fast, &sent, &returned);
        let reference_out = run(&mut reference, &sent, &returned);
        assert_eq!(reference.stats.delay, None, "no echo on this line");
        assert_eq!(fast.stats.delay, None);
        assert_eq!(fast_out, reference_out);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * b.abs() + 1e-12;
        for (what, a, b) in [
            ("near power", fast.near_power, reference.near_power),
            ("near short", fast.near_short, reference.near_short),
            ("out short", fast.out_short, reference.out_short),
            ("noise", fast.noise, reference.noise),
        ] {
            assert!(close(a, b), "{what}: {a} against {b}");
        }
        assert_eq!(fast.stats.gated_frames, reference.stats.gated_frames);
        assert_eq!(fast.gated, reference.gated);
    }

    #[test]
    fn a_law_silence_sent_is_quiet_too() {
        // G.711 A-law's silence decodes to ±8, not 0: the bot speaks 1 s,
        // then is silent in A-law 9 s while the caller talks; the quiet
        // blocks are still taken in closed form, with the reference's
        // output and figures.
        let mut sent = speech(1);
        sent.extend((0..9 * RATE).map(|i| if i % 3 == 0 { -8 } else { 8 }));
        let mut returned = plus(
            &echo_of(&sent, 480, &hybrid(12.0)),
            &noise_at(-60.0, sent.len()),
        );
        let caller = crate::media::wav::cached_phrase_8k("menu");
        for (r, &c) in returned[7 * RATE..].iter_mut().zip(&caller) {
            *r = r.saturating_add(c);
        }
        let mut fast = EchoCanceller::new();
        let mut reference = EchoCanceller::new();
        reference.sample_by_sample = true;
        let fast_out = run(&mut fast, &sent, &returned);
        let reference_out = run(&mut reference, &sent, &returned);
        assert_eq!(fast_out, reference_out);
        assert!(
            fast.quiet_blocks > 100,
            "{} quiet blocks",
            fast.quiet_blocks
        );
        assert_eq!(reference.quiet_blocks, 0);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * b.abs() + 1e-12;
        assert!(close(fast.near_power, reference.near_power));
        assert!(close(fast.noise, reference.noise));
        assert_eq!(fast.stats.delay, reference.stats.delay);
    }

    /// [`run`] from sample `from` on (a multiple of FRAME).
    fn run_from(
        canceller: &mut EchoCanceller,
        from: usize,
        sent: &[i16],
        returned: &[i16],
    ) -> Vec<i16> {
        let mut out = vec![0i16; returned.len() - from];
        for (n, (sent, returned)) in sent[from..]
            .chunks(FRAME)
            .zip(returned[from..].chunks(FRAME))
            .enumerate()
        {
            let position = (from + n * FRAME) as u64;
            canceller.far(position, sent);
            canceller.process(
                position,
                returned,
                &mut out[n * FRAME..n * FRAME + returned.len()],
            );
        }
        out
    }

    #[test]
    fn the_wide_vector_loops_sum_as_the_baseline_ones_bit_for_bit() {
        let mut state = 99u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let a: Vec<f32> = (0..TAIL).map(|_| next()).collect();
        let b: Vec<f32> = (0..TAIL).map(|_| next()).collect();
        let g: Vec<f32> = (0..TAIL).map(|_| next().abs() / TAIL as f32).collect();
        assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits());
        assert_eq!(
            weighted_energy(&g, &a).to_bits(),
            weighted_energy_lanes(&g, &a).to_bits()
        );
        let (mut w1, mut w2) = (b.clone(), b.clone());
        adapt(&mut w1, &g, &a, 0.37);
        adapt_lanes(&mut w2, &g, &a, 0.37);
        assert_eq!(w1, w2);
        assert_ne!(w1, b, "the update changed the weights");
    }

    #[test]
    fn a_hybrid_echo_is_found_and_cancelled_by_20_db_or_more() {
        let mut report = String::from(
            "echo canceller, ERLE of the adaptive filter over the last 3 s of 8 s of the bot speaking \
             (unit test, hybrid paths, -65 dBFS line noise):",
        );
        for (delay_ms, loss_db) in [(60, 12.0), (120, 6.0), (250, 20.0)] {
            let sent = speech(8);
            let echo = echo_of(&sent, delay_ms * RATE / 1000, &hybrid(loss_db));
            let noise = line_noise(echo.len());
            let mut canceller = EchoCanceller::new();
            canceller.linear_only = true;
            let out = run(&mut canceller, &sent, &plus(&echo, &noise));
            let stats = canceller.stats();
            let delay = stats.delay.expect("the delay found");
            assert!(
                delay.abs_diff(delay_ms * RATE / 1000) <= 8,
                "{delay_ms} ms: found {delay} samples"
            );
            // After 5 s of the bot speaking, over the last 3 s: the echo
            // against what the filter leaves of it (its output less the
            // line's noise, which passes through; the gate after it would
            // take the residue down further).
            let tail = 5 * RATE..sent.len();
            let residual = minus(&out[tail.clone()], &noise[tail.clone()]);
            let erle = ratio_db(&echo[tail], &residual);
            eprintln!("echo {delay_ms} ms at −{loss_db} dB: ERLE {erle:.1} dB, {stats:?}");
            report += &format!(" {delay_ms} ms −{loss_db} dB: {erle:.1} dB;");
            assert!(
                erle >= 20.0,
                "{delay_ms} ms, −{loss_db} dB: ERLE {erle:.1} dB"
            );
        }
        // For the test script's summary.
        let _ = std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/echo-erle-report.txt"),
            report + "\n",
        );
    }

    /// Uniform noise at `dbfs` (RMS).
    fn noise_at(dbfs: f32, len: usize) -> Vec<i16> {
        let peak = 32768.0 * 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        let mut state = 777u32;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let uniform = f32::from((state >> 16) as u16) / 32768.0 - 1.0;
                (uniform * peak) as i16
            })
            .collect()
    }

    /// RMS level (dBFS).
    fn level_db(s: &[i16]) -> f32 {
        let power = s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len().max(1) as f64;
        (10.0 * (power.max(1e-3) / (32768.0f64 * 32768.0)).log10()) as f32
    }

    #[test]
    fn on_a_noisy_line_the_echo_goes_down_to_the_noise_and_not_below() {
        // A street behind the caller: −45 dBFS of noise, the echo 12 dB
        // under the bot (about 15 dB over the noise).
        let sent = speech(8);
        let echo = echo_of(&sent, 480, &hybrid(12.0));
        let noise = noise_at(-45.0, echo.len());
        let mut canceller = EchoCanceller::new();
        let out = run(&mut canceller, &sent, &plus(&echo, &noise));
        // The filter is judged on the echo, not on noise no filter takes
        // out: it knows it cancels.
        assert!(canceller.converged, "{:?}", canceller.stats());
        // Frame by frame over the last 3 s, the bot speaking: what comes
        // out is the line's noise: the echo taken down to it, and where the
        // gate holds what is left, comfort noise at its level, not a hole
        // (a VAD hearing the noise come and go would take it for a voice).
        let noise_db = level_db(&noise[5 * RATE..]);
        let echo_db = level_db(&echo[5 * RATE..]);
        let levels: Vec<f32> = out[5 * RATE..].chunks(FRAME).map(level_db).collect();
        let off: Vec<&f32> = levels
            .iter()
            .filter(|&&l| (l - noise_db).abs() > 4.0)
            .collect();
        assert!(
            off.len() * 20 <= levels.len(),
            "noise {noise_db:.1} dBFS, echo {echo_db:.1} dBFS, frames off the noise: {off:?} of {}",
            levels.len()
        );
    }

    #[test]
    fn the_caller_talking_over_the_bot_goes_through_and_the_filter_holds() {
        let sent = speech(8);
        let echo = echo_of(&sent, 480, &hybrid(12.0));
        // The caller speaks from 5 s to 7 s (another phrase, as loud as the
        // bot's own), over the echo.
        let noise = line_noise(echo.len());
        let caller = crate::media::wav::cached_phrase_8k("menu");
        let mut returned = plus(&echo, &noise);
        let talk = 5 * RATE..7 * RATE;
        for (i, r) in returned[talk.clone()].iter_mut().enumerate() {
            *r = r.saturating_add(caller[i % caller.len()]);
        }
        let mut canceller = EchoCanceller::new();
        let out = run(&mut canceller, &sent, &returned);
        // While the caller talks, what comes out is the caller (the echo
        // taken out of it, the voice not): close to the caller alone.
        let alone: Vec<i16> = (talk.clone())
            .map(|i| caller[(i - talk.start) % caller.len()])
            .collect();
        let residue: Vec<i16> = out[talk.clone()]
            .iter()
            .zip(&alone)
            .map(|(&o, &c)| o.saturating_sub(c))
            .collect();
        let kept = ratio_db(&alone, &residue);
        assert!(
            kept >= 15.0,
            "the caller's voice through the canceller at {kept:.1} dB"
        );
        // And after the caller stops, the echo is still cancelled at once.
        let after = 7 * RATE..8 * RATE;
        let residual = minus(&out[after.clone()], &noise[after.clone()]);
        let erle = ratio_db(&echo[after], &residual);
        assert!(erle >= 20.0, "after the double talk: ERLE {erle:.1} dB");
    }

    #[test]
    fn on_a_line_without_echo_a_quiet_caller_goes_through_after_the_first_words() {
        // The bot at full level, the caller 10 dB under it, no echo.
        let sent = speech(6);
        let caller: Vec<i16> = crate::media::wav::cached_phrase_8k("menu")
            .iter()
            .cycle()
            .take(sent.len())
            .map(|&s| s / 3)
            .collect();
        let mut canceller = EchoCanceller::new();
        let out = run(&mut canceller, &sent, &caller);
        assert_eq!(canceller.stats().delay, None, "no echo to find");
        // Held back while an echo could not be ruled out (the bot's first
        // 2 s of speech), untouched after.
        let first = ratio_db(&caller[..RATE], &out[..RATE]);
        assert!(
            first > 10.0,
            "the first second let through {first:.1} dB lower"
        );
        assert_eq!(&out[3 * RATE..], &caller[3 * RATE..]);
    }

    #[test]
    fn with_the_bot_silent_the_callers_audio_passes_untouched() {
        let caller = speech(2);
        let silence = vec![0i16; caller.len()];
        let mut canceller = EchoCanceller::new();
        let out = run(&mut canceller, &silence, &caller);
        assert_eq!(out, caller);
        assert_eq!(canceller.stats().active_frames, 0);
    }

    #[test]
    fn shifting_the_window_keeps_what_was_learnt_in_place() {
        // Oldest first: a window reaching one tap further back keeps each
        // weight on its delay, one place nearer the newest end.
        let mut w = vec![0.0, 1.0, 2.0, 3.0];
        shift_taps(&mut w, 1);
        assert_eq!(w, [0.0, 0.0, 1.0, 2.0]);
        shift_taps(&mut w, -2);
        assert_eq!(w, [1.0, 2.0, 0.0, 0.0]);
        shift_taps(&mut w, 9);
        assert_eq!(w, [0.0; 4]);
    }
}
