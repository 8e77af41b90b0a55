//! The audio codecs a call may use, and what the rest of the media path
//! needs to know of each: its SDP name, static payload type, clock rate,
//! frame size, silence, and how its payload turns into linear PCM and back.
//!
//! The pacer and the playout are codec-agnostic: a frame is 20 ms, its
//! timestamp step is the clock rate × 20 ms, and its payload is whatever
//! the call's codec makes of 20 ms of audio.

use crate::media::g711;

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
}

/// Every codec sav supports, in the order it prefers them.
pub const SUPPORTED: [Codec; 2] = [Codec::Pcma, Codec::Pcmu];

impl Codec {
    /// The encoding name in SDP (`a=rtpmap`), RFC 3551 §6.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
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
        }
    }

    /// The RTP clock rate (Hz): timestamps count this many per second.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
        }
    }

    /// The payload byte of silence (G.711 codes one byte per sample).
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => g711::SILENCE,
            Codec::Pcma => g711::ALAW_SILENCE,
        }
    }

    /// Decodes `payload` into `out` (8 kHz linear PCM); returns the samples
    /// written (at most `out.len()`).
    pub fn decode(self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        let pairs = out.iter_mut().zip(&payload[..n]);
        // One loop per law, so each table lookup inlines.
        match self {
            Codec::Pcmu => pairs.for_each(|(sample, &code)| *sample = g711::decode(code)),
            Codec::Pcma => pairs.for_each(|(sample, &code)| *sample = g711::alaw_decode(code)),
        }
        n
    }

    /// Encodes 8 kHz linear PCM, appending to `out`.
    pub fn encode_extend(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Codec::Pcmu => out.extend(samples.iter().map(|&s| g711::encode(s))),
            Codec::Pcma => out.extend(samples.iter().map(|&s| g711::alaw_encode(s))),
        }
    }

    /// `payload` of codec `from` rewritten in place as this codec (G.711's
    /// two laws: one lookup per byte).
    pub fn convert_from(self, from: Codec, payload: &mut [u8]) {
        match (from, self) {
            (Codec::Pcmu, Codec::Pcma) => {
                payload.iter_mut().for_each(|b| *b = g711::ulaw_to_alaw(*b))
            }
            (Codec::Pcma, Codec::Pcmu) => {
                payload.iter_mut().for_each(|b| *b = g711::alaw_to_ulaw(*b))
            }
            (Codec::Pcmu, Codec::Pcmu) | (Codec::Pcma, Codec::Pcma) => {}
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
            codec.encode_extend(&pcm, &mut encoded);
            assert_eq!(encoded.len(), pcm.len());
            let mut decoded = vec![0i16; pcm.len()];
            assert_eq!(codec.decode(&encoded, &mut decoded), pcm.len());
            let snr = snr_db(&pcm, &decoded);
            // G.711 gives about 38 dB on a loud tone (either law).
            assert!(snr > 35.0, "{codec}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn names_static_types_and_rates_are_rfc_3551s() {
        assert_eq!(Codec::from_rtpmap("pcma", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("PCMU", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
        assert_eq!(Codec::from_rtpmap("G729", 8000), None);
        assert_eq!(Codec::from_static(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_static(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_static(18), None);
        for codec in SUPPORTED {
            let mut silence = Vec::new();
            codec.encode_extend(&[0; 4], &mut silence);
            assert_eq!(silence, vec![codec.silence(); 4], "{codec}");
        }
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
    fn a_payload_converts_between_the_two_laws() {
        let pcm = tone();
        let mut ulaw = Vec::new();
        Codec::Pcmu.encode_extend(&pcm, &mut ulaw);
        let mut payload = ulaw.clone();
        Codec::Pcma.convert_from(Codec::Pcmu, &mut payload);
        let mut decoded = vec![0i16; pcm.len()];
        Codec::Pcma.decode(&payload, &mut decoded);
        assert!(snr_db(&pcm, &decoded) > 30.0);
        Codec::Pcmu.convert_from(Codec::Pcmu, &mut ulaw);
        let mut same = Vec::new();
        Codec::Pcmu.encode_extend(&pcm, &mut same);
        assert_eq!(ulaw, same, "the same law is left alone");
    }
}
