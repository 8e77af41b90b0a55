//! The audio codecs a call may use, and what the rest of the media path
//! needs to know of each: its SDP name, static payload type, clock rate,
//! silence, and how its payload turns into linear PCM and back.
//!
//! Every codec here carries 20 ms in 160 octets on an 8 kHz RTP clock
//! (G.711: one octet per 8 kHz sample; G.722: one per pair of 16 kHz
//! samples, RFC 3551 §4.5.2), so a byte offset into a clip is the same
//! instant in each, and one frame's payload is [`FRAME_BYTES`] whatever the
//! call's codec. The pacer and the playout are codec-agnostic: a frame is
//! 20 ms, its timestamp step the clock rate × 20 ms.
//!
//! G.711 is stateless (a table per byte); G.722 is adaptive, so turning
//! payloads into PCM and back goes through an [`Encoder`] or a [`Decoder`]
//! that lives as long as the stream it codes. The call's listening side
//! (voice activity, speech recognition, the recording) works on 8 kHz
//! linear PCM whatever the codec: G.722 is decoded to its lower sub-band,
//! which is exactly the 0–4 kHz signal at 8 kHz.

use crate::media::g711;
use crate::media::g722::{self, G722Decoder, G722Encoder};

/// Octets of one 20 ms frame, in every codec here.
pub const FRAME_BYTES: usize = 160;

/// A codec sav can send and receive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
pub enum Codec {
    /// G.711 μ-law (North America, Japan; our cache's own format).
    #[default]
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law (Europe: what French trunks offer first).
    #[serde(rename = "PCMA")]
    Pcma,
    /// G.722 at 64 kbit/s (HD voice on desk phones and PBX extensions).
    #[serde(rename = "G722")]
    G722,
}

/// Every codec sav supports, in the order it prefers them.
pub const SUPPORTED: [Codec; 3] = [Codec::Pcma, Codec::Pcmu, Codec::G722];

impl Codec {
    /// The encoding name in SDP (`a=rtpmap`), RFC 3551 §6.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
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
        }
    }

    /// The RTP clock rate (Hz): timestamps count this many per second. For
    /// G.722 it is 8000 although it samples at 16 kHz (RFC 3551 §4.5.2).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
        }
    }

    /// The rate (Hz) of the audio the codec carries.
    pub fn audio_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16_000,
        }
    }

    /// The payload octet sent for silence (a frame is [`FRAME_BYTES`] of it).
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => g711::SILENCE,
            Codec::Pcma => g711::ALAW_SILENCE,
            Codec::G722 => g722::SILENCE,
        }
    }

    /// Whether turning a payload into PCM depends on what came before it.
    pub fn is_stateful(self) -> bool {
        matches!(self, Codec::G722)
    }
}

/// Turns one stream's payloads, in order, into 8 kHz linear PCM (one sample
/// per octet in every codec here).
#[derive(Debug, Clone)]
pub struct Decoder {
    codec: Codec,
    g722: Option<Box<G722Decoder>>,
}

impl Decoder {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            g722: (codec == Codec::G722).then(|| Box::new(G722Decoder::new())),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Decodes `payload` into `out` (8 kHz linear PCM); returns the samples
    /// written (at most `out.len()`).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        let pairs = out.iter_mut().zip(&payload[..n]);
        // One loop per law, so each table lookup inlines.
        match (self.codec, self.g722.as_mut()) {
            (Codec::Pcmu, _) => pairs.for_each(|(sample, &code)| *sample = g711::decode(code)),
            (Codec::Pcma, _) => pairs.for_each(|(sample, &code)| *sample = g711::alaw_decode(code)),
            (Codec::G722, Some(decoder)) => {
                return decoder.decode_narrowband(&payload[..n], out);
            }
            (Codec::G722, None) => return 0,
        }
        n
    }
}

/// Turns one stream's 8 kHz linear PCM, in order, into payload octets (one
/// per sample in every codec here).
#[derive(Debug, Clone)]
pub struct Encoder {
    codec: Codec,
    g722: Option<Box<G722Encoder>>,
    /// A 16 kHz sample waiting for its pair (G.722 codes samples two by two).
    odd_sample: Option<i16>,
}

impl Encoder {
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            g722: (codec == Codec::G722).then(|| Box::new(G722Encoder::new())),
            odd_sample: None,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Encodes 8 kHz linear PCM, appending to `out`.
    pub fn encode_extend(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + samples.len(), 0);
        self.encode_into(samples, &mut out[start..]);
    }

    /// Encodes 8 kHz linear PCM into `out`; returns the octets written
    /// (`min(samples.len(), out.len())`).
    pub fn encode_into(&mut self, samples: &[i16], out: &mut [u8]) -> usize {
        let n = samples.len().min(out.len());
        let pairs = out.iter_mut().zip(&samples[..n]);
        match (self.codec, self.g722.as_mut()) {
            (Codec::Pcmu, _) => pairs.for_each(|(code, &s)| *code = g711::encode(s)),
            (Codec::Pcma, _) => pairs.for_each(|(code, &s)| *code = g711::alaw_encode(s)),
            (Codec::G722, Some(encoder)) => {
                return encoder.encode_narrowband(&samples[..n], out);
            }
            (Codec::G722, None) => return 0,
        }
        n
    }

    /// Encodes PCM at the codec's own rate ([`Codec::audio_rate`]: 16 kHz
    /// for G.722, whose upper band then carries 4–7 kHz; 8 kHz for G.711),
    /// appending to `out`. Pieces may have any length: a G.722 sample left
    /// without its pair waits for the next piece.
    pub fn encode_audio_extend(&mut self, samples: &[i16], out: &mut Vec<u8>) {
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
}

/// `payload` of codec `from` rewritten in place as codec `to` (the same
/// number of octets in every codec here). Between G.711's two laws it is one
/// lookup per octet; to or from G.722 it goes through linear PCM with coders
/// fresh from their initial state, so use it for whole pieces of audio (a
/// buffered stream when a re-offer changes the codec), not frame by frame.
pub fn transcode(from: Codec, to: Codec, payload: &mut [u8]) {
    match (from, to) {
        (a, b) if a == b => {}
        (Codec::Pcmu, Codec::Pcma) => payload.iter_mut().for_each(|b| *b = g711::ulaw_to_alaw(*b)),
        (Codec::Pcma, Codec::Pcmu) => payload.iter_mut().for_each(|b| *b = g711::alaw_to_ulaw(*b)),
        _ => {
            let mut decoder = Decoder::new(from);
            let mut encoder = Encoder::new(to);
            let mut pcm = [0i16; FRAME_BYTES];
            for chunk in payload.chunks_mut(FRAME_BYTES) {
                let n = decoder.decode(chunk, &mut pcm);
                encoder.encode_into(&pcm[..n], chunk);
            }
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

    /// One second of a 440 Hz tone at about −10 dBFS.
    fn tone() -> Vec<i16> {
        (0..8000)
            .map(|n| {
                (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8000.0).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn each_codec_round_trips_speech_level_audio_above_its_snr_bound() {
        let pcm = tone();
        for codec in SUPPORTED {
            let mut encoded = Vec::new();
            Encoder::new(codec).encode_extend(&pcm, &mut encoded);
            assert_eq!(encoded.len(), pcm.len());
            let mut decoded = vec![0i16; pcm.len()];
            assert_eq!(
                Decoder::new(codec).decode(&encoded, &mut decoded),
                pcm.len()
            );
            // ADPCM adapts in its first milliseconds: compare after 50 ms.
            let snr = snr_db(&pcm[400..], &decoded[400..]);
            // G.711 gives about 38 dB on a loud tone (either law); G.722's
            // 6-bit lower band through its 4-bit predictor, about 25.
            let bound = if codec == Codec::G722 { 20.0 } else { 35.0 };
            assert!(snr > bound, "{codec}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn names_static_types_and_rates_are_rfc_3551s() {
        assert_eq!(Codec::from_rtpmap("pcma", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("PCMU", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("G722", 8000), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("G722", 16000), None);
        assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
        assert_eq!(Codec::from_rtpmap("G729", 8000), None);
        assert_eq!(Codec::from_static(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_static(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_static(9), Some(Codec::G722));
        assert_eq!(Codec::from_static(18), None);
        assert_eq!(Codec::G722.audio_rate(), 16_000);
        for codec in [Codec::Pcma, Codec::Pcmu] {
            let mut silence = Vec::new();
            Encoder::new(codec).encode_extend(&[0; 4], &mut silence);
            assert_eq!(silence, vec![codec.silence(); 4], "{codec}");
        }
        // G.722's silence is what its encoder makes of silence from the start.
        let mut silence = Vec::new();
        Encoder::new(Codec::G722).encode_audio_extend(&[0; 8], &mut silence);
        assert_eq!(silence, vec![Codec::G722.silence(); 4]);
    }

    #[test]
    fn wideband_pieces_of_odd_lengths_code_as_one_piece() {
        let pcm: Vec<i16> = (0..3200).map(|n| ((n * 37) % 2001) as i16 - 1000).collect();
        let mut whole = Vec::new();
        Encoder::new(Codec::G722).encode_audio_extend(&pcm, &mut whole);
        let mut pieces = Vec::new();
        let mut encoder = Encoder::new(Codec::G722);
        for piece in pcm.chunks(77) {
            encoder.encode_audio_extend(piece, &mut pieces);
        }
        assert_eq!(whole.len(), 1600);
        assert_eq!(pieces, whole);
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
    fn a_payload_transcodes_between_every_pair_of_codecs() {
        let pcm = tone();
        for from in SUPPORTED {
            for to in SUPPORTED {
                let mut payload = Vec::new();
                Encoder::new(from).encode_extend(&pcm, &mut payload);
                let original = payload.clone();
                transcode(from, to, &mut payload);
                assert_eq!(payload.len(), pcm.len());
                if from == to {
                    assert_eq!(payload, original, "{from}: left alone");
                }
                let mut decoded = vec![0i16; pcm.len()];
                Decoder::new(to).decode(&payload, &mut decoded);
                let snr = snr_db(&pcm[400..], &decoded[400..]);
                let bound = if from == Codec::G722 || to == Codec::G722 {
                    18.0
                } else {
                    30.0
                };
                assert!(snr > bound, "{from} → {to}: SNR {snr:.1} dB");
            }
        }
    }
}
