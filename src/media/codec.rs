//! The audio codecs a call may use, and what the rest of the media path
//! needs to know of each: its SDP name, payload type, clock rate, silence,
//! and how its payload turns into linear PCM and back.
//!
//! A frame is 20 ms in every codec. G.711 and G.722 carry it in
//! [`FRAME_BYTES`] octets on an 8 kHz RTP clock (G.711: one octet per 8 kHz
//! sample; G.722: one per pair of 16 kHz samples, RFC 3551 §4.5.2); Opus
//! in a packet whose size varies, on a 48 kHz clock (RFC 7587). The pacer
//! and the playout are codec-agnostic: a frame is 20 ms, its timestamp step
//! the clock rate × 20 ms ([`Codec::timestamp_step`]).
//!
//! **Encoded audio** (a clip, a stream's buffer) is a byte string of frames
//! in order: the fixed-size codecs' frames back to back (so any octet
//! offset is an instant), Opus packets each behind its length (two octets,
//! big-endian). [`Codec::first_frame`] reads one frame off the front,
//! [`Codec::frames`] walks them.
//!
//! G.711 is stateless (a table per byte); G.722 and Opus are not, so turning
//! payloads into PCM and back goes through an [`Encoder`] or a [`Decoder`]
//! that lives as long as the stream it codes. The call's listening side
//! (voice activity, speech recognition, the recording) works on 8 kHz
//! linear PCM whatever the codec: G.722 is decoded to its lower sub-band,
//! which is exactly the 0–4 kHz signal at 8 kHz, and libopus decodes to
//! 8 kHz itself. Opus is libopus (the `opus` crate), mono, in-band FEC on,
//! DTX off (a packet every 20 ms, so the clock never stalls).

use std::sync::OnceLock;

use crate::media::g711;
use crate::media::g722::{self, G722Decoder, G722Encoder};

/// Octets of one 20 ms frame of G.711 and G.722, and samples of one 20 ms
/// frame at 8 kHz (the listening side's rate).
pub const FRAME_BYTES: usize = 160;
/// The largest payload of one frame sav makes: an Opus packet is held
/// below this (G.711 and G.722 frames are [`FRAME_BYTES`]).
pub const MAX_FRAME_PAYLOAD: usize = 400;
/// Octets in front of each Opus packet in encoded audio: its length.
const LENGTH_PREFIX: usize = 2;

/// Opus bit rate (bit/s): wideband speech with room for its FEC.
pub const OPUS_BITRATE: i32 = 32_000;
/// The loss the Opus encoder plans its in-band FEC for (percent): above 0,
/// each packet carries a coarse copy of the one before it.
pub const OPUS_EXPECTED_LOSS_PERCENT: i32 = 10;
/// The payload type sav offers Opus on (no static one exists; 111 is what
/// most endpoints pick).
pub const OPUS_OFFER_PAYLOAD_TYPE: u8 = 111;

/// A codec sav can send and receive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
pub enum Codec {
    /// G.711 μ-law (North America, Japan).
    #[default]
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law (Europe: what French trunks offer first).
    #[serde(rename = "PCMA")]
    Pcma,
    /// G.722 at 64 kbit/s (HD voice on desk phones and PBX extensions).
    #[serde(rename = "G722")]
    G722,
    /// Opus (RFC 6716, RFC 7587: WebRTC gateways and modern PBXs).
    #[serde(rename = "opus", alias = "OPUS", alias = "Opus")]
    Opus,
}

/// Every codec sav supports, in the order it prefers them.
pub const SUPPORTED: [Codec; 4] = [Codec::Pcma, Codec::Pcmu, Codec::G722, Codec::Opus];

impl Codec {
    /// The encoding name in SDP (`a=rtpmap`), RFC 3551 §6 and RFC 7587 §7.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// The codec of an `a=rtpmap` encoding name and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        SUPPORTED
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name) && c.clock_rate() == clock_rate)
    }

    /// The codec of a static payload type (RFC 3551 table 4), when an offer
    /// lists it without `a=rtpmap`.
    pub fn from_static(payload_type: u8) -> Option<Codec> {
        SUPPORTED
            .into_iter()
            .find(|c| c.static_payload_type() == Some(payload_type))
    }

    /// The static payload type of RFC 3551, if it has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// The payload type sav offers the codec on: its static one, or ours.
    pub fn offer_payload_type(self) -> u8 {
        self.static_payload_type()
            .unwrap_or(OPUS_OFFER_PAYLOAD_TYPE)
    }

    /// The `a=rtpmap` encoding after the payload type: `PCMA/8000`, and
    /// `opus/48000/2` (RFC 7587 §7: always two channels in SDP, even for
    /// a mono stream).
    pub fn rtpmap(self) -> String {
        match self {
            Codec::Opus => format!("{}/{}/2", self.name(), self.clock_rate()),
            _ => format!("{}/{}", self.name(), self.clock_rate()),
        }
    }

    /// The `a=fmtp` parameters sav states for the codec, if any: for Opus,
    /// that it wants in-band FEC, mono, and plays back up to 16 kHz.
    pub fn fmtp(self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some("useinbandfec=1;stereo=0;sprop-stereo=0;maxplaybackrate=16000"),
            _ => None,
        }
    }

    /// The RTP clock rate (Hz): timestamps count this many per second. For
    /// G.722 it is 8000 although it samples at 16 kHz (RFC 3551 §4.5.2);
    /// for Opus 48000 whatever its audio (RFC 7587 §4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => 48_000,
        }
    }

    /// How far the RTP timestamp moves per 20 ms frame.
    pub fn timestamp_step(self) -> u32 {
        self.clock_rate() / 50
    }

    /// The rate (Hz) of the audio sav codes in it: 8 kHz for G.711, 16 kHz
    /// for G.722 and for Opus (the phrase cache is 16 kHz).
    pub fn audio_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 | Codec::Opus => 16_000,
        }
    }

    /// The payload of one frame of silence.
    pub fn silence_frame(self) -> &'static [u8] {
        static PCMU: [u8; FRAME_BYTES] = [g711::SILENCE; FRAME_BYTES];
        static PCMA: [u8; FRAME_BYTES] = [g711::ALAW_SILENCE; FRAME_BYTES];
        static G722: [u8; FRAME_BYTES] = [g722::SILENCE; FRAME_BYTES];
        static OPUS: OnceLock<Vec<u8>> = OnceLock::new();
        match self {
            Codec::Pcmu => &PCMU,
            Codec::Pcma => &PCMA,
            Codec::G722 => &G722,
            Codec::Opus => OPUS.get_or_init(opus_silence),
        }
    }

    /// Whether turning a payload into PCM depends on what came before it.
    pub fn is_stateful(self) -> bool {
        matches!(self, Codec::G722 | Codec::Opus)
    }

    /// Whether its frames vary in size (so encoded audio carries each
    /// one's length).
    pub fn is_packetized(self) -> bool {
        matches!(self, Codec::Opus)
    }

    /// The first frame of encoded `audio` and the octets it takes there;
    /// `None` when there is no whole frame. A fixed-size codec's last frame
    /// may be short.
    pub fn first_frame(self, audio: &[u8]) -> Option<(&[u8], usize)> {
        if audio.is_empty() {
            return None;
        }
        if self.is_packetized() {
            let len = usize::from(u16::from_be_bytes([audio[0], *audio.get(1)?]));
            let packet = audio.get(LENGTH_PREFIX..LENGTH_PREFIX + len)?;
            Some((packet, LENGTH_PREFIX + len))
        } else {
            let n = audio.len().min(FRAME_BYTES);
            Some((&audio[..n], n))
        }
    }

    /// The frames of encoded `audio`, in order (a torn Opus packet at the
    /// end is left out).
    pub fn frames(self, audio: &[u8]) -> impl Iterator<Item = &[u8]> {
        let mut rest = audio;
        std::iter::from_fn(move || {
            let (frame, taken) = self.first_frame(rest)?;
            rest = &rest[taken..];
            Some(frame)
        })
    }

    /// Whole frames in encoded `audio`; `None` when it ends inside an Opus
    /// packet (it was not made here).
    pub fn count_frames(self, audio: &[u8]) -> Option<usize> {
        if !self.is_packetized() {
            return Some(audio.len().div_ceil(FRAME_BYTES));
        }
        let mut rest = audio;
        let mut frames = 0;
        while !rest.is_empty() {
            let (_, taken) = self.first_frame(rest)?;
            rest = &rest[taken..];
            frames += 1;
        }
        Some(frames)
    }
}

/// Appends one frame's `payload` to encoded audio of `codec`.
pub fn push_frame(codec: Codec, payload: &[u8], out: &mut Vec<u8>) {
    if codec.is_packetized() {
        let len = payload.len().min(usize::from(u16::MAX)) as u16;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload[..usize::from(len)]);
    } else {
        out.extend_from_slice(payload);
    }
}

/// A libopus encoder set up as sav sends: VoIP, mono, [`OPUS_BITRATE`],
/// in-band FEC for [`OPUS_EXPECTED_LOSS_PERCENT`], no DTX.
fn opus_encoder(rate: u32) -> Option<opus::Encoder> {
    let mut encoder =
        opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).ok()?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE))
        .ok()?;
    encoder.set_inband_fec(true).ok()?;
    encoder
        .set_packet_loss_perc(OPUS_EXPECTED_LOSS_PERCENT)
        .ok()?;
    encoder.set_dtx(false).ok()?;
    Some(encoder)
}

/// The packet sav sends for 20 ms of silence in Opus: what its encoder
/// makes of digital silence once settled.
fn opus_silence() -> Vec<u8> {
    let mut packet = Vec::new();
    if let Some(mut encoder) = opus_encoder(16_000) {
        let zeros = [0i16; 2 * FRAME_BYTES];
        let mut out = [0u8; MAX_FRAME_PAYLOAD];
        for _ in 0..5 {
            if let Ok(n) = encoder.encode(&zeros, &mut out) {
                packet = out[..n].to_vec();
            }
        }
    }
    packet
}

/// Audio made up for a lost packet by the codec itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concealment {
    /// Rebuilt from the redundancy the next packet carries (Opus in-band
    /// FEC): the caller's audio, coarser.
    Recovered(usize),
    /// Extrapolated from what came before (packet-loss concealment).
    Concealed(usize),
}

/// Whether an Opus packet carries in-band FEC (a coarse copy of the packet
/// before it: the SILK encoder adds one to most voiced frames).
fn carries_fec(packet: &[u8]) -> bool {
    let Ok(len) = i32::try_from(packet.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    // SAFETY: libopus reads `len` octets from the pointer, which are the
    // slice's; it keeps neither.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), len) == 1 }
}

/// Turns one stream's payloads, in order, into 8 kHz linear PCM.
pub struct Decoder {
    codec: Codec,
    g722: Option<Box<G722Decoder>>,
    opus: Option<opus::Decoder>,
    /// Payloads the codec refused (a corrupt Opus packet).
    errors: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("codec", &self.codec)
            .field("errors", &self.errors)
            .finish()
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            g722: (codec == Codec::G722).then(|| Box::new(G722Decoder::new())),
            opus: (codec == Codec::Opus)
                .then(|| opus::Decoder::new(8000, opus::Channels::Mono).ok())
                .flatten(),
            errors: 0,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Payloads refused so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Decodes one frame's `payload` into `out` (8 kHz linear PCM); returns
    /// the samples written (at most `out.len()`; 0 for a payload the codec
    /// refuses, counted).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        let pairs = out.iter_mut().zip(&payload[..n]);
        // One loop per law, so each table lookup inlines.
        match self.codec {
            Codec::Pcmu => pairs.for_each(|(sample, &code)| *sample = g711::decode(code)),
            Codec::Pcma => pairs.for_each(|(sample, &code)| *sample = g711::alaw_decode(code)),
            Codec::G722 => {
                return match self.g722.as_mut() {
                    Some(decoder) => decoder.decode_narrowband(&payload[..n], out),
                    None => 0,
                };
            }
            Codec::Opus => {
                if payload.is_empty() {
                    return 0;
                }
                let decoded = self
                    .opus
                    .as_mut()
                    .and_then(|d| d.decode(payload, out, false).ok());
                return decoded.unwrap_or_else(|| {
                    self.errors += 1;
                    0
                });
            }
        }
        n
    }

    /// Audio for a lost frame of `out.len()` samples made by the codec
    /// itself: from `next`'s in-band FEC when the packet after the lost one
    /// is at hand, else by packet-loss concealment. `None` for a codec with
    /// neither (G.711, G.722: the caller repeats and fades).
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Option<Concealment> {
        let decoder = self.opus.as_mut()?;
        if let Some(next) = next.filter(|p| carries_fec(p)) {
            if let Ok(n) = decoder.decode(next, out, true) {
                return Some(Concealment::Recovered(n));
            }
        }
        decoder
            .decode(&[], out, false)
            .ok()
            .map(Concealment::Concealed)
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("codec", &self.codec)
            .finish()
    }
}

/// Turns one stream's linear PCM, in order, into encoded audio (see the
/// module doc).
pub struct Encoder {
    codec: Codec,
    g722: Option<Box<G722Encoder>>,
    /// A 16 kHz sample waiting for its pair (G.722 codes samples two by two).
    odd_sample: Option<i16>,
    opus: Option<OpusEncoder>,
}

/// A libopus encoder at the rate of the PCM it is given, and what waits
/// for a whole frame.
struct OpusEncoder {
    rate: u32,
    encoder: Option<opus::Encoder>,
    pending: Vec<i16>,
    /// Frames the encoder refused (never seen: the input is ours).
    errors: u64,
}

impl OpusEncoder {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            encoder: opus_encoder(rate),
            pending: Vec::with_capacity(rate as usize / 50),
            errors: 0,
        }
    }

    fn frame_samples(&self) -> usize {
        self.rate as usize / 50
    }

    /// One whole frame into `out`; returns its octets.
    fn encode_frame(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let limit = out.len().min(MAX_FRAME_PAYLOAD);
        match self
            .encoder
            .as_mut()
            .map(|e| e.encode(pcm, &mut out[..limit]))
        {
            Some(Ok(n)) => n,
            _ => {
                self.errors += 1;
                0
            }
        }
    }

    fn extend(&mut self, mut samples: &[i16], out: &mut Vec<u8>) {
        let frame = self.frame_samples();
        let mut packet = [0u8; MAX_FRAME_PAYLOAD];
        if !self.pending.is_empty() {
            let take = (frame - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() < frame {
                return;
            }
            let pcm = std::mem::take(&mut self.pending);
            let n = self.encode_frame(&pcm, &mut packet);
            push_frame(Codec::Opus, &packet[..n], out);
            self.pending = pcm;
            self.pending.clear();
        }
        let mut chunks = samples.chunks_exact(frame);
        for pcm in &mut chunks {
            let n = self.encode_frame(pcm, &mut packet);
            push_frame(Codec::Opus, &packet[..n], out);
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending.is_empty() {
            return;
        }
        let missing = self.frame_samples() - self.pending.len();
        self.extend(&vec![0; missing], out);
    }
}

impl Encoder {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            g722: (codec == Codec::G722).then(|| Box::new(G722Encoder::new())),
            odd_sample: None,
            opus: None,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The Opus encoder for PCM at `rate` (made, or made again, for it).
    fn opus_at(&mut self, rate: u32) -> &mut OpusEncoder {
        let opus = self.opus.get_or_insert_with(|| OpusEncoder::new(rate));
        if opus.rate != rate {
            *opus = OpusEncoder::new(rate);
        }
        opus
    }

    /// Encodes 8 kHz linear PCM, appending to `out`. Pieces may have any
    /// length: an Opus frame waits until it is whole ([`Self::finish`]).
    pub fn encode_extend(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        if self.codec == Codec::Opus {
            return self.opus_at(8000).extend(samples, out);
        }
        let start = out.len();
        out.resize(start + samples.len(), 0);
        let n = self.encode_fixed(samples, &mut out[start..]);
        out.truncate(start + n);
    }

    /// G.711 or narrowband G.722: one octet per 8 kHz sample.
    fn encode_fixed(&mut self, samples: &[i16], out: &mut [u8]) -> usize {
        let n = samples.len().min(out.len());
        let pairs = out.iter_mut().zip(&samples[..n]);
        match self.codec {
            Codec::Pcmu => pairs.for_each(|(code, &s)| *code = g711::encode(s)),
            Codec::Pcma => pairs.for_each(|(code, &s)| *code = g711::alaw_encode(s)),
            Codec::G722 => {
                return match self.g722.as_mut() {
                    Some(encoder) => encoder.encode_narrowband(&samples[..n], out),
                    None => 0,
                };
            }
            Codec::Opus => return 0,
        }
        n
    }

    /// Encodes one 20 ms frame of 8 kHz PCM ([`FRAME_BYTES`] samples) into
    /// `out` as one frame's payload (no length in front); returns its
    /// octets.
    pub fn encode_frame(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        if self.codec == Codec::Opus {
            let opus = self.opus_at(8000);
            if pcm.len() != opus.frame_samples() {
                return 0;
            }
            return opus.encode_frame(pcm, out);
        }
        self.encode_fixed(pcm, out)
    }

    /// Encodes PCM at the codec's own rate ([`Codec::audio_rate`]: 16 kHz
    /// for G.722, whose upper band then carries 4–7 kHz, and for Opus;
    /// 8 kHz for G.711), appending to `out`. Pieces may have any length: a
    /// G.722 sample left without its pair, or a part of an Opus frame, waits
    /// for the next piece.
    pub fn encode_audio_extend(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        if self.codec == Codec::Opus {
            let rate = self.codec.audio_rate();
            return self.opus_at(rate).extend(samples, out);
        }
        let Some(encoder) = self.g722.as_mut() else {
            return self.encode_extend(samples, out);
        };
        let mut samples = samples;
        if let (Some(first), Some(&second)) = (self.odd_sample, samples.first()) {
            self.odd_sample = None;
            let mut octet = [0u8; 1];
            encoder.encode(&[first, second], &mut octet);
            out.push(octet[0]);
            samples = &samples[1..];
        }
        let pairs = samples.len() / 2;
        let start = out.len();
        out.resize(start + pairs, 0);
        encoder.encode(&samples[..2 * pairs], &mut out[start..]);
        if samples.len() % 2 == 1 {
            self.odd_sample = samples.last().copied();
        }
    }

    /// The end of the audio: a part of an Opus frame still waiting goes
    /// out padded with silence (a lone G.722 sample is dropped).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.odd_sample = None;
        if let Some(opus) = self.opus.as_mut() {
            opus.finish(out);
        }
    }
}

/// Encoded audio of codec `from` as codec `to`. Between G.711's two laws it
/// is one lookup per octet; otherwise it goes through 8 kHz linear PCM
/// with coders fresh from their initial state, so use it for whole pieces
/// of audio (a buffered stream when a re-offer changes the codec), not
/// frame by frame.
pub fn transcode(from: Codec, to: Codec, audio: &[u8]) -> Vec<u8> {
    match (from, to) {
        (a, b) if a == b => audio.to_vec(),
        (Codec::Pcmu, Codec::Pcma) => audio.iter().map(|&b| g711::ulaw_to_alaw(b)).collect(),
        (Codec::Pcma, Codec::Pcmu) => audio.iter().map(|&b| g711::alaw_to_ulaw(b)).collect(),
        _ => {
            let mut decoder = Decoder::new(from);
            let mut encoder = Encoder::new(to);
            let mut out = Vec::with_capacity(audio.len());
            let mut pcm = [0i16; 6 * FRAME_BYTES];
            for frame in from.frames(audio) {
                let n = decoder.decode(frame, &mut pcm);
                encoder.encode_extend(&pcm[..n], &mut out);
            }
            encoder.finish(&mut out);
            out
        }
    }
}

/// Whose order picks the codec when an offer lists several sav accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecOrder {
    /// The caller's (RFC 3264 §6.1: the offer lists them by preference).
    #[default]
    Offer,
    /// Ours (`[media] codecs`): a trunk that offers PCMU first is still
    /// answered in PCMA when both are listed.
    Ours,
}

/// Which codecs a call may use and how one is picked from an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecChoice {
    /// Accepted codecs, in our order of preference (never empty).
    pub allowed: Vec<Codec>,
    pub order: CodecOrder,
}

impl Default for CodecChoice {
    fn default() -> Self {
        Self {
            allowed: SUPPORTED.to_vec(),
            order: CodecOrder::Offer,
        }
    }
}

impl CodecChoice {
    /// The offered `(payload type, codec)` to answer with, from the offer's
    /// formats in its order; `None` when no codec is accepted.
    pub fn pick(&self, offered: &[(u8, Codec)]) -> Option<(u8, Codec)> {
        match self.order {
            CodecOrder::Offer => offered
                .iter()
                .copied()
                .find(|(_, codec)| self.allowed.contains(codec)),
            CodecOrder::Ours => self
                .allowed
                .iter()
                .find_map(|wanted| offered.iter().copied().find(|(_, codec)| codec == wanted)),
        }
    }

    /// The accepted codecs by name, for messages ("PCMA, PCMU").
    pub fn names(&self) -> String {
        self.allowed
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::str::FromStr for Codec {
    type Err = String;

    /// A codec by its SDP name, in any case (`PCMA`, `pcmu`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        SUPPORTED
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = SUPPORTED.iter().map(|c| c.name()).collect();
                format!(
                    "unknown codec {name:?}: expected one of {}",
                    known.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signal-to-noise ratio (dB) of `decoded` against `reference`.
    fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(decoded)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1.0)).log10()
    }

    /// The best SNR of `decoded` delayed by up to `max_lag` samples (Opus
    /// delays what it codes by a few milliseconds).
    fn delayed_snr_db(reference: &[i16], decoded: &[i16], max_lag: usize) -> f64 {
        (0..=max_lag)
            .map(|lag| snr_db(reference, &decoded[lag.min(decoded.len())..]))
            .fold(f64::MIN, f64::max)
    }

    /// One second of a 440 Hz tone at about −10 dBFS.
    fn tone() -> Vec<i16> {
        (0..8000)
            .map(|n| {
                (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8000.0).sin()) as i16
            })
            .collect()
    }

    /// `seconds` of a voiced sound at `rate`: harmonics of a pitch gliding
    /// around 140 Hz, the way a vowel sounds to a speech coder.
    fn voiced(rate: u32, seconds: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        let mut phase = 0.0f64;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                let pitch = 140.0 + 25.0 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                phase += 2.0 * std::f64::consts::PI * pitch / f64::from(rate);
                let v: f64 = (1..=12)
                    .map(|h| (phase * f64::from(h)).sin() / f64::from(h))
                    .sum();
                (3000.0 * v) as i16
            })
            .collect()
    }

    /// Every frame of encoded `audio` decoded in order.
    fn decode_all(codec: Codec, audio: &[u8]) -> Vec<i16> {
        let mut decoder = Decoder::new(codec);
        let mut out = Vec::new();
        let mut pcm = [0i16; 6 * FRAME_BYTES];
        for frame in codec.frames(audio) {
            let n = decoder.decode(frame, &mut pcm);
            out.extend_from_slice(&pcm[..n]);
        }
        assert_eq!(decoder.errors(), 0, "{codec}: every frame decodes");
        out
    }

    fn encode_all(codec: Codec, pcm: &[i16]) -> Vec<u8> {
        let mut encoder = Encoder::new(codec);
        let mut encoded = Vec::new();
        encoder.encode_extend(pcm, &mut encoded);
        encoder.finish(&mut encoded);
        encoded
    }

    #[test]
    fn each_codec_round_trips_speech_level_audio_above_its_snr_bound() {
        let pcm = tone();
        for codec in SUPPORTED {
            let encoded = encode_all(codec, &pcm);
            assert_eq!(codec.count_frames(&encoded), Some(50), "{codec}: 1 s");
            if !codec.is_packetized() {
                assert_eq!(encoded.len(), pcm.len());
            }
            let decoded = decode_all(codec, &encoded);
            assert_eq!(decoded.len(), pcm.len(), "{codec}");
            // The coders adapt in their first milliseconds: compare after
            // 50 ms. G.711 gives about 38 dB on a loud tone (either law);
            // G.722's 6-bit lower band through its 4-bit predictor, about
            // 25; Opus, a perceptual coder at 32 kbit/s, keeps the
            // waveform too on a steady tone (~25 dB), 6.5 ms late.
            let snr = delayed_snr_db(&pcm[400..7000], &decoded[400..], 80);
            let bound = match codec {
                Codec::G722 => 20.0,
                Codec::Opus => 15.0,
                _ => 35.0,
            };
            assert!(snr > bound, "{codec}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn names_types_rates_and_silence_are_the_rfcs() {
        assert_eq!(Codec::from_rtpmap("pcma", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("PCMU", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("G722", 8000), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("opus", 48_000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("OPUS", 48_000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("opus", 16_000), None);
        assert_eq!(Codec::from_rtpmap("G722", 16000), None);
        assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
        assert_eq!(Codec::from_rtpmap("G729", 8000), None);
        assert_eq!(Codec::from_static(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_static(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_static(9), Some(Codec::G722));
        assert_eq!(Codec::from_static(18), None);
        assert_eq!(Codec::from_static(111), None);
        assert_eq!(Codec::Opus.offer_payload_type(), 111);
        assert_eq!(Codec::Opus.rtpmap(), "opus/48000/2");
        assert_eq!(Codec::Pcma.rtpmap(), "PCMA/8000");
        let steps: Vec<u32> = SUPPORTED.iter().map(|c| c.timestamp_step()).collect();
        assert_eq!(steps, [160, 160, 160, 960]);
        assert_eq!(Codec::G722.audio_rate(), 16_000);
        assert_eq!("OPUS".parse::<Codec>(), Ok(Codec::Opus));
        for codec in [Codec::Pcma, Codec::Pcmu] {
            let mut silence = Vec::new();
            Encoder::new(codec).encode_extend(&[0; FRAME_BYTES], &mut silence);
            assert_eq!(silence, codec.silence_frame(), "{codec}");
        }
        // G.722's silence is what its encoder makes of silence from the
        // start (its predictor then wanders a little around it).
        let mut silence = Vec::new();
        Encoder::new(Codec::G722).encode_audio_extend(&[0; 64], &mut silence);
        assert_eq!(silence, Codec::G722.silence_frame()[..32]);
        // Opus's is a packet a few octets long that decodes to silence,
        // after speech too.
        let packet = Codec::Opus.silence_frame();
        assert!((1..20).contains(&packet.len()), "{} octets", packet.len());
        let mut decoder = Decoder::new(Codec::Opus);
        let mut pcm = [0i16; FRAME_BYTES];
        for frame in Codec::Opus.frames(&encode_all(Codec::Opus, &tone())) {
            decoder.decode(frame, &mut pcm);
        }
        for _ in 0..10 {
            assert_eq!(decoder.decode(packet, &mut pcm), FRAME_BYTES);
        }
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max();
        assert!(peak < Some(30), "settled to silence: peak {peak:?}");
    }

    #[test]
    fn wideband_pieces_of_odd_lengths_code_as_one_piece() {
        let pcm: Vec<i16> = (0..3200).map(|n| ((n * 37) % 2001) as i16 - 1000).collect();
        for codec in [Codec::G722, Codec::Opus] {
            let mut whole = Vec::new();
            let mut encoder = Encoder::new(codec);
            encoder.encode_audio_extend(&pcm, &mut whole);
            encoder.finish(&mut whole);
            let mut pieces = Vec::new();
            let mut encoder = Encoder::new(codec);
            for piece in pcm.chunks(77) {
                encoder.encode_audio_extend(piece, &mut pieces);
            }
            encoder.finish(&mut pieces);
            assert_eq!(codec.count_frames(&whole), Some(10), "{codec}: 200 ms");
            assert_eq!(pieces, whole, "{codec}");
        }
        // An Opus frame begun is finished with silence: 210 ms are 11 frames.
        let mut encoder = Encoder::new(Codec::Opus);
        let mut out = Vec::new();
        encoder.encode_audio_extend(&pcm[..3360.min(pcm.len())], &mut out);
        encoder.encode_audio_extend(&[0; 160], &mut out);
        assert_eq!(Codec::Opus.count_frames(&out), Some(10));
        encoder.finish(&mut out);
        assert_eq!(Codec::Opus.count_frames(&out), Some(11));
    }

    #[test]
    fn opus_frames_carry_their_length_and_a_torn_one_is_seen() {
        let mut audio = Vec::new();
        push_frame(Codec::Opus, &[1, 2, 3], &mut audio);
        push_frame(Codec::Opus, &[], &mut audio);
        push_frame(Codec::Opus, &[9; 300], &mut audio);
        assert_eq!(audio.len(), 2 + 3 + 2 + 2 + 300);
        let frames: Vec<usize> = Codec::Opus.frames(&audio).map(<[u8]>::len).collect();
        assert_eq!(frames, [3, 0, 300]);
        assert_eq!(Codec::Opus.count_frames(&audio), Some(3));
        assert_eq!(Codec::Opus.count_frames(&audio[..audio.len() - 1]), None);
        assert_eq!(Codec::Opus.count_frames(&audio[..1]), None);
        assert_eq!(Codec::Opus.first_frame(&audio[..4]), None);
        // Fixed-size codecs: 160 octets a frame, a short one at the end.
        assert_eq!(Codec::Pcma.count_frames(&[0; 330]), Some(3));
        let last: Vec<usize> = Codec::Pcma.frames(&[0; 330]).map(<[u8]>::len).collect();
        assert_eq!(last, [160, 160, 10]);
    }

    #[test]
    fn a_lost_opus_packet_comes_back_from_the_next_ones_fec_better_than_concealed() {
        let speech = voiced(16_000, 1.0);
        let mut encoder = Encoder::new(Codec::Opus);
        let mut encoded = Vec::new();
        encoder.encode_audio_extend(&speech, &mut encoded);
        let frames: Vec<&[u8]> = Codec::Opus.frames(&encoded).collect();
        assert_eq!(frames.len(), 50);
        // What a loss-free decoder makes of each frame.
        let clean = decode_all(Codec::Opus, &encoded);
        // Lose each packet in turn: rebuilt from the next one's FEC when it
        // carries some, concealed otherwise (and always, for comparison).
        let (mut fec_db, mut plc_db, mut recovered) = (0.0, 0.0, 0);
        let lost_ones = 5..45;
        for lost in lost_ones.clone() {
            let reference = &clean[lost * FRAME_BYTES..(lost + 1) * FRAME_BYTES];
            let up_to_loss = || {
                let mut decoder = Decoder::new(Codec::Opus);
                let mut pcm = [0i16; FRAME_BYTES];
                for frame in &frames[..lost] {
                    decoder.decode(frame, &mut pcm);
                }
                decoder
            };
            let mut with_fec = up_to_loss();
            let mut out = [0i16; FRAME_BYTES];
            match with_fec.conceal(Some(frames[lost + 1]), &mut out) {
                Some(Concealment::Recovered(FRAME_BYTES)) => {
                    recovered += 1;
                    fec_db += snr_db(reference, &out);
                    let mut without = up_to_loss();
                    assert_eq!(
                        without.conceal(None, &mut out),
                        Some(Concealment::Concealed(FRAME_BYTES))
                    );
                    plc_db += snr_db(reference, &out);
                }
                Some(Concealment::Concealed(FRAME_BYTES)) => {
                    assert!(!carries_fec(frames[lost + 1]), "packet {}", lost + 1)
                }
                other => panic!("packet {lost}: {other:?}"),
            }
        }
        assert!(
            recovered * 2 > lost_ones.len(),
            "{recovered} of {} rebuilt from FEC",
            lost_ones.len()
        );
        let (fec, plc) = (fec_db / recovered as f64, plc_db / recovered as f64);
        eprintln!(
            "{recovered} of {} lost packets rebuilt from FEC: {fec:.1} dB (concealed: {plc:.1} dB)",
            lost_ones.len()
        );
        assert!(
            fec > 3.0 && fec > plc + 3.0,
            "FEC {fec:.1} dB, PLC {plc:.1} dB"
        );
        // Neither G.711 nor G.722 conceals by itself.
        for codec in [Codec::Pcma, Codec::G722] {
            assert_eq!(Decoder::new(codec).conceal(None, &mut [0; 160]), None);
        }
        // A corrupt packet is refused and counted, not a panic.
        let mut decoder = Decoder::new(Codec::Opus);
        let mut pcm = [0i16; FRAME_BYTES];
        assert_eq!(decoder.decode(&[0xFF, 0xFF, 0xFF], &mut pcm), 0);
        assert_eq!(decoder.errors(), 1);
    }

    #[test]
    fn the_offer_order_wins_unless_ours_is_asked_for() {
        let offered = [(0, Codec::Pcmu), (8, Codec::Pcma)];
        let caller_first = CodecChoice::default();
        assert_eq!(caller_first.pick(&offered), Some((0, Codec::Pcmu)));
        let ours_first = CodecChoice {
            order: CodecOrder::Ours,
            ..CodecChoice::default()
        };
        assert_eq!(ours_first.pick(&offered), Some((8, Codec::Pcma)));
        let only_pcmu = CodecChoice {
            allowed: vec![Codec::Pcmu],
            order: CodecOrder::Offer,
        };
        assert_eq!(only_pcmu.pick(&[(8, Codec::Pcma)]), None);
        assert_eq!(only_pcmu.pick(&offered[1..]), None);
        assert_eq!(caller_first.pick(&[]), None);
    }

    #[test]
    fn audio_transcodes_between_every_pair_of_codecs() {
        let pcm = tone();
        for from in SUPPORTED {
            for to in SUPPORTED {
                let original = encode_all(from, &pcm);
                let audio = transcode(from, to, &original);
                assert_eq!(to.count_frames(&audio), Some(50), "{from} → {to}");
                if from == to {
                    assert_eq!(audio, original, "{from}: left alone");
                }
                let decoded = decode_all(to, &audio);
                let snr = delayed_snr_db(&pcm[400..7000], &decoded[400..], 160);
                let bound = if from == Codec::Opus || to == Codec::Opus {
                    12.0
                } else if from == Codec::G722 || to == Codec::G722 {
                    18.0
                } else {
                    30.0
                };
                assert!(snr > bound, "{from} → {to}: SNR {snr:.1} dB");
            }
        }
    }
}
