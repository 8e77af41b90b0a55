//! Symmetric RTP (RFC 4961 behaviour, for callers behind NAT): send to where
//! the caller's RTP really comes from, not only where its SDP said (sans-IO).
//!
//! Packets from the address the SDP named latch at once. Any other source
//! may latch only while nothing is latched and only within
//! [`LEARN_WINDOW`] of the answer (or of a re-INVITE that moved the media):
//! a caller behind NAT sends at once. It is on probation first: it must
//! send [`PROBATION`] packets in a row with consecutive sequence numbers
//! and one SSRC before it is believed (as Asterisk's strictrtp learning
//! does), and its packets are dropped until then. Once a source is latched,
//! no other takes over however long the caller is silent (a hijacker would
//! only have to wait): only the signalling moves the media
//! ([`RtpLatch::expect`]). A single forged packet never latches.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after the answer (or a re-INVITE) a source other than the
/// signalled one may still be learnt.
pub const LEARN_WINDOW: Duration = Duration::from_secs(2);
/// Consecutive packets a new source must send before it is believed.
pub const PROBATION: u32 = 3;

/// What to do with a valid packet from `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// Accept, and send our RTP to this address from now on.
    Latch(SocketAddr),
    /// From another source, not (yet) believed: drop it.
    Reject,
}

/// A source on probation.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    source: SocketAddr,
    ssrc: u32,
    last_seq: u16,
    packets: u32,
}

#[derive(Debug)]
pub struct RtpLatch {
    /// Where the SDP said the caller's media is.
    expected: SocketAddr,
    /// The source we send to (whatever SSRC it sends with: a new stream
    /// from the latched source is the caller's).
    latched: Option<SocketAddr>,
    candidate: Option<Candidate>,
    /// Until when another source than the signalled one may be learnt.
    learn_until: Instant,
}

impl RtpLatch {
    /// The media was answered at `now`.
    pub fn new(expected: SocketAddr, now: Instant) -> Self {
        Self {
            expected,
            latched: None,
            candidate: None,
            learn_until: now + LEARN_WINDOW,
        }
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// The caller's SDP moved its media (re-INVITE) at `now`: expect it
    /// there (a source behind NAT may be learnt again for a while).
    pub fn expect(&mut self, expected: SocketAddr, now: Instant) {
        self.expected = expected;
        self.latched = None;
        self.candidate = None;
        self.learn_until = now + LEARN_WINDOW;
    }

    /// Feeds a valid RTP packet's source, SSRC and sequence number, at `now`.
    pub fn on_packet(
        &mut self,
        source: SocketAddr,
        ssrc: u32,
        seq: u16,
        now: Instant,
    ) -> LatchDecision {
        // The address the signalling named always wins (a re-INVITE moved
        // the media there): leftovers from an old address cannot keep it out.
        if source == self.expected && self.latched != Some(source) {
            self.latched = Some(source);
            self.candidate = None;
            return LatchDecision::Latch(source);
        }
        match self.latched {
            // The latched source may start a new stream (new SSRC).
            Some(addr) if addr == source => return LatchDecision::Accept,
            // Another source while one is latched: never, however quiet
            // the caller is.
            Some(_) => return LatchDecision::Reject,
            // Nothing latched: another source only while it may be learnt.
            None if now > self.learn_until => return LatchDecision::Reject,
            None => {}
        }
        // Probation of a new source.
        let candidate = match self.candidate {
            Some(c)
                if c.source == source && c.ssrc == ssrc && seq == c.last_seq.wrapping_add(1) =>
            {
                Candidate {
                    last_seq: seq,
                    packets: c.packets + 1,
                    ..c
                }
            }
            _ => Candidate {
                source,
                ssrc,
                last_seq: seq,
                packets: 1,
            },
        };
        if candidate.packets >= PROBATION {
            self.candidate = None;
            self.latched = Some(source);
            LatchDecision::Latch(source)
        } else {
            self.candidate = Some(candidate);
            LatchDecision::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_sdp_address_latches_at_once() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        assert_eq!(
            latch.on_packet(addr(4000), 7, 1, t),
            LatchDecision::Latch(addr(4000))
        );
        assert_eq!(
            latch.on_packet(addr(4000), 7, 2, t + ms(20)),
            LatchDecision::Accept
        );
    }

    #[test]
    fn another_address_latches_after_probation_only() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        // A NAT rewrote the port: three consecutive packets are believed.
        assert_eq!(latch.on_packet(addr(5000), 7, 10, t), LatchDecision::Reject);
        assert_eq!(
            latch.on_packet(addr(5000), 7, 11, t + ms(20)),
            LatchDecision::Reject
        );
        assert_eq!(
            latch.on_packet(addr(5000), 7, 12, t + ms(40)),
            LatchDecision::Latch(addr(5000))
        );
        // A gap in the sequence restarts the probation of another source.
        let mut other = RtpLatch::new(addr(4000), t);
        other.on_packet(addr(5000), 7, 10, t);
        other.on_packet(addr(5000), 7, 12, t);
        assert_eq!(other.on_packet(addr(5000), 7, 13, t), LatchDecision::Reject);
        assert_eq!(
            other.on_packet(addr(5000), 7, 14, t),
            LatchDecision::Latch(addr(5000))
        );
    }

    #[test]
    fn a_stray_sender_cannot_take_a_live_or_quiet_stream() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        latch.on_packet(addr(4000), 7, 1, t);
        // While the caller is alive: nothing from elsewhere.
        for seq in 0..10 {
            assert_eq!(
                latch.on_packet(addr(6000), 9, seq, t + ms(100)),
                LatchDecision::Reject
            );
        }
        // The caller went quiet for 10 s (DTX, mute): still nothing, not
        // even with the caller's own SSRC (a hijacker may have seen it).
        let later = t + ms(10_000);
        for seq in 0..10 {
            assert_eq!(
                latch.on_packet(addr(6000), 9, seq, later),
                LatchDecision::Reject
            );
            assert_eq!(
                latch.on_packet(addr(6001), 7, 100 + seq, later),
                LatchDecision::Reject
            );
        }
        assert_eq!(latch.latched(), Some(addr(4000)));
    }

    #[test]
    fn a_caller_who_never_sent_cannot_be_taken_over_after_the_learning_window() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        let later = t + LEARN_WINDOW + ms(1);
        for seq in 0..10 {
            assert_eq!(
                latch.on_packet(addr(6000), 9, seq, later + ms(20 * u64::from(seq))),
                LatchDecision::Reject
            );
        }
        assert_eq!(latch.latched(), None);
        // The caller's own address, when it starts, is taken at once.
        assert_eq!(
            latch.on_packet(addr(4000), 7, 1, later + ms(500)),
            LatchDecision::Latch(addr(4000))
        );
    }

    #[test]
    fn leftovers_from_the_old_address_cannot_lock_out_the_new_one() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        latch.on_packet(addr(4000), 7, 1, t);
        latch.expect(addr(4200), t);
        // The old stream goes on for a while after the re-INVITE...
        for seq in 2..6 {
            latch.on_packet(addr(4000), 7, seq, t + ms(20 * u64::from(seq)));
        }
        // ...the new address, with a new SSRC, still takes over at once.
        assert_eq!(
            latch.on_packet(addr(4200), 99, 500, t + ms(200)),
            LatchDecision::Latch(addr(4200))
        );
        assert_eq!(
            latch.on_packet(addr(4000), 7, 7, t + ms(220)),
            LatchDecision::Reject
        );
    }

    #[test]
    fn a_new_sdp_address_resets_the_latch() {
        let t = Instant::now();
        let mut latch = RtpLatch::new(addr(4000), t);
        latch.on_packet(addr(4000), 7, 1, t);
        latch.expect(addr(4200), t);
        assert_eq!(
            latch.on_packet(addr(4200), 8, 1, t + ms(20)),
            LatchDecision::Latch(addr(4200))
        );
    }
}
