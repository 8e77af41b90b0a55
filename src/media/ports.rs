//! The RTP port pool: one even port per call from `[media]`'s range.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::UdpSocket;

/// Hands out RTP sockets from the configured port range. The operating system
/// is the book-keeper: a port is free when it binds.
#[derive(Debug)]
pub struct RtpPortPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    cursor: AtomicU32,
}

impl RtpPortPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        Self {
            ip,
            min,
            max,
            cursor: AtomicU32::new(0),
        }
    }

    /// Binds the next free even port (RTP on even ports, RFC 3550 §11).
    pub fn bind(&self) -> std::io::Result<UdpSocket> {
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
        for _ in 0..count {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            // first_even + 2 × slot ≤ max ≤ u16::MAX.
            let port = (first_even + slot * 2) as u16;
            match std::net::UdpSocket::bind((self.ip, port)) {
                Ok(socket) => {
                    socket.set_nonblocking(true)?;
                    return UdpSocket::from_std(socket);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
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
            let a = pool.bind().unwrap();
            let b = pool.bind().unwrap();
            let c = pool.bind().unwrap();
            let mut ports: Vec<u16> = [&a, &b, &c]
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect();
            ports.sort();
            assert_eq!(ports, vec![29_002, 29_004, 29_006]);
            let err = pool.bind().unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
            drop(b);
            assert!(pool.bind().is_ok(), "a released port is reused");
            // The top of the port space: no even port, an error, no overflow.
            let top = RtpPortPool::new(ip, 65_535, 65_535);
            assert!(top.bind().is_err());
        });
    }
}
