//! SDP offer/answer for one audio stream (RFC 4566 syntax, RFC 3264 model).
//!
//! We parse only what the answer depends on: the connection address, the
//! media lines with their formats, rtpmap, and direction. The answer accepts
//! the first audio stream that offers a codec the call may use (the
//! caller's first, or ours first: [`CodecChoice`]), adds telephone-event at
//! that codec's clock rate when the offer has it, and rejects every other
//! media line with port 0 in the same position (RFC 3264 §6).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::media::codec::{Codec, CodecChoice};
use crate::media::rtp::PayloadTypes;
use crate::media::srtp::{MasterKey, SrtpKeys, SrtpMode, Suite};
/// The longest offer we look at; anything bigger is not a phone call.
pub const MAX_SDP_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    #[error("SDP body of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SDP line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("no common codec: the offer's audio has none of {accepted} (formats {offered})")]
    NoCommonCodec { accepted: String, offered: String },
    #[error("SDP audio stream has no connection address")]
    NoConnection,
    #[error("the offer's media security is not acceptable: {0}")]
    Security(&'static str),
}

impl SdpError {
    /// The SIP response code this failure deserves (RFC 3261 §21).
    pub fn status_code(&self) -> u16 {
        match self {
            // The body could not be understood at all.
            SdpError::NotUtf8 | SdpError::TooLarge(_) | SdpError::Malformed { .. } => 400,
            // Understood, but nothing we can accept: 488 Not Acceptable Here.
            SdpError::NoAudio
            | SdpError::NoCommonCodec { .. }
            | SdpError::NoConnection
            | SdpError::Security(_) => 488,
        }
    }
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// What both directions allow (an answer to ours may not widen what we
    /// offered: RFC 3264 §6.1).
    pub fn within(self, offered: Direction) -> Direction {
        let sends = self.sends() && offered.sends();
        let receives = self.receives() && offered.receives();
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answer takes to this offered direction (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
}

/// One `m=` line of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    /// `(payload type, encoding name, clock rate)` from `a=rtpmap`.
    pub rtpmaps: Vec<(u8, String, u32)>,
    pub connection: Option<IpAddr>,
    pub direction: Direction,
    /// `a=rtcp-mux`: RTCP on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=crypto` (SDES, RFC 4568) lines we could read, in the offer's
    /// order of preference.
    pub crypto: Vec<Crypto>,
}

/// One `a=crypto` line (RFC 4568 §9.1) with a suite we know and one inline
/// key (no MKI, no lifetime shorter than a call). Its Debug shows no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub key: MasterKey,
}

impl Crypto {
    /// A new key of ours for `suite`, from the operating system's generator.
    pub fn ours(tag: u32, suite: Suite) -> Crypto {
        Crypto {
            tag,
            key: MasterKey::generate(suite),
        }
    }

    /// The attribute's value: `1 AES_CM_128_HMAC_SHA1_80 inline:<base64>`.
    pub fn attribute(&self) -> String {
        use base64::Engine;
        let mut material = [0u8; 30];
        material[..16].copy_from_slice(&self.key.key);
        material[16..].copy_from_slice(&self.key.salt);
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(material)
        )
    }

    /// An `a=crypto` value; `None` for a suite we do not know, a key that is
    /// not 30 octets, several keys or an MKI (which we do not do), or a
    /// lifetime under 2^31 packets (a call never reaches it; a shorter one
    /// would ask for re-keying we do not do).
    pub fn parse(value: &str) -> Option<Crypto> {
        use base64::Engine;
        let mut fields = value.split_ascii_whitespace();
        let tag: u32 = fields.next()?.parse().ok()?;
        let suite = Suite::from_name(fields.next()?)?;
        let key_params = fields.next()?;
        if key_params.contains(';') {
            return None;
        }
        // Session parameters (RFC 4568 §6.3) change how packets are
        // protected: only those that change nothing we do are taken.
        for parameter in fields {
            let harmless = parameter == "KDR=0" || parameter.starts_with("WSH=");
            if !harmless {
                return None;
            }
        }
        let inline = key_params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let material = base64::engine::general_purpose::STANDARD
            .decode(parts.next()?)
            .ok()?;
        if material.len() != 30 {
            return None;
        }
        for part in parts {
            if part.contains(':') {
                // An MKI.
                return None;
            }
            let lifetime = match part.strip_prefix("2^") {
                Some(power) => 1u64.checked_shl(power.parse().ok()?)?,
                None => part.parse().ok()?,
            };
            if lifetime < 1 << 31 {
                return None;
            }
        }
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        key.copy_from_slice(&material[..16]);
        salt.copy_from_slice(&material[16..]);
        Some(Crypto {
            tag,
            key: MasterKey { suite, key, salt },
        })
    }
}

impl MediaDescription {
    fn rtpmap(&self, pt: u8) -> Option<(&str, u32)> {
        self.rtpmaps
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, name, rate)| (name.as_str(), *rate))
    }

    /// The formats sav knows, in the line's order: `(payload type, codec)`
    /// from `a=rtpmap`, or from the static table when there is none.
    fn codecs(&self) -> Vec<(u8, Codec)> {
        self.formats
            .iter()
            .filter_map(|&pt| {
                let codec = match self.rtpmap(pt) {
                    Some((name, rate)) => Codec::from_rtpmap(name, rate),
                    None => Codec::from_static(pt),
                };
                codec.map(|c| (pt, c))
            })
            .collect()
    }

    /// The payload type carrying telephone-event at `clock_rate`, if any.
    fn telephone_event(&self, clock_rate: u32) -> Option<u8> {
        self.formats.iter().copied().find(|&pt| {
            matches!(self.rtpmap(pt), Some((name, rate)) if rate == clock_rate && name.eq_ignore_ascii_case("telephone-event"))
        })
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        if body.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut session_connection = None;
        let mut session_direction = Direction::SendRecv;
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut saw_version = false;
        for (number, raw) in text.lines().enumerate() {
            let line_no = number + 1;
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let malformed = |reason| SdpError::Malformed {
                line: line_no,
                reason,
            };
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or(malformed("expected <type>=<value>"))?;
            match kind {
                "v" => {
                    if value != "0" {
                        return Err(malformed("unsupported SDP version"));
                    }
                    saw_version = true;
                }
                "c" => {
                    let addr = parse_connection(value).ok_or(malformed("bad c= line"))?;
                    match media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => session_connection = Some(addr),
                    }
                }
                "m" => {
                    let mut fields = value.split_ascii_whitespace();
                    let (Some(kind), Some(port), Some(proto)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        return Err(malformed("m= needs media, port, proto and formats"));
                    };
                    // "port/count" is allowed (RFC 4566 §5.14); we use the base port.
                    let port = port
                        .split('/')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(malformed("bad m= port"))?;
                    let mut formats = Vec::new();
                    for f in fields {
                        // Non-RTP protocols have non-numeric formats; keep only RTP ones.
                        if let Ok(pt) = f.parse::<u8>() {
                            if pt > 127 {
                                return Err(malformed("payload type above 127"));
                            }
                            formats.push(pt);
                        }
                    }
                    media.push(MediaDescription {
                        media: kind.to_string(),
                        port,
                        proto: proto.to_string(),
                        formats,
                        rtpmaps: Vec::new(),
                        connection: None,
                        direction: session_direction,
                        rtcp_mux: false,
                        crypto: Vec::new(),
                    });
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let direction = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    match (direction, media.last_mut()) {
                        (Some(d), Some(m)) => m.direction = d,
                        (Some(d), None) => session_direction = d,
                        // An rtpmap we cannot read (no clock rate: `a=rtpmap:31
                        // LPC`, RFC 4475 §3.1.1.3) says nothing we could use: its
                        // format keeps its static meaning, or none.
                        (None, Some(m)) if name == "rtpmap" => {
                            if let Some(rtpmap) = parse_rtpmap(arg) {
                                m.rtpmaps.push(rtpmap);
                            }
                        }
                        (None, Some(m)) if name == "rtcp-mux" => m.rtcp_mux = true,
                        // One we cannot use is skipped: another line may
                        // offer what we know (RFC 4568 §7.1.1).
                        (None, Some(m)) if name == "crypto" => {
                            if let Some(crypto) = Crypto::parse(arg) {
                                m.crypto.push(crypto);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::Malformed {
                line: 1,
                reason: "missing v=0",
            });
        }
        for m in &mut media {
            if m.connection.is_none() {
                m.connection = session_connection;
            }
        }
        Ok(Self { media })
    }
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut fields = value.split_ascii_whitespace();
    let (net, addr_type, addr) = (fields.next()?, fields.next()?, fields.next()?);
    if net != "IN" || !matches!(addr_type, "IP4" | "IP6") {
        return None;
    }
    // Multicast addresses carry "/ttl"; a phone call never does, but parse it.
    addr.split('/').next()?.parse().ok()
}

fn parse_rtpmap(arg: &str) -> Option<(u8, String, u32)> {
    let (pt, encoding) = arg.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok()?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next()?.to_string();
    let rate = parts.next()?.parse().ok()?;
    Some((pt, name, rate))
}

/// What a call's descriptions may say of SRTP (SDES, RFC 4568).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpPolicy {
    pub mode: SrtpMode,
    /// The keys may be written in our SDP: the signalling is encrypted
    /// (SIP over TLS), or the configuration allows it in clear
    /// (RFC 4568 §8.3: SDES keys are only as secret as the signalling).
    pub keys_may_travel: bool,
    /// Our master key for the call (its suite is the one agreed).
    pub ours: MasterKey,
}

impl SrtpPolicy {
    /// The policy of a call whose signalling came encrypted or not.
    pub fn new(mode: SrtpMode, keys_may_travel: bool) -> SrtpPolicy {
        SrtpPolicy {
            mode,
            keys_may_travel,
            ours: MasterKey::generate(Suite::AesCm128HmacSha1_80),
        }
    }

    /// Plain RTP only.
    pub fn off() -> SrtpPolicy {
        SrtpPolicy::new(SrtpMode::Off, false)
    }

    /// Whether our own offers are RTP/SAVP with our key.
    pub fn offers_crypto(&self) -> bool {
        self.mode == SrtpMode::Mandatory && self.keys_may_travel
    }

    /// A new key of ours, for a stream that starts again (RFC 3711 §9.1:
    /// a key never encrypts the same packet index twice).
    pub fn renew_key(&mut self, suite: Suite) -> MasterKey {
        self.ours = MasterKey::generate(suite);
        self.ours
    }
}

/// Reads the answer to a description of ours (`offered`: an offer of ours,
/// or our current description sent again as the offer): its stream and
/// codec by `choice`; SRTP only as our description offered it (RTP/SAVP:
/// required; crypto lines in RTP/AVP: accepted), with the key we gave under
/// the tag and suite the answer took (RFC 4568 §7.1.3).
pub fn negotiate_answer(
    answer: &SessionDescription,
    choice: &CodecChoice,
    offered: &str,
) -> Result<NegotiatedAudio, SdpError> {
    let ours = SessionDescription::parse(offered.as_bytes())?;
    let (our_index, line) = ours
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    let offered_crypto = &line.crypto;
    let mode = if line.proto.eq_ignore_ascii_case("RTP/SAVP") {
        SrtpMode::Mandatory
    } else if !offered_crypto.is_empty() {
        SrtpMode::Optional
    } else {
        SrtpMode::Off
    };
    let policy = SrtpPolicy {
        mode,
        // Ours were sent already; the answer's come back the same way.
        keys_may_travel: true,
        // Replaced below by the key of the line the answer took.
        ours: MasterKey::generate(Suite::AesCm128HmacSha1_80),
    };
    let mut chosen = negotiate(answer, choice, &policy)?;
    // The answer's audio is on our audio's line (RFC 3264 §6), in a codec
    // we offered, which the caller sends with our numbers (§5.1).
    if chosen.index != our_index {
        return Err(SdpError::Malformed {
            line: 0,
            reason: "the answer's audio is not on our offer's audio line",
        });
    }
    let Some(audio) = line
        .codecs()
        .into_iter()
        .find(|(_, codec)| *codec == chosen.codec)
        .map(|(pt, _)| pt)
    else {
        return Err(SdpError::NoCommonCodec {
            accepted: chosen.codec.name().to_string(),
            offered: "our offer, without it".to_string(),
        });
    };
    chosen.receive = Some(PayloadTypes {
        audio,
        telephone_event: line.telephone_event(chosen.codec.clock_rate()),
    });
    // It cannot widen the direction we offered, nor turn on rtcp-mux we
    // did not offer (RFC 5761 §5.1.1).
    chosen.direction = chosen.direction.within(line.direction);
    chosen.rtcp_mux &= line.rtcp_mux;
    if let Some(agreed) = chosen.srtp.as_mut() {
        let offered = offered_crypto
            .iter()
            .find(|c| c.tag == agreed.tag && c.key.suite == agreed.keys.theirs.suite)
            .ok_or(SdpError::Security(
                "the answer's crypto line is none of our offer's (tag and suite)",
            ))?;
        agreed.keys.ours = offered.key;
    }
    Ok(chosen)
}

/// SRTP as agreed: the tag of the caller's crypto line we took, and both
/// sides' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgreedSrtp {
    pub tag: u32,
    pub keys: SrtpKeys,
}

/// Whether an audio line's security is acceptable: the caller's crypto
/// line we take (`None`: plain RTP), or why not.
fn security(m: &MediaDescription, srtp: &SrtpPolicy) -> Result<Option<Crypto>, &'static str> {
    let savp = m.proto.eq_ignore_ascii_case("RTP/SAVP");
    let usable = match srtp.mode {
        SrtpMode::Off => None,
        SrtpMode::Optional | SrtpMode::Mandatory if srtp.keys_may_travel => {
            m.crypto.first().copied()
        }
        SrtpMode::Optional | SrtpMode::Mandatory => None,
    };
    match (savp, usable) {
        (_, Some(crypto)) => Ok(Some(crypto)),
        (true, None) if srtp.mode == SrtpMode::Off => {
            Err("RTP/SAVP offered and [media] srtp is off")
        }
        // Best-effort SRTP (crypto lines in RTP/AVP) whose keys may not be
        // taken is answered in plain RTP when that is allowed.
        (true, None) | (false, None)
            if !srtp.keys_may_travel
                && !m.crypto.is_empty()
                && (savp || srtp.mode == SrtpMode::Mandatory) =>
        {
            Err("SRTP keys offered over unencrypted signalling (use SIP over TLS, or [media] srtp_without_tls)")
        }
        (true, None) => Err("no crypto suite we support (AES_CM_128_HMAC_SHA1_80 or _32)"),
        (false, None) if srtp.mode == SrtpMode::Mandatory => {
            Err("plain RTP offered and [media] srtp is mandatory")
        }
        (false, None) => Ok(None),
    }
}

/// What the answer agreed to for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Index of the accepted `m=` line in the offer.
    pub index: usize,
    /// Where the caller said it receives RTP (we latch to where it really
    /// sends from once its packets arrive).
    pub remote: SocketAddr,
    /// The codec both sides use, and its payload type in the offer.
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    /// The direction of our answer.
    pub direction: Direction,
    /// RTCP shares the RTP port (offered, so accepted: RFC 5761 §5.1.1).
    pub rtcp_mux: bool,
    /// The media is SRTP with these keys.
    pub srtp: Option<AgreedSrtp>,
    /// The payload types the caller sends with, when they are not those of
    /// its own description: in an answer to ours, it sends with our numbers
    /// (RFC 3264 §5.1).
    pub receive: Option<PayloadTypes>,
}

/// Picks the stream we accept from an offer, its codec by `choice` and
/// its security by `srtp`.
pub fn negotiate(
    offer: &SessionDescription,
    choice: &CodecChoice,
    srtp: &SrtpPolicy,
) -> Result<NegotiatedAudio, SdpError> {
    let mut offered = Vec::new();
    let mut audio_seen = false;
    let mut insecure = None;
    for (index, m) in offer.media.iter().enumerate() {
        let profile_known =
            m.proto.eq_ignore_ascii_case("RTP/AVP") || m.proto.eq_ignore_ascii_case("RTP/SAVP");
        if m.media != "audio" || m.port == 0 || !profile_known {
            continue;
        }
        let crypto = match security(m, srtp) {
            Ok(crypto) => crypto,
            Err(why) => {
                insecure.get_or_insert(why);
                continue;
            }
        };
        audio_seen = true;
        let Some((payload_type, codec)) = choice.pick(&m.codecs()) else {
            offered.extend(m.formats.iter().map(|&pt| match m.rtpmap(pt) {
                Some((name, rate)) => format!("{pt} {name}/{rate}"),
                None => pt.to_string(),
            }));
            continue;
        };
        let addr = m.connection.ok_or(SdpError::NoConnection)?;
        return Ok(NegotiatedAudio {
            index,
            remote: SocketAddr::new(addr, m.port),
            codec,
            payload_type,
            telephone_event: m.telephone_event(codec.clock_rate()),
            direction: m.direction.answer(),
            rtcp_mux: m.rtcp_mux,
            srtp: crypto.map(|theirs| AgreedSrtp {
                tag: theirs.tag,
                keys: SrtpKeys {
                    ours: srtp.ours.with_suite(theirs.key.suite),
                    theirs: theirs.key,
                },
            }),
            receive: None,
        });
    }
    if let (false, Some(why)) = (audio_seen, insecure) {
        Err(SdpError::Security(why))
    } else if audio_seen {
        Err(SdpError::NoCommonCodec {
            accepted: choice.names(),
            offered: offered.join(", "),
        })
    } else {
        Err(SdpError::NoAudio)
    }
}

/// Our o= line's session id and version (RFC 4566 §5.2): the version goes up
/// each time our description changes within the session (RFC 3264 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub id: u64,
    pub version: u64,
}

impl Origin {
    pub fn new(id: u64) -> Self {
        Self { id, version: id }
    }

    /// The same session, one version on.
    pub fn next(self) -> Self {
        Self {
            version: self.version + 1,
            ..self
        }
    }
}

/// `sdp`, a description of ours, with its o= line at `origin` (a new
/// version of it).
pub fn with_origin(sdp: &str, origin: Origin) -> String {
    sdp.split_inclusive('\n')
        .map(|line| match line.strip_prefix("o=sav ") {
            Some(rest) => {
                let tail = rest.splitn(3, ' ').nth(2).unwrap_or("");
                format!("o=sav {} {} {tail}", origin.id, origin.version)
            }
            None => line.to_string(),
        })
        .collect()
}

/// Builds our answer: the accepted audio stream at `local`, every other offered
/// stream rejected with port 0.
pub fn answer(
    offer: &SessionDescription,
    chosen: &NegotiatedAudio,
    local: SocketAddr,
    origin: Origin,
) -> String {
    let ip = local.ip();
    let addr_type = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut sdp = String::with_capacity(512);
    // Writing to a String cannot fail.
    let _ = write!(
        sdp,
        "v=0\r\no=sav {} {} IN {addr_type} {ip}\r\ns=sav\r\nc=IN {addr_type} {ip}\r\nt=0 0\r\n",
        origin.id, origin.version
    );
    for (index, m) in offer.media.iter().enumerate() {
        if index != chosen.index {
            let formats: Vec<String> = m.formats.iter().map(|f| f.to_string()).collect();
            let formats = if formats.is_empty() {
                "0".to_string()
            } else {
                formats.join(" ")
            };
            let _ = write!(sdp, "m={} 0 {} {}\r\n", m.media, m.proto, formats);
            continue;
        }
        // The caller's profile (RTP/SAVP, or RTP/AVP with crypto lines).
        let _ = write!(
            sdp,
            "m=audio {} {} {}",
            local.port(),
            m.proto,
            chosen.payload_type
        );
        if let Some(te) = chosen.telephone_event {
            let _ = write!(sdp, " {te}");
        }
        let _ = write!(sdp, "\r\n");
        write_formats(&mut sdp, &[(chosen.payload_type, chosen.codec)]);
        if let Some(te) = chosen.telephone_event {
            write_telephone_event(&mut sdp, te, chosen.codec.clock_rate());
        }
        let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", chosen.direction.attribute());
        if chosen.rtcp_mux {
            let _ = write!(sdp, "a=rtcp-mux\r\n");
        }
        if let Some(srtp) = &chosen.srtp {
            let ours = Crypto {
                tag: srtp.tag,
                key: srtp.keys.ours,
            };
            let _ = write!(sdp, "a=crypto:{}\r\n", ours.attribute());
        }
    }
    sdp
}

/// The `a=rtpmap` (and `a=fmtp`) lines of `formats`.
fn write_formats(sdp: &mut String, formats: &[(u8, Codec)]) {
    for (pt, codec) in formats {
        let _ = write!(sdp, "a=rtpmap:{pt} {}\r\n", codec.rtpmap());
        if let Some(fmtp) = codec.fmtp() {
            let _ = write!(sdp, "a=fmtp:{pt} {fmtp}\r\n");
        }
    }
}

/// telephone-event (RFC 4733) on `pt` at `rate`, keys 0-15.
fn write_telephone_event(sdp: &mut String, pt: u8, rate: u32) {
    let _ = write!(
        sdp,
        "a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-15\r\n"
    );
}

/// Payload type we offer telephone-event on at 8 kHz when the INVITE had
/// no offer.
pub const OFFERED_TELEPHONE_EVENT: u8 = 101;
/// ... and at 48 kHz, beside Opus (RFC 4733 §2.1: the event clock is the
/// audio's).
pub const OFFERED_TELEPHONE_EVENT_48K: u8 = 110;

/// Our offer (an INVITE we send, or one that came without an offer:
/// delayed offer, RFC 3261 §13.2.1): the codecs of `choice` in our order,
/// by their static payload types (Opus on a dynamic one), and
/// telephone-event at each of their clock rates, at `local`.
pub fn offer(local: SocketAddr, origin: Origin, choice: &CodecChoice, srtp: &SrtpPolicy) -> String {
    let ip = local.ip();
    let addr_type = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let formats: Vec<(u8, Codec)> = choice
        .allowed
        .iter()
        .map(|&c| (c.offer_payload_type(), c))
        .collect();
    let mut events: Vec<(u8, u32)> = Vec::new();
    for (_, codec) in &formats {
        let rate = codec.clock_rate();
        let pt = if rate == 48_000 {
            OFFERED_TELEPHONE_EVENT_48K
        } else {
            OFFERED_TELEPHONE_EVENT
        };
        if !events.contains(&(pt, rate)) {
            events.push((pt, rate));
        }
    }
    let mut sdp = String::with_capacity(512);
    let _ = write!(
        sdp,
        "v=0\r\no=sav {} {} IN {addr_type} {ip}\r\ns=sav\r\nc=IN {addr_type} {ip}\r\nt=0 0\r\nm=audio {} {}",
        origin.id, origin.version, local.port(),
        if srtp.offers_crypto() { "RTP/SAVP" } else { "RTP/AVP" }
    );
    for pt in formats
        .iter()
        .map(|(pt, _)| pt)
        .chain(events.iter().map(|(pt, _)| pt))
    {
        let _ = write!(sdp, " {pt}");
    }
    let _ = write!(sdp, "\r\n");
    write_formats(&mut sdp, &formats);
    for (pt, rate) in events {
        write_telephone_event(&mut sdp, pt, rate);
    }
    let _ = write!(sdp, "a=ptime:20\r\na=sendrecv\r\n");
    if srtp.offers_crypto() {
        let ours = Crypto {
            tag: 1,
            key: srtp.ours,
        };
        let _ = write!(sdp, "a=crypto:{}\r\n", ours.attribute());
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdes_crypto_lines_are_read_and_written_back() {
        let ours = Crypto::ours(1, Suite::AesCm128HmacSha1_80);
        let attribute = ours.attribute();
        assert!(
            attribute.starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{attribute}"
        );
        assert_eq!(Crypto::parse(&attribute), Some(ours));
        assert!(!format!("{ours:?}").contains("inline"), "no key in Debug");
        let key = attribute.rsplit(':').next().unwrap().to_string();
        for (value, readable) in [
            (format!("2 AES_CM_128_HMAC_SHA1_32 inline:{key}"), true),
            (format!("3 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31"), true),
            (
                format!("4 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20"),
                false,
            ),
            (
                format!("5 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31|1:4"),
                false,
            ),
            (format!("6 AES_256_CM_HMAC_SHA1_80 inline:{key}"), false),
            (
                "7 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string(),
                false,
            ),
            ("x AES_CM_128_HMAC_SHA1_80".to_string(), false),
        ] {
            assert_eq!(Crypto::parse(&value).is_some(), readable, "{value}");
        }
        let offer = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{key}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
        );
        let parsed = SessionDescription::parse(offer.as_bytes()).unwrap();
        assert_eq!(parsed.media[0].crypto.len(), 1);
        assert_eq!(parsed.media[0].crypto[0].tag, 2);
    }

    /// An offer of PCMU in `proto` with `crypto` lines.
    fn secure_offer(proto: &str, crypto: &[&Crypto]) -> SessionDescription {
        let mut sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        for line in crypto {
            sdp.push_str(&format!("a=crypto:{}\r\n", line.attribute()));
        }
        SessionDescription::parse(sdp.as_bytes()).unwrap()
    }

    fn security_error(result: Result<NegotiatedAudio, SdpError>) -> String {
        match result {
            Err(SdpError::Security(why)) => why.to_string(),
            other => panic!("expected a security refusal, got {other:?}"),
        }
    }

    #[test]
    fn srtp_is_answered_with_the_callers_tag_and_suite_and_a_key_of_ours() {
        let theirs_32 = Crypto::ours(3, Suite::AesCm128HmacSha1_32);
        let theirs_80 = Crypto::ours(5, Suite::AesCm128HmacSha1_80);
        let policy = SrtpPolicy::new(SrtpMode::Optional, true);
        for proto in ["RTP/SAVP", "RTP/AVP"] {
            let offer = secure_offer(proto, &[&theirs_32, &theirs_80]);
            let chosen = negotiate(&offer, &CodecChoice::default(), &policy).unwrap();
            // The caller's first line we can use, its key to read it by,
            // ours (not theirs) to send with, in its suite.
            let agreed = chosen.srtp.expect("SRTP agreed");
            assert_eq!(agreed.tag, 3);
            assert_eq!(agreed.keys.theirs, theirs_32.key);
            assert_eq!(agreed.keys.ours.suite, Suite::AesCm128HmacSha1_32);
            assert_eq!(agreed.keys.ours.key, policy.ours.key);
            assert_ne!(agreed.keys.ours.key, theirs_32.key.key);
            let answer = answer(
                &offer,
                &chosen,
                "127.0.0.1:20000".parse().unwrap(),
                Origin::new(1),
            );
            assert!(
                answer.contains(&format!("m=audio 20000 {proto} 0 101\r\n")),
                "{answer}"
            );
            let lines: Vec<&str> = answer
                .lines()
                .filter(|l| l.starts_with("a=crypto:"))
                .collect();
            assert_eq!(lines.len(), 1, "{answer}");
            let ours = Crypto::parse(&lines[0]["a=crypto:".len()..]).unwrap();
            assert_eq!((ours.tag, ours.key), (3, agreed.keys.ours));
        }
        // A plain offer in optional mode: plain.
        let plain = secure_offer("RTP/AVP", &[]);
        let chosen = negotiate(&plain, &CodecChoice::default(), &policy).unwrap();
        assert_eq!(chosen.srtp, None);
        let answer = answer(
            &plain,
            &chosen,
            "127.0.0.1:20000".parse().unwrap(),
            Origin::new(1),
        );
        assert!(
            !answer.contains("crypto") && answer.contains("RTP/AVP"),
            "{answer}"
        );
    }

    #[test]
    fn srtp_refusals_say_why() {
        let theirs = Crypto::ours(1, Suite::AesCm128HmacSha1_80);
        let savp = secure_offer("RTP/SAVP", &[&theirs]);
        let choice = CodecChoice::default();
        // Off: RTP/SAVP is not for us, and crypto lines in RTP/AVP are
        // ignored (answered plain).
        let why = security_error(negotiate(&savp, &choice, &SrtpPolicy::off()));
        assert!(why.contains("srtp is off"), "{why}");
        let best_effort = secure_offer("RTP/AVP", &[&theirs]);
        let chosen = negotiate(&best_effort, &choice, &SrtpPolicy::off()).unwrap();
        assert_eq!(chosen.srtp, None);
        // Keys in SIP that is not encrypted: refused unless allowed, in
        // either profile; allowed, SRTP.
        for mode in [SrtpMode::Optional, SrtpMode::Mandatory] {
            let in_clear = SrtpPolicy::new(mode, false);
            let why = security_error(negotiate(&savp, &choice, &in_clear));
            assert!(why.contains("unencrypted signalling"), "{why}");
            let allowed = SrtpPolicy::new(mode, true);
            assert!(negotiate(&savp, &choice, &allowed).unwrap().srtp.is_some());
        }
        let why = security_error(negotiate(
            &best_effort,
            &choice,
            &SrtpPolicy::new(SrtpMode::Mandatory, false),
        ));
        assert!(why.contains("unencrypted signalling"), "{why}");
        // ... but when optional, best-effort SRTP whose keys came in clear
        // is answered in plain RTP, as with SRTP off.
        let chosen = negotiate(
            &best_effort,
            &choice,
            &SrtpPolicy::new(SrtpMode::Optional, false),
        )
        .unwrap();
        assert_eq!(chosen.srtp, None);
        // Session parameters that change the protection make a line
        // unusable (RFC 4568 §6.3); harmless ones do not.
        let key = theirs.attribute();
        let key = key.split_whitespace().nth(2).unwrap();
        for (params, usable) in [
            ("KDR=0", true),
            ("WSH=64", true),
            ("KDR=10", false),
            ("UNENCRYPTED_SRTP", false),
            ("UNAUTHENTICATED_SRTP", false),
            ("UNENCRYPTED_SRTCP", false),
        ] {
            let value = format!("1 AES_CM_128_HMAC_SHA1_80 {key} {params}");
            assert_eq!(Crypto::parse(&value).is_some(), usable, "{value}");
        }
        // Mandatory: plain RTP is refused.
        let plain = secure_offer("RTP/AVP", &[]);
        let why = security_error(negotiate(
            &plain,
            &choice,
            &SrtpPolicy::new(SrtpMode::Mandatory, true),
        ));
        assert!(why.contains("mandatory"), "{why}");
        // RTP/SAVP with only suites we do not know.
        let unknown = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AEAD_AES_256_GCM inline:AAAA\r\n",
        )
        .unwrap();
        let why = security_error(negotiate(
            &unknown,
            &choice,
            &SrtpPolicy::new(SrtpMode::Optional, true),
        ));
        assert!(why.contains("no crypto suite"), "{why}");
        // A refusal is 488.
        assert_eq!(SdpError::Security("x").status_code(), 488);
        // A secure line we cannot take does not hide a plain one we can.
        let mut two = secure_offer("RTP/SAVP", &[&theirs]);
        two.media.push(secure_offer("RTP/AVP", &[]).media.remove(0));
        let chosen = negotiate(&two, &choice, &SrtpPolicy::new(SrtpMode::Optional, false)).unwrap();
        assert_eq!((chosen.index, chosen.srtp), (1, None));
    }

    #[test]
    fn our_offer_is_savp_with_our_key_only_when_srtp_is_mandatory_and_keys_may_travel() {
        let local = "127.0.0.1:20000".parse().unwrap();
        let choice = CodecChoice::default();
        for (mode, travel, secure) in [
            (SrtpMode::Off, true, false),
            (SrtpMode::Optional, true, false),
            (SrtpMode::Mandatory, false, false),
            (SrtpMode::Mandatory, true, true),
        ] {
            let policy = SrtpPolicy::new(mode, travel);
            let ours = offer(local, Origin::new(1), &choice, &policy);
            assert_eq!(ours.contains("RTP/SAVP"), secure, "{ours}");
            assert_eq!(
                ours.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
                secure,
                "{ours}"
            );
            // The answer to it is read as our offer asked: SRTP with the
            // key we gave when it carried one, plain otherwise.
            let theirs = Crypto::ours(1, Suite::AesCm128HmacSha1_80);
            let secure_answer =
                secure_offer(if secure { "RTP/SAVP" } else { "RTP/AVP" }, &[&theirs]);
            let chosen = negotiate_answer(&secure_answer, &choice, &ours).unwrap();
            assert_eq!(chosen.srtp.is_some(), secure);
            if let Some(agreed) = chosen.srtp {
                assert_eq!(agreed.keys.ours, policy.ours);
                assert_eq!(agreed.keys.theirs, theirs.key);
            }
            if secure {
                let plain_answer = secure_offer("RTP/AVP", &[]);
                assert!(negotiate_answer(&plain_answer, &choice, &ours).is_err());
                // An answer under a tag or a suite we did not offer.
                for wrong in [
                    Crypto::ours(2, Suite::AesCm128HmacSha1_80),
                    Crypto::ours(1, Suite::AesCm128HmacSha1_32),
                ] {
                    let answer = secure_offer("RTP/SAVP", &[&wrong]);
                    let why = security_error(negotiate_answer(&answer, &choice, &ours));
                    assert!(why.contains("none of our offer"), "{why}");
                }
            }
        }
    }

    #[test]
    fn an_answer_to_our_description_is_read_with_our_numbers_our_line_and_our_direction() {
        let choice = CodecChoice::default();
        // Our description: PCMA on 8 and telephone-event on 101, recvonly
        // (the caller holds us), as a refresh offers it again.
        let ours = "v=0\r\no=sav 5 6 IN IP4 127.0.0.1\r\ns=sav\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n";
        // A sloppy answer: sendrecv, its own numbers (96 for PCMA cannot
        // be, so a dynamic telephone-event 100).
        let answer = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 100\r\na=rtpmap:100 telephone-event/8000\r\na=sendrecv\r\n",
        )
        .unwrap();
        let chosen = negotiate_answer(&answer, &choice, ours).unwrap();
        assert_eq!(chosen.codec, Codec::Pcma);
        // We send with its numbers, it sends with ours.
        assert_eq!(chosen.telephone_event, Some(100));
        assert_eq!(
            chosen.receive,
            Some(PayloadTypes {
                audio: 8,
                telephone_event: Some(101)
            })
        );
        // It may not make us send while held.
        assert_eq!(chosen.direction, Direction::RecvOnly);
        // Its audio on another line than ours is no answer to it.
        let shifted = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 0 RTP/AVP 31\r\nm=audio 4000 RTP/AVP 8\r\n",
        )
        .unwrap();
        assert!(negotiate_answer(&shifted, &choice, ours).is_err());
        // A codec we did not offer.
        let pcmu = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert!(negotiate_answer(&pcmu, &choice, ours).is_err());
        // A new version of our o= line.
        let next = with_origin(ours, Origin { id: 5, version: 7 });
        assert!(next.contains("o=sav 5 7 IN IP4 127.0.0.1\r\n"), "{next}");
        assert_eq!(next.replace("5 7 IN", "5 6 IN"), ours);
    }

    const OFFER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n";

    use crate::media::codec::CodecOrder;

    fn pcmu_only() -> CodecChoice {
        CodecChoice {
            allowed: vec![Codec::Pcmu],
            order: CodecOrder::Offer,
        }
    }

    fn negotiate_default(offer: &SessionDescription) -> Result<NegotiatedAudio, SdpError> {
        negotiate(offer, &CodecChoice::default(), &SrtpPolicy::off())
    }

    #[test]
    fn answers_the_callers_first_codec_and_telephone_event() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let chosen = negotiate_default(&offer).unwrap();
        assert_eq!(chosen.remote, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(
            (chosen.codec, chosen.payload_type, chosen.telephone_event),
            (Codec::Pcma, 8, Some(101))
        );
        let sdp = answer(
            &offer,
            &chosen,
            "127.0.0.1:20000".parse().unwrap(),
            Origin::new(42),
        );
        assert!(sdp.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(!sdp.contains("PCMU"), "one codec in the answer: {sdp}");
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(sdp.contains("a=ptime:20\r\n"));
        assert!(sdp.contains("a=sendrecv\r\n"));
        // The answer parses with our own parser.
        let reparsed = SessionDescription::parse(sdp.as_bytes()).unwrap();
        assert_eq!(reparsed.media[0].formats, vec![8, 101]);
        // PCMU only: the second of the offer.
        let chosen = negotiate(&offer, &pcmu_only(), &SrtpPolicy::off()).unwrap();
        assert_eq!((chosen.codec, chosen.payload_type), (Codec::Pcmu, 0));
    }

    #[test]
    fn rtcp_mux_is_accepted_when_offered_and_not_otherwise() {
        let muxed = OFFER.replace("a=ptime:20\r\n", "a=ptime:20\r\na=rtcp-mux\r\n");
        let offer = SessionDescription::parse(muxed.as_bytes()).unwrap();
        let chosen = negotiate_default(&offer).unwrap();
        assert!(chosen.rtcp_mux);
        let local = "127.0.0.1:20000".parse().unwrap();
        let sdp = answer(&offer, &chosen, local, Origin::new(1));
        assert!(sdp.contains("a=rtcp-mux\r\n"), "{sdp}");
        let plain = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let chosen = negotiate_default(&plain).unwrap();
        assert!(!chosen.rtcp_mux);
        assert!(!answer(&plain, &chosen, local, Origin::new(1)).contains("rtcp-mux"));
    }

    #[test]
    fn mixed_orders_are_answered_by_the_callers_order_or_ours() {
        let offer = |formats: &str| {
            let text = format!("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP {formats}\n");
            SessionDescription::parse(text.as_bytes()).unwrap()
        };
        let ours_first = CodecChoice {
            order: CodecOrder::Ours,
            ..CodecChoice::default()
        };
        // (formats, the caller's order, ours: PCMA then PCMU)
        let cases = [
            ("0 8", Codec::Pcmu, Codec::Pcma),
            ("8 0", Codec::Pcma, Codec::Pcma),
            ("18 0 8", Codec::Pcmu, Codec::Pcma),
            ("18 8", Codec::Pcma, Codec::Pcma),
            ("0", Codec::Pcmu, Codec::Pcmu),
        ];
        for (formats, caller, ours) in cases {
            let o = offer(formats);
            assert_eq!(negotiate_default(&o).unwrap().codec, caller, "{formats}");
            assert_eq!(
                negotiate(&o, &ours_first, &SrtpPolicy::off())
                    .unwrap()
                    .codec,
                ours,
                "{formats}"
            );
        }
    }

    #[test]
    fn static_pcmu_without_rtpmap_and_lf_line_ends() {
        let offer = "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n";
        let chosen =
            negotiate_default(&SessionDescription::parse(offer.as_bytes()).unwrap()).unwrap();
        assert_eq!((chosen.codec, chosen.payload_type), (Codec::Pcmu, 0));
        assert_eq!(chosen.telephone_event, None);
        let offer = "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 8\n";
        let chosen =
            negotiate_default(&SessionDescription::parse(offer.as_bytes()).unwrap()).unwrap();
        assert_eq!((chosen.codec, chosen.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn an_offer_of_only_g729_is_488_and_says_what_was_offered() {
        let offer = "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 18 101\na=rtpmap:18 G729/8000\na=rtpmap:101 telephone-event/8000\n";
        let err =
            negotiate_default(&SessionDescription::parse(offer.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                accepted: "PCMA, PCMU, G722, opus".into(),
                offered: "18 G729/8000, 101 telephone-event/8000".into()
            }
        );
        assert_eq!(err.status_code(), 488);
    }

    #[test]
    fn a_codec_left_out_of_the_configuration_is_not_answered() {
        let offer = OFFER
            .replace("8 0 101", "8 101")
            .replace("a=rtpmap:0 PCMU/8000\r\n", "");
        let parsed = SessionDescription::parse(offer.as_bytes()).unwrap();
        let err = negotiate(&parsed, &pcmu_only(), &SrtpPolicy::off()).unwrap_err();
        assert!(
            matches!(&err, SdpError::NoCommonCodec { accepted, .. } if accepted == "PCMU"),
            "{err}"
        );
        assert_eq!(err.status_code(), 488);
    }

    #[test]
    fn dynamic_pt_claiming_pcmu_is_accepted_and_pt0_remapped_is_not() {
        let offer = "v=0\nc=IN IP4 1.2.3.4\nm=audio 4000 RTP/AVP 0 96\na=rtpmap:0 AMR/8000\na=rtpmap:96 PCMU/8000\n";
        let chosen =
            negotiate_default(&SessionDescription::parse(offer.as_bytes()).unwrap()).unwrap();
        assert_eq!((chosen.codec, chosen.payload_type), (Codec::Pcmu, 96));
    }

    #[test]
    fn video_is_rejected_in_place_and_audio_direction_answered() {
        let offer = "v=0\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000\nm=audio 4000 RTP/AVP 0\na=sendonly\n";
        let offer = SessionDescription::parse(offer.as_bytes()).unwrap();
        let chosen = negotiate_default(&offer).unwrap();
        assert_eq!(chosen.index, 1);
        assert_eq!(chosen.direction, Direction::RecvOnly);
        let sdp = answer(
            &offer,
            &chosen,
            "127.0.0.1:20002".parse().unwrap(),
            Origin::new(1),
        );
        let video = sdp.find("m=video 0 RTP/AVP 96").expect("video rejected");
        let audio = sdp.find("m=audio 20002").expect("audio accepted");
        assert!(video < audio, "m-lines keep the offer's order");
        assert!(sdp.contains("a=recvonly"));
    }

    #[test]
    fn malformed_bodies_are_errors_with_a_line_number() {
        assert_eq!(
            SessionDescription::parse(b"v=0\r\nthis is not sdp\r\n").unwrap_err(),
            SdpError::Malformed {
                line: 2,
                reason: "expected <type>=<value>"
            }
        );
        assert!(matches!(
            SessionDescription::parse(b"v=0\nm=audio notaport RTP/AVP 0\n"),
            Err(SdpError::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            SessionDescription::parse(b"hello"),
            Err(SdpError::Malformed { .. })
        ));
        assert_eq!(
            SessionDescription::parse(&[0xff, 0xfe]).unwrap_err(),
            SdpError::NotUtf8
        );
        assert_eq!(
            SessionDescription::parse(b"").unwrap_err().status_code(),
            400
        );
        let huge = vec![b'a'; MAX_SDP_LEN + 1];
        assert_eq!(
            SessionDescription::parse(&huge).unwrap_err(),
            SdpError::TooLarge(MAX_SDP_LEN + 1)
        );
    }

    #[test]
    fn our_offer_is_accepted_by_our_own_negotiation() {
        let choice = CodecChoice::default();
        let offer_sdp = offer(
            "127.0.0.1:20004".parse().unwrap(),
            Origin::new(9),
            &choice,
            &SrtpPolicy::off(),
        );
        assert!(
            offer_sdp.contains("m=audio 20004 RTP/AVP 8 0 9 111 101 110\r\n"),
            "{offer_sdp}"
        );
        // Opus on its dynamic type, with telephone-event at its 48 kHz.
        for line in [
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=fmtp:111 useinbandfec=1;",
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=rtpmap:110 telephone-event/48000\r\n",
        ] {
            assert!(offer_sdp.contains(line), "{line} in {offer_sdp}");
        }
        let parsed = SessionDescription::parse(offer_sdp.as_bytes()).unwrap();
        let chosen = negotiate(&parsed, &choice, &SrtpPolicy::off()).unwrap();
        assert_eq!(chosen.remote, "127.0.0.1:20004".parse().unwrap());
        assert_eq!(chosen.codec, Codec::Pcma);
        assert_eq!(chosen.telephone_event, Some(OFFERED_TELEPHONE_EVENT));
        let pcmu = offer(
            "127.0.0.1:20004".parse().unwrap(),
            Origin::new(9),
            &pcmu_only(),
            &SrtpPolicy::off(),
        );
        assert!(
            pcmu.contains("RTP/AVP 0 101\r\n") && !pcmu.contains("PCMA"),
            "{pcmu}"
        );
    }

    /// Mutated offers (bytes flipped, cut, duplicated; seeded, so every run
    /// is the same) never panic the parser or the negotiation.
    #[test]
    fn mutated_offers_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4566);
        let seed = OFFER.as_bytes();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut body = seed.to_vec();
            for _ in 0..rng.gen_range(1..8) {
                match rng.gen_range(0..4) {
                    0 => {
                        let i = rng.gen_range(0..body.len());
                        body[i] = rng.gen();
                    }
                    1 => body.truncate(rng.gen_range(0..body.len().max(1))),
                    2 => {
                        let i = rng.gen_range(0..body.len().max(1));
                        let chunk: Vec<u8> = body[i..].iter().take(16).copied().collect();
                        body.splice(i..i, chunk);
                    }
                    _ => {
                        let i = rng.gen_range(0..=body.len());
                        body.insert(
                            i,
                            *b"=:/ \r\n0123456789"
                                .get(rng.gen_range(0..18))
                                .unwrap_or(&b'x'),
                        );
                    }
                }
                if body.is_empty() {
                    body.push(b'v');
                }
            }
            if let Ok(offer) = SessionDescription::parse(&body) {
                if let Ok(chosen) = negotiate_default(&offer) {
                    let _ = answer(
                        &offer,
                        &chosen,
                        "127.0.0.1:20000".parse().unwrap(),
                        Origin::new(1),
                    );
                    accepted += 1;
                }
            }
        }
        assert!(
            accepted > 100,
            "the mutations should leave some offers valid ({accepted})"
        );
    }

    #[test]
    fn audio_without_connection_is_488() {
        let err = negotiate_default(
            &SessionDescription::parse(b"v=0\nm=audio 4000 RTP/AVP 0\n").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err, SdpError::NoConnection);
    }

    #[test]
    fn no_audio_is_488() {
        let err = negotiate_default(
            &SessionDescription::parse(b"v=0\nc=IN IP4 1.1.1.1\nm=video 4000 RTP/AVP 96\n")
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(err, SdpError::NoAudio);
        assert_eq!(err.status_code(), 488);
    }
}
