//! SRTP and SRTCP (RFC 3711) with the SDES suites of RFC 4568,
//! AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32: sans-IO, in place.
//!
//! Ours on RustCrypto's AES, CTR, HMAC and SHA-1 rather than a whole SRTP
//! crate: the maintained one in Rust (webrtc-rs's) hands back a new buffer
//! for every packet, and the 20 ms path allocates nothing. A packet is
//! protected in the caller's buffer (the tag appended in place) and
//! unprotected in place. Checked against the RFC's key derivation and
//! AES-CM vectors (Appendix B).
//!
//! One [`SrtpContext`] per direction: the sender's protects, the receiver's
//! unprotects (a replay window of 64 packets per SSRC, RFC 3711 §3.3.2).

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// Master key and salt lengths of the AES_CM_128 suites (RFC 4568 §6.2.1).
pub const MASTER_KEY_LEN: usize = 16;
pub const MASTER_SALT_LEN: usize = 14;
/// The tag SRTCP always carries (80 bits, for both suites: RFC 4568 §6.2.1).
const SRTCP_TAG_LEN: usize = 10;
/// The SRTCP index and its E flag.
const SRTCP_INDEX_LEN: usize = 4;
/// What SRTP adds to an RTP packet at most (the _80 suite's tag).
pub const MAX_RTP_OVERHEAD: usize = 10;
/// What SRTCP adds to an RTCP packet.
pub const RTCP_OVERHEAD: usize = SRTCP_INDEX_LEN + SRTCP_TAG_LEN;
/// Packets remembered for replay protection.
const REPLAY_WINDOW: u64 = 64;
/// SSRCs tracked by one receiving context (a caller sends one, two across a
/// transfer): beyond this, the oldest is forgotten.
const MAX_SSRCS: usize = 4;

/// An SDES crypto suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    /// The suite of an `a=crypto` line, by its name.
    pub fn from_name(name: &str) -> Option<Suite> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(Suite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Suite::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The SRTP authentication tag's length.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// Whether calls encrypt their media (`[media] srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    /// Plain RTP only: an offer of RTP/SAVP alone gets 488, crypto lines
    /// are ignored.
    #[default]
    Off,
    /// SRTP when the caller offers it (RTP/SAVP, or RTP/AVP with crypto
    /// lines), plain RTP otherwise.
    Optional,
    /// SRTP or nothing: an offer without usable crypto gets 488, and our
    /// own offers are RTP/SAVP.
    Mandatory,
}

/// One side's SDES master key and salt and the suite they are used with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    pub suite: Suite,
    pub key: [u8; MASTER_KEY_LEN],
    pub salt: [u8; MASTER_SALT_LEN],
}

impl std::fmt::Debug for MasterKey {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new key and salt for `suite` from the operating system's
    /// generator.
    pub fn generate(suite: Suite) -> MasterKey {
        let mut material = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut material);
        let mut key = [0u8; MASTER_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        key.copy_from_slice(&material[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&material[MASTER_KEY_LEN..]);
        MasterKey { suite, key, salt }
    }

    /// The same key and salt with another suite.
    pub fn with_suite(self, suite: Suite) -> MasterKey {
        MasterKey { suite, ..self }
    }

    /// A context protecting or unprotecting with this key.
    pub fn context(&self) -> SrtpContext {
        SrtpContext::new(self.suite, &self.key, &self.salt)
    }
}

/// The keys of an encrypted call: ours protect what we send, the
/// caller's unprotect what it sends (RFC 4568 §6.1: each side sends with
/// the key of its own description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    pub ours: MasterKey,
    pub theirs: MasterKey,
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("packet too short for SRTP")]
    TooShort,
    #[error("no room in the buffer for the authentication tag")]
    NoRoom,
    #[error("authentication failed")]
    Authentication,
    #[error("replayed packet")]
    Replay,
}

/// The session keys of one direction (RFC 3711 §4.3).
struct SessionKeys {
    key: [u8; 16],
    salt: [u8; 14],
    /// HMAC-SHA1 keyed once (its key schedule is not redone per packet).
    auth: HmacSha1,
}

impl SessionKeys {
    /// Labels 0/1/2 (SRTP) or 3/4/5 (SRTCP).
    fn derive(master_key: &[u8; 16], master_salt: &[u8; 14], first_label: u8) -> Self {
        let mut key = [0u8; 16];
        let mut auth_key = [0u8; 20];
        let mut salt = [0u8; 14];
        prf(master_key, master_salt, first_label, &mut key);
        prf(master_key, master_salt, first_label + 1, &mut auth_key);
        prf(master_key, master_salt, first_label + 2, &mut salt);
        // HMAC takes a key of any length: this cannot fail.
        let auth = <HmacSha1 as Mac>::new_from_slice(&auth_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Self { key, salt, auth }
    }

    /// XORs the AES-CM keystream for `ssrc` and packet `index` into `data`
    /// (RFC 3711 §4.1.1).
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
            iv[4 + i] ^= b;
        }
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        let mut cipher = Aes128Ctr::new(&self.key.into(), &iv.into());
        cipher.apply_keystream(data);
    }

    /// HMAC-SHA1 of `parts`, in order.
    fn tag(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.auth.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The AES-CM PRF of the key derivation: `out.len()` bytes of keystream
/// under the master key, from the master salt XOR the label (r = 0: no key
/// derivation rate).
fn prf(master_key: &[u8; 16], master_salt: &[u8; 14], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    let mut cipher = Aes128Ctr::new(master_key.into(), &iv.into());
    cipher.apply_keystream(out);
}

/// Where a stream stands: its rollover counter and highest sequence number,
/// and the replay window behind it.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    ssrc: u32,
    roc: u32,
    highest: u16,
    /// Bit n: index (highest − n) was received.
    window: u64,
    started: bool,
}

impl StreamState {
    fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            roc: 0,
            highest: 0,
            window: 0,
            started: false,
        }
    }

    fn index_of(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest)
    }

    /// The rollover counter a received `seq` belongs to (RFC 3711 §3.3.1).
    fn guess_roc(&self, seq: u16) -> u32 {
        if !self.started {
            return self.roc;
        }
        let s_l = i32::from(self.highest);
        let seq = i32::from(seq);
        if s_l < 32_768 {
            if seq - s_l > 32_768 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if s_l - 32_768 > seq {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    fn is_replay(&self, index: u64) -> bool {
        if !self.started {
            return false;
        }
        let top = self.index_of();
        if index > top {
            return false;
        }
        let behind = top - index;
        behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0
    }

    fn accept(&mut self, index: u64) {
        let top = self.index_of();
        if !self.started || index > top {
            let ahead = if self.started { index - top } else { 0 };
            self.window = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.window << ahead
            };
            self.window |= 1;
            self.roc = (index >> 16) as u32;
            self.highest = index as u16;
            self.started = true;
        } else {
            self.window |= 1 << (top - index);
        }
    }
}

/// One direction's SRTP and SRTCP.
pub struct SrtpContext {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// The sender's streams (one), or the receiver's (a few).
    streams: Vec<StreamState>,
    /// The next SRTCP index we send.
    rtcp_index: u32,
    /// SRTCP replay per sender SSRC (each numbers its own reports): the
    /// highest index received and the window behind it.
    rtcp_received: Vec<(u32, u32, u64)>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The length of an RTP header (fixed part, CSRCs, extension), when the
/// packet holds one.
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (len <= packet.len()).then_some(len)
}

impl SrtpContext {
    /// A context from the master key and salt of an `a=crypto` line.
    pub fn new(
        suite: Suite,
        master_key: &[u8; MASTER_KEY_LEN],
        master_salt: &[u8; MASTER_SALT_LEN],
    ) -> Self {
        Self {
            suite,
            rtp: SessionKeys::derive(master_key, master_salt, 0),
            rtcp: SessionKeys::derive(master_key, master_salt, 3),
            streams: Vec::with_capacity(MAX_SSRCS),
            rtcp_index: 0,
            rtcp_received: Vec::with_capacity(MAX_SSRCS),
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn stream(&mut self, ssrc: u32) -> &mut StreamState {
        let at = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(at) => at,
            None => {
                if self.streams.len() == MAX_SSRCS {
                    self.streams.remove(0);
                }
                self.streams.push(StreamState::new(ssrc));
                self.streams.len() - 1
            }
        };
        &mut self.streams[at]
    }

    /// Protects the RTP packet in `buf[..len]` in place, its tag appended;
    /// the SRTP packet's length. `buf` needs room for the tag.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::TooShort)?;
        let header = rtp_header_len(packet).ok_or(SrtpError::TooShort)?;
        let tag_len = self.suite.rtp_tag_len();
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let stream = self.stream(ssrc);
        // The sender's rollover counter: a sequence number below the last
        // one (by wrapping) starts the next round.
        if stream.started && seq < stream.highest && stream.highest - seq > 32_768 {
            stream.roc = stream.roc.wrapping_add(1);
        }
        if !stream.started || seq > stream.highest || stream.highest - seq > 32_768 {
            stream.highest = seq;
        }
        stream.started = true;
        let roc = stream.roc;
        let index = (u64::from(roc) << 16) | u64::from(seq);
        self.rtp.crypt(ssrc, index, &mut buf[header..len]);
        let tag = self.rtp.tag(&[&buf[..len], &roc.to_be_bytes()]);
        buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// Unprotects the SRTP packet in `buf` in place: the RTP packet's
    /// length (authenticated first, then decrypted; a replay refused).
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = buf.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let header = rtp_header_len(&buf[..len]).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        // A stream is remembered only once a packet of it authenticates:
        // forged packets under made-up SSRCs cannot push the caller's
        // stream (its rollover counter and replay window) out.
        let state = self
            .streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .copied()
            .unwrap_or_else(|| StreamState::new(ssrc));
        let roc = state.guess_roc(seq);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        if state.is_replay(index) {
            return Err(SrtpError::Replay);
        }
        let tag = self.rtp.tag(&[&buf[..len], &roc.to_be_bytes()]);
        if !constant_time_eq(&tag[..tag_len], &buf[len..]) {
            return Err(SrtpError::Authentication);
        }
        self.rtp.crypt(ssrc, index, &mut buf[header..len]);
        self.stream(ssrc).accept(index);
        Ok(len)
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place (all but
    /// its first 8 octets encrypted), the E flag and index and the tag
    /// appended; the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len < 8 || buf.len() < len {
            return Err(SrtpError::TooShort);
        }
        if buf.len() < len + SRTCP_INDEX_LEN + SRTCP_TAG_LEN {
            return Err(SrtpError::NoRoom);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let index = self.rtcp_index;
        self.rtcp_index = (self.rtcp_index + 1) & 0x7FFF_FFFF;
        self.rtcp.crypt(ssrc, u64::from(index), &mut buf[8..len]);
        let e_index = 0x8000_0000 | index;
        buf[len..len + 4].copy_from_slice(&e_index.to_be_bytes());
        let end = len + 4;
        let tag = self.rtcp.tag(&[&buf[..end]]);
        buf[end..end + SRTCP_TAG_LEN].copy_from_slice(&tag[..SRTCP_TAG_LEN]);
        Ok(end + SRTCP_TAG_LEN)
    }

    /// Unprotects the SRTCP packet in `buf` in place: the RTCP packet's
    /// length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let end = buf
            .len()
            .checked_sub(SRTCP_TAG_LEN)
            .ok_or(SrtpError::TooShort)?;
        let len = end
            .checked_sub(SRTCP_INDEX_LEN)
            .filter(|len| *len >= 8)
            .ok_or(SrtpError::TooShort)?;
        let tag = self.rtcp.tag(&[&buf[..end]]);
        if !constant_time_eq(&tag[..SRTCP_TAG_LEN], &buf[end..]) {
            return Err(SrtpError::Authentication);
        }
        let e_index = u32::from_be_bytes([buf[len], buf[len + 1], buf[len + 2], buf[len + 3]]);
        let index = e_index & 0x7FFF_FFFF;
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let known = self.rtcp_received.iter().position(|(s, _, _)| *s == ssrc);
        if let Some(at) = known {
            let (_, highest, window) = self.rtcp_received[at];
            if index <= highest {
                let behind = u64::from(highest - index);
                if behind >= REPLAY_WINDOW || window & (1 << behind) != 0 {
                    return Err(SrtpError::Replay);
                }
            }
        }
        if e_index & 0x8000_0000 != 0 {
            self.rtcp.crypt(ssrc, u64::from(index), &mut buf[8..len]);
        }
        let next = match known.map(|at| self.rtcp_received[at]) {
            None => (ssrc, index, 1),
            Some((_, highest, window)) if index > highest => {
                let ahead = u64::from(index - highest);
                let window = if ahead >= REPLAY_WINDOW {
                    0
                } else {
                    window << ahead
                };
                (ssrc, index, window | 1)
            }
            Some((_, highest, window)) => (ssrc, highest, window | 1 << u64::from(highest - index)),
        };
        match known {
            Some(at) => self.rtcp_received[at] = next,
            None => {
                if self.rtcp_received.len() == MAX_SSRCS {
                    self.rtcp_received.remove(0);
                }
                self.rtcp_received.push(next);
            }
        }
        Ok(len)
    }
}

/// Compares two tags without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn session_keys_are_the_rfc_s() {
        let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
        let mut cipher_key = [0u8; 16];
        prf(&key, &salt, 0, &mut cipher_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut cipher_salt = [0u8; 14];
        prf(&key, &salt, 2, &mut cipher_salt);
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth_key = [0u8; 20];
        prf(&key, &salt, 1, &mut auth_key);
        assert_eq!(
            auth_key[..16].to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A15")
        );
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for SSRC 0, index 0.
    #[test]
    fn the_keystream_is_the_rfc_s() {
        let keys = SessionKeys {
            key: hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap(),
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            auth: <HmacSha1 as Mac>::new_from_slice(&[0; 20]).unwrap(),
        };
        let mut stream = [0u8; 48];
        keys.crypt(0, 0, &mut stream);
        assert_eq!(
            stream.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
    }

    fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    fn pair(suite: Suite) -> (SrtpContext, SrtpContext) {
        let key = [7u8; 16];
        let salt = [9u8; 14];
        (
            SrtpContext::new(suite, &key, &salt),
            SrtpContext::new(suite, &key, &salt),
        )
    }

    #[test]
    fn what_one_side_protects_the_other_reads_across_a_rollover_and_both_suites() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            let (mut tx, mut rx) = pair(suite);
            for n in 0..2_000u32 {
                let seq = (65_000 + n) as u16;
                let plain = packet(seq, 0xABCD);
                let mut buf = [0u8; 256];
                buf[..plain.len()].copy_from_slice(&plain);
                let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
                assert_eq!(len, plain.len() + suite.rtp_tag_len());
                assert_ne!(&buf[12..plain.len()], &plain[12..], "payload encrypted");
                assert_eq!(&buf[..12], &plain[..12], "header in the clear");
                let got = rx.unprotect_rtp(&mut buf[..len]).unwrap();
                assert_eq!(&buf[..got], &plain[..], "packet {n}");
            }
        }
    }

    #[test]
    fn a_forged_or_replayed_packet_is_refused() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let plain = packet(1, 1);
        let mut buf = [0u8; 256];
        buf[..plain.len()].copy_from_slice(&plain);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        let sent = buf[..len].to_vec();
        let mut forged = sent.clone();
        forged[20] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&mut forged),
            Err(SrtpError::Authentication)
        );
        let mut once = sent.clone();
        assert!(rx.unprotect_rtp(&mut once).is_ok());
        let mut again = sent.clone();
        assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replay));
        // Another key: nothing authenticates.
        let mut stranger = SrtpContext::new(Suite::AesCm128HmacSha1_80, &[1; 16], &[2; 14]);
        let mut other = sent;
        assert_eq!(
            stranger.unprotect_rtp(&mut other),
            Err(SrtpError::Authentication)
        );
        for short in [0usize, 3, 11, 15] {
            assert!(rx.unprotect_rtp(&mut vec![0x80; short]).is_err());
        }
    }

    #[test]
    fn forged_packets_under_other_ssrcs_do_not_push_the_callers_stream_out() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let mut buf = [0u8; 200];
        let plain = packet(10, 0xCA11);
        buf[..plain.len()].copy_from_slice(&plain);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        let captured = buf[..len].to_vec();
        assert!(rx.unprotect_rtp(&mut captured.clone()).is_ok());
        // Many more forged SSRCs than a context tracks, none with the key.
        for ssrc in 0..(4 * MAX_SSRCS as u32) {
            let mut forged = captured.clone();
            forged[8..12].copy_from_slice(&ssrc.to_be_bytes());
            assert_eq!(
                rx.unprotect_rtp(&mut forged),
                Err(SrtpError::Authentication)
            );
        }
        // The caller's stream is still remembered: its packet is a replay.
        assert_eq!(
            rx.unprotect_rtp(&mut captured.clone()),
            Err(SrtpError::Replay)
        );
    }

    #[test]
    fn late_packets_inside_the_window_are_read_once() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let mut sent = Vec::new();
        for seq in 0..100u16 {
            let plain = packet(seq, 5);
            let mut buf = [0u8; 256];
            buf[..plain.len()].copy_from_slice(&plain);
            let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            sent.push(buf[..len].to_vec());
        }
        // 0..=89 in order, then 99, then the late 90..=98.
        for p in sent[..90].iter().chain(&sent[99..]).chain(&sent[90..99]) {
            assert!(rx.unprotect_rtp(&mut p.clone()).is_ok());
        }
        // Too old for the window.
        assert_eq!(
            rx.unprotect_rtp(&mut sent[10].clone()),
            Err(SrtpError::Replay)
        );
    }

    #[test]
    fn srtcp_round_trips_and_refuses_forgeries_and_replays() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_32);
        let report: Vec<u8> = [0x80u8, 200, 0, 6, 0, 0, 0, 42]
            .into_iter()
            .chain((0..20).map(|i| i as u8))
            .collect();
        let mut buf = [0u8; 128];
        buf[..report.len()].copy_from_slice(&report);
        let len = tx.protect_rtcp(&mut buf, report.len()).unwrap();
        assert_eq!(len, report.len() + 4 + 10, "the 80-bit tag for SRTCP");
        let sent = buf[..len].to_vec();
        let mut forged = sent.clone();
        forged[9] ^= 4;
        assert_eq!(
            rx.unprotect_rtcp(&mut forged),
            Err(SrtpError::Authentication)
        );
        let mut ok = sent.clone();
        let got = rx.unprotect_rtcp(&mut ok).unwrap();
        assert_eq!(&ok[..got], &report[..]);
        assert_eq!(rx.unprotect_rtcp(&mut sent.clone()), Err(SrtpError::Replay));
        // Another sender under the same key (a new SSRC after a transfer)
        // numbers its reports from 0: they are not replays of the first's.
        let (mut other, _) = pair(Suite::AesCm128HmacSha1_32);
        for _ in 0..3 {
            let mut buf = [0u8; 128];
            buf[..report.len()].copy_from_slice(&report);
            buf[7] = 43;
            let len = other.protect_rtcp(&mut buf, report.len()).unwrap();
            assert!(rx.unprotect_rtcp(&mut buf[..len]).is_ok());
        }
    }
}
