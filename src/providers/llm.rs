//! OpenAI-compatible chat completions with SSE streaming (Groq, OpenAI,
//! vLLM, Ollama, llama.cpp server): the reply comes as text deltas, as soon
//! as the model writes them; token usage is counted for cost metrics.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::providers::sse::SseDecoder;
use crate::providers::{api_key, http_client, status_error, ProviderError};

const PROVIDER: &str = "llm";

/// `[llm]` in `sav.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// e.g. `https://api.groq.com/openai/v1` (the path `/chat/completions` is added).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Environment variable holding the API key (none for local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// …or a file holding it (a container secret, a systemd credential).
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the first token.
    #[serde(default = "default_first_token_timeout")]
    pub first_token_timeout_ms: u64,
    /// Time allowed between two chunks once streaming (a stall).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api.groq.com/openai/v1".into()
}
fn default_model() -> String {
    "llama-3.3-70b-versatile".into()
}
fn default_temperature() -> f32 {
    0.7
}
fn default_max_tokens() -> u32 {
    200
}
fn default_connect_timeout() -> u64 {
    3000
}
fn default_first_token_timeout() -> u64 {
    5000
}
fn default_stall_timeout() -> u64 {
    3000
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system",
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user",
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant",
            content: content.into(),
        }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// Tokens used by one request, as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Decodes the chunks of a chat stream (sans-IO): bytes in, text out.
#[derive(Default)]
pub struct ChatStreamDecoder {
    sse: SseDecoder,
    done: bool,
    pub usage: Option<Usage>,
}

impl ChatStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the text they carry. After `[DONE]`, `is_done`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<String, ProviderError> {
        let malformed = |reason: String| ProviderError::Malformed {
            provider: PROVIDER,
            reason,
        };
        let mut text = String::new();
        for data in self.sse.feed(bytes).map_err(|e| malformed(e.to_string()))? {
            if data.trim() == "[DONE]" {
                self.done = true;
                continue;
            }
            let chunk: ChatChunk = serde_json::from_str(&data).map_err(|e| {
                malformed(format!(
                    "{e} in {:?}",
                    crate::redact::secrets(&truncate(&data))
                ))
            })?;
            if let Some(usage) = chunk.usage {
                self.usage = Some(usage);
            }
            for choice in chunk.choices {
                if let Some(content) = choice.delta.content {
                    text.push_str(&content);
                }
            }
        }
        Ok(text)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    api_key: Option<String>,
}

/// A reply being streamed.
pub struct LlmStream {
    response: reqwest::Response,
    decoder: ChatStreamDecoder,
    stall: Duration,
    /// The first text must come by then (time to first token).
    first_deadline: Instant,
    /// When the last text came.
    last_text: Instant,
    /// When the request was sent, and when its first text came.
    pub started: Instant,
    pub first_token: Option<Instant>,
}

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<Self, ProviderError> {
        let api_key = api_key(
            PROVIDER,
            config.api_key_env.as_deref(),
            config.api_key_file.as_deref(),
        )?;
        let http = http_client(
            PROVIDER,
            reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(config.connect_timeout_ms)),
        )?;
        Ok(Self {
            http,
            config,
            api_key,
        })
    }

    /// Sends the conversation; the reply streams from the returned handle.
    pub async fn stream(&self, messages: &[ChatMessage]) -> Result<LlmStream, ProviderError> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let body = ChatRequest {
            model: &self.config.model,
            messages,
            temperature: self.config.temperature,
            max_tokens: self.config.max_tokens,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
        };
        let mut request = self.http.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let started = Instant::now();
        let first_token_timeout = Duration::from_millis(self.config.first_token_timeout_ms);
        let response = tokio::time::timeout(first_token_timeout, request.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: PROVIDER,
                stage: "response",
                after: first_token_timeout,
            })?
            .map_err(|e| ProviderError::Connect {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(status_error(PROVIDER, response).await);
        }
        Ok(LlmStream {
            response,
            decoder: ChatStreamDecoder::new(),
            stall: Duration::from_millis(self.config.stall_timeout_ms),
            first_deadline: started + first_token_timeout,
            last_text: started,
            started,
            first_token: None,
        })
    }
}

impl LlmStream {
    /// The next piece of text; `None` at the end of the reply.
    ///
    /// Deadlines are for text, not bytes: until the first text, the
    /// time-to-first-token budget (servers send headers at once and think
    /// afterwards); then the stall timeout since the last text, so keep-alive
    /// comments and empty deltas cannot keep a stalled stream alive.
    pub async fn next_text(&mut self) -> Result<Option<String>, ProviderError> {
        let (deadline, stage, budget) = match self.first_token {
            None => (
                self.first_deadline,
                "first token",
                self.first_deadline.saturating_duration_since(self.started),
            ),
            Some(_) => (self.last_text + self.stall, "next text", self.stall),
        };
        loop {
            if self.decoder.is_done() {
                return Ok(None);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .map_err(|_| ProviderError::Timeout {
                    provider: PROVIDER,
                    stage,
                    after: budget,
                })?
                .map_err(|e| ProviderError::Disconnected {
                    provider: PROVIDER,
                    reason: e.to_string(),
                })?;
            let Some(chunk) = chunk else {
                // The body ended: fine after [DONE], a break-off before it.
                return if self.decoder.is_done() {
                    Ok(None)
                } else {
                    Err(ProviderError::Disconnected {
                        provider: PROVIDER,
                        reason: "stream ended before [DONE]".into(),
                    })
                };
            };
            let text = self.decoder.feed(&chunk)?;
            if !text.is_empty() {
                let now = Instant::now();
                self.first_token.get_or_insert(now);
                self.last_text = now;
                return Ok(Some(text));
            }
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.decoder.usage
    }
}

/// The whole reply as one string (for short generations such as a
/// congratulation).
pub async fn complete(
    client: &LlmClient,
    messages: &[ChatMessage],
) -> Result<String, ProviderError> {
    let mut stream = client.stream(messages).await?;
    let mut text = String::new();
    while let Some(piece) = stream.next_text().await? {
        text.push_str(&piece);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bonjour, redémarrez \"}}]}\n\n",
        "data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"la box.\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":7,\"total_tokens\":38}}\n\n",
        "data: [DONE]\n\n"
    );

    #[test]
    fn decodes_text_and_usage_across_any_chunking() {
        for size in [1, 2, 3, 7, 64, STREAM.len()] {
            let mut d = ChatStreamDecoder::new();
            let mut text = String::new();
            for piece in STREAM.as_bytes().chunks(size) {
                text.push_str(&d.feed(piece).unwrap());
            }
            assert_eq!(text, "Bonjour, redémarrez la box.", "chunks of {size}");
            assert!(d.is_done());
            assert_eq!(
                d.usage,
                Some(Usage {
                    prompt_tokens: 31,
                    completion_tokens: 7
                })
            );
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        let mut d = ChatStreamDecoder::new();
        let err = d.feed(b"data: {\"choices\": [oops\n\n").unwrap_err();
        assert_eq!(err.kind(), "malformed");
    }
}
