//! SIP's UDP socket as the stack reads it: messages up to 64 KB are read
//! whole, a larger one is dropped with a log line and counted (never cut to
//! the stack's 8 KB buffer); what RFC 3261 calls an invalid request is
//! answered here (400, 416, 501, 505: [`precheck`], the RFC 4475 torture
//! messages) and an invalid response dropped, before the stack could take
//! it for something else; every message in and out is logged at trace
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

/// Why the socket kept a datagram from the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireRefusal {
    /// Larger than the stack reads.
    TooLarge,
    /// Not a valid SIP message (answered 400/416/501/505 or dropped).
    Malformed,
}

/// Told of each datagram kept from the stack: its source and why.
pub type RefusalHook = Arc<dyn Fn(SocketAddr, WireRefusal) + Send + Sync>;

/// A UDP socket for the SIP stack.
pub struct SipUdpSocket {
    socket: tokio::net::UdpSocket,
    /// Our own buffer: the stack's is 8 KB, and the kernel would cut a
    /// larger datagram to it silently.
    buf: tokio::sync::Mutex<Box<[u8]>>,
    /// Judges each datagram's source before anything else (a banned or
    /// flooding source is answered nothing, not even a 400).
    gate: Option<crate::sip::endpoint::PacketGate>,
    refused: Option<RefusalHook>,
    oversized: AtomicU64,
    malformed: AtomicU64,
}

impl SipUdpSocket {
    pub fn new(
        socket: tokio::net::UdpSocket,
        gate: Option<crate::sip::endpoint::PacketGate>,
        refused: Option<RefusalHook>,
    ) -> Self {
        Self {
            socket,
            gate,
            buf: tokio::sync::Mutex::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice()),
            refused,
            oversized: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    fn refused(&self, source: SocketAddr, why: WireRefusal) {
        if let Some(hook) = &self.refused {
            hook(source, why);
        }
    }
}

impl SipUdpSocket {
    fn malformed(&self, source: SocketAddr, why: &'static str) {
        let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= 3 || count.is_multiple_of(100) {
            warn!(source = %Pii(&source.to_string()), why, refused = count, "malformed SIP message refused");
        }
        self.refused(source, WireRefusal::Malformed);
    }
}

#[async_trait::async_trait]
impl StackSocket for SipUdpSocket {
    async fn recv_from(&self, out: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut buf = self.buf.lock().await;
        loop {
            let (len, source) = self.socket.recv_from(&mut buf[..]).await?;
            if self.gate.as_ref().is_some_and(|gate| !gate(source.ip())) {
                continue;
            }
            if len > out.len() {
                let count = self.oversized.fetch_add(1, Ordering::Relaxed) + 1;
                if count <= 3 || count.is_multiple_of(100) {
                    warn!(source = %Pii(&source.to_string()), len, max = out.len(), dropped = count, "SIP datagram too large for the stack: dropped");
                }
                self.refused(source, WireRefusal::TooLarge);
                continue;
            }
            match precheck(&buf[..len]) {
                Precheck::Pass => {}
                Precheck::Drop(why) => {
                    self.malformed(source, why);
                    continue;
                }
                Precheck::Reply(status, why) => {
                    self.malformed(source, why);
                    let tag = format!("{:08x}", rand::random::<u32>());
                    let response = stateless_response(&buf[..len], status, why, &tag);
                    let _ = self.socket.send_to(&response, source).await;
                    continue;
                }
            }
            // The stack reads only the plainest spelling: a folded or
            // spaced-out message (RFC 4475 `wsinv`, RFC 2543's `inv2543`)
            // is given to it as such.
            let len = match normalize(&buf[..len]) {
                Some(plain) if plain.len() <= out.len() => {
                    out[..plain.len()].copy_from_slice(&plain);
                    plain.len()
                }
                _ => {
                    out[..len].copy_from_slice(&buf[..len]);
                    len
                }
            };
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

/// What the socket does with a datagram before the stack parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// Let the stack have it.
    Pass,
    /// An invalid response (or a request we cannot answer): dropped.
    Drop(&'static str),
    /// An invalid request, answered here without a transaction (RFC 3261
    /// §8.2: 400, 416, 501, 505) with this status and why.
    Reply(u16, &'static str),
}

/// Methods the stack parses. Anything else is answered 501 here.
const KNOWN_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

/// A header's long name from its compact form (RFC 3261 §7.3.3).
fn long_name(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    let long = match name.as_str() {
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "l" => "content-length",
        "m" => "contact",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        "o" => "event",
        "r" => "refer-to",
        _ => return name,
    };
    long.to_string()
}

/// The head of a message split into its start line and unfolded header
/// lines (a line that starts with a space or tab continues the one before,
/// RFC 3261 §7.3.1), and the body.
fn split_message(datagram: &[u8]) -> Option<(String, Vec<String>, &[u8])> {
    let (head_len, body_at) = match find(datagram, b"\r\n\r\n") {
        Some(at) => (at, at + 4),
        None => match find(datagram, b"\n\n") {
            Some(at) => (at, at + 2),
            None => (datagram.len(), datagram.len()),
        },
    };
    let head = std::str::from_utf8(&datagram[..head_len]).ok()?;
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let start = lines.next()?.to_string();
    let mut headers: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        headers.push(line.to_string());
    }
    Some((start, headers, &datagram[body_at.min(datagram.len())..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `text` has a quoted string left open (a `"` not closed, `\"`
/// escaped).
fn quote_left_open(text: &str) -> bool {
    let mut open = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            '\\' if open && !escaped => escaped = true,
            '"' if !escaped => open = !open,
            _ => escaped = false,
        }
    }
    open
}

/// What RFC 3261 and RFC 4475 say of a datagram before any stack reads it:
/// the start line (three fields, SIP/2.0, a `sip:`/`sips:`/`tel:`
/// Request-URI, a method we know), one Content-Length, not negative and not
/// past the end of the datagram, a CSeq within 2^31 − 1 whose method is the
/// request's, Max-Forwards within 255, the mandatory headers, one From, To,
/// Call-ID and CSeq, no quoted string left open. A response with a status
/// code outside 100–699 or another version is dropped.
pub fn precheck(datagram: &[u8]) -> Precheck {
    if datagram.iter().all(u8::is_ascii_whitespace) {
        return Precheck::Pass;
    }
    let Some((start, headers, body)) = split_message(datagram) else {
        return Precheck::Drop("not UTF-8");
    };
    if start.starts_with("SIP/") {
        let mut parts = start.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().and_then(|c| c.parse::<u16>().ok());
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Precheck::Drop("response of another SIP version");
        }
        return match code {
            Some(100..=699) => Precheck::Pass,
            _ => Precheck::Drop("response status code out of range"),
        };
    }
    let mut named: Vec<(String, &str)> = Vec::with_capacity(headers.len());
    for line in &headers {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        named.push((long_name(name.trim()), value.trim()));
    }
    let count = |name: &str| named.iter().filter(|(n, _)| n == name).count();
    let value = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    if count("via") == 0 {
        return Precheck::Drop("request without Via: no one to answer");
    }
    let fields: Vec<&str> = start.split(' ').collect();
    if fields.len() != 3 || fields.iter().any(|f| f.is_empty()) {
        return if start.starts_with("ACK ") {
            Precheck::Drop("malformed ACK")
        } else {
            Precheck::Reply(400, "Malformed Request-Line")
        };
    }
    let (method, uri, version) = (fields[0], fields[1], fields[2]);
    // An ACK is never answered (RFC 3261 §17.2.1): a bad one is dropped.
    let refuse = |status: u16, why: &'static str| {
        if method == "ACK" {
            Precheck::Drop(why)
        } else {
            Precheck::Reply(status, why)
        }
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return refuse(505, "Version Not Supported");
    }
    // Headers in the Request-URI (after its host: `?` is allowed in the
    // user part) have no meaning there (RFC 3261 §19.1.5).
    let host_part = uri.rsplit_once('@').map_or(uri, |(_, host)| host);
    if host_part.contains('?') {
        return refuse(400, "Headers In Request-URI");
    }
    match uri.split_once(':') {
        Some((scheme, _))
            if ["sip", "sips", "tel"]
                .iter()
                .any(|known| scheme.eq_ignore_ascii_case(known)) => {}
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            return refuse(416, "Unsupported URI Scheme");
        }
        _ => return refuse(400, "Malformed Request-URI"),
    }
    for name in ["from", "to", "call-id", "cseq"] {
        match count(name) {
            0 => return refuse(400, "Missing Mandatory Header"),
            1 => {}
            _ => return refuse(400, "Header Repeated"),
        }
    }
    let lengths: Vec<&str> = named
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| *v)
        .collect();
    if lengths.len() > 1 {
        return refuse(400, "Multiple Content-Length");
    }
    if let Some(length) = lengths.first() {
        match length.parse::<usize>() {
            Ok(length) if length <= body.len() => {}
            Ok(_) => return refuse(400, "Content-Length Past The Message"),
            Err(_) => return refuse(400, "Bad Content-Length"),
        }
    }
    let cseq = value("cseq").unwrap_or("");
    let mut cseq_parts = cseq.split_whitespace();
    match (
        cseq_parts.next().map(str::parse::<u32>),
        cseq_parts.next(),
        cseq_parts.next(),
    ) {
        // Any 32-bit number: only a dialog's first request starts under
        // 2^31, and its CSeq grows from there.
        (Some(Ok(_)), Some(cseq_method), None) => {
            if cseq_method != method {
                return refuse(400, "CSeq Method Mismatch");
            }
        }
        _ => return refuse(400, "Bad CSeq"),
    }
    if let Some(hops) = value("max-forwards") {
        if !matches!(hops.parse::<u32>(), Ok(0..=255)) {
            return refuse(400, "Bad Max-Forwards");
        }
    }
    if let Some(expires) = value("expires") {
        if expires.parse::<u32>().is_err() {
            return refuse(400, "Bad Expires");
        }
    }
    if named
        .iter()
        .any(|(name, value)| NAME_ADDRS.contains(&name.as_str()) && quote_left_open(value))
    {
        return refuse(400, "Unterminated Quoted String");
    }
    for (name, value) in &named {
        match name.as_str() {
            "from" | "to" | "contact" if !name_addr_ok(value) => {
                return refuse(400, "Malformed Name-Addr");
            }
            "via" if value.contains(";;") || value.contains(",,") => {
                return refuse(400, "Empty Via Parameter");
            }
            _ => {}
        }
    }
    if !KNOWN_METHODS.contains(&method) {
        return refuse(501, "Not Implemented");
    }
    Precheck::Pass
}

/// Whether a From/To/Contact value is a well-formed name-addr or addr-spec
/// as far as its brackets go: no space just inside `<` and `>` (RFC 4475
/// `badaspec`), and a display name before `<` that is quoted or made of
/// tokens (`baddn`: `Bell, Alexander <sip:...>`).
fn name_addr_ok(value: &str) -> bool {
    let Some(open) = value.find('<') else {
        return true;
    };
    let display = value[..open].trim();
    if display.starts_with('"') {
        // Quoted: whatever is inside the quotes.
    } else if !display
        .chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "-.!%*_+`'~".contains(c))
    {
        return false;
    }
    let inner = &value[open + 1..];
    let Some(close) = inner.find('>') else {
        return false;
    };
    let addr = &inner[..close];
    !addr.starts_with(char::is_whitespace) && !addr.ends_with(char::is_whitespace)
}

/// Headers whose values are name-addrs with parameters (and Via, whose
/// parts are separated by `/`): [`normalize`] takes the white space out of
/// their separators.
const NAME_ADDRS: [&str; 6] = ["from", "to", "contact", "route", "record-route", "reply-to"];

/// The same message in the plainest spelling RFC 3261 allows, for a stack
/// that reads only that: header lines unfolded (§7.3.1), no white space
/// around a header's colon, nor, outside quoted strings, around the `;`,
/// `=` and `,` of From, To, Contact, Route, Via (nor around Via's `/`), and
/// a From without a tag (RFC 2543, §8.2.6.2 tolerates it) given one made
/// from its Call-ID and CSeq, so its retransmissions meet the same
/// transaction; an INVITE without Contact (RFC 2543 too) given its From's
/// URI as one. `None` when nothing changes (the common case: no copy).
pub fn normalize(datagram: &[u8]) -> Option<Vec<u8>> {
    let (start, headers, body) = split_message(datagram)?;
    if start.starts_with("SIP/") {
        return None;
    }
    let mut out = String::with_capacity(datagram.len() + 32);
    out.push_str(&start);
    out.push_str("\r\n");
    let call_id = headers.iter().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (long_name(name.trim()) == "call-id").then(|| value.trim().to_string())
    });
    for line in &headers {
        let Some((name, value)) = line.split_once(':') else {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        };
        let long = long_name(name.trim());
        let value = value.trim();
        out.push_str(name.trim());
        out.push_str(": ");
        if long == "via" || NAME_ADDRS.contains(&long.as_str()) {
            let mut tight = tighten(value, long == "via");
            if long == "from" && !tight.to_ascii_lowercase().contains(";tag=") {
                let seed = format!("{}{}", call_id.as_deref().unwrap_or(""), value);
                let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                tight.push_str(&format!(";tag=rfc2543-{hash:016x}"));
            }
            out.push_str(&tight);
        } else {
            out.push_str(value);
        }
        out.push_str("\r\n");
    }
    // An RFC 2543 INVITE may have no Contact: its From is where it is
    // reached (the dialog needs a remote target).
    let has_contact = headers.iter().any(|line| {
        line.split_once(':')
            .is_some_and(|(name, _)| long_name(name.trim()) == "contact")
    });
    if start.starts_with("INVITE ") && !has_contact {
        let from = headers.iter().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (long_name(name.trim()) == "from").then_some(value)
        });
        if let Some(from) = from {
            let uri = match (from.find('<'), from.find('>')) {
                (Some(open), Some(close)) if open < close => &from[open + 1..close],
                _ => from.split(';').next().unwrap_or("").trim(),
            };
            if !uri.is_empty() {
                out.push_str(&format!("Contact: <{}>\r\n", uri.trim()));
            }
        }
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    (bytes != datagram).then_some(bytes)
}

/// White space out of the separators of a header value (outside quoted
/// strings), runs of it made one space.
fn tighten(value: &str, via: bool) -> String {
    let separators: &[char] = if via {
        &[';', '=', ',', '/']
    } else {
        &[';', '=', ',']
    };
    let mut out = String::with_capacity(value.len());
    let mut quoted = false;
    let mut escaped = false;
    let mut pending_space = false;
    for c in value.chars() {
        if quoted {
            out.push(c);
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => quoted = false,
                _ => escaped = false,
            }
            continue;
        }
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if separators.contains(&c) {
            // No space before a separator, none after it.
            pending_space = false;
            out.push(c);
            continue;
        }
        if pending_space && !out.is_empty() && !out.ends_with(separators) {
            out.push(' ');
        }
        pending_space = false;
        if c == '"' {
            quoted = true;
        }
        out.push(c);
    }
    out
}

/// A response to `request` built from its own Via, From, To, Call-ID and
/// CSeq (a To-tag added when it has none), without a transaction.
pub fn stateless_response(request: &[u8], status: u16, reason: &str, to_tag: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    if let Some((_, headers, _)) = split_message(request) {
        for line in &headers {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = long_name(name.trim());
            let value = value.trim();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" => {
                    out.push_str(&format!("{}: {value}\r\n", canonical(&name)));
                }
                "to" if tighten(value, false).to_ascii_lowercase().contains(";tag=") => {
                    out.push_str(&format!("To: {value}\r\n"));
                }
                "to" => out.push_str(&format!("To: {value};tag={to_tag}\r\n")),
                _ => {}
            }
        }
    }
    if status == 501 || status == 405 {
        out.push_str(&format!("Allow: {}\r\n", crate::sip::ALLOW));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

fn canonical(name: &str) -> &'static str {
    match name {
        "via" => "Via",
        "from" => "From",
        "call-id" => "Call-ID",
        _ => "CSeq",
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
            // An SDES key (RFC 4568) in the body.
            _ if line.starts_with("a=crypto:") => {
                let kept = line.split("inline:").next().unwrap_or(line);
                out.push_str(kept);
                out.push_str("inline:<redacted>");
                if line.ends_with('\n') {
                    out.push_str("\r\n");
                }
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
        // An SRTP key in an offer.
        let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let offer = format!(
            "INVITE sip:sav@pbx.example SIP/2.0\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31\r\n"
        );
        let logged = redacted(&offer);
        assert!(!logged.contains(key), "{logged}");
        assert!(
            logged.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>\r\n"),
            "{logged}"
        );
    }

    #[test]
    fn a_spaced_out_folded_message_is_given_to_the_stack_plain() {
        let wsinv = "INVITE sip:a@example.com SIP/2.0\r\n\
            TO :\r\n sip:a@example.com ;   tag    = 1918181833n\r\n\
            from   : \"J \\\"R\\\"\"   <sip:j@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
            cseq: 0009\r\n  INVITE\r\n\
            Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n\
            Call-ID: w@x\r\n\
            Content-Length: 2\r\n\r\nab";
        let plain = String::from_utf8(normalize(wsinv.as_bytes()).unwrap()).unwrap();
        assert!(
            plain.contains("TO: sip:a@example.com;tag=1918181833n\r\n"),
            "{plain}"
        );
        assert!(
            plain.contains("from: \"J \\\"R\\\"\" <sip:j@example.com>;tag=98asjd8\r\n"),
            "{plain}"
        );
        assert!(plain.contains("cseq: 0009 INVITE\r\n"), "{plain}");
        assert!(
            plain.contains("Via: SIP/2.0/UDP 192.0.2.2;rport;branch=390skdjuw\r\n"),
            "{plain}"
        );
        assert!(plain.ends_with("\r\n\r\nab"), "{plain}");
        // Already plain: left alone.
        assert_eq!(normalize(plain.as_bytes()), None);
        // RFC 2543: a From without a tag gets one, the same for a
        // retransmission.
        let old = "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@example.com>\r\nTo: <sip:b@example.com>\r\nCall-ID: 1717@ieee.org\r\nCSeq: 1 INVITE\r\n\r\n";
        let tagged = String::from_utf8(normalize(old.as_bytes()).unwrap()).unwrap();
        assert!(
            tagged.contains("From: <sip:a@example.com>;tag=rfc2543-"),
            "{tagged}"
        );
        assert!(
            tagged.contains("Contact: <sip:a@example.com>\r\n"),
            "{tagged}"
        );
        assert_eq!(normalize(old.as_bytes()).unwrap(), tagged.as_bytes());
    }

    #[test]
    fn invalid_requests_are_answered_here_and_valid_ones_pass() {
        let base = |start: &str, extra: &str| {
            format!("{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n")
        };
        let ok = base("OPTIONS sip:b@x SIP/2.0", "");
        assert_eq!(precheck(ok.as_bytes()), Precheck::Pass);
        for (message, status) in [
            (base("OPTIONS sip:b@x SIP/7.0", ""), 505),
            (base("OPTIONS  sip:b@x SIP/2.0", ""), 400),
            (base("OPTIONS nobody:knows SIP/2.0", ""), 416),
            (base("OPTIONS <sip:b@x> SIP/2.0", ""), 400),
            (base("OPTIONS sip:b@x?Route=y SIP/2.0", ""), 400),
            (
                base("OPTIONS sip:b@x SIP/2.0", "Content-Length: 4\r\n"),
                400,
            ),
            (
                base("OPTIONS sip:b@x SIP/2.0", "Max-Forwards: 300\r\n"),
                400,
            ),
            (base("INVITE sip:b@x SIP/2.0", ""), 400),
        ] {
            let expected = Precheck::Reply(status, "");
            match precheck(message.as_bytes()) {
                Precheck::Reply(got, _) => assert_eq!(got, status, "{message}"),
                other => panic!("{other:?} for {message}, expected {expected:?}"),
            }
        }
        // An ACK is never answered, however wrong; a CSeq past 2^31 is a
        // dialog's later request, fine.
        let ack = base("ACK sip:b@x SIP/2.0", "").replace("1 OPTIONS", "1 INVITE");
        assert!(matches!(precheck(ack.as_bytes()), Precheck::Drop(_)));
        let late = ok.replace("CSeq: 1 OPTIONS", "CSeq: 4000000000 OPTIONS");
        assert_eq!(precheck(late.as_bytes()), Precheck::Pass);
        let negative = ok.replace("Content-Length: 0", "Content-Length: -999");
        assert!(matches!(
            precheck(negative.as_bytes()),
            Precheck::Reply(400, _)
        ));
        let response = "SIP/2.0 4294967301 big\r\nVia: SIP/2.0/UDP h\r\n\r\n";
        assert!(matches!(precheck(response.as_bytes()), Precheck::Drop(_)));
        let reply = String::from_utf8(stateless_response(ok.as_bytes(), 400, "Bad", "t1")).unwrap();
        assert!(reply.starts_with("SIP/2.0 400 Bad\r\n"), "{reply}");
        assert!(reply.contains("To: <sip:b@x>;tag=t1\r\n") && reply.contains("Call-ID: c\r\n"));
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
