//! SIP's UDP socket as the stack reads it: messages up to 64 KB are read
//! whole, a larger one is dropped with a log line and counted (never cut to
//! the stack's 8 KB buffer), and every message in and out is logged at trace
//! level only, redacted like everything else (numbers, names, digest
//! credentials): the stack's own transport log, which prints raw messages at
//! info, is turned off by the binary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rsipstack::platform::net::UdpSocket as StackSocket;
use tracing::{trace, warn};

use crate::redact::Pii;

/// The largest datagram read (the largest UDP payload).
pub const MAX_DATAGRAM: usize = 65_535;

/// Told of each datagram too large for the stack: its source and size.
pub type OversizeHook = Arc<dyn Fn(SocketAddr, usize) + Send + Sync>;

/// A UDP socket for the SIP stack.
pub struct SipUdpSocket {
    socket: tokio::net::UdpSocket,
    /// Our own buffer: the stack's is 8 KB, and the kernel would cut a
    /// larger datagram to it silently.
    buf: tokio::sync::Mutex<Box<[u8]>>,
    oversize: Option<OversizeHook>,
    oversized: AtomicU64,
}

impl SipUdpSocket {
    pub fn new(socket: tokio::net::UdpSocket, oversize: Option<OversizeHook>) -> Self {
        Self {
            socket,
            buf: tokio::sync::Mutex::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice()),
            oversize,
            oversized: AtomicU64::new(0),
        }
    }
}

#[async_trait::async_trait]
impl StackSocket for SipUdpSocket {
    async fn recv_from(&self, out: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut buf = self.buf.lock().await;
        loop {
            let (len, source) = self.socket.recv_from(&mut buf[..]).await?;
            if len > out.len() {
                let count = self.oversized.fetch_add(1, Ordering::Relaxed) + 1;
                if count <= 3 || count.is_multiple_of(100) {
                    warn!(source = %Pii(&source.to_string()), len, max = out.len(), dropped = count, "SIP datagram too large for the stack: dropped");
                }
                if let Some(hook) = &self.oversize {
                    hook(source, len);
                }
                continue;
            }
            out[..len].copy_from_slice(&buf[..len]);
            if tracing::enabled!(tracing::Level::TRACE) {
                let text = String::from_utf8_lossy(&out[..len]);
                trace!(source = %Pii(&source.to_string()), len, message = %redacted(&text), "SIP in");
            }
            return Ok((len, source));
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        if tracing::enabled!(tracing::Level::TRACE) {
            let text = String::from_utf8_lossy(buf);
            trace!(to = %Pii(&addr.to_string()), len = buf.len(), message = %redacted(&text), "SIP out");
        }
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// Headers that carry credentials: their value is never logged.
const CREDENTIALS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
];
/// Headers that name people: display names are hidden too.
const IDENTITIES: [&str; 10] = [
    "from",
    "f",
    "to",
    "t",
    "contact",
    "m",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "diversion",
];

/// A SIP message as it may be logged: credentials out, the user part of
/// every URI and every display name of an identity header through
/// [`Pii`].
pub fn redacted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (n, line) in message.split_inclusive('\n').enumerate() {
        let name = line
            .split_once(':')
            .map(|(name, _)| name.trim().to_ascii_lowercase());
        match name.as_deref() {
            Some(name) if n > 0 && CREDENTIALS.contains(&name) => {
                let (head, _) = line.split_once(':').unwrap_or((line, ""));
                out.push_str(head);
                out.push_str(": <redacted>");
                if line.ends_with('\n') {
                    out.push_str("\r\n");
                }
            }
            Some(name) if n > 0 && IDENTITIES.contains(&name) => {
                out.push_str(&uris_redacted(&names_redacted(line)))
            }
            _ => out.push_str(&uris_redacted(line)),
        }
    }
    out
}

/// Quoted display names replaced by `"…"`.
fn names_redacted(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
            out.push('"');
            if quoted {
                out.push('…');
            }
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// The user part of `sip:`/`sips:` URIs and the number of `tel:` URIs
/// through [`Pii`].
fn uris_redacted(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = find_scheme(rest) {
        let (before, from) = rest.split_at(at.0);
        out.push_str(before);
        out.push_str(&from[..at.1]);
        let after = &from[at.1..];
        let end = after
            .find(['>', ';', ' ', '\r', '\n', ',', '?'])
            .unwrap_or(after.len());
        let (uri, tail) = after.split_at(end);
        if at.2 {
            // tel: the whole number.
            out.push_str(&Pii(uri).to_string());
        } else if let Some((user, host)) = uri.split_once('@') {
            out.push_str(&Pii(user).to_string());
            out.push('@');
            out.push_str(host);
        } else {
            out.push_str(uri);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The next URI scheme in `text`: where it starts, its length, whether it
/// is `tel:`.
fn find_scheme(text: &str) -> Option<(usize, usize, bool)> {
    let lower = text.to_ascii_lowercase();
    [("sips:", false), ("sip:", false), ("tel:", true)]
        .iter()
        .filter_map(|(scheme, tel)| lower.find(scheme).map(|at| (at, scheme.len(), *tel)))
        .min_by_key(|(at, len, _)| (*at, usize::MAX - len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:pbx.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
        From: \"Jean Dupont\" <sip:+33612345678@pbx.example>;tag=1\r\n\
        To: <sip:+33612345678@pbx.example>\r\n\
        P-Asserted-Identity: <tel:+33612345678>\r\n\
        Authorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"abc\", uri=\"sip:pbx.example\", response=\"0123456789abcdef0123456789abcdef\", cnonce=\"feed\"\r\n\
        CSeq: 2 REGISTER\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn numbers_names_and_credentials_never_reach_the_log() {
        let logged = redacted(REGISTER);
        assert!(!logged.contains("33612345678"), "{logged}");
        assert!(!logged.contains("Dupont"), "{logged}");
        assert!(!logged.contains("0123456789abcdef"), "{logged}");
        assert!(!logged.contains("feed"), "{logged}");
        // What is not personal stays readable.
        assert!(logged.starts_with("REGISTER sip:pbx.example SIP/2.0\r\n"));
        assert!(logged.contains("From: \"…\" <sip:…678@pbx.example>;tag=1\r\n"));
        assert!(logged.contains("Authorization: <redacted>\r\n"));
        assert!(logged.contains("P-Asserted-Identity: <tel:…678>\r\n"));
        assert!(logged.contains("CSeq: 2 REGISTER\r\n"));
    }

    #[test]
    fn a_message_that_is_not_sip_is_logged_without_panic() {
        for text in [
            "",
            "sip:",
            "tel:",
            "\"",
            "From: \"unterminated",
            "sip:@",
            "é:sip:é@é",
        ] {
            let _ = redacted(text);
        }
    }
}
