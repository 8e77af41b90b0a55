//! Symmetric RTP (RFC 4961 behaviour for a peer behind NAT): send to where
//! the caller's RTP really comes from, not only where its SDP said (sans-IO).
//!
//! The first valid packet latches the source. Packets from another source are
//! refused while the latched one is alive, so a stray or hostile sender cannot
//! steal the stream; once the latched source has been silent for
//! [`RELATCH_AFTER`], a new source is accepted (the caller's NAT binding
//! changed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Silence after which another source may take over the stream.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// What to do with a valid packet from `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// Accept, and send our RTP to this address from now on.
    Latch(SocketAddr),
    /// From another source while the latched one is alive: drop it.
    Reject { latched: SocketAddr },
}

#[derive(Debug, Default)]
pub struct RtpLatch {
    /// The source we send to, and when it last sent a valid packet.
    latched: Option<(SocketAddr, Instant)>,
}

impl RtpLatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched.map(|(addr, _)| addr)
    }

    /// Feeds a valid RTP packet's source address, at `now`.
    pub fn on_packet(&mut self, source: SocketAddr, now: Instant) -> LatchDecision {
        match self.latched {
            Some((addr, _)) if addr == source => {
                self.latched = Some((source, now));
                LatchDecision::Accept
            }
            Some((addr, last_seen)) if now.saturating_duration_since(last_seen) < RELATCH_AFTER => {
                LatchDecision::Reject { latched: addr }
            }
            _ => {
                self.latched = Some((source, now));
                LatchDecision::Latch(source)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn first_source_latches_and_stays() {
        let t = Instant::now();
        let mut latch = RtpLatch::new();
        assert_eq!(
            latch.on_packet(addr(4000), t),
            LatchDecision::Latch(addr(4000))
        );
        assert_eq!(
            latch.on_packet(addr(4000), t + Duration::from_millis(20)),
            LatchDecision::Accept
        );
        assert_eq!(latch.latched(), Some(addr(4000)));
    }

    #[test]
    fn another_source_is_refused_while_the_latched_one_is_alive() {
        let t = Instant::now();
        let mut latch = RtpLatch::new();
        latch.on_packet(addr(4000), t);
        for ms in [0u64, 500, 1999] {
            assert_eq!(
                latch.on_packet(addr(5000), t + Duration::from_millis(ms)),
                LatchDecision::Reject {
                    latched: addr(4000)
                }
            );
        }
        // The rejected packets did not refresh anything: the caller is still 4000.
        assert_eq!(latch.latched(), Some(addr(4000)));
    }

    #[test]
    fn a_new_source_takes_over_after_the_old_one_went_quiet() {
        let t = Instant::now();
        let mut latch = RtpLatch::new();
        latch.on_packet(addr(4000), t);
        latch.on_packet(addr(4000), t + Duration::from_secs(1));
        // 1 s + RELATCH_AFTER later: the old binding is gone.
        let later = t + Duration::from_secs(1) + RELATCH_AFTER;
        assert_eq!(
            latch.on_packet(addr(6000), later),
            LatchDecision::Latch(addr(6000))
        );
        assert_eq!(
            latch.on_packet(addr(4000), later + Duration::from_millis(20)),
            LatchDecision::Reject {
                latched: addr(6000)
            }
        );
    }
}
