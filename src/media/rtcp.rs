//! RTCP (RFC 3550 §6), sans-IO: the compound packets a call sends (a sender
//! report while we send, a receiver report otherwise, each with one
//! reception report block for the caller's stream and our CNAME; BYE when
//! the call ends), what the caller's reports say (round-trip time, the loss
//! and jitter it sees of our stream, its BYE), and when the next report is
//! due.
//!
//! Ours rather than webrtc-rs' `rtcp`: a call needs SR, RR, SDES CNAME and
//! BYE (about 300 lines with their tests), and that crate brings
//! `webrtc-util` with `nix`, `ipnet`, `lazy_static`, `async-trait` and a
//! second copy of `thiserror`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::media::stats::ReceiveStats;

/// Packet types (RFC 3550 §12.1).
pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
/// The report interval: RFC 3550's minimum of 5 s (§6.2), each one drawn
/// between 0.5 and 1.5 times it (§6.3.1), the first one half of that.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Room for one of our compound packets (SR + 1 block + SDES + BYE).
pub const MAX_PACKET: usize = 160;
/// Below zero a measured round trip may be by rounding alone: 10 ms in
/// 1/65536 s.
const RTT_ROUNDING: u32 = 655;
/// Seconds from 1900 (NTP's epoch) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("RTCP packet too short")]
    TooShort,
    #[error("not RTCP version 2")]
    Version,
    #[error("RTCP length past the datagram")]
    Length,
}

/// Whether a datagram on a shared RTP/RTCP port is RTCP (RFC 5761 §4: its
/// second byte is a packet type from 192 to 223, which no RTP payload type
/// with its marker bit reaches in practice).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

/// A 64-bit NTP timestamp of a wallclock time.
pub fn ntp(wallclock: SystemTime) -> u64 {
    let since = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp (what LSR carries).
fn middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in the units of DLSR and round-trip times: 1/65536 s.
fn to_units(d: Duration) -> u32 {
    ((d.as_nanos() << 16) / 1_000_000_000).min(u128::from(u32::MAX)) as u32
}

fn from_units(units: u32) -> Duration {
    Duration::from_nanos((u64::from(units) * 1_000_000_000) >> 16)
}

/// What a sender report says of the sender's own stream (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Lost since the start (24-bit signed: duplicates may make it negative).
    pub cumulative_lost: i32,
    /// Highest sequence number received, extended with its cycles.
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the last SR's NTP time from that source.
    pub lsr: u32,
    /// Since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0xFF_FFFF;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }

    fn read(b: &[u8]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = word(4) & 0xFF_FFFF;
        // Sign-extend the 24-bit count.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Self {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        }
    }
}

/// One packet of a compound RTCP datagram, as far as a call cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    Bye {
        ssrcs: Vec<u32>,
    },
    /// SDES, APP, feedback: not read.
    Other {
        packet_type: u8,
    },
}

/// Reads a compound RTCP datagram (RFC 3550 §6.1: version 2, lengths
/// inside the datagram). The first packet should be a report; phones that
/// send BYE first (baresip) or a lone APP are read all the same.
pub fn parse(datagram: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut packets = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        if rest[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let count = usize::from(rest[0] & 0x1F);
        let packet_type = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(RtcpError::Length);
        }
        let body = &rest[4..len];
        let ssrc = |b: &[u8]| {
            b.get(0..4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        let blocks = |b: &[u8]| -> Result<Vec<ReportBlock>, RtcpError> {
            if b.len() < count * 24 {
                return Err(RtcpError::Length);
            }
            Ok(b.chunks_exact(24)
                .take(count)
                .map(ReportBlock::read)
                .collect())
        };
        packets.push(match packet_type {
            PT_SR => {
                if body.len() < 24 {
                    return Err(RtcpError::TooShort);
                }
                let word =
                    |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
                RtcpPacket::SenderReport {
                    ssrc: word(0),
                    info: SenderInfo {
                        ntp: (u64::from(word(4)) << 32) | u64::from(word(8)),
                        rtp_timestamp: word(12),
                        packets: word(16),
                        octets: word(20),
                    },
                    reports: blocks(&body[24..])?,
                }
            }
            PT_RR => RtcpPacket::ReceiverReport {
                ssrc: ssrc(body).ok_or(RtcpError::TooShort)?,
                reports: blocks(&body[4..])?,
            },
            PT_BYE => {
                if body.len() < count * 4 {
                    return Err(RtcpError::Length);
                }
                RtcpPacket::Bye {
                    ssrcs: body.chunks_exact(4).take(count).filter_map(ssrc).collect(),
                }
            }
            other => RtcpPacket::Other { packet_type: other },
        });
        rest = &rest[len..];
    }
    Ok(packets)
}

/// Writes one packet's header; returns where its body starts.
fn header(out: &mut [u8], count: usize, packet_type: u8, len: usize) {
    out[0] = 0x80 | (count as u8 & 0x1F);
    out[1] = packet_type;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

/// SDES with our CNAME (at most 32 bytes of it), padded to a word.
fn write_sdes(out: &mut [u8], ssrc: u32, cname: &str) -> usize {
    let name = &cname.as_bytes()[..cname.len().min(32)];
    // SSRC, CNAME item (type, length, text), end of list, padding.
    let len = (4 + 4 + 2 + name.len() + 1).div_ceil(4) * 4;
    out[..len].fill(0);
    header(out, 1, PT_SDES, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8] = 1;
    out[9] = name.len() as u8;
    out[10..10 + name.len()].copy_from_slice(name);
    len
}

/// Our report into `out` (at least [`MAX_PACKET`] bytes): SR when `sender`
/// is given, RR otherwise, with `block` when we receive, then SDES CNAME.
pub fn write_report(
    out: &mut [u8],
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
) -> usize {
    let blocks = usize::from(block.is_some());
    let len = match sender {
        Some(info) => {
            let len = 28 + 24 * blocks;
            header(out, blocks, PT_SR, len);
            out[4..8].copy_from_slice(&ssrc.to_be_bytes());
            out[8..16].copy_from_slice(&info.ntp.to_be_bytes());
            out[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
            out[20..24].copy_from_slice(&info.packets.to_be_bytes());
            out[24..28].copy_from_slice(&info.octets.to_be_bytes());
            if let Some(b) = block {
                b.write(&mut out[28..52]);
            }
            len
        }
        None => {
            let len = 8 + 24 * blocks;
            header(out, blocks, PT_RR, len);
            out[4..8].copy_from_slice(&ssrc.to_be_bytes());
            if let Some(b) = block {
                b.write(&mut out[8..32]);
            }
            len
        }
    };
    len + write_sdes(&mut out[len..], ssrc, cname)
}

/// The end of our stream (RFC 3550 §6.6): a report, then BYE.
pub fn write_bye(
    out: &mut [u8],
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
) -> usize {
    let len = write_report(out, ssrc, sender, block, cname);
    header(&mut out[len..], 1, PT_BYE, 8);
    out[len + 4..len + 8].copy_from_slice(&ssrc.to_be_bytes());
    len + 8
}

/// What the caller's reports told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerView {
    /// Round-trip time from its last report of our stream.
    pub rtt: Option<Duration>,
    /// Its last report block about our stream (its loss and jitter).
    pub of_us: Option<ReportBlock>,
    /// It said BYE.
    pub bye: bool,
}

/// One call's RTCP: when to report and what, and what the caller reported.
pub struct RtcpSession {
    ssrc: u32,
    next: Instant,
    /// The caller's last SR: the middle of its NTP time and when it came.
    peer_sr: Option<(u32, Instant)>,
    /// Expected and received packets at our last report (for the fraction
    /// lost over the interval).
    reported: (u64, u64),
    peer: PeerView,
    /// A random draw in [0.5, 1.5) for each interval, from this state.
    draw: u32,
}

impl RtcpSession {
    /// Our stream's `ssrc`; the first report half an interval after `now`.
    pub fn new(now: Instant, ssrc: u32, seed: u32) -> Self {
        let mut session = Self {
            ssrc,
            next: now,
            peer_sr: None,
            reported: (0, 0),
            peer: PeerView::default(),
            draw: seed | 1,
        };
        session.next = now + session.interval() / 2;
        session
    }

    pub fn peer(&self) -> PeerView {
        self.peer
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// The report block for the caller's stream `peer_ssrc` as `stats` has
    /// it at `now`, and the next report scheduled.
    pub fn report(
        &mut self,
        now: Instant,
        peer_ssrc: Option<u32>,
        stats: &ReceiveStats,
    ) -> Option<ReportBlock> {
        self.next = now + self.interval();
        let peer_ssrc = peer_ssrc?;
        if stats.packets == 0 {
            return None;
        }
        let (expected, received) = (stats.expected(), stats.packets);
        let expected_now = expected.saturating_sub(self.reported.0);
        let received_now = received.saturating_sub(self.reported.1);
        self.reported = (expected, received);
        let lost_now = expected_now.saturating_sub(received_now);
        let fraction_lost = (lost_now << 8)
            .checked_div(expected_now)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match self.peer_sr {
            Some((lsr, at)) => (lsr, to_units(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: peer_ssrc,
            fraction_lost,
            cumulative_lost: (expected as i64 - received as i64).clamp(-0x80_0000, 0x7F_FFFF)
                as i32,
            highest_seq: stats.highest_extended(),
            jitter: stats.jitter_units(),
            lsr,
            dlsr,
        })
    }

    /// A datagram from the caller's RTCP at `now` (`ntp_now`: our wallclock
    /// then, as NTP).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        ntp_now: u64,
        datagram: &[u8],
    ) -> Result<(), RtcpError> {
        for packet in parse(datagram)? {
            let reports = match packet {
                RtcpPacket::SenderReport { info, reports, .. } => {
                    self.peer_sr = Some((middle(info.ntp), now));
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                RtcpPacket::Bye { .. } => {
                    self.peer.bye = true;
                    continue;
                }
                RtcpPacket::Other { .. } => continue,
            };
            if let Some(of_us) = reports.into_iter().find(|b| b.ssrc == self.ssrc) {
                self.peer.of_us = Some(of_us);
                // RFC 3550 §6.4.1: A − LSR − DLSR, when it has seen our SR.
                if of_us.lsr != 0 {
                    let rtt = middle(ntp_now)
                        .wrapping_sub(of_us.lsr)
                        .wrapping_sub(of_us.dlsr) as i32;
                    // A few units below zero is rounding on a near link (the
                    // peer rounds DLSR up); further is a clock step or a
                    // bogus report: no round trip.
                    if rtt >= -(RTT_ROUNDING as i32) {
                        self.peer.rtt = Some(from_units(rtt.max(0) as u32));
                    }
                }
            }
        }
        Ok(())
    }

    /// One interval: INTERVAL × a draw in [0.5, 1.5) (xorshift).
    fn interval(&mut self) -> Duration {
        self.draw ^= self.draw << 13;
        self.draw ^= self.draw >> 17;
        self.draw ^= self.draw << 5;
        let factor = 0.5 + f64::from(self.draw % 1000) / 1000.0;
        INTERVAL.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u32 = 0x5A5A_0001;
    const CALLER: u32 = 0x0C0C_0002;

    fn stats(packets: &[u16]) -> ReceiveStats {
        let t = Instant::now();
        let mut s = ReceiveStats::new();
        for (n, &seq) in packets.iter().enumerate() {
            s.on_packet(
                t + Duration::from_millis(20 * n as u64),
                seq,
                u32::from(seq) * 160,
                true,
            );
        }
        s
    }

    fn block(lsr: u32, dlsr: u32) -> ReportBlock {
        ReportBlock {
            ssrc: OURS,
            fraction_lost: 3,
            cumulative_lost: -2,
            highest_seq: 0x0001_0005,
            jitter: 40,
            lsr,
            dlsr,
        }
    }

    #[test]
    fn the_round_trip_is_the_rfc_3550_example() {
        // RFC 3550 §6.4.1, figure 2: A = 46864.500 s, LSR = 46853.125 s,
        // DLSR = 5.250 s; the round trip is 6.125 s.
        let mut session = RtcpSession::new(Instant::now(), OURS, 7);
        let mut rr = [0u8; MAX_PACKET];
        let len = write_report(
            &mut rr,
            CALLER,
            None,
            Some(block(0xB705_2000, 0x0005_4000)),
            "caller",
        );
        let ntp_now = 0xB710_8000u64 << 16;
        session
            .handle_packet(Instant::now(), ntp_now, &rr[..len])
            .unwrap();
        assert_eq!(session.peer().rtt, Some(Duration::from_millis(6125)));
        // On loopback the peer's rounding may put it a little below zero.
        let mut near = RtcpSession::new(Instant::now(), OURS, 7);
        let len = write_report(
            &mut rr,
            CALLER,
            None,
            Some(block(0xB710_7FF0, 0x20)),
            "caller",
        );
        near.handle_packet(Instant::now(), ntp_now, &rr[..len])
            .unwrap();
        assert_eq!(near.peer().rtt, Some(Duration::ZERO));
        let mut skewed = RtcpSession::new(Instant::now(), OURS, 7);
        let len = write_report(
            &mut rr,
            CALLER,
            None,
            Some(block(0xB710_8000, 0x0001_0000)),
            "caller",
        );
        skewed
            .handle_packet(Instant::now(), ntp_now, &rr[..len])
            .unwrap();
        assert_eq!(
            skewed.peer().rtt,
            None,
            "a second below zero is no round trip"
        );
        assert_eq!(session.peer().of_us, Some(block(0xB705_2000, 0x0005_4000)));
        // No SR of ours seen yet (LSR 0): no round trip.
        let mut fresh = RtcpSession::new(Instant::now(), OURS, 7);
        let len = write_report(&mut rr, CALLER, None, Some(block(0, 0)), "caller");
        fresh
            .handle_packet(Instant::now(), ntp_now, &rr[..len])
            .unwrap();
        assert_eq!(fresh.peer().rtt, None);
    }

    #[test]
    fn a_sender_report_is_laid_out_as_rfc_3550_says_and_reads_back() {
        let info = SenderInfo {
            ntp: 0xE0E1_E2E3_1020_3040,
            rtp_timestamp: 0x0009_0000,
            packets: 4321,
            octets: 4321 * 160,
        };
        let mut out = [0u8; MAX_PACKET];
        let len = write_report(
            &mut out,
            OURS,
            Some(info),
            Some(block(7, 9)),
            "sav@127.0.0.1",
        );
        assert_eq!(len % 4, 0);
        // V=2, one block, SR, length 12 words − 1 = 12 (52 bytes).
        assert_eq!(&out[..4], &[0x81, 200, 0, 12]);
        assert_eq!(&out[4..8], &OURS.to_be_bytes());
        assert_eq!(out[52 + 1], PT_SDES);
        let packets = parse(&out[..len]).unwrap();
        assert_eq!(
            packets,
            vec![
                RtcpPacket::SenderReport {
                    ssrc: OURS,
                    info,
                    reports: vec![block(7, 9)],
                },
                RtcpPacket::Other {
                    packet_type: PT_SDES
                },
            ]
        );
        // The CNAME is in the SDES item, padded with at least one zero.
        let sdes = &out[52..len];
        assert_eq!((sdes[8], usize::from(sdes[9])), (1, "sav@127.0.0.1".len()));
        assert_eq!(&sdes[10..23], b"sav@127.0.0.1");
        assert_eq!(sdes[23], 0);
    }

    #[test]
    fn a_receiver_report_without_a_block_and_the_bye() {
        let mut out = [0u8; MAX_PACKET];
        let len = write_bye(&mut out, OURS, None, None, "sav");
        let packets = parse(&out[..len]).unwrap();
        assert_eq!(
            packets,
            vec![
                RtcpPacket::ReceiverReport {
                    ssrc: OURS,
                    reports: vec![]
                },
                RtcpPacket::Other {
                    packet_type: PT_SDES
                },
                RtcpPacket::Bye { ssrcs: vec![OURS] },
            ]
        );
        let mut session = RtcpSession::new(Instant::now(), CALLER, 1);
        session
            .handle_packet(Instant::now(), 0, &out[..len])
            .unwrap();
        assert!(session.peer().bye);
    }

    #[test]
    fn the_block_counts_loss_over_the_interval_and_since_the_start() {
        let t = Instant::now();
        let mut session = RtcpSession::new(t, OURS, 3);
        // 100 expected (seq 1..=100), 10 of them never came.
        let seqs: Vec<u16> = (1..=100u16).filter(|s| s % 10 != 5).collect();
        let first = session.report(t, Some(CALLER), &stats(&seqs)).unwrap();
        assert_eq!((first.fraction_lost, first.cumulative_lost), (25, 10));
        assert_eq!(first.highest_seq, 100);
        assert_eq!((first.ssrc, first.lsr, first.dlsr), (CALLER, 0, 0));
        // Then 50 more, all of them: nothing lost in that interval.
        let more: Vec<u16> = seqs.iter().copied().chain(101..=150).collect();
        let second = session.report(t, Some(CALLER), &stats(&more)).unwrap();
        assert_eq!((second.fraction_lost, second.cumulative_lost), (0, 10));
        // Nothing received yet, or no caller: no block.
        assert_eq!(session.report(t, Some(CALLER), &ReceiveStats::new()), None);
        assert_eq!(session.report(t, None, &stats(&seqs)), None);
    }

    #[test]
    fn the_last_sender_report_of_the_caller_is_echoed_with_its_delay() {
        let t = Instant::now();
        let mut session = RtcpSession::new(t, OURS, 3);
        let info = SenderInfo {
            ntp: 0x0000_1234_5678_0000,
            ..SenderInfo::default()
        };
        let mut sr = [0u8; MAX_PACKET];
        let len = write_report(&mut sr, CALLER, Some(info), None, "caller");
        session.handle_packet(t, 0, &sr[..len]).unwrap();
        let later = t + Duration::from_millis(1500);
        let block = session
            .report(later, Some(CALLER), &stats(&[1, 2, 3]))
            .unwrap();
        assert_eq!(block.lsr, 0x1234_5678);
        assert_eq!(block.dlsr, 0x0001_8000, "1.5 s in 1/65536 s");
    }

    #[test]
    fn reports_come_every_two_and_a_half_to_seven_and_a_half_seconds() {
        let t = Instant::now();
        let mut session = RtcpSession::new(t, OURS, 12_345);
        let first = session.poll_timeout() - t;
        assert!(
            first >= Duration::from_millis(1250) && first < Duration::from_millis(3750),
            "{first:?}"
        );
        let mut now = session.poll_timeout();
        let mut seen = Vec::new();
        for _ in 0..50 {
            session.report(now, None, &ReceiveStats::new());
            let gap = session.poll_timeout() - now;
            assert!(gap >= INTERVAL / 2 && gap < INTERVAL * 3 / 2, "{gap:?}");
            seen.push(gap);
            now = session.poll_timeout();
        }
        seen.dedup();
        assert!(seen.len() > 10, "the interval is drawn, not fixed");
    }

    #[test]
    fn malformed_datagrams_are_errors_and_never_panic() {
        assert_eq!(parse(&[0x81, 200, 0]), Err(RtcpError::TooShort));
        assert_eq!(
            parse(&[0x41, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::Version)
        );
        assert_eq!(
            parse(&[0x80, 201, 0, 9, 0, 0, 0, 0]),
            Err(RtcpError::Length)
        );
        // BYE first, as baresip sends it: read all the same.
        assert_eq!(
            parse(&[0x81, 203, 0, 1, 0, 0, 0, 9]),
            Ok(vec![RtcpPacket::Bye { ssrcs: vec![9] }])
        );
        // An RR claiming a block it does not carry.
        assert_eq!(
            parse(&[0x81, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::Length)
        );
        let mut good = [0u8; MAX_PACKET];
        let len = write_bye(
            &mut good,
            OURS,
            Some(SenderInfo::default()),
            Some(block(1, 2)),
            "sav",
        );
        let mut x: u32 = 99;
        for _ in 0..5000 {
            let mut d = good[..len].to_vec();
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let at = (x >> 8) as usize % d.len();
            d[at] = (x >> 24) as u8;
            d.truncate(((x >> 4) as usize % (len + 1)).max(1));
            let _ = parse(&d);
            let _ = RtcpSession::new(Instant::now(), OURS, x).handle_packet(Instant::now(), 0, &d);
        }
    }

    #[test]
    fn rtcp_is_told_from_rtp_on_a_shared_port() {
        let mut out = [0u8; MAX_PACKET];
        let len = write_report(&mut out, OURS, None, None, "sav");
        assert!(is_rtcp(&out[..len]));
        let mut rtp = [0u8; crate::media::rtp::PACKET_LEN];
        for (pt, marker) in [(0, false), (8, true), (101, true), (127, true)] {
            let n = crate::media::rtp::write_audio_packet(&mut rtp, pt, 1, 2, 3, marker, &[0; 160]);
            assert!(!is_rtcp(&rtp[..n]), "PT {pt} marker {marker}");
        }
        assert!(!is_rtcp(&[0x80, 200]));
    }

    #[test]
    fn ntp_time_counts_from_1900() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp(t), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
    }
}
