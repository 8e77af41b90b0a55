//! `[media]` (RTP ports, timeout, codecs) and `[listen]` (voice activity,
//! end of turn).

use serde::Deserialize;

use crate::media::codec::{Codec, CodecChoice, CodecOrder, SUPPORTED};
use crate::media::srtp::SrtpMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    #[serde(default = "default_rtp_timeout")]
    pub rtp_timeout_secs: u64,
    /// Codecs a call may use, in our order of preference.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Codec>,
    /// Whose order picks among them: the caller's offer, or ours.
    #[serde(default)]
    pub codec_order: CodecOrder,
    /// Whether calls encrypt their media (SDES SRTP, RFC 4568).
    #[serde(default)]
    pub srtp: SrtpMode,
    /// SDES keys may travel in SIP that is not encrypted (UDP, TCP): off,
    /// anyone who sees the signalling can decrypt the media.
    #[serde(default)]
    pub srtp_without_tls: bool,
    /// The media clock's thread asks for real-time scheduling (SCHED_FIFO),
    /// so busy workers, other processes and the kernel's time slices do
    /// not delay a frame; needs CAP_SYS_NICE or an RLIMIT_RTPRIO (systemd
    /// `LimitRTPRIO=`), else it runs at normal priority and says so.
    #[serde(default)]
    pub realtime_clock: bool,
}

fn default_codecs() -> Vec<Codec> {
    SUPPORTED.to_vec()
}

/// Why `[media]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaConfigError {
    #[error("[media] codecs is empty: no call could be answered")]
    NoCodec,
    #[error("[media] codecs lists {0} twice")]
    Repeated(Codec),
}

impl MediaConfig {
    /// The codec choice of every call.
    pub fn codec_choice(&self) -> Result<CodecChoice, MediaConfigError> {
        if self.codecs.is_empty() {
            return Err(MediaConfigError::NoCodec);
        }
        for (n, codec) in self.codecs.iter().enumerate() {
            if self.codecs[..n].contains(codec) {
                return Err(MediaConfigError::Repeated(*codec));
            }
        }
        Ok(CodecChoice {
            allowed: self.codecs.clone(),
            order: self.codec_order,
        })
    }
}

fn default_rtp_timeout() -> u64 {
    30
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// earshot score from which a frame is voice.
    #[serde(default = "default_vad_threshold")]
    pub vad_threshold: f32,
    /// Voice that counts as speech (shorter: clicks, coughs, line echo).
    #[serde(default = "default_min_speech")]
    pub min_speech_ms: u64,
    /// Silence that ends the caller's turn (without `end_of_turn_from_voice`).
    #[serde(default = "default_hangover")]
    pub hangover_ms: u64,
    /// The silence that ends the turn follows how the caller's voice
    /// closed: `finished_hangover_ms` after a final fall, else
    /// `unfinished_hangover_ms` (a rise, a flat close, too little voice).
    #[serde(default = "default_true")]
    pub end_of_turn_from_voice: bool,
    #[serde(default = "default_finished_hangover")]
    pub finished_hangover_ms: u64,
    #[serde(default = "default_unfinished_hangover")]
    pub unfinished_hangover_ms: u64,
    /// Longest turn sent to speech-to-text.
    #[serde(default = "default_max_utterance")]
    pub max_utterance_ms: u64,
    /// Take the bot's own voice, as the caller's line returns it, out of
    /// what is listened to (a line echo canceller).
    #[serde(default = "default_echo_cancelling")]
    pub echo_cancelling: bool,
}

fn default_echo_cancelling() -> bool {
    true
}

fn default_true() -> bool {
    true
}

fn default_finished_hangover() -> u64 {
    200
}

fn default_unfinished_hangover() -> u64 {
    1000
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            vad_threshold: default_vad_threshold(),
            min_speech_ms: default_min_speech(),
            hangover_ms: default_hangover(),
            end_of_turn_from_voice: true,
            finished_hangover_ms: default_finished_hangover(),
            unfinished_hangover_ms: default_unfinished_hangover(),
            max_utterance_ms: default_max_utterance(),
            echo_cancelling: default_echo_cancelling(),
        }
    }
}

fn default_vad_threshold() -> f32 {
    0.5
}

fn default_min_speech() -> u64 {
    120
}

fn default_hangover() -> u64 {
    500
}

fn default_max_utterance() -> u64 {
    30_000
}
