//! Whether the caller's words sound finished, from their voice: the pitch
//! at the close of the utterance against the rest of it. A French
//! statement that is done closes low (the final fall); a clause that goes
//! on, a list, a number being dictated ("zéro six, douze…") closes high (the
//! continuation rise), and a hesitation holds one flat vowel ("euh…"). The
//! VAD asks for the verdict when the voice stops and waits a short silence
//! after a finished turn, a longer one after an unfinished one.
//!
//! Sans-IO and cheap: one YIN pitch estimate (de Cheveigné & Kawahara
//! 2002) per voiced 20 ms block over a 40 ms window at 8 kHz (~25k
//! multiply-adds), the track kept in a fixed ring; nothing while the line
//! is silent. Ours: the `pitch-detection` crate keeps its buffers in
//! `Rc<RefCell<…>>`, which a receive task (`Send`) cannot hold.

use crate::media::vad::FRAME_SAMPLES;

/// Analysis window: the current block and the one before (40 ms, two
/// periods of the lowest voice).
const WINDOW: usize = 2 * FRAME_SAMPLES;
/// Voiced blocks kept (20 ms each): the last 1.6 s of voice.
const TRACK: usize = 80;
/// YIN's threshold on the normalised difference: below it, a period.
const THRESHOLD: f32 = 0.2;
/// Mean absolute level (full scale 1.0) below which a block is not looked at.
const LEVEL: f32 = 0.01;
/// Voice between 60 and 400 Hz: periods of 20 to 133 samples.
const MIN_LAG: usize = 20;
const MAX_LAG: usize = 133;
/// Samples compared at each lag.
const SPAN: usize = WINDOW - MAX_LAG - 1;
/// Voiced blocks needed to judge (120 ms of voice).
const MIN_VOICED: usize = 6;
/// The close is judged on the last 160 ms of voice…
const LAST: usize = 8;
/// …falling this many semitones from its high to its last 40 ms…
const FALL: f32 = 1.5;
/// …without rising this much over its last 80 ms.
const RISING: usize = 4;
const RISE: f32 = 0.5;

/// How the utterance so far ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Too little voice to tell.
    Unknown,
    /// Low or falling: the caller is done.
    Final,
    /// High or rising, or a held vowel: more is coming.
    Continuing,
}

pub struct Prosody {
    window: [f32; WINDOW],
    /// YIN's cumulative mean normalised difference, by lag.
    difference: [f32; MAX_LAG + 2],
    /// Semitones (re 100 Hz) of the voiced blocks, oldest first, in a ring.
    track: [f32; TRACK],
    len: usize,
    next: usize,
}

impl Default for Prosody {
    fn default() -> Self {
        Self::new()
    }
}

impl Prosody {
    pub fn new() -> Self {
        Self {
            window: [0.0; WINDOW],
            difference: [0.0; MAX_LAG + 2],
            track: [0.0; TRACK],
            len: 0,
            next: 0,
        }
    }

    /// A new utterance: the track starts empty.
    pub fn reset(&mut self) {
        self.len = 0;
        self.next = 0;
        self.window = [0.0; WINDOW];
    }

    /// One 20 ms block of the utterance (8 kHz).
    pub fn push(&mut self, block: &[i16; FRAME_SAMPLES]) {
        self.window.copy_within(FRAME_SAMPLES.., 0);
        let mut level = 0.0f32;
        for (dst, &s) in self.window[WINDOW - FRAME_SAMPLES..].iter_mut().zip(block) {
            *dst = f32::from(s) / 32768.0;
            level += dst.abs();
        }
        if level / (FRAME_SAMPLES as f32) < LEVEL {
            return;
        }
        let Some(hz) = self.pitch() else {
            return;
        };
        self.track[self.next] = 12.0 * (hz / 100.0).log2();
        self.next = (self.next + 1) % TRACK;
        self.len = (self.len + 1).min(TRACK);
    }

    /// YIN on the window: the first lag whose normalised difference dips
    /// under the threshold, at its local minimum, refined by a parabola.
    fn pitch(&mut self) -> Option<f32> {
        let x = &self.window;
        let d = &mut self.difference;
        d[0] = 1.0;
        let mut running = 0.0f32;
        for lag in 1..=MAX_LAG + 1 {
            let mut sum = 0.0f32;
            for j in 0..SPAN {
                let diff = x[j] - x[j + lag];
                sum += diff * diff;
            }
            running += sum;
            d[lag] = if running > 0.0 {
                sum * lag as f32 / running
            } else {
                1.0
            };
        }
        let mut lag = MIN_LAG;
        while lag <= MAX_LAG {
            if d[lag] < THRESHOLD {
                while lag < MAX_LAG && d[lag + 1] < d[lag] {
                    lag += 1;
                }
                // Only an interior minimum is a period (not the edge of
                // the range a descent ran into).
                if lag == MIN_LAG || lag == MAX_LAG {
                    return None;
                }
                let (a, b, c) = (d[lag - 1], d[lag], d[lag + 1]);
                let curve = a + c - 2.0 * b;
                let shift = if curve > 0.0 {
                    0.5 * (a - c) / curve
                } else {
                    0.0
                };
                return Some(8000.0 / (lag as f32 + shift.clamp(-1.0, 1.0)));
            }
            lag += 1;
        }
        None
    }

    /// The `i`-th voiced block counting back from the last (0: the last).
    fn back(&self, i: usize) -> f32 {
        self.track[(self.next + TRACK - 1 - i) % TRACK]
    }

    /// How the voice so far closes: a fall of `FALL` semitones from the
    /// high of its last `LAST` blocks to its last two, and no rise in its
    /// last `RISING` blocks, is a finished statement; anything else (a
    /// rise, a flat or held close) goes on.
    pub fn close(&self) -> Close {
        if self.len < MIN_VOICED {
            return Close::Unknown;
        }
        // Each value the median of itself and its neighbours: one octave
        // error (a halved or doubled estimate) moves nothing.
        let smooth = |i: usize| {
            let here = self.back(i);
            let before = if i + 1 < self.len {
                self.back(i + 1)
            } else {
                here
            };
            let after = if i > 0 { self.back(i - 1) } else { here };
            here.max(before).min(after).max(here.min(before))
        };
        let last = LAST.min(self.len);
        let high = (0..last).map(smooth).fold(f32::MIN, f32::max);
        let end = (smooth(0) + smooth(1)) / 2.0;
        let fall = high - end;
        // The rise on the raw values: an error there can only make the
        // turn wait (the safe side).
        let low = (0..RISING).map(|i| self.back(i)).fold(f32::MAX, f32::min);
        let rise = self.back(0) - low;
        if fall >= FALL && rise < RISE {
            Close::Final
        } else {
            Close::Continuing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced block: a buzz whose pitch glides `from` → `to` Hz (a few
    /// harmonics, like a voice through a telephone band).
    fn voice(prosody: &mut Prosody, from: f32, to: f32, blocks: usize) {
        let mut phase = 0.0f32;
        for b in 0..blocks {
            let f = from + (to - from) * b as f32 / blocks.max(1) as f32;
            let mut block = [0i16; FRAME_SAMPLES];
            for s in block.iter_mut() {
                phase += std::f32::consts::TAU * f / 8000.0;
                let v = phase.sin() + 0.5 * (2.0 * phase).sin() + 0.3 * (3.0 * phase).sin();
                *s = (v * 6000.0) as i16;
            }
            prosody.push(&block);
        }
    }

    /// The pitch YIN finds in a buzz of `hz`.
    fn pitch_of(hz: f32) -> Option<f32> {
        let mut p = Prosody::new();
        voice(&mut p, hz, hz, 2);
        p.pitch()
    }

    #[test]
    fn the_pitch_of_a_voice_is_found_within_two_percent() {
        for hz in [80.0, 100.0, 150.0, 250.0, 350.0] {
            let found = pitch_of(hz).expect("a pitch");
            assert!((found / hz - 1.0).abs() < 0.02, "{hz} Hz: {found}");
        }
        // Out of the voice's range, or silence: none.
        assert_eq!(pitch_of(40.0), None);
        let mut p = Prosody::new();
        p.push(&[0; FRAME_SAMPLES]);
        assert_eq!(p.pitch(), None);
    }

    #[test]
    fn one_octave_error_at_the_close_does_not_make_a_rise_final() {
        let mut p = Prosody::new();
        voice(&mut p, 130.0, 140.0, 30);
        voice(&mut p, 140.0, 185.0, 10);
        // The last estimate but one halved (a creaky syllable).
        let at = (p.next + TRACK - 2) % TRACK;
        p.track[at] -= 12.0;
        assert_eq!(p.close(), Close::Continuing);
    }

    #[test]
    fn a_falling_close_is_final_a_rise_or_a_held_vowel_goes_on() {
        let mut p = Prosody::new();
        assert_eq!(p.close(), Close::Unknown, "no voice yet");
        // A statement: around 130 Hz, falling to 95 Hz at the end.
        voice(&mut p, 130.0, 140.0, 30);
        voice(&mut p, 140.0, 95.0, 15);
        assert_eq!(p.close(), Close::Final);
        // A clause that goes on: up to 180 Hz at the comma.
        p.reset();
        voice(&mut p, 130.0, 140.0, 30);
        voice(&mut p, 140.0, 185.0, 10);
        assert_eq!(p.close(), Close::Continuing);
        // "euh…": 400 ms of one flat vowel after the words.
        p.reset();
        voice(&mut p, 150.0, 110.0, 30);
        voice(&mut p, 120.0, 120.0, 20);
        assert_eq!(p.close(), Close::Continuing);
        // Silence is not looked at: the verdict stands.
        p.reset();
        voice(&mut p, 130.0, 140.0, 30);
        voice(&mut p, 140.0, 95.0, 15);
        for _ in 0..10 {
            p.push(&[0; FRAME_SAMPLES]);
        }
        assert_eq!(p.close(), Close::Final);
    }
}
