//! Text-to-speech behind one interface that streams telephone audio in the
//! call's codec (G.711 μ-law or A-law, 8 kHz): ElevenLabs' HTTP streaming
//! endpoint (asked for the call's own format when it is G.711, so nothing is
//! converted), or espeak-ng on this machine.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::media::codec::{Codec, Encoder};
use crate::media::resample::StreamResampler;
use crate::providers::{api_key, http_client, status_error, ProviderError};

const PROVIDER: &str = "tts";
/// espeak-ng is local: output that stops for this long means it hangs.
const ESPEAK_STALL: Duration = Duration::from_secs(5);
/// Chunks buffered between the synthesis task and the playout.
const CHUNK_QUEUE: usize = 64;

/// A chunk of synthesised speech in the codec asked for, or why synthesis
/// stopped.
pub type TtsChunk = Result<Vec<u8>, ProviderError>;

/// Anything that turns text into streamed telephone audio.
pub trait TextToSpeech: Send + Sync {
    /// Starts synthesising `text` in `codec`; chunks arrive on the receiver
    /// as they are made, and the channel closes at the end. Dropping the
    /// receiver cancels.
    fn synthesize(&self, text: String, codec: Codec) -> mpsc::Receiver<TtsChunk>;
    /// For logs and metrics.
    fn name(&self) -> &'static str;
}

/// `[tts]` in `sav.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsConfig {
    /// "elevenlabs" or "espeak".
    #[serde(default = "default_engine")]
    pub engine: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub voice_id: String,
    /// `eleven_flash_v2_5` (lowest latency) by default; the seed's
    /// `eleven_turbo_v2_5` works the same.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// …or a file holding it (a container secret, a systemd credential).
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// `ulaw_8000` or `alaw_8000` (G.711: each call asks for its own law,
    /// no conversion; a G.722 call asks for `pcm_16000`), or
    /// `pcm_16000`/`pcm_22050`/`pcm_24000` (resampled to the codec's rate,
    /// unless it is that already, and encoded in the call's codec).
    #[serde(default = "default_format")]
    pub output_format: String,
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
    /// espeak-ng voice and speed (engine "espeak").
    #[serde(default = "default_voice")]
    pub espeak_voice: String,
    #[serde(default = "default_speed")]
    pub espeak_speed: u32,
}

fn default_engine() -> String {
    "elevenlabs".into()
}
fn default_base_url() -> String {
    "https://api.elevenlabs.io".into()
}
fn default_model() -> String {
    "eleven_flash_v2_5".into()
}
fn default_format() -> String {
    "ulaw_8000".into()
}
fn default_first_byte_timeout() -> u64 {
    3000
}
fn default_stall_timeout() -> u64 {
    2000
}
fn default_voice() -> String {
    "fr".into()
}
fn default_speed() -> u32 {
    165
}

/// The sample rate of an ElevenLabs `output_format`, `None` for G.711.
fn pcm_rate(format: &str) -> Result<Option<u32>, String> {
    match format {
        "ulaw_8000" | "alaw_8000" => Ok(None),
        "pcm_16000" => Ok(Some(16_000)),
        "pcm_22050" => Ok(Some(22_050)),
        "pcm_24000" => Ok(Some(24_000)),
        other => Err(format!(
            "output_format {other:?}: expected ulaw_8000, alaw_8000, pcm_16000, pcm_22050 or pcm_24000"
        )),
    }
}

/// The `output_format` to ask for a call in `codec`, and its PCM rate
/// (`None`: the audio comes in the codec already): the call's own G.711 law
/// when G.711 is configured, 16 kHz PCM for a G.722 or Opus call (the
/// provider's wideband, coded as is), else the configured PCM (`pcm_rate` is `Some`).
fn request_format(configured: &str, pcm_rate: Option<u32>, codec: Codec) -> (&str, Option<u32>) {
    match (pcm_rate, codec) {
        (Some(rate), _) => (configured, Some(rate)),
        (None, Codec::Pcmu) => ("ulaw_8000", None),
        (None, Codec::Pcma) => ("alaw_8000", None),
        (None, Codec::G722 | Codec::Opus) => ("pcm_16000", Some(16_000)),
    }
}

/// Builds the configured engine.
pub fn engine(config: &TtsConfig) -> Result<Arc<dyn TextToSpeech>, ProviderError> {
    match config.engine.as_str() {
        "espeak" => Ok(Arc::new(Espeak {
            voice: config.espeak_voice.clone(),
            speed: config.espeak_speed,
        })),
        "elevenlabs" if config.voice_id.trim().is_empty() => Err(ProviderError::Malformed {
            provider: PROVIDER,
            reason: "[tts] voice_id is empty: ElevenLabs needs the voice to speak with".into(),
        }),
        "elevenlabs" => Ok(Arc::new(ElevenLabs::new(config.clone())?)),
        other => Err(ProviderError::Malformed {
            provider: PROVIDER,
            reason: format!("[tts] engine = {other:?}: expected \"elevenlabs\" or \"espeak\""),
        }),
    }
}

/// Converts raw provider bytes to the call's codec: as is (the provider
/// spoke it already), or little-endian PCM at a rate, through the resampler
/// when the codec's rate differs, then the codec's encoder (a byte split
/// across chunks is carried over).
struct Converter {
    /// `None` when the provider's bytes are the codec's already.
    pcm: Option<PcmPath>,
    odd_byte: Option<u8>,
}

struct PcmPath {
    /// `None` when the provider's rate is the codec's.
    resampler: Option<StreamResampler>,
    encoder: Encoder,
}

impl Converter {
    fn new(pcm_rate: Option<u32>, codec: Codec) -> Result<Self, String> {
        let pcm = match pcm_rate {
            Some(rate) => Some(PcmPath {
                resampler: if rate == codec.audio_rate() {
                    None
                } else {
                    Some(
                        StreamResampler::new(rate, codec.audio_rate())
                            .map_err(|e| e.to_string())?,
                    )
                },
                encoder: Encoder::new(codec),
            }),
            None => None,
        };
        Ok(Self {
            pcm,
            odd_byte: None,
        })
    }

    fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let Some(path) = self.pcm.as_mut() else {
            return Ok(bytes.to_vec());
        };
        let mut data = Vec::with_capacity(bytes.len() + 1);
        data.extend(self.odd_byte.take());
        data.extend_from_slice(bytes);
        if data.len() % 2 == 1 {
            self.odd_byte = data.pop();
        }
        let samples: Vec<i16> = data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let audio = match path.resampler.as_mut() {
            Some(resampler) => resampler.push(&samples).map_err(|e| e.to_string())?,
            None => samples,
        };
        let mut out = Vec::with_capacity(audio.len());
        path.encoder.encode_audio_extend(&audio, &mut out);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        let Some(path) = self.pcm.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if let Some(resampler) = path.resampler.as_mut() {
            let audio = resampler.finish().map_err(|e| e.to_string())?;
            path.encoder.encode_audio_extend(&audio, &mut out);
        }
        // An Opus frame begun goes out padded.
        path.encoder.finish(&mut out);
        Ok(out)
    }
}

pub struct ElevenLabs {
    http: reqwest::Client,
    config: TtsConfig,
    api_key: Option<String>,
    pcm_rate: Option<u32>,
}

#[derive(Serialize)]
struct ElevenLabsRequest<'a> {
    text: &'a str,
    model_id: &'a str,
}

impl ElevenLabs {
    pub fn new(config: TtsConfig) -> Result<Self, ProviderError> {
        let pcm_rate =
            pcm_rate(&config.output_format).map_err(|reason| ProviderError::Malformed {
                provider: PROVIDER,
                reason,
            })?;
        let api_key = api_key(
            PROVIDER,
            config.api_key_env.as_deref(),
            config.api_key_file.as_deref(),
        )?;
        let http = http_client(
            PROVIDER,
            reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(config.first_byte_timeout_ms)),
        )?;
        Ok(Self {
            http,
            config,
            api_key,
            pcm_rate,
        })
    }

    async fn run(
        http: reqwest::Client,
        config: TtsConfig,
        api_key: Option<String>,
        pcm_rate: Option<u32>,
        text: String,
        codec: Codec,
        out: mpsc::Sender<TtsChunk>,
    ) -> Result<(), ProviderError> {
        let (format, pcm_rate) = request_format(&config.output_format, pcm_rate, codec);
        let url = format!(
            "{}/v1/text-to-speech/{}/stream?output_format={}",
            config.base_url.trim_end_matches('/'),
            config.voice_id,
            format
        );
        let mut request = http.post(&url).json(&ElevenLabsRequest {
            text: &text,
            model_id: &config.model,
        });
        if let Some(key) = &api_key {
            request = request.header("xi-api-key", key);
        }
        let first_byte = Duration::from_millis(config.first_byte_timeout_ms);
        let stall = Duration::from_millis(config.stall_timeout_ms);
        let deadline = Instant::now() + first_byte;
        let mut response = tokio::time::timeout_at(deadline, request.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: PROVIDER,
                stage: "response",
                after: first_byte,
            })?
            .map_err(|e| ProviderError::Connect {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(status_error(PROVIDER, response).await);
        }
        // An error page or JSON with a 200 is not speech.
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/")
            || content_type.contains("json")
            || content_type.contains("html")
        {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                reason: format!("content-type {content_type} is not audio"),
            });
        }
        let mut converter =
            Converter::new(pcm_rate, codec).map_err(|reason| ProviderError::Malformed {
                provider: PROVIDER,
                reason,
            })?;
        let mut first = true;
        loop {
            let wait = if first {
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            } else {
                stall
            };
            let chunk = tokio::time::timeout(wait, response.chunk())
                .await
                .map_err(|_| ProviderError::Timeout {
                    provider: PROVIDER,
                    stage: if first { "first audio" } else { "next chunk" },
                    after: wait,
                })?
                .map_err(|e| ProviderError::Disconnected {
                    provider: PROVIDER,
                    reason: e.to_string(),
                })?;
            let Some(chunk) = chunk else { break };
            if first
                && matches!(chunk.first(), Some(b'{') | Some(b'<'))
                && chunk.len() > 1
                && matches!(chunk[1], b'"' | b'!' | b'h' | b'H' | b'\n' | b' ')
            {
                return Err(ProviderError::Malformed {
                    provider: PROVIDER,
                    reason: "body looks like JSON or HTML, not audio".into(),
                });
            }
            first = false;
            let audio = converter
                .push(&chunk)
                .map_err(|reason| ProviderError::Malformed {
                    provider: PROVIDER,
                    reason,
                })?;
            if !audio.is_empty() && out.send(Ok(audio)).await.is_err() {
                return Ok(()); // nobody listens any more: cancelled
            }
        }
        if first {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                reason: "empty audio".into(),
            });
        }
        let tail = converter
            .finish()
            .map_err(|reason| ProviderError::Malformed {
                provider: PROVIDER,
                reason,
            })?;
        if !tail.is_empty() {
            let _ = out.send(Ok(tail)).await;
        }
        Ok(())
    }
}

impl TextToSpeech for ElevenLabs {
    fn synthesize(&self, text: String, codec: Codec) -> mpsc::Receiver<TtsChunk> {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let (http, config, key, rate) = (
            self.http.clone(),
            self.config.clone(),
            self.api_key.clone(),
            self.pcm_rate,
        );
        tokio::spawn(async move {
            if let Err(error) = Self::run(http, config, key, rate, text, codec, tx.clone()).await {
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }

    fn name(&self) -> &'static str {
        "elevenlabs"
    }
}

/// espeak-ng on this machine: no network, robotic but instant.
pub struct Espeak {
    pub voice: String,
    pub speed: u32,
}

impl Espeak {
    async fn run(
        voice: String,
        speed: u32,
        text: String,
        codec: Codec,
        out: mpsc::Sender<TtsChunk>,
    ) -> Result<(), ProviderError> {
        let fail = |reason: String| ProviderError::Connect {
            provider: PROVIDER,
            reason,
        };
        let mut child = tokio::process::Command::new("espeak-ng")
            .args(["-v", &voice, "-s", &speed.to_string(), "--stdout", "--"])
            .arg(&text)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run espeak-ng: {e}")))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        // espeak-ng writes a 44-byte WAV header (sizes unknown), then 16-bit PCM.
        let mut header = [0u8; 44];
        let stalled = || ProviderError::Timeout {
            provider: PROVIDER,
            stage: "espeak-ng output",
            after: ESPEAK_STALL,
        };
        tokio::time::timeout(ESPEAK_STALL, stdout.read_exact(&mut header))
            .await
            .map_err(|_| stalled())?
            .map_err(|e| fail(format!("espeak-ng output: {e}")))?;
        if &header[0..4] != b"RIFF" || &header[8..12] != b"WAVE" {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                reason: "espeak-ng did not write a WAV".into(),
            });
        }
        let rate = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
        let mut converter =
            Converter::new(Some(rate), codec).map_err(|reason| ProviderError::Malformed {
                provider: PROVIDER,
                reason,
            })?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout(ESPEAK_STALL, stdout.read(&mut buf))
                .await
                .map_err(|_| stalled())?
                .map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            let audio = converter
                .push(&buf[..n])
                .map_err(|reason| ProviderError::Malformed {
                    provider: PROVIDER,
                    reason,
                })?;
            if !audio.is_empty() && out.send(Ok(audio)).await.is_err() {
                return Ok(());
            }
        }
        let tail = converter
            .finish()
            .map_err(|reason| ProviderError::Malformed {
                provider: PROVIDER,
                reason,
            })?;
        if !tail.is_empty() {
            let _ = out.send(Ok(tail)).await;
        }
        let _ = child.wait().await;
        Ok(())
    }
}

impl TextToSpeech for Espeak {
    fn synthesize(&self, text: String, codec: Codec) -> mpsc::Receiver<TtsChunk> {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let (voice, speed) = (self.voice.clone(), self.speed);
        tokio::spawn(async move {
            if let Err(error) = Self::run(voice, speed, text, codec, tx.clone()).await {
                let _ = tx.send(Err(error)).await;
            }
        });
        rx
    }

    fn name(&self) -> &'static str {
        "espeak"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;

    #[test]
    fn pcm_is_converted_in_the_calls_codec_with_bytes_split_anywhere() {
        let samples: Vec<i16> = (0..16_000)
            .map(|i| ((i as f32 * 0.05).sin() * 9000.0) as i16)
            .collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut outputs = Vec::new();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut c = Converter::new(Some(16_000), codec).unwrap();
            let mut out = Vec::new();
            for piece in bytes.chunks(333) {
                out.extend(c.push(piece).unwrap());
            }
            out.extend(c.finish().unwrap());
            assert_eq!(out.len(), 8000, "one second at 8 kHz");
            assert!(out.iter().any(|&b| b != codec.silence_frame()[0]));
            outputs.push(out);
        }
        // The same sound in either law, within a quantisation step.
        for (&u, &a) in outputs[0].iter().zip(&outputs[1]) {
            let (u, a) = (i32::from(g711::decode(u)), i32::from(g711::alaw_decode(a)));
            assert!((u - a).abs() <= u.abs() / 16 + 16, "μ-law {u} vs A-law {a}");
        }
    }

    #[test]
    fn g711_passes_through_in_the_calls_own_law_and_formats_are_checked() {
        let mut c = Converter::new(None, Codec::Pcma).unwrap();
        assert_eq!(c.push(&[1, 2, 3]).unwrap(), vec![1, 2, 3]);
        assert_eq!(pcm_rate("ulaw_8000"), Ok(None));
        assert_eq!(pcm_rate("alaw_8000"), Ok(None));
        assert_eq!(pcm_rate("pcm_22050"), Ok(Some(22_050)));
        assert!(pcm_rate("mp3_44100_128").is_err());
        assert_eq!(
            request_format("ulaw_8000", None, Codec::Pcma),
            ("alaw_8000", None)
        );
        assert_eq!(
            request_format("alaw_8000", None, Codec::Pcmu),
            ("ulaw_8000", None)
        );
        assert_eq!(
            request_format("ulaw_8000", None, Codec::G722),
            ("pcm_16000", Some(16_000))
        );
        let pcm = Some(22_050);
        assert_eq!(
            request_format("pcm_22050", pcm, Codec::Pcma),
            ("pcm_22050", pcm)
        );
    }

    #[test]
    fn a_g722_call_codes_the_providers_16_khz_as_is_and_resamples_other_rates() {
        // 1 s of a 5 kHz tone: only a wideband path carries it.
        let tone = |rate: u32| -> Vec<u8> {
            (0..rate)
                .map(|i| {
                    let t = i as f64 / f64::from(rate);
                    ((2.0 * std::f64::consts::PI * 5000.0 * t).sin() * 8000.0) as i16
                })
                .flat_map(|s| s.to_le_bytes())
                .collect()
        };
        for rate in [16_000u32, 24_000] {
            let mut c = Converter::new(Some(rate), Codec::G722).unwrap();
            let mut out = Vec::new();
            for piece in tone(rate).chunks(777) {
                out.extend(c.push(piece).unwrap());
            }
            out.extend(c.finish().unwrap());
            assert_eq!(out.len(), 8000, "{rate} Hz: one second is 8000 octets");
            // Decoded at 16 kHz, the 5 kHz tone is there (4–7 kHz is the
            // upper sub-band: narrowband coding would have lost it).
            let mut pcm = vec![0i16; 16_000];
            crate::media::g722::G722Decoder::new().decode(&out, &mut pcm);
            let rms = (pcm[1600..]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum::<f64>()
                / 14_400.0)
                .sqrt();
            assert!(
                rms > 2000.0,
                "{rate} Hz: 5 kHz tone rms {rms:.0} after G.722"
            );
        }
    }
}
