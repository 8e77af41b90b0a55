//! The caller's audio put back in order before anyone listens to it
//! (sans-IO): packets come in as they arrive ([`JitterBuffer::push`]), in
//! sequence order they come out ([`JitterBuffer::pop`]), decoded there, so
//! an adaptive decoder (G.722) sees them in order and the voice activity
//! detector, speech-to-text and the recording hear one continuous signal.
//!
//! - In order, a packet comes out at once: the buffer adds no delay.
//! - Out of order, a packet waits for the ones before it, at most
//!   [`WINDOW`] of audio behind it or [`WINDOW`] of time
//!   ([`JitterBuffer::handle_timeout`]); a packet still missing then is
//!   counted lost and concealed: by the codec when it can (Opus: rebuilt
//!   from the in-band FEC of the packet after it when that one is here,
//!   else its packet-loss concealment), else the last packet repeated,
//!   fading (G.711 has no concealment of its own; ITU-T G.711 Appendix I
//!   does the same in spirit), then silence.
//! - A packet behind what already came out is late, one already held is a
//!   duplicate: both are dropped and counted.
//! - A jump of the sequence beyond [`RESTART`] (a new stream, a sender that
//!   restarted) starts over from it.
//!
//! Storage is fixed ([`SLOTS`] packets of up to [`MAX_PAYLOAD`] octets):
//! nothing allocates per packet.

use std::time::{Duration, Instant};

use crate::media::codec::{Concealment, Decoder};

/// How long a packet waits for the ones before it: 60 ms.
pub const WINDOW: Duration = Duration::from_millis(60);
/// Packets held at most (a window of 20 ms packets, and room for shorter
/// ones).
pub const SLOTS: usize = 8;
/// Samples out of one packet at most (60 ms at 8 kHz).
pub const MAX_SAMPLES: usize = 480;
/// Payload octets of one packet kept at most: 60 ms of G.711, an Opus
/// packet up to 256 kbit/s. A bigger one is dropped (counted) and
/// concealed.
pub const MAX_PAYLOAD: usize = 640;
/// A sequence jump this large (either way) is a new stream, not loss.
pub const RESTART: u16 = 100;
/// Concealed packets in a row that still repeat audio; silence after.
const FADE_PACKETS: u32 = 3;

/// Packets of 20 ms the window spans: a packet this far ahead of a gap
/// stops the wait for it.
const WINDOW_PACKETS: u16 = (WINDOW.as_millis() / 20) as u16;
/// Gain of each concealed packet in a row (then silence).
const FADE: [f32; FADE_PACKETS as usize] = [0.8, 0.5, 0.25];

/// What the buffer dropped or made up, for the call's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that came out of order and were put back in place.
    pub reordered: u64,
    /// Packets behind what already came out (late, or a copy of one that
    /// came out).
    pub late: u64,
    /// Copies of a packet still held.
    pub duplicates: u64,
    /// Packets refused because every slot was taken (a shell that does not
    /// pop).
    pub overflow: u64,
    /// Packets never received, concealed.
    pub concealed: u64,
    /// Sequence jumps taken as a new stream.
    pub restarts: u64,
    /// Lost packets rebuilt from the next one's redundancy (Opus FEC);
    /// counted in `concealed` too.
    pub recovered: u64,
    /// Packets larger than [`MAX_PAYLOAD`], dropped.
    pub oversize: u64,
}

/// What the buffer needs of a decoder: a packet's audio, and the codec's
/// own concealment of a lost one where it has any.
pub trait Decode {
    /// Decodes `payload` into `out` (8 kHz samples); returns the count.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize;

    /// `out.len()` samples for a lost packet, from `next` (the packet after
    /// it, when held) or by extrapolation; `None` when the codec has no
    /// concealment of its own.
    fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Option<Concealment> {
        let _ = (next, out);
        None
    }
}

impl Decode for Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        Decoder::decode(self, payload, out)
    }

    fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Option<Concealment> {
        Decoder::conceal(self, next, out)
    }
}

impl<F: FnMut(&[u8], &mut [i16]) -> usize> Decode for F {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        self(payload, out)
    }
}

#[derive(Clone, Copy)]
struct Held {
    seq: u16,
    timestamp: u32,
    arrived: Instant,
    len: usize,
    payload: [u8; MAX_PAYLOAD],
}

/// Where a packet's audio out of the buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// The caller's audio, in order.
    Received,
    /// Made up for a lost packet.
    Concealed,
    /// A lost packet rebuilt from the redundancy of the one after it: the
    /// caller's audio, coarser.
    Recovered,
}

/// One call's inbound reordering (see the module doc).
pub struct JitterBuffer {
    held: [Option<Held>; SLOTS],
    /// The next sequence number to come out (`None` before the first).
    next: Option<u16>,
    /// The packets before this one are lost: conceal up to it.
    conceal_until: Option<u16>,
    /// The last packet out, for concealment, and where the next one starts
    /// on the RTP clock.
    last: [i16; MAX_SAMPLES],
    last_len: usize,
    next_timestamp: u32,
    /// Concealed packets in a row.
    concealing: u32,
    /// RTP clock ticks per 8 kHz sample out (1; 6 for Opus's 48 kHz).
    ticks_per_sample: u32,
    /// The packet just popped.
    out: [i16; MAX_SAMPLES],
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    pub fn new() -> Self {
        Self {
            held: [None; SLOTS],
            next: None,
            conceal_until: None,
            last: [0; MAX_SAMPLES],
            last_len: 0,
            next_timestamp: 0,
            concealing: 0,
            ticks_per_sample: 1,
            out: [0; MAX_SAMPLES],
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The stream's RTP clock runs at `rate` Hz (the codec's).
    pub fn set_clock_rate(&mut self, rate: u32) {
        self.ticks_per_sample = (rate / 8000).max(1);
    }

    /// The stream changed source (a new SSRC): nothing held belongs to it.
    pub fn restart(&mut self) {
        self.held = [None; SLOTS];
        self.next = None;
        self.conceal_until = None;
    }

    /// A packet `seq` (RTP `timestamp`) arrived at `now` with its payload
    /// (none for a packet that only holds its place, an RFC 4733 key; one
    /// over [`MAX_PAYLOAD`] octets is dropped and left to concealment).
    /// Pop what it lets out.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            self.stats.oversize += 1;
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next);
        if ahead > u16::MAX - RESTART {
            // Behind what came out already (or a duplicate of it).
            self.stats.late += 1;
            return;
        }
        if ahead >= RESTART {
            // Far from anything expected: a new stream starts here.
            self.stats.restarts += 1;
            self.held = [None; SLOTS];
            self.next = Some(seq);
            self.conceal_until = None;
        }
        if self.held.iter().flatten().any(|h| h.seq == seq) {
            self.stats.duplicates += 1;
            return;
        }
        // Behind a packet already waiting: it came out of order.
        let next = self.next.unwrap_or(seq);
        let behind_one = self
            .held
            .iter()
            .flatten()
            .any(|h| h.seq.wrapping_sub(next) > seq.wrapping_sub(next));
        if behind_one {
            self.stats.reordered += 1;
        }
        let Some(slot) = self.held.iter_mut().find(|h| h.is_none()) else {
            self.stats.overflow += 1;
            return;
        };
        let len = payload.len();
        let mut held = Held {
            seq,
            timestamp,
            arrived: now,
            len,
            payload: [0; MAX_PAYLOAD],
        };
        held.payload[..len].copy_from_slice(&payload[..len]);
        *slot = Some(held);
        // A packet the window's width ahead of a gap: the gap is lost.
        let beyond = self
            .held
            .iter()
            .flatten()
            .any(|h| h.seq.wrapping_sub(self.next.unwrap_or(seq)) >= WINDOW_PACKETS);
        if beyond {
            self.give_up_gap();
        }
    }

    /// When [`Self::handle_timeout`] is next due: the oldest packet held
    /// behind a gap stops waiting for it then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.conceal_until.is_some() {
            return None;
        }
        self.held.iter().flatten().map(|h| h.arrived + WINDOW).min()
    }

    /// Time passed: a gap waited for longer than the window is lost. Pop
    /// what it lets out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .held
            .iter()
            .flatten()
            .any(|h| now >= h.arrived + WINDOW)
        {
            self.give_up_gap();
        }
    }

    /// The next packet's audio in order, decoded by `decoder` (8 kHz
    /// samples), when it is there, or made up for a packet given up as
    /// lost; with where it starts on the RTP clock.
    pub fn pop(&mut self, decoder: &mut impl Decode) -> Option<(Played, u32, &[i16])> {
        let next = self.next?;
        if let Some(position) = self
            .held
            .iter()
            .position(|h| h.is_some_and(|h| h.seq == next))
        {
            let held = self.held[position].take()?;
            self.next = Some(next.wrapping_add(1));
            if self.conceal_until == Some(next) {
                self.conceal_until = None;
            }
            let len = if held.len > 0 {
                decoder
                    .decode(&held.payload[..held.len], &mut self.out)
                    .min(MAX_SAMPLES)
            } else {
                0
            };
            if len > 0 {
                self.concealing = 0;
                self.last[..len].copy_from_slice(&self.out[..len]);
                self.last_len = len;
                self.next_timestamp = held
                    .timestamp
                    .wrapping_add(len as u32 * self.ticks_per_sample);
            }
            return Some((Played::Received, held.timestamp, &self.out[..len]));
        }
        let until = self.conceal_until?;
        if until == next {
            self.conceal_until = None;
            return None;
        }
        self.next = Some(next.wrapping_add(1));
        self.stats.concealed += 1;
        let len = if self.last_len == 0 {
            160
        } else {
            self.last_len
        };
        let after = next.wrapping_add(1);
        let following = self
            .held
            .iter()
            .flatten()
            .find(|h| h.seq == after && h.len > 0)
            .map(|h| &h.payload[..h.len]);
        let (played, len) = match decoder.conceal(following, &mut self.out[..len]) {
            Some(Concealment::Recovered(n)) => {
                self.stats.recovered += 1;
                (Played::Recovered, n.min(len))
            }
            Some(Concealment::Concealed(n)) => (Played::Concealed, n.min(len)),
            None => {
                let gain = FADE.get(self.concealing as usize).copied().unwrap_or(0.0);
                self.concealing = self.concealing.saturating_add(1);
                for (out, &last) in self.out[..len].iter_mut().zip(&self.last[..len]) {
                    *out = (f32::from(last) * gain) as i16;
                }
                (Played::Concealed, len)
            }
        };
        let timestamp = self.next_timestamp;
        self.next_timestamp = timestamp.wrapping_add(len as u32 * self.ticks_per_sample);
        Some((played, timestamp, &self.out[..len]))
    }

    /// Stops waiting for the packets before the earliest one held.
    fn give_up_gap(&mut self) {
        let Some(next) = self.next else {
            return;
        };
        self.conceal_until = self
            .held
            .iter()
            .flatten()
            .map(|h| h.seq)
            .min_by_key(|seq| seq.wrapping_sub(next));
        if self.conceal_until == Some(next) {
            self.conceal_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A packet's payload that says which packet it is.
    fn audio(seq: u16) -> [u8; 160] {
        [seq as u8; 160]
    }

    /// A stand-in decoder: octet n is sample 10·n.
    fn decode(payload: &[u8], out: &mut [i16]) -> usize {
        for (sample, &octet) in out.iter_mut().zip(payload) {
            *sample = i16::from(octet) * 10;
        }
        payload.len().min(out.len())
    }

    /// Everything the buffer lets out now: (how, first sample).
    fn drain(buffer: &mut JitterBuffer) -> Vec<(Played, i16)> {
        std::iter::from_fn(|| buffer.pop(&mut decode).map(|(how, _, pcm)| (how, pcm[0]))).collect()
    }

    fn received(seqs: &[u16]) -> Vec<(Played, i16)> {
        seqs.iter()
            .map(|&s| (Played::Received, i16::from(s as u8) * 10))
            .collect()
    }

    #[test]
    fn in_order_packets_come_out_at_once() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        for seq in [65_534u16, 65_535, 0, 1] {
            b.push(t, seq, u32::from(seq) * 160, &audio(seq));
            assert_eq!(drain(&mut b), received(&[seq]), "seq {seq}");
        }
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.stats(), JitterStats::default());
    }

    #[test]
    fn a_reordered_packet_is_put_back_in_place() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(1));
        drain(&mut b);
        b.push(t + ms(20), 3, 3 * 160, &audio(3));
        assert_eq!(drain(&mut b), vec![], "3 waits for 2");
        assert_eq!(b.poll_timeout(), Some(t + ms(80)));
        b.push(t + ms(25), 2, 2 * 160, &audio(2));
        assert_eq!(drain(&mut b), received(&[2, 3]));
        assert_eq!(b.stats().reordered, 1);
        assert_eq!(b.stats().concealed, 0);
    }

    #[test]
    fn a_lost_packet_is_concealed_once_the_window_is_ahead_of_it() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(1));
        drain(&mut b);
        b.push(t, 3, 3 * 160, &audio(3));
        b.push(t, 4, 4 * 160, &audio(4));
        assert_eq!(drain(&mut b), vec![]);
        b.push(t, 5, 5 * 160, &audio(5));
        let out = drain(&mut b);
        // 2 made up from 1, faded; then the rest in order.
        assert_eq!(out[0], (Played::Concealed, 8));
        assert_eq!(out[1..], received(&[3, 4, 5])[..]);
        assert_eq!(b.stats().concealed, 1);
    }

    #[test]
    fn a_gap_older_than_the_window_is_given_up_on_time() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(1));
        drain(&mut b);
        b.push(t + ms(40), 3, 3 * 160, &audio(3));
        b.handle_timeout(t + ms(99));
        assert_eq!(drain(&mut b), vec![]);
        assert_eq!(b.poll_timeout(), Some(t + ms(100)));
        b.handle_timeout(t + ms(100));
        assert_eq!(
            drain(&mut b),
            vec![(Played::Concealed, 8), (Played::Received, 30)]
        );
    }

    #[test]
    fn a_long_loss_fades_to_silence() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(100));
        drain(&mut b);
        b.push(t, 7, 7 * 160, &audio(7));
        b.handle_timeout(t + WINDOW);
        let out = drain(&mut b);
        let concealed: Vec<i16> = out
            .iter()
            .filter(|(how, _)| *how == Played::Concealed)
            .map(|&(_, first)| first)
            .collect();
        // 1000 × 0.8, 0.5, 0.25, then nothing.
        assert_eq!(concealed, vec![800, 500, 250, 0, 0]);
        assert_eq!(out.last(), Some(&(Played::Received, 70)));
        assert_eq!(b.stats().concealed, 5);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped_and_counted() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 10, 10 * 160, &audio(10));
        drain(&mut b);
        b.push(t, 10, 10 * 160, &audio(10));
        b.push(t, 9, 9 * 160, &audio(9));
        b.push(t, 12, 12 * 160, &audio(12));
        b.push(t, 12, 12 * 160, &audio(12));
        b.push(t, 11, 11 * 160, &audio(11));
        assert_eq!(drain(&mut b), received(&[11, 12]));
        let stats = b.stats();
        assert_eq!((stats.late, stats.duplicates, stats.reordered), (2, 1, 1));
    }

    #[test]
    fn a_key_packet_holds_its_place_without_audio() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(1));
        drain(&mut b);
        b.push(t, 3, 3 * 160, &audio(3));
        b.push(t, 2, 320, &[]);
        let out: Vec<(Played, usize)> =
            std::iter::from_fn(|| b.pop(&mut decode).map(|(how, _, pcm)| (how, pcm.len())))
                .collect();
        assert_eq!(out, vec![(Played::Received, 0), (Played::Received, 160)]);
        assert_eq!(b.stats().concealed, 0);
        // A loss after it is concealed from the last audio, not from it.
        b.push(t, 5, 5 * 160, &audio(5));
        b.handle_timeout(t + WINDOW);
        assert_eq!(
            b.pop(&mut decode).map(|(how, _, pcm)| (how, pcm[0])),
            Some((Played::Concealed, 24))
        );
    }

    #[test]
    fn each_packet_out_says_where_it_starts_on_the_rtp_clock() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 1000, &audio(1));
        assert_eq!(
            b.pop(&mut decode).map(|(how, ts, _)| (how, ts)),
            Some((Played::Received, 1000))
        );
        b.push(t, 3, 1320, &audio(3));
        b.handle_timeout(t + WINDOW);
        let out: Vec<(Played, u32)> =
            std::iter::from_fn(|| b.pop(&mut decode).map(|(how, ts, _)| (how, ts))).collect();
        assert_eq!(
            out,
            vec![(Played::Concealed, 1160), (Played::Received, 1320)]
        );
    }

    #[test]
    fn a_sequence_jump_is_a_new_stream_not_a_loss() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        b.push(t, 1, 160, &audio(1));
        drain(&mut b);
        b.push(t, 40_000, 40_000 * 160, &audio(4));
        assert_eq!(drain(&mut b), vec![(Played::Received, 40)]);
        assert_eq!((b.stats().restarts, b.stats().concealed), (1, 0));
    }

    #[test]
    fn a_shell_that_never_pops_cannot_grow_it() {
        let t = Instant::now();
        let mut b = JitterBuffer::new();
        for seq in 0..20u16 {
            b.push(t, seq, u32::from(seq) * 160, &audio(seq));
        }
        assert_eq!(b.stats().overflow, 20 - SLOTS as u64);
        assert_eq!(drain(&mut b).len(), SLOTS);
        // A packet longer than a slot holds is refused, not cut or
        // overrun; the largest one kept decodes to at most MAX_SAMPLES.
        b.push(t, 20, 3200, &[1; MAX_PAYLOAD + 1]);
        assert_eq!(b.stats().oversize, 1);
        b.push(t, 21, 3360, &[1; MAX_PAYLOAD]);
        b.handle_timeout(t + WINDOW);
        let last =
            std::iter::from_fn(|| b.pop(&mut decode).map(|(how, _, pcm)| (how, pcm.len()))).last();
        assert_eq!(last, Some((Played::Received, MAX_SAMPLES)));
    }
}
