//! The speech providers sav talks to over HTTP: the LLM (OpenAI-compatible
//! streaming chat), text-to-speech (ElevenLabs streaming, or espeak-ng
//! locally) and speech-to-text (OpenAI-compatible transcriptions). Every
//! provider has a `base_url`, so self-hosted servers and the test fakes work
//! the same way; secrets come from environment variables named in the config.

pub mod llm;
pub mod sentences;
pub mod sse;
pub mod stt;
pub mod stt_stream;
pub mod tts;

use std::time::Duration;

/// Why a provider call failed. Every variant ends in a cached fallback
/// phrase for the caller; the distinction is for logs and metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    #[error("{provider}: cannot connect: {reason}")]
    Connect {
        provider: &'static str,
        reason: String,
    },
    #[error("{provider}: HTTP {status}: {body}")]
    Status {
        provider: &'static str,
        status: u16,
        body: String,
    },
    #[error("{provider}: rate limited (429), retry after {retry_after:?}")]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: no {stage} within {after:?}")]
    Timeout {
        provider: &'static str,
        stage: &'static str,
        after: Duration,
    },
    #[error("{provider}: stream broke off: {reason}")]
    Disconnected {
        provider: &'static str,
        reason: String,
    },
    #[error("{provider}: malformed response: {reason}")]
    Malformed {
        provider: &'static str,
        reason: String,
    },
    #[error("{provider}: the API key: {source}")]
    NoApiKey {
        provider: &'static str,
        source: crate::secret::SecretError,
    },
    #[error("{0}: not configured")]
    NotConfigured(&'static str),
}

impl ProviderError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Status { .. } => "status",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Disconnected { .. } => "disconnected",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::NoApiKey { .. } => "no_api_key",
            ProviderError::NotConfigured(_) => "not_configured",
        }
    }
}

/// Builds an HTTP client. reqwest's TLS uses the process-wide rustls
/// provider: install ring's (the one rsipstack uses) if none is yet, so that
/// building a client can never panic for want of one.
pub(crate) fn http_client(
    provider: &'static str,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ProviderError> {
    crate::install_crypto_provider();
    builder.build().map_err(|e| ProviderError::Connect {
        provider,
        reason: e.to_string(),
    })
}

/// Turns a non-success HTTP response into the error it means. The body is
/// read for the log only: at most 4 KB, for at most a second.
pub(crate) async fn status_error(
    provider: &'static str,
    response: reqwest::Response,
) -> ProviderError {
    let status = response.status().as_u16();
    if status == 429 {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return ProviderError::RateLimited {
            provider,
            retry_after,
        };
    }
    let body = read_error_body(response).await;
    ProviderError::Status {
        provider,
        status,
        body,
    }
}

/// The start of an error response's body, for a log line: at most 4 KB read,
/// for at most a second; anything like a secret taken out; 300 characters
/// kept.
pub(crate) async fn read_error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(4096 - body.len().min(4096))]);
            if body.len() >= 4096 {
                break;
            }
        }
    })
    .await;
    // A provider may echo what it was sent (the key): taken out before the
    // body reaches any log or error message.
    crate::redact::secrets(&String::from_utf8_lossy(&body))
        .chars()
        .take(300)
        .collect()
}

/// The API key from `api_key_env` or `api_key_file`, if one is configured
/// (none for a local server).
pub(crate) fn api_key(
    provider: &'static str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, ProviderError> {
    crate::secret::read(&format!("{provider}.api_key"), env, file)
        .map_err(|source| ProviderError::NoApiKey { provider, source })
}
