//! The RTP port pool: one even port per call from `[media]`'s range, and
//! the odd port above it for RTCP (RFC 3550 §11).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// One call's media sockets: RTP, and RTCP on the port above it (none
/// where RTCP is not used).
#[derive(Debug, Clone)]
pub struct MediaSockets {
    pub rtp: Arc<UdpSocket>,
    pub rtcp: Option<Arc<UdpSocket>>,
}

impl MediaSockets {
    /// RTP alone.
    pub fn rtp_only(rtp: Arc<UdpSocket>) -> Self {
        Self { rtp, rtcp: None }
    }

    /// An ephemeral even port of `ip` and the one above it (a caller that
    /// has no range of its own: `sav call`); RTP alone when no pair turns
    /// up in a few tries.
    pub fn ephemeral_pair(ip: IpAddr) -> std::io::Result<Self> {
        let tokio = |socket: std::net::UdpSocket| -> std::io::Result<Arc<UdpSocket>> {
            socket.set_nonblocking(true)?;
            Ok(Arc::new(UdpSocket::from_std(socket)?))
        };
        for _ in 0..32 {
            let rtp = std::net::UdpSocket::bind((ip, 0))?;
            let port = rtp.local_addr()?.port();
            if port % 2 == 1 {
                continue;
            }
            let Some(above) = port.checked_add(1) else {
                continue;
            };
            if let Ok(rtcp) = std::net::UdpSocket::bind((ip, above)) {
                return Ok(Self {
                    rtp: tokio(rtp)?,
                    rtcp: Some(tokio(rtcp)?),
                });
            }
        }
        Ok(Self::rtp_only(tokio(std::net::UdpSocket::bind((ip, 0))?)?))
    }
}

/// Hands out RTP sockets from the configured port range. The operating system
/// is the book-keeper: a port is free when it binds.
#[derive(Debug)]
pub struct RtpPortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
}

impl RtpPortPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        Self { ip, min, max }
    }

    /// Binds a free pair drawn at random from the range (a stranger who saw
    /// one call's port cannot guess the next): an even port for RTP and the
    /// odd one above it for RTCP (RFC 3550 §11); a pair half taken is
    /// skipped, and the pairs after the drawn one are tried in turn.
    pub fn bind_pair(&self) -> std::io::Result<MediaSockets> {
        let first_even = u32::from(self.min) + u32::from(self.min) % 2;
        let max = u32::from(self.max);
        let count = if max < first_even {
            0
        } else {
            (max - first_even) / 2 + 1
        };
        if count == 0 {
            return Err(std::io::Error::other("RTP port range holds no even port"));
        }
        let start = rand::random::<u32>() % count;
        for tried in 0..count {
            let slot = (start + tried) % count;
            // first_even + 2 × slot ≤ max ≤ u16::MAX.
            let port = (first_even + slot * 2) as u16;
            let rtp = match std::net::UdpSocket::bind((self.ip, port)) {
                Ok(socket) => socket,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            };
            let Some(above) = port.checked_add(1) else {
                continue;
            };
            let control = match std::net::UdpSocket::bind((self.ip, above)) {
                Ok(socket) => socket,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            };
            let tokio = |socket: std::net::UdpSocket| -> std::io::Result<Arc<UdpSocket>> {
                socket.set_nonblocking(true)?;
                Ok(Arc::new(UdpSocket::from_std(socket)?))
            };
            return Ok(MediaSockets {
                rtp: tokio(rtp)?,
                rtcp: Some(tokio(control)?),
            });
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every RTP port in {}-{} is in use", self.min, self.max),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_distinct_even_ports_and_reports_exhaustion() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A range unlikely to be used by anything else on a test machine.
        let pool = RtpPortPool::new(ip, 29_001, 29_006);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = pool.bind_pair().unwrap();
            let b = pool.bind_pair().unwrap();
            let c = pool.bind_pair().unwrap();
            let mut ports: Vec<u16> = [&a, &b, &c]
                .iter()
                .map(|s| s.rtp.local_addr().unwrap().port())
                .collect();
            ports.sort();
            assert_eq!(ports, vec![29_002, 29_004, 29_006]);
            let err = pool.bind_pair().unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
            drop(b);
            assert!(pool.bind_pair().is_ok(), "a released port is reused");
            // The top of the port space: no even port, an error, no overflow.
            let top = RtpPortPool::new(ip, 65_535, 65_535);
            assert!(top.bind_pair().is_err());
        });
    }

    #[test]
    fn the_next_call_s_port_cannot_be_told_from_the_last() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // 100 pairs; a port is released before the next call takes one.
        let pool = RtpPortPool::new(ip, 29_100, 29_299);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ports: Vec<u16> = rt.block_on(async {
            (0..40)
                .map(|_| pool.bind_pair().unwrap().rtp.local_addr().unwrap().port())
                .collect()
        });
        // A pool that handed out the pairs in turn would make every next
        // port the last + 2 (or the first again); drawn at random, about
        // one in a hundred is.
        let in_turn = ports
            .windows(2)
            .filter(|w| w[1] == w[0] + 2 || w[1] == w[0])
            .count();
        assert!(in_turn < 10, "{in_turn} of 39 in turn: {ports:?}");
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert!(distinct.len() > 20, "{ports:?}");
    }

    #[tokio::test]
    async fn an_ephemeral_pair_is_an_even_port_and_the_one_above() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pair = MediaSockets::ephemeral_pair(ip).unwrap();
        let rtp = pair.rtp.local_addr().unwrap().port();
        let rtcp = pair.rtcp.as_ref().map(|s| s.local_addr().unwrap().port());
        assert_eq!(rtp % 2, 0);
        assert_eq!(rtcp, Some(rtp + 1));
    }

    #[test]
    fn pairs_are_an_even_port_and_the_one_above_and_a_half_taken_pair_is_skipped() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pool = RtpPortPool::new(ip, 29_011, 29_016);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Something else holds 29 013, the RTCP port of the first pair.
            let squatter = std::net::UdpSocket::bind((ip, 29_013)).unwrap();
            let a = pool.bind_pair().unwrap();
            let port = |s: &Arc<UdpSocket>| s.local_addr().unwrap().port();
            let b = pool.bind_pair().unwrap();
            let mut pairs = [&a, &b].map(|p| (port(&p.rtp), p.rtcp.as_ref().map(port)));
            pairs.sort();
            assert_eq!(pairs, [(29_014, Some(29_015)), (29_016, Some(29_017))]);
            assert!(pool.bind_pair().is_err(), "29 012 alone is no pair");
            drop(squatter);
            assert_eq!(pool.bind_pair().map(|p| port(&p.rtp)).ok(), Some(29_012));
        });
    }
}
