//! Speech-to-text: OpenAI-compatible `/audio/transcriptions` (Groq
//! whisper-large-v3-turbo by default; OpenAI, faster-whisper-server,
//! whisper.cpp server alike). The interface is a session per utterance with
//! audio pushed as it comes, so a streaming recogniser (Deepgram live, μ-law
//! 8 kHz) can replace the batch one without touching the conversation.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::providers::{api_key, http_client, status_error, ProviderError};

const PROVIDER: &str = "stt";
/// Longest utterance sent (the VAD already cuts turns at 30 s).
pub(crate) const MAX_SAMPLES: usize = 8000 * 60;

/// One utterance being recognised.
pub trait SttSession: Send {
    /// Caller audio, 8 kHz PCM, as it arrives.
    fn push(&mut self, pcm: &[i16]);
    /// The transcript so far, each time it changes (streaming recognisers;
    /// taken once).
    fn partials(&mut self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        None
    }
    /// The utterance is over: its transcript.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<String, ProviderError>>;
}

pub trait SpeechToText: Send + Sync {
    fn session(&self) -> Box<dyn SttSession>;
    /// Sessions take the audio as it is spoken: open one when the caller
    /// starts.
    fn streaming(&self) -> bool {
        false
    }
}

/// `[stt]` in `sav.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// …or a file holding it (a container secret, a systemd credential).
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// A streaming recogniser (`[stt.streaming]`); the batch one above
    /// stays the fallback.
    #[serde(default)]
    pub streaming: Option<crate::providers::stt_stream::StreamingConfig>,
}

fn default_base_url() -> String {
    "https://api.groq.com/openai/v1".into()
}
fn default_model() -> String {
    "whisper-large-v3-turbo".into()
}
fn default_language() -> String {
    "fr".into()
}
fn default_timeout() -> u64 {
    5000
}

#[derive(Clone)]
pub struct OpenAiTranscriber {
    http: reqwest::Client,
    config: SttConfig,
    api_key: Option<String>,
}

impl OpenAiTranscriber {
    pub fn new(config: SttConfig) -> Result<Self, ProviderError> {
        let api_key = api_key(
            PROVIDER,
            config.api_key_env.as_deref(),
            config.api_key_file.as_deref(),
        )?;
        let http = http_client(
            PROVIDER,
            reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)),
        )?;
        Ok(Self {
            http,
            config,
            api_key,
        })
    }

    pub(crate) async fn transcribe(self, pcm: Vec<i16>) -> Result<String, ProviderError> {
        let url = format!(
            "{}/audio/transcriptions",
            self.config.base_url.trim_end_matches('/')
        );
        let part = reqwest::multipart::Part::bytes(crate::media::wav::mono_bytes(&pcm))
            .file_name("utterance.wav")
            .mime_str("audio/wav")
            .map_err(|e| ProviderError::Malformed {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.config.model.clone())
            .text("language", self.config.language.clone())
            .text("response_format", "json");
        let mut request = self.http.post(&url).multipart(form);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ProviderError::Timeout {
                    provider: PROVIDER,
                    stage: "transcript",
                    after: Duration::from_millis(self.config.timeout_ms),
                }
            } else {
                ProviderError::Connect {
                    provider: PROVIDER,
                    reason: e.to_string(),
                }
            }
        })?;
        if !response.status().is_success() {
            return Err(status_error(PROVIDER, response).await);
        }
        #[derive(Deserialize)]
        struct Transcript {
            text: String,
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Disconnected {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        let transcript: Transcript =
            serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        Ok(transcript.text.trim().to_string())
    }
}

struct BatchSession {
    transcriber: OpenAiTranscriber,
    audio: Vec<i16>,
}

impl SttSession for BatchSession {
    fn push(&mut self, pcm: &[i16]) {
        let room = MAX_SAMPLES.saturating_sub(self.audio.len());
        self.audio.extend_from_slice(&pcm[..pcm.len().min(room)]);
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<String, ProviderError>> {
        let BatchSession { transcriber, audio } = *self;
        Box::pin(transcriber.transcribe(audio))
    }
}

impl SpeechToText for OpenAiTranscriber {
    fn session(&self) -> Box<dyn SttSession> {
        Box::new(BatchSession {
            transcriber: self.clone(),
            audio: Vec::with_capacity(8000 * 10),
        })
    }
}
