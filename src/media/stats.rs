//! Receive statistics of one RTP stream (sans-IO): packets, loss and
//! reordering from sequence numbers, the largest gap between arrivals, and
//! the interarrival jitter of RFC 3550 §6.4.1 / A.8.

use std::time::{Duration, Instant};

/// The RTP clock rate until the stream's codec says otherwise (G.711).
const DEFAULT_CLOCK_RATE: u32 = 8000;

#[derive(Debug, Default, Clone)]
pub struct ReceiveStats {
    pub packets: u64,
    /// Packets with a sequence number at or behind the highest seen.
    pub out_of_order: u64,
    first: Option<(Instant, u16)>,
    /// The current source's first sequence number (none until its first
    /// packet).
    source_first: Option<u16>,
    /// Packets expected of the sources before the current one.
    earlier_expected: u64,
    /// Highest sequence number seen, extended past wraps (RFC 3550 A.1).
    highest: u64,
    last_arrival: Option<Instant>,
    /// Transit time of the previous packet, in RTP clock units.
    last_transit: Option<f64>,
    jitter: f64,
    /// The stream's RTP clock rate (Hz); 0 until set means 8 kHz.
    clock_rate: u32,
    pub max_gap: Duration,
    /// When the first packet whose audio is not silence arrived.
    pub first_audio: Option<Instant>,
}

impl ReceiveStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's RTP clock runs at `rate` Hz (its codec's; a re-offer
    /// may change it: the jitter is rescaled, the next transit starts
    /// afresh).
    pub fn set_clock_rate(&mut self, rate: u32) {
        let old = self.clock();
        if rate == 0 || f64::from(rate) == old {
            return;
        }
        self.jitter *= f64::from(rate) / old;
        self.clock_rate = rate;
        self.last_transit = None;
    }

    fn clock(&self) -> f64 {
        f64::from(if self.clock_rate == 0 {
            DEFAULT_CLOCK_RATE
        } else {
            self.clock_rate
        })
    }

    /// The caller's stream changed source (a new SSRC: a transfer, a
    /// re-INVITE through a bridge): its sequence numbers and timestamps
    /// start afresh; what the earlier ones lost is kept.
    pub fn new_source(&mut self) {
        self.earlier_expected = self.expected();
        self.source_first = None;
        self.last_transit = None;
    }

    /// Feeds one audio packet received at `now`.
    pub fn on_packet(&mut self, now: Instant, seq: u16, timestamp: u32, audible: bool) {
        self.count(now, seq);
        // Transit = arrival (in RTP units, from the first packet) − timestamp.
        let Some((t0, _)) = self.first else {
            return;
        };
        let arrival = now.saturating_duration_since(t0).as_secs_f64() * self.clock();
        let transit = arrival - f64::from(timestamp);
        if let Some(last) = self.last_transit {
            let mut d = transit - last;
            // Timestamps wrap at 2^32: keep the difference small.
            if d.abs() > f64::from(u32::MAX) / 2.0 {
                d -= d.signum() * (f64::from(u32::MAX) + 1.0);
            }
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if audible && self.first_audio.is_none() {
            self.first_audio = Some(now);
        }
    }

    /// The caller's audio was first loud enough to be heard at `now` (the
    /// first time counts).
    pub fn heard(&mut self, now: Instant) {
        if self.first_audio.is_none() {
            self.first_audio = Some(now);
        }
    }

    /// Feeds one telephone-event packet (RFC 4733): it shares the stream's
    /// sequence numbers, so it counts for loss, but its timestamp is the
    /// event's start, so it stays out of the jitter.
    pub fn on_event_packet(&mut self, now: Instant, seq: u16) {
        self.count(now, seq);
    }

    fn count(&mut self, now: Instant, seq: u16) {
        self.packets += 1;
        self.first.get_or_insert((now, seq));
        match self.source_first {
            None => {
                self.source_first = Some(seq);
                self.highest = u64::from(seq);
            }
            Some(_) => {
                let last = self.highest as u16;
                let delta = seq.wrapping_sub(last) as i16;
                if delta > 0 {
                    self.highest += delta as u64;
                } else {
                    self.out_of_order += 1;
                }
            }
        }
        if let Some(previous) = self.last_arrival {
            self.max_gap = self.max_gap.max(now.saturating_duration_since(previous));
        }
        self.last_arrival = Some(now);
    }

    /// When the first packet arrived.
    pub fn first_arrival(&self) -> Option<Instant> {
        self.first.map(|(t, _)| t)
    }

    /// Packets expected from the sequence numbers (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        self.earlier_expected
            + match self.source_first {
                Some(first) => self.highest - u64::from(first) + 1,
                None => 0,
            }
    }

    /// Packets lost: expected minus received (RFC 3550 A.3), floored at
    /// zero (duplicates would make it negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// The highest sequence number received, extended with its cycles
    /// (RFC 3550 A.1), as a reception report carries it.
    pub fn highest_extended(&self) -> u32 {
        self.highest as u32
    }

    /// Interarrival jitter in timestamp units, as a reception report
    /// carries it.
    pub fn jitter_units(&self) -> u32 {
        self.jitter as u32
    }

    /// Interarrival jitter, in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter / self.clock() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_perfect_stream_has_no_loss_no_jitter() {
        let t = Instant::now();
        let mut s = ReceiveStats::new();
        for n in 0..100u16 {
            s.on_packet(
                t + ms(20 * u64::from(n)),
                65_500u16.wrapping_add(n),
                u32::from(n) * 160,
                n >= 10,
            );
        }
        assert_eq!(
            (s.packets, s.expected(), s.lost(), s.out_of_order),
            (100, 100, 0, 0)
        );
        assert!(s.jitter_ms() < 0.001);
        assert_eq!(s.max_gap, ms(20));
        assert_eq!(s.first_audio, Some(t + ms(200)));
    }

    #[test]
    fn loss_reordering_gaps_and_jitter_are_seen() {
        let t = Instant::now();
        let mut s = ReceiveStats::new();
        // seq 0,1,2,4,3,6 (5 lost), with the 4th packet 30 ms late.
        let arrivals = [(0, 0), (20, 1), (40, 2), (90, 4), (91, 3), (120, 6)];
        for (at, seq) in arrivals {
            s.on_packet(t + ms(at), seq, u32::from(seq) * 160, true);
        }
        assert_eq!(s.expected(), 7);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.lost(), 1, "5 lost; 3 came late, not lost");
        assert_eq!(s.max_gap, ms(50));
        assert!(s.jitter_ms() > 1.0, "{}", s.jitter_ms());
    }

    #[test]
    fn a_new_source_starts_its_sequence_afresh_and_keeps_earlier_loss() {
        let t = Instant::now();
        let mut s = ReceiveStats::new();
        // seq 10..=19 with 15 lost, then a new SSRC from 40 000 on.
        for (n, seq) in (10..20u16).filter(|&q| q != 15).enumerate() {
            s.on_packet(t + ms(20 * n as u64), seq, u32::from(seq) * 160, false);
        }
        s.new_source();
        for n in 0..5u16 {
            let at = t + ms(200 + 20 * u64::from(n));
            s.on_packet(at, 40_000 + n, 3_000_000 + u32::from(n) * 160, false);
        }
        assert_eq!((s.packets, s.expected(), s.lost()), (14, 15, 1));
        assert_eq!(s.out_of_order, 0);
        assert!(s.jitter_ms() < 1.0, "{}", s.jitter_ms());
    }

    #[test]
    fn key_packets_count_for_loss_but_not_for_jitter() {
        let t = Instant::now();
        let mut s = ReceiveStats::new();
        s.on_packet(t, 10, 0, false);
        // Three packets of one key: one timestamp, arrivals 20 ms apart.
        for n in 1..4u16 {
            s.on_event_packet(t + ms(20 * u64::from(n)), 10 + n);
        }
        s.on_packet(t + ms(80), 14, 640, false);
        assert_eq!((s.packets, s.expected(), s.lost()), (5, 5, 0));
        assert!(s.jitter_ms() < 0.001, "{}", s.jitter_ms());
    }
}
