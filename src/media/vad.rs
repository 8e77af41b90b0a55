//! Listening: voice activity (earshot) and end of turn, sans-IO.
//!
//! Inbound audio arrives as 8 kHz PCM frames of 20 ms. earshot wants 16 kHz
//! frames of 256 samples, so each frame is upsampled (a half-band
//! interpolator: a telephone line carries nothing above 4 kHz to keep) and
//! fed to the detector as soon as 256 samples are there. A frame with next
//! to no energy is silence whatever the network would say, so it is not
//! scored at all (most of a call: the caller listening); the detector
//! hears the last two such frames again before the next sound, so its
//! window and context hold what the line really carried, and after a long
//! quiet starts as fresh. A run of voiced frames
//! lasting [`VadConfig::min_speech`] starts a turn (shorter bursts are clicks,
//! coughs or line echo); [`VadConfig::hangover`] without voice ends it. The
//! caller's audio from a short pre-roll before the onset to the end is kept
//! as the utterance for speech-to-text, bounded by
//! [`VadConfig::max_utterance`].
//!
//! Nothing here allocates per frame once the detector is built, but for
//! the utterance, which grows with the caller's speech (doubling, up to
//! [`VadConfig::max_utterance`]): a call holds what was said, not room for
//! the longest turn.

use crate::media::prosody::{Close, Prosody};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of one inbound frame (20 ms at 8 kHz).
pub const FRAME_SAMPLES: usize = 160;
/// earshot's frame: 256 samples at 16 kHz (16 ms).
const VAD_FRAME: usize = 256;
/// Quiet frames (under [`ENERGY_FLOOR`]) still scored in a row: the
/// pauses within a phrase keep the network's state moving as it learnt;
/// past them (160 ms) the line is silent and the state settled.
const QUIET_SCORED: u32 = 10;
/// Taps of the interpolator's odd phase (the even phase is the input
/// itself): 63 taps in all, passband to about 3.3 kHz, 2 ms of delay.
const HALF_BAND_TAPS: usize = 32;
const VAD_FRAME_DURATION: Duration = Duration::from_millis(16);
/// Mean absolute level (full scale 1.0) below which a frame is silence:
/// about −54 dBFS, under any speech and above digital or line silence.
const ENERGY_FLOOR: f32 = 0.002;
/// Unvoiced frames an onset bridges, in all (a stop consonant's closure:
/// "Ça fonctionne", "Attendez"): the voice needed to start a turn is
/// counted across them, so a short first syllable is not thrown away. A
/// click or a cough is one burst, and bursts further apart than that are
/// not a voice: neither adds up to a turn; nor does a frame the echo
/// canceller judged to be the bot's echo alone bridge anything.
const ONSET_GAP: Duration = Duration::from_millis(48);

/// Tunables, from `[listen]`.
#[derive(Debug, Clone)]
pub struct VadConfig {
    /// earshot score from which a frame counts as voice.
    pub threshold: f32,
    /// Voice needed before a turn starts (clicks and echo are shorter).
    pub min_speech: Duration,
    /// Silence that ends the turn (when the voice does not tell, or
    /// `end_of_turn` is off).
    pub hangover: Duration,
    /// The silence that ends a turn by how the caller's voice closed
    /// ([`crate::media::prosody`]): (finished, unfinished); `None`: always
    /// `hangover`.
    pub end_of_turn: Option<(Duration, Duration)>,
    /// Audio kept from before the onset.
    pub preroll: Duration,
    /// A turn longer than this is cut (and sent to STT as it is).
    pub max_utterance: Duration,
    /// The bot's echo is taken out of the caller's audio before the
    /// detector hears it ([`crate::media::echo`]).
    pub echo_cancelling: bool,
    /// The turn's audio goes to the call while it is spoken (a streaming
    /// recogniser), not only at its end.
    pub stream_audio: bool,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_speech: Duration::from_millis(120),
            hangover: Duration::from_millis(500),
            end_of_turn: None,
            preroll: Duration::from_millis(200),
            max_utterance: Duration::from_secs(30),
            echo_cancelling: true,
            stream_audio: false,
        }
    }
}

/// What the detector tells the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The caller started speaking; `onset` is when the voice began (the
    /// event itself comes `min_speech` later).
    SpeechStarted { onset: Instant },
    /// The caller stopped speaking; `last_voice` is when the voice stopped (the
    /// event comes `hangover` later). `utterance` is 8 kHz PCM.
    SpeechEnded {
        last_voice: Instant,
        utterance: Vec<i16>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Silence,
    /// Voiced frames since `onset`, not yet `min_speech` of them, and the
    /// unvoiced ones among them.
    Onset {
        onset: Instant,
        voiced: Duration,
        gap: Duration,
    },
    Speech {
        last_voice: Instant,
    },
}

pub struct TurnDetector {
    config: VadConfig,
    detector: Box<earshot::Detector>,
    upsampler: Upsampler,
    /// 16 kHz samples waiting for a whole VAD frame.
    pending: Vec<f32>,
    /// Frames in a row under the energy floor, and the last two of them
    /// not scored (the newest at `quiet_run % 2`).
    quiet_run: u32,
    quiet_tail: Box<[[f32; VAD_FRAME]; 2]>,
    /// 8 kHz samples waiting for a whole 20 ms block.
    block: [i16; FRAME_SAMPLES],
    block_len: usize,
    vad_frame: [f32; VAD_FRAME],
    state: State,
    /// The last `preroll` of 8 kHz audio, for the start of an utterance.
    preroll: VecDeque<i16>,
    utterance: Vec<i16>,
    /// The most the utterance holds, in samples (the longest utterance
    /// and a block).
    limit: usize,
    /// The pitch of the utterance, for how it closes.
    prosody: Option<Box<Prosody>>,
    /// The silence that ends the turn in progress, decided when its voice
    /// last stopped.
    hangover: Option<Duration>,
    /// The audio being heard is the bot's echo alone, as the echo
    /// canceller judged it (its gate held it back): no voice in it.
    echo_alone: bool,
    /// The caller's words so far leave the turn open (a streaming
    /// recogniser's partial transcript, `conversation::turn_text`).
    words_open: bool,
    /// Frames the network scored; whether it scores every frame (the
    /// reference the quiet frames' skipping is checked against).
    #[cfg(test)]
    scored: u64,
    #[cfg(test)]
    score_every_frame: bool,
}

impl TurnDetector {
    pub fn new(config: VadConfig) -> Self {
        let preroll_samples = (config.preroll.as_millis() as usize) * 8;
        let max_samples = (config.max_utterance.as_millis() as usize) * 8;
        Self {
            detector: earshot::Detector::default_boxed(),
            upsampler: Upsampler::default(),
            pending: Vec::with_capacity(VAD_FRAME * 3),
            quiet_run: 0,
            quiet_tail: Box::new([[0.0; VAD_FRAME]; 2]),
            block: [0; FRAME_SAMPLES],
            block_len: 0,
            vad_frame: [0.0; VAD_FRAME],
            state: State::Silence,
            preroll: VecDeque::with_capacity(preroll_samples + FRAME_SAMPLES),
            utterance: Vec::new(),
            limit: max_samples + FRAME_SAMPLES,
            prosody: config.end_of_turn.map(|_| Box::new(Prosody::new())),
            hangover: None,
            echo_alone: false,
            words_open: false,
            #[cfg(test)]
            scored: 0,
            #[cfg(test)]
            score_every_frame: false,
            config,
        }
    }

    /// The turn's audio so far (from its pre-roll), while one is in
    /// progress.
    pub fn utterance(&self) -> &[i16] {
        match self.state {
            State::Silence => &[],
            _ => &self.utterance,
        }
    }

    /// True while a turn is in progress (after its onset was confirmed).
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// What comes next is the bot's echo alone (the echo canceller's gate
    /// holds it back, with comfort noise in its place), or not: while it
    /// is, nothing heard is taken for the caller's voice, however the
    /// network scores the comfort noise.
    pub fn set_echo_alone(&mut self, echo_alone: bool) {
        self.echo_alone = echo_alone;
    }

    /// Whether the caller's words so far leave the turn open ("Je
    /// voudrais, euh"): while they do, a silence ends the turn only after
    /// the unfinished hang-over, however the voice closed (with
    /// `end_of_turn` on; without it, nothing changes).
    pub fn set_words_open(&mut self, open: bool) {
        self.words_open = open;
    }

    /// Feeds one 20 ms frame of the caller's audio, received at `now`.
    ///
    /// Any packet size works (10, 20, 30 ms…): audio is processed in 20 ms
    /// blocks, each timed by where it ends in the packet.
    pub fn push(&mut self, now: Instant, samples: &[i16]) -> Option<TurnEvent> {
        let mut event = None;
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.block_len).min(rest.len());
            self.block[self.block_len..self.block_len + take].copy_from_slice(&rest[..take]);
            self.block_len += take;
            rest = &rest[take..];
            if self.block_len == FRAME_SAMPLES {
                self.block_len = 0;
                // This block ended `rest.len()` samples before the packet did.
                let at = now
                    .checked_sub(Duration::from_micros(rest.len() as u64 * 125))
                    .unwrap_or(now);
                let block = self.block;
                if let Some(e) = self.push_block(at, &block) {
                    event = Some(e);
                }
            }
        }
        event
    }

    fn push_block(&mut self, now: Instant, frame: &[i16; FRAME_SAMPLES]) -> Option<TurnEvent> {
        self.keep_audio(frame);
        if let Some(prosody) = self.prosody.as_mut() {
            if !matches!(self.state, State::Silence) {
                prosody.push(frame);
            }
        }
        // Upsample to 16 kHz. The interpolator's filter overshoots a
        // full-scale input a little (Gibbs); the detector refuses anything
        // outside [-1, 1] (it panics), so a caller shouting into the
        // microphone must not reach it unclipped.
        self.upsampler.push(frame, &mut self.pending);
        let mut event = None;
        while self.pending.len() >= VAD_FRAME {
            self.vad_frame.copy_from_slice(&self.pending[..VAD_FRAME]);
            self.pending.drain(..VAD_FRAME);
            // The network's score decays over a few frames after the voice
            // stops; a frame with next to no energy is not voice, whatever
            // the score, so the turn ends one hang-over after the voice.
            let energy = self.vad_frame.iter().map(|s| s.abs()).sum::<f32>() / VAD_FRAME as f32;
            let voiced = if energy >= ENERGY_FLOOR {
                self.score() >= self.config.threshold
            } else {
                self.hear_quiet();
                false
            };
            let voiced = voiced && !self.echo_alone;
            // When this frame's audio ended: before `now` by the samples
            // still waiting and the upsampler's delay.
            let later = (self.pending.len() + UPSAMPLER_DELAY) as u64;
            let frame_end = now
                .checked_sub(Duration::from_micros(later * 1_000_000 / 16_000))
                .unwrap_or(now);
            if let Some(e) = self.step(now, frame_end, voiced) {
                event = Some(e);
            }
        }
        if event.is_none() {
            if let State::Speech { last_voice } = self.state {
                if self.utterance.len() >= self.limit - FRAME_SAMPLES {
                    // Too long: end the turn here.
                    event = Some(self.end(last_voice));
                }
            }
        }
        event
    }

    /// The network's score of `vad_frame`, which has sound in it. After a
    /// quiet run it did not score to its end, it first hears the run's
    /// last two frames again (its window spans three).
    fn score(&mut self) -> f32 {
        // (A detector that scored every frame has nothing to hear again.)
        #[cfg(test)]
        let skipped = if self.score_every_frame {
            0
        } else {
            self.quiet_run.saturating_sub(QUIET_SCORED)
        };
        #[cfg(not(test))]
        let skipped = self.quiet_run.saturating_sub(QUIET_SCORED);
        for k in (0..skipped.min(2)).rev() {
            let slot = ((self.quiet_run - k) % 2) as usize;
            self.detector.predict_f32(&self.quiet_tail[slot]);
        }
        self.quiet_run = 0;
        #[cfg(test)]
        {
            self.scored += 1;
        }
        self.detector.predict_f32(&self.vad_frame)
    }

    /// A frame under the energy floor: never voice; scored while the
    /// quiet run is a pause within a phrase, past that only kept for the
    /// detector to hear again before the next sound.
    fn hear_quiet(&mut self) {
        self.quiet_run = self.quiet_run.saturating_add(1);
        #[cfg(test)]
        let scored_anyway = self.score_every_frame;
        #[cfg(not(test))]
        let scored_anyway = false;
        if self.quiet_run <= QUIET_SCORED || scored_anyway {
            #[cfg(test)]
            {
                self.scored += 1;
            }
            self.detector.predict_f32(&self.vad_frame);
        } else {
            let slot = (self.quiet_run % 2) as usize;
            self.quiet_tail[slot] = self.vad_frame;
        }
    }

    /// One VAD frame: `now` is when it was processed, `frame_end` when its
    /// audio ended (what onset and last voice are measured by).
    fn step(&mut self, now: Instant, frame_end: Instant, voiced: bool) -> Option<TurnEvent> {
        match (self.state, voiced) {
            (State::Silence, true) => {
                self.state = State::Onset {
                    onset: frame_end
                        .checked_sub(VAD_FRAME_DURATION)
                        .unwrap_or(frame_end),
                    voiced: VAD_FRAME_DURATION,
                    gap: Duration::ZERO,
                };
                self.utterance.clear();
                self.utterance.extend(self.preroll.iter());
                // The pitch from the utterance's start: its pre-roll, which
                // ends with the block being heard.
                if let Some(prosody) = self.prosody.as_mut() {
                    prosody.reset();
                    let mut block = [0i16; FRAME_SAMPLES];
                    let whole = self.preroll.len() / FRAME_SAMPLES * FRAME_SAMPLES;
                    let skip = self.preroll.len() - whole;
                    for (i, &s) in self.preroll.iter().skip(skip).enumerate() {
                        block[i % FRAME_SAMPLES] = s;
                        if i % FRAME_SAMPLES == FRAME_SAMPLES - 1 {
                            prosody.push(&block);
                        }
                    }
                }
                None
            }
            (State::Onset { onset, voiced, gap }, true) => {
                let voiced = voiced + VAD_FRAME_DURATION;
                if voiced >= self.config.min_speech {
                    self.state = State::Speech {
                        last_voice: frame_end,
                    };
                    Some(TurnEvent::SpeechStarted { onset })
                } else {
                    self.state = State::Onset { onset, voiced, gap };
                    None
                }
            }
            (State::Onset { onset, voiced, gap }, false) => {
                let gap = gap + VAD_FRAME_DURATION;
                // The bot's echo alone is no closure inside a word.
                self.state = if gap <= ONSET_GAP && !self.echo_alone {
                    State::Onset { onset, voiced, gap }
                } else {
                    // A click, not speech.
                    State::Silence
                };
                None
            }
            (State::Speech { .. }, true) => {
                self.state = State::Speech {
                    last_voice: frame_end,
                };
                self.hangover = None;
                None
            }
            (State::Speech { last_voice }, false) => {
                let hangover = match self.hangover {
                    Some(hangover) => hangover,
                    None => {
                        let hangover = self.hangover_for_close();
                        self.hangover = Some(hangover);
                        hangover
                    }
                };
                let hangover = match self.config.end_of_turn {
                    Some((_, unfinished)) if self.words_open => hangover.max(unfinished),
                    _ => hangover,
                };
                if now.saturating_duration_since(last_voice) >= hangover {
                    Some(self.end(last_voice))
                } else {
                    None
                }
            }
            (State::Silence, false) => None,
        }
    }

    /// The silence that ends the turn, by how the voice closed.
    fn hangover_for_close(&mut self) -> Duration {
        match (self.config.end_of_turn, self.prosody.as_mut()) {
            (Some((finished, unfinished)), Some(prosody)) => match prosody.close() {
                Close::Final => finished,
                Close::Continuing => unfinished,
                // Too little voice to tell ("Oui."): the plain hang-over.
                Close::Unknown => self.config.hangover,
            },
            _ => self.config.hangover,
        }
    }

    fn end(&mut self, last_voice: Instant) -> TurnEvent {
        self.state = State::Silence;
        self.hangover = None;
        let utterance = std::mem::take(&mut self.utterance);
        TurnEvent::SpeechEnded {
            last_voice,
            utterance,
        }
    }

    fn keep_audio(&mut self, frame: &[i16]) {
        let preroll_max = (self.config.preroll.as_millis() as usize) * 8;
        for &s in frame {
            if self.preroll.len() >= preroll_max {
                self.preroll.pop_front();
            }
            self.preroll.push_back(s);
        }
        if !matches!(self.state, State::Silence) && self.utterance.len() + frame.len() <= self.limit
        {
            self.utterance.extend_from_slice(frame);
        }
    }
}

/// The interpolator's delay, in 16 kHz samples.
const UPSAMPLER_DELAY: usize = HALF_BAND_TAPS;

/// 8 kHz → 16 kHz by a half-band interpolator: each input sample, then the
/// point halfway to the next one, filtered (windowed sinc, Blackman).
struct Upsampler {
    /// The last `HALF_BAND_TAPS - 1` input samples, then the block's.
    history: [f32; HALF_BAND_TAPS - 1 + FRAME_SAMPLES],
}

impl Default for Upsampler {
    fn default() -> Self {
        Self {
            history: [0.0; HALF_BAND_TAPS - 1 + FRAME_SAMPLES],
        }
    }
}

impl Upsampler {
    /// The 16 kHz samples of `frame` (delayed by [`UPSAMPLER_DELAY`]),
    /// clipped to [-1, 1], onto `out`.
    fn push(&mut self, frame: &[i16; FRAME_SAMPLES], out: &mut Vec<f32>) {
        const KEEP: usize = HALF_BAND_TAPS - 1;
        self.history.copy_within(FRAME_SAMPLES.., 0);
        for (dst, &src) in self.history[KEEP..].iter_mut().zip(frame) {
            *dst = f32::from(src) / 32768.0;
        }
        let taps = half_band();
        for n in 0..FRAME_SAMPLES {
            let window = &self.history[n..n + HALF_BAND_TAPS];
            let mut lanes = [0.0f32; 8];
            for (w, c) in window.chunks_exact(8).zip(taps.chunks_exact(8)) {
                for l in 0..8 {
                    lanes[l] += w[l] * c[l];
                }
            }
            let between: f32 = lanes.iter().sum();
            out.push(window[HALF_BAND_TAPS / 2 - 1].clamp(-1.0, 1.0));
            out.push(between.clamp(-1.0, 1.0));
        }
    }
}

/// The odd phase of the half-band filter: tap j weighs the input sample
/// (2j − 31)/2 samples from the point it interpolates; they sum to 1.
fn half_band() -> &'static [f32; HALF_BAND_TAPS] {
    static TAPS: std::sync::OnceLock<[f32; HALF_BAND_TAPS]> = std::sync::OnceLock::new();
    TAPS.get_or_init(|| {
        use std::f64::consts::PI;
        let span = HALF_BAND_TAPS as f64;
        let mut taps = [0.0f64; HALF_BAND_TAPS];
        for (j, tap) in taps.iter_mut().enumerate() {
            let m = 2.0 * j as f64 - (span - 1.0);
            let t = m / 2.0;
            let sinc = (PI * t).sin() / (PI * t);
            let window = 0.42 + 0.5 * (PI * m / span).cos() + 0.08 * (2.0 * PI * m / span).cos();
            *tap = sinc * window;
        }
        let sum: f64 = taps.iter().sum();
        taps.map(|tap| (tap / sum) as f32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech() -> Vec<i16> {
        crate::media::wav::cached_phrase_8k("welcome")
    }

    /// Feeds `audio` in 20 ms frames from `start`; returns events with the
    /// frame index they came at.
    fn feed(
        d: &mut TurnDetector,
        start: Instant,
        first_frame: u64,
        audio: &[i16],
    ) -> Vec<(u64, TurnEvent)> {
        let mut events = Vec::new();
        for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
            let n = first_frame + i as u64;
            if let Some(e) = d.push(start + Duration::from_millis(20 * n), frame) {
                events.push((n, e));
            }
        }
        events
    }

    #[test]
    fn the_upsampler_keeps_the_telephone_band_and_adds_nothing_above_it() {
        // A tone at 8 kHz, upsampled, against the same tone at 16 kHz
        // (delayed by the interpolator's delay): within −40 dB up to
        // 3.2 kHz; the input samples come out unchanged in between.
        for hz in [300.0f64, 1000.0, 2500.0, 3200.0] {
            let tone = |rate: f64, n: usize| {
                (0..n)
                    .map(|i| 0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate).sin())
                    .collect::<Vec<f64>>()
            };
            let input: Vec<i16> = tone(8000.0, 1600)
                .iter()
                .map(|v| (v * 32768.0).round() as i16)
                .collect();
            let mut upsampler = Upsampler::default();
            let mut out = Vec::new();
            for block in input.chunks_exact(FRAME_SAMPLES) {
                upsampler.push(block.try_into().unwrap(), &mut out);
            }
            assert_eq!(out.len(), 3200);
            let expected = tone(16_000.0, 3200);
            let (mut error, mut power) = (0.0, 0.0);
            for i in 400..3200 {
                let want = expected[i - UPSAMPLER_DELAY];
                error += (f64::from(out[i]) - want).powi(2);
                power += want * want;
            }
            let db = 10.0 * (error / power).log10();
            assert!(db < -40.0, "{hz} Hz: error {db:.1} dB");
            for (n, &sample) in input.iter().enumerate().skip(UPSAMPLER_DELAY) {
                let even = out[2 * n];
                let back = input[n - UPSAMPLER_DELAY / 2];
                assert_eq!(even, f32::from(back) / 32768.0, "sample {n} {sample}");
            }
        }
    }

    #[test]
    fn quiet_frames_are_not_scored_and_the_turns_are_the_same() {
        // Speech, 1 s of quiet, speech: the quiet frames cost no score,
        // and the detector hears both turns at the frames one that scored
        // every frame does (a quiet frame is never voice; the one that
        // skips them hears the last two again before the next sound).
        let phrase = speech();
        let mut audio = vec![0i16; 8000];
        audio.extend(&phrase);
        audio.extend(vec![3i16; 8000]);
        audio.extend(&phrase);
        audio.extend(vec![0i16; 8000]);
        let t0 = Instant::now();
        let mut d = TurnDetector::new(VadConfig::default());
        let events = feed(&mut d, t0, 0, &audio);
        let mut reference = TurnDetector::new(VadConfig::default());
        reference.score_every_frame = true;
        let expected = feed(&mut reference, t0, 0, &audio);
        // Within two frames: the network's state after a long silence
        // (which it no longer hears through) is not quite the one after
        // hearing all of it.
        let at = |events: &[(u64, TurnEvent)]| events.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        let (got, want) = (at(&events), at(&expected));
        assert_eq!(got.len(), want.len(), "{got:?} against {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.abs_diff(*w) <= 2, "{got:?} against {want:?}");
        }
        let starts = events
            .iter()
            .filter(|(_, e)| matches!(e, TurnEvent::SpeechStarted { .. }))
            .count();
        let ends = events
            .iter()
            .filter(|(_, e)| matches!(e, TurnEvent::SpeechEnded { .. }))
            .count();
        assert!(starts >= 2 && starts == ends, "{events:?}");
        // Three seconds of quiet (187 frames of 16 ms) in three runs, of
        // which the first ten of each and the replays are scored.
        let frames = (audio.len() / 128) as u64;
        assert!(reference.scored + 1 >= frames, "the reference scores all");
        assert!(
            d.scored + 140 <= reference.scored,
            "{} of {frames} frames scored",
            d.scored
        );
    }

    #[test]
    fn silence_and_noise_are_not_speech() {
        let mut d = TurnDetector::new(VadConfig::default());
        let t = Instant::now();
        assert!(feed(&mut d, t, 0, &vec![0i16; 8000 * 3]).is_empty());
        // Line noise around -42 dBFS (deterministic LCG).
        let mut x: u32 = 1;
        let noise: Vec<i16> = (0..8000 * 3)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 16) as i16) / 256
            })
            .collect();
        let mut d = TurnDetector::new(VadConfig::default());
        assert!(feed(&mut d, t, 0, &noise).is_empty());
    }

    #[test]
    fn a_spoken_phrase_is_one_turn_ending_after_the_hangover() {
        let config = VadConfig::default();
        let mut d = TurnDetector::new(config.clone());
        let t = Instant::now();
        let mut audio = vec![0i16; 8000];
        let speech = speech();
        audio.extend_from_slice(&speech);
        audio.extend(vec![0i16; 8000 * 2]);
        let events = feed(&mut d, t, 0, &audio);
        assert_eq!(
            events.len(),
            2,
            "{:?}",
            events
                .iter()
                .map(|(n, e)| (n, matches!(e, TurnEvent::SpeechStarted { .. })))
                .collect::<Vec<_>>()
        );
        let (start_frame, TurnEvent::SpeechStarted { onset }) = &events[0] else {
            panic!("{:?}", events[0])
        };
        // Onset near the phrase's start (1 s), confirmed min_speech later.
        let onset_ms = onset.duration_since(t).as_millis() as i64;
        assert!((950..=1400).contains(&onset_ms), "onset at {onset_ms} ms");
        assert!(*start_frame as i64 * 20 - onset_ms <= 200);
        let (
            end_frame,
            TurnEvent::SpeechEnded {
                last_voice,
                utterance,
            },
        ) = &events[1]
        else {
            panic!()
        };
        let speech_end_ms = 1000 + speech.len() as i64 / 8;
        let last_ms = last_voice.duration_since(t).as_millis() as i64;
        assert!(
            (speech_end_ms - 700..=speech_end_ms + 100).contains(&last_ms),
            "last voice {last_ms} ms, speech ended {speech_end_ms}"
        );
        // The end comes one hangover after the last voice.
        let waited = *end_frame as i64 * 20 - last_ms;
        assert!(
            (500..=540).contains(&waited),
            "ended {waited} ms after the last voice"
        );
        // The utterance holds (almost) the whole phrase.
        assert!(
            utterance.len() as f64 > speech.len() as f64 * 0.8,
            "{} of {}",
            utterance.len(),
            speech.len()
        );
        assert!(!d.in_speech());
    }

    #[test]
    fn packets_of_any_size_give_the_whole_utterance() {
        let speech = speech();
        let mut audio = vec![0i16; 8000];
        audio.extend_from_slice(&speech);
        audio.extend(vec![0i16; 8000 * 2]);
        let utterance = |packet: usize| {
            let mut d = TurnDetector::new(VadConfig::default());
            let t = Instant::now();
            let mut got = None;
            for (i, chunk) in audio.chunks(packet).enumerate() {
                let now =
                    t + Duration::from_micros((i * packet) as u64 * 125 + packet as u64 * 125);
                if let Some(TurnEvent::SpeechEnded { utterance, .. }) = d.push(now, chunk) {
                    got = Some(utterance.len());
                }
            }
            got.expect("one turn")
        };
        let (ten, twenty, thirty) = (utterance(80), utterance(160), utterance(240));
        for other in [ten, thirty] {
            assert!(
                (other as i64 - twenty as i64).abs() <= 480,
                "{ten} / {twenty} / {thirty} samples"
            );
        }
    }

    #[test]
    fn a_click_shorter_than_min_speech_starts_nothing() {
        let mut d = TurnDetector::new(VadConfig {
            min_speech: Duration::from_millis(300),
            ..Default::default()
        });
        let t = Instant::now();
        let speech = speech();
        let mut audio = vec![0i16; 8000];
        audio.extend_from_slice(&speech[4000..4000 + 800]); // 100 ms of voice
        audio.extend(vec![0i16; 8000]);
        assert!(feed(&mut d, t, 0, &audio).is_empty());
    }

    /// The onset's decision, by voiced (true) and unvoiced VAD frames.
    fn onset_of(t: Instant, frames: &[bool]) -> Option<TurnEvent> {
        let mut d = TurnDetector::new(VadConfig::default());
        frames.iter().enumerate().find_map(|(i, &voiced)| {
            let at = t + VAD_FRAME_DURATION * (i as u32 + 1);
            d.step(at, at, voiced)
        })
    }

    #[test]
    fn an_onset_bridges_a_stop_consonant_but_not_a_pause() {
        let (v, u) = (true, false);
        // 64 ms of voice, a 32 ms closure ("Ça | fonctionne"), 64 ms more:
        // 128 ms of voice, a turn.
        let t = Instant::now();
        let started = onset_of(t, &[v, v, v, v, u, u, v, v, v, v]);
        assert_eq!(
            started,
            Some(TurnEvent::SpeechStarted { onset: t }),
            "the onset is the first syllable's"
        );
        // The same voice apart by 64 ms: two clicks, nothing.
        assert_eq!(onset_of(t, &[v, v, v, v, u, u, u, u, v, v, v, v]), None);
        // One burst shorter than min_speech: nothing.
        assert_eq!(onset_of(t, &[v, v, v, v, v, v, u, u, u, u]), None);
        // Bursts 32 ms apart, over and over (a rattle): the gaps add up.
        assert_eq!(
            onset_of(t, &[v, v, u, u, v, v, u, u, v, v, u, u, v, v, u, u, v, v]),
            None
        );
    }

    #[test]
    fn words_that_leave_the_turn_open_hold_it_for_the_unfinished_hangover() {
        let config = VadConfig {
            end_of_turn: Some((Duration::from_millis(200), Duration::from_millis(1000))),
            ..Default::default()
        };
        // 320 ms of voice, then silence: how long after the voice the turn
        // ends.
        let end_after = |open: bool| {
            let mut d = TurnDetector::new(config.clone());
            d.set_words_open(open);
            let t = Instant::now();
            for i in 0..200u32 {
                let at = t + VAD_FRAME_DURATION * (i + 1);
                if let Some(TurnEvent::SpeechEnded { last_voice, .. }) = d.step(at, at, i < 20) {
                    return at - last_voice;
                }
            }
            panic!("the turn never ended");
        };
        let closed = end_after(false);
        let open = end_after(true);
        assert!(closed <= Duration::from_millis(520), "{closed:?}");
        assert!(open >= Duration::from_millis(1000), "{open:?}");
    }

    #[test]
    fn a_long_monologue_is_cut_at_max_utterance() {
        let mut d = TurnDetector::new(VadConfig {
            max_utterance: Duration::from_secs(2),
            ..Default::default()
        });
        let t = Instant::now();
        let speech = speech();
        let events = feed(&mut d, t, 0, &speech);
        let ends: Vec<&TurnEvent> = events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, TurnEvent::SpeechEnded { .. }))
            .collect();
        assert!(
            !ends.is_empty(),
            "no cut in {} s of speech",
            speech.len() / 8000
        );
        if let TurnEvent::SpeechEnded { utterance, .. } = ends[0] {
            assert!(utterance.len() <= 16_000 + FRAME_SAMPLES);
        }
    }
}
