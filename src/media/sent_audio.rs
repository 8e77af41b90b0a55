//! What a call sent, as 8 kHz linear samples by their place on the call's
//! media clock: the driver task writes each frame as it goes out, the
//! receive task reads it as the echo canceller's reference. A ring of
//! atomics, so neither side ever waits on the other: the writer never
//! blocks, a reader that fell more than the ring behind reads silence.

use std::sync::atomic::{AtomicI16, AtomicU64, Ordering};

/// Samples kept: 1 s, past the longest echo the canceller looks for.
pub const CAPACITY: usize = 8192;

/// One call's sent audio (see the module doc).
#[derive(Debug)]
pub struct SentAudio {
    samples: Box<[AtomicI16]>,
    /// The position after the newest sample written.
    end: AtomicU64,
}

impl Default for SentAudio {
    fn default() -> Self {
        Self::new()
    }
}

impl SentAudio {
    pub fn new() -> Self {
        Self {
            samples: (0..CAPACITY).map(|_| AtomicI16::new(0)).collect(),
            end: AtomicU64::new(0),
        }
    }

    /// The position after the newest sample written.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// `pcm` sent from sample `position` on (frame n of the call starts at
    /// n × 160). A gap since the last write (frames not sent: a hold) reads
    /// as silence; positions behind the newest are ignored.
    pub fn put(&self, position: u64, pcm: &[i16]) {
        let end = self.end.load(Ordering::Relaxed);
        if position < end {
            return;
        }
        let gap = (position - end).min(CAPACITY as u64);
        for at in position - gap..position {
            self.samples[(at as usize) % CAPACITY].store(0, Ordering::Relaxed);
        }
        for (i, &s) in pcm.iter().enumerate() {
            self.samples[((position as usize) + i) % CAPACITY].store(s, Ordering::Relaxed);
        }
        self.end
            .store(position + pcm.len() as u64, Ordering::Release);
    }

    /// Samples from `from` on that were written since, into `out`; returns
    /// where they start and how many (none before `from`; what the ring no
    /// longer holds is skipped).
    pub fn read(&self, from: u64, out: &mut [i16]) -> (u64, usize) {
        let end = self.end.load(Ordering::Acquire);
        let start = from.max(end.saturating_sub(CAPACITY as u64));
        let n = (end.saturating_sub(start) as usize).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            *slot = self.samples[((start as usize) + i) % CAPACITY].load(Ordering::Relaxed);
        }
        (start, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_in_place_with_gaps_as_silence() {
        let sent = SentAudio::new();
        sent.put(0, &[1; 160]);
        sent.put(320, &[3; 160]);
        let mut out = [9i16; 600];
        let (start, n) = sent.read(0, &mut out);
        assert_eq!((start, n), (0, 480));
        assert!(out[..160].iter().all(|&s| s == 1));
        assert!(out[160..320].iter().all(|&s| s == 0), "the frame not sent");
        assert!(out[320..480].iter().all(|&s| s == 3));
        // Read again from where the reader stopped: nothing new.
        assert_eq!(sent.read(480, &mut out), (480, 0));
        // A reader far behind gets what the ring still holds.
        sent.put(480 + CAPACITY as u64, &[5; 160]);
        let (start, n) = sent.read(480, &mut out);
        assert_eq!(start, 480 + 160);
        assert_eq!(n, out.len());
        // Writing behind the newest is ignored.
        sent.put(0, &[7; 160]);
        assert_eq!(sent.end(), 640 + CAPACITY as u64);
    }
}
