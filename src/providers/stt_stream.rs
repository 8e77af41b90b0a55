//! Streaming speech-to-text over a WebSocket, Deepgram's live interface
//! (`/v1/listen`): the caller's audio goes out as binary messages while
//! they speak (linear PCM, 8 kHz), interim and final results come back as
//! JSON (`{"type": "Results", "is_final": …, "channel": {"alternatives":
//! [{"transcript": …}]}}`); at the end of the turn `{"type": "Finalize"}`
//! flushes what the recogniser holds (its result says `from_finalize`),
//! then `{"type": "CloseStream"}`.
//!
//! A session opens its connection when the caller starts speaking, so the
//! handshake overlaps their words and the transcript is ready a moment
//! after they stop. It keeps a copy of the audio: when the stream fails
//! (no connection, an error, a drop, audio it could not take in time) the
//! batch recogniser of `[stt]` transcribes that copy instead.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn, Instrument};

use crate::providers::stt::{OpenAiTranscriber, SpeechToText, SttSession, MAX_SAMPLES};
use crate::providers::{api_key, ProviderError};

const PROVIDER: &str = "stt";
/// Audio chunks queued for the socket (~100 ms each: 6 s). Beyond that
/// the stream is behind; the session falls back to the batch recogniser.
const AUDIO_QUEUE: usize = 64;
/// Partial transcripts queued for the call; older ones are not waited for.
const PARTIAL_QUEUE: usize = 16;
/// Largest message taken from the recogniser.
const MAX_MESSAGE: usize = 64 * 1024;
/// Longest a session lives, whatever happens.
const MAX_SESSION: Duration = Duration::from_secs(120);

/// `[stt.streaming]` in `sav.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// The live endpoint, `ws://` or `wss://`.
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// …or a file holding it (a container secret, a systemd credential).
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Connection and handshake, at most.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// From the end of the caller's turn to the final result, at most.
    #[serde(default = "default_final_timeout")]
    pub final_timeout_ms: u64,
}

fn default_url() -> String {
    "wss://api.deepgram.com/v1/listen".into()
}
fn default_model() -> String {
    "nova-3".into()
}
fn default_connect_timeout() -> u64 {
    2000
}
fn default_final_timeout() -> u64 {
    1500
}

/// A streaming recogniser, with the batch one to fall back on.
pub struct StreamingTranscriber {
    config: StreamingConfig,
    language: String,
    api_key: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    batch: OpenAiTranscriber,
}

impl StreamingTranscriber {
    pub fn new(
        config: StreamingConfig,
        language: String,
        batch: OpenAiTranscriber,
    ) -> Result<Self, ProviderError> {
        let api_key = api_key(
            PROVIDER,
            config.api_key_env.as_deref(),
            config.api_key_file.as_deref(),
        )?;
        let target = Target::parse(&config.url).map_err(|reason| ProviderError::Malformed {
            provider: PROVIDER,
            reason: format!("stt.streaming.url {:?}: {reason}", config.url),
        })?;
        debug!(host = %target.host, port = target.port, tls = target.tls, "streaming STT");
        crate::install_crypto_provider();
        let tls = tls_config()?;
        Ok(Self {
            config,
            language,
            api_key,
            tls,
            batch,
        })
    }

    /// The request line's URL: the endpoint with the stream's parameters.
    fn url(&self) -> String {
        let sep = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}model={}&language={}&encoding=linear16&sample_rate=8000&channels=1\
             &interim_results=true&punctuate=true",
            self.config.url, self.config.model, self.language
        )
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, ProviderError> {
    use rustls_platform_verifier::ConfigVerifierExt;
    rustls::ClientConfig::with_platform_verifier()
        .map(Arc::new)
        .map_err(|e| ProviderError::Connect {
            provider: PROVIDER,
            reason: format!("TLS roots: {e}"),
        })
}

impl SpeechToText for StreamingTranscriber {
    fn session(&self) -> Box<dyn SttSession> {
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let (partial_tx, partial_rx) = mpsc::channel(PARTIAL_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let stream = Stream {
            url: self.url(),
            api_key: self.api_key.clone(),
            tls: self.tls.clone(),
            connect_timeout: Duration::from_millis(self.config.connect_timeout_ms),
            final_timeout: Duration::from_millis(self.config.final_timeout_ms),
        };
        let final_timeout = stream.final_timeout;
        let task = tokio::spawn(
            async move {
                // Past this, `done` is dropped and the turn goes to the batch.
                let _ =
                    tokio::time::timeout(MAX_SESSION, stream.run(audio_rx, partial_tx, done_tx))
                        .await;
            }
            .in_current_span(),
        );
        Box::new(StreamSession {
            audio_tx: Some(audio_tx),
            partials: Some(partial_rx),
            done: Some(done_rx),
            audio: Vec::new(),
            behind: false,
            final_timeout,
            batch: self.batch.clone(),
            task: Some(task),
        })
    }

    fn streaming(&self) -> bool {
        true
    }
}

/// One turn's stream.
struct StreamSession {
    /// To the socket's task; dropped at the end of the turn.
    audio_tx: Option<mpsc::Sender<Vec<i16>>>,
    partials: Option<mpsc::Receiver<String>>,
    done: Option<oneshot::Receiver<Result<String, ProviderError>>>,
    /// The turn's audio, for the batch recogniser if the stream fails.
    audio: Vec<i16>,
    /// A chunk could not be queued: the stream misses audio.
    behind: bool,
    /// From the end of the turn to the final transcript, at most.
    final_timeout: Duration,
    batch: OpenAiTranscriber,
    /// The socket's task: aborted with a session dropped before its end
    /// (the caller's words were not wanted), left to finish by `finish`.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl SttSession for StreamSession {
    fn push(&mut self, pcm: &[i16]) {
        let room = MAX_SAMPLES.saturating_sub(self.audio.len());
        let pcm = &pcm[..pcm.len().min(room)];
        if pcm.is_empty() {
            return;
        }
        self.audio.extend_from_slice(pcm);
        if let Some(tx) = &self.audio_tx {
            if tx.try_send(pcm.to_vec()).is_err() {
                // Full (the socket is slow) or gone (the stream failed):
                // the batch recogniser will have the whole turn.
                self.behind = true;
                self.audio_tx = None;
            }
        }
    }

    fn partials(&mut self) -> Option<mpsc::Receiver<String>> {
        self.partials.take()
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<String, ProviderError>> {
        // The end of the turn: the socket's task finalises.
        self.audio_tx = None;
        let behind = self.behind;
        let final_timeout = self.final_timeout;
        let audio = std::mem::take(&mut self.audio);
        let batch = self.batch.clone();
        let done = self.done.take();
        // The task outlives the session: it finalises the stream.
        let _task = self.task.take();
        drop(self);
        Box::pin(async move {
            let streamed = if behind {
                Err(ProviderError::Disconnected {
                    provider: PROVIDER,
                    reason: "the stream fell behind the caller's audio".into(),
                })
            } else {
                let ended = || ProviderError::Disconnected {
                    provider: PROVIDER,
                    reason: "the stream's task ended".into(),
                };
                match done {
                    Some(done) => match tokio::time::timeout(final_timeout, done).await {
                        Ok(result) => result.unwrap_or_else(|_| Err(ended())),
                        Err(_) => Err(ProviderError::Timeout {
                            provider: PROVIDER,
                            stage: "final transcript",
                            after: final_timeout,
                        }),
                    },
                    None => Err(ended()),
                }
            };
            match streamed {
                Ok(text) => Ok(text),
                Err(error) => {
                    warn!(%error, "streaming STT failed: the turn goes to the batch recogniser");
                    batch.transcribe(audio).await
                }
            }
        })
    }
}

/// The socket's side of one session.
struct Stream {
    url: String,
    api_key: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    final_timeout: Duration,
}

/// What the recogniser sends.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    is_final: bool,
    #[serde(default)]
    from_finalize: bool,
    /// `Results`: `{"alternatives": [{"transcript": …}]}`; other
    /// messages carry other things here (`SpeechStarted`: `[0]`).
    #[serde(default)]
    channel: serde_json::Value,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Stream {
    /// Connects, streams the turn, and answers `done` with its transcript
    /// as soon as it is known (the socket is closed after).
    async fn run(
        self,
        audio: mpsc::Receiver<Vec<i16>>,
        partials: mpsc::Sender<String>,
        done: oneshot::Sender<Result<String, ProviderError>>,
    ) {
        let connected = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .unwrap_or(Err(ProviderError::Timeout {
                provider: PROVIDER,
                stage: "connect",
                after: self.connect_timeout,
            }));
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(error) => {
                let _ = done.send(Err(error));
                return;
            }
        };
        let result = self.listen(&mut ws, audio, partials).await;
        let _ = done.send(result);
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }

    /// The turn's audio out, its results in, until the final one.
    async fn listen(
        &self,
        ws: &mut tokio_tungstenite::WebSocketStream<Box<dyn Io>>,
        mut audio: mpsc::Receiver<Vec<i16>>,
        partials: mpsc::Sender<String>,
    ) -> Result<String, ProviderError> {
        let mut finals: Vec<String> = Vec::new();
        let mut interim = String::new();
        let mut last_partial = String::new();
        let mut finalising = false;
        let mut bytes = Vec::with_capacity(1600);
        loop {
            tokio::select! {
                chunk = audio.recv(), if !finalising => match chunk {
                    Some(pcm) => {
                        bytes.clear();
                        bytes.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
                        ws.send(Message::binary(bytes.clone())).await.map_err(lost)?;
                    }
                    None => {
                        // The turn is over: flush what the recogniser holds
                        // (a `from_finalize` result when it held something),
                        // then close (remaining finals, Metadata, close).
                        ws.send(Message::text(r#"{"type":"Finalize"}"#)).await.map_err(lost)?;
                        ws.send(Message::text(r#"{"type":"CloseStream"}"#)).await.map_err(lost)?;
                        finalising = true;
                    }
                },
                message = ws.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(Some(frame))))
                            if finalising
                                && frame.code
                                    == tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal =>
                        {
                            break
                        }
                        Some(Ok(Message::Close(frame))) => {
                            return Err(ProviderError::Disconnected {
                                provider: PROVIDER,
                                reason: format!("closed by the recogniser: {frame:?}"),
                            })
                        }
                        None => {
                            return Err(ProviderError::Disconnected {
                                provider: PROVIDER,
                                reason: "the connection ended".into(),
                            })
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(lost(e)),
                    };
                    // A message sav does not know is skipped, not fatal.
                    let Ok(event) = serde_json::from_str::<Event>(text.as_str()) else {
                        debug!("a message of the recogniser skipped");
                        continue;
                    };
                    match event.kind.as_str() {
                        "Results" => {}
                        "Error" => {
                            return Err(ProviderError::Malformed {
                                provider: PROVIDER,
                                reason: crate::text::cut(&crate::redact::secrets(text.as_str()), 300).to_string(),
                            })
                        }
                        // Sent as a closing stream ends: every result is in.
                        "Metadata" if finalising => break,
                        _ => continue,
                    }
                    let transcript = event.channel["alternatives"][0]["transcript"]
                        .as_str()
                        .unwrap_or_default()
                        .trim();
                    let transcript = crate::text::cut(transcript, 4000);
                    if event.is_final {
                        if !transcript.is_empty() && finals.len() < 256 {
                            finals.push(transcript.to_string());
                        }
                        interim.clear();
                    } else {
                        interim = transcript.to_string();
                    }
                    if event.from_finalize {
                        break;
                    }
                    let partial = join(&finals, &interim);
                    if !partial.is_empty() && partial != last_partial {
                        // The call reads the latest; a full queue skips one.
                        let _ = partials.try_send(partial.clone());
                        last_partial = partial;
                    }
                }
            }
        }
        Ok(join(&finals, ""))
    }

    async fn connect(
        &self,
    ) -> Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>, ProviderError> {
        let target = Target::parse(&self.url).map_err(|reason| ProviderError::Malformed {
            provider: PROVIDER,
            reason,
        })?;
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| ProviderError::Connect {
                provider: PROVIDER,
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if target.tls {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    ProviderError::Malformed {
                        provider: PROVIDER,
                        reason: e.to_string(),
                    }
                })?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ProviderError::Connect {
                    provider: PROVIDER,
                    reason: format!("TLS: {e}"),
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut request =
            self.url
                .as_str()
                .into_client_request()
                .map_err(|e| ProviderError::Malformed {
                    provider: PROVIDER,
                    reason: e.to_string(),
                })?;
        if let Some(key) = &self.api_key {
            let value = format!("Token {key}")
                .parse()
                .map_err(|_| ProviderError::Malformed {
                    provider: PROVIDER,
                    reason: "the API key is not a valid header value".into(),
                })?;
            request.headers_mut().insert("authorization", value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => ProviderError::Status {
                    provider: PROVIDER,
                    status: response.status().as_u16(),
                    body: String::new(),
                },
                other => ProviderError::Connect {
                    provider: PROVIDER,
                    reason: other.to_string(),
                },
            })?;
        Ok(ws)
    }
}

fn lost(e: tokio_tungstenite::tungstenite::Error) -> ProviderError {
    ProviderError::Disconnected {
        provider: PROVIDER,
        reason: e.to_string(),
    }
}

/// The final results so far, then the interim one.
fn join(finals: &[String], interim: &str) -> String {
    let mut text = finals.join(" ");
    if !interim.is_empty() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(interim);
    }
    text
}

/// Where a `ws://` or `wss://` URL connects.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err("not a ws:// or wss:// URL".into());
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = match authority.strip_prefix('[') {
            // [::1]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("an unclosed [")?;
                let port = after.strip_prefix(':').map(str::parse::<u16>);
                (host.to_string(), port)
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port.parse::<u16>())),
                None => (authority.to_string(), None),
            },
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            Some(Ok(port)) => port,
            Some(Err(_)) => return Err("a bad port".into()),
            None if tls => 443,
            None => 80,
        };
        Ok(Target { host, port, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_say_where_to_connect() {
        let t = |url| Target::parse(url);
        assert_eq!(
            t("wss://api.deepgram.com/v1/listen"),
            Ok(Target {
                host: "api.deepgram.com".into(),
                port: 443,
                tls: true
            })
        );
        assert_eq!(
            t("ws://127.0.0.1:8089/v1/listen?tier=x"),
            Ok(Target {
                host: "127.0.0.1".into(),
                port: 8089,
                tls: false
            })
        );
        assert_eq!(
            t("ws://[::1]:81/"),
            Ok(Target {
                host: "::1".into(),
                port: 81,
                tls: false
            })
        );
        assert!(t("https://api.deepgram.com").is_err());
        assert!(t("ws://:80/").is_err());
        assert!(t("ws://host:99999/").is_err());
    }

    #[test]
    fn the_text_so_far_is_the_finals_then_the_interim() {
        assert_eq!(join(&[], ""), "");
        assert_eq!(join(&[], "ma box"), "ma box");
        assert_eq!(
            join(&["Ma box".into(), "ne marche".into()], "plus"),
            "Ma box ne marche plus"
        );
    }
}
