//! Fake LLM, TTS and STT servers on loopback that speak the providers' real
//! wire formats, with controllable latency and faults:
//! - `POST /v1/chat/completions`: OpenAI-style SSE chat chunks, `[DONE]`, usage;
//! - `POST /v1/text-to-speech/{voice}/stream`: ElevenLabs-style chunked audio
//!   (`ulaw_8000` bytes, or `pcm_16000` little-endian) at a real-time rate;
//! - `POST /v1/audio/transcriptions`: OpenAI-style `{"text": …}`, scripted.
//! - `GET /v1/listen` (WebSocket): Deepgram-style live transcription: binary
//!   audio in; interim `Results` a word at a time once audio comes, the
//!   final one (`from_finalize`) after `{"type": "Finalize"}`; `Metadata`
//!   and the close after `{"type": "CloseStream"}`.
//!
//! Used by the tests (`support::fake_providers`) and by
//! `examples/fake_providers.rs` for demos.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;

/// What goes wrong, on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (500, 429…) and a JSON error body.
    Status(u16),
    /// Send this many chunks, then nothing more (the connection stays open).
    StallAfter(usize),
    /// Send this many chunks, then close the connection mid-stream.
    DisconnectAfter(usize),
    /// SSE that is not JSON (LLM) / a 200 with an HTML body (TTS, STT).
    Garbage,
}

#[derive(Debug, Clone)]
pub struct FakeBehaviour {
    pub llm_ttfb: Duration,
    /// Pause between two streamed words.
    pub llm_token_interval: Duration,
    pub llm_reply: String,
    /// Replies given, in order, before `llm_reply` (which then repeats).
    pub llm_replies: VecDeque<String>,
    pub llm_fault: Option<Fault>,
    pub tts_ttfb: Duration,
    /// Audio sent per 20 ms of wall time is this many times real time.
    pub tts_speed: u32,
    /// μ-law audio the TTS "speaks" (repeated to the text's length).
    pub tts_audio: Arc<Vec<u8>>,
    pub tts_fault: Option<Fault>,
    /// Speak each text in its own pair of codes (`tts_codes`), so a capture
    /// tells which sentence every frame came from.
    pub tts_tag_by_text: bool,
    pub stt_latency: Duration,
    /// Transcripts returned in order; the last one repeats.
    pub stt_transcripts: VecDeque<String>,
    pub stt_fault: Option<Fault>,
    /// Streaming: from the first audio to the first interim result, then
    /// between two (each one word more).
    pub stt_stream_first_partial: Duration,
    pub stt_stream_word_interval: Duration,
    /// Streaming: from `Finalize` to the final result.
    pub stt_stream_final_latency: Duration,
    /// Streaming: the final result says this instead of what the interim
    /// ones were spelling out (a recogniser that changes its mind).
    pub stt_stream_final_text: Option<String>,
    /// Streaming: `Finalize` is answered with a `from_finalize` result (off:
    /// only the close brings the final result, then `Metadata`).
    pub stt_stream_finalize_reply: bool,
    /// Streaming: `Status` refuses the upgrade; `DisconnectAfter(n)` drops
    /// the connection after n audio messages.
    pub stt_stream_fault: Option<Fault>,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        Self {
            llm_ttfb: Duration::from_millis(800),
            llm_token_interval: Duration::from_millis(30),
            llm_reply:
                "D'accord, je comprends votre souci. Redémarrez la box, puis attendez deux minutes."
                    .into(),
            llm_replies: VecDeque::new(),
            llm_fault: None,
            tts_ttfb: Duration::from_millis(300),
            tts_speed: 2,
            tts_audio: Arc::new(
                (0..8000u32)
                    .map(|i| if (i / 40) % 2 == 0 { 0x20 } else { 0xA0 })
                    .collect(),
            ),
            tts_fault: None,
            tts_tag_by_text: false,
            stt_latency: Duration::from_millis(200),
            stt_transcripts: VecDeque::from(["Ma box internet ne marche plus.".to_string()]),
            stt_fault: None,
            stt_stream_first_partial: Duration::from_millis(150),
            stt_stream_word_interval: Duration::from_millis(120),
            stt_stream_final_latency: Duration::from_millis(60),
            stt_stream_final_text: None,
            stt_stream_finalize_reply: true,
            stt_stream_fault: None,
        }
    }
}

/// Requests seen, by endpoint.
#[derive(Debug, Default, Clone)]
pub struct FakeCounts {
    pub llm: u32,
    pub tts: u32,
    pub stt: u32,
    /// Texts sent to TTS, in order.
    pub tts_texts: Vec<String>,
    /// The `output_format` of each TTS request, in order.
    pub tts_formats: Vec<String>,
    /// Streaming sessions asked for (upgrade requests, refused or not), and
    /// opened (upgrades accepted).
    pub stt_stream_attempts: u32,
    pub stt_streams: u32,
    /// Audio octets the streams received, and their query strings.
    pub stt_stream_bytes: usize,
    pub stt_stream_queries: Vec<String>,
    /// Last chat request body.
    pub last_chat: Option<serde_json::Value>,
}

#[derive(Clone)]
struct Shared {
    behaviour: Arc<Mutex<FakeBehaviour>>,
    counts: Arc<Mutex<FakeCounts>>,
}

/// A running fake; serves until dropped (the runtime thread stops).
pub struct FakeProviders {
    pub addr: SocketAddr,
    shared: Shared,
    _runtime: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeProviders {
    /// Starts on 127.0.0.1:`port` (0 for any) in a thread of its own.
    pub fn start(port: u16, behaviour: FakeBehaviour) -> FakeProviders {
        let shared = Shared {
            behaviour: Arc::new(Mutex::new(behaviour)),
            counts: Arc::new(Mutex::new(FakeCounts::default())),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake providers runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind fake providers");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let _ = axum::serve(listener, router(state))
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake providers started");
        FakeProviders {
            addr,
            shared,
            _runtime: Some(runtime),
            stop: Some(stop_tx),
        }
    }

    /// Starts on 127.0.0.1 (any port) as a task of the current runtime, so
    /// that its latencies follow that runtime's clock (a paused clock in the
    /// in-process call tests).
    pub async fn spawn_here(behaviour: FakeBehaviour) -> FakeProviders {
        let shared = Shared {
            behaviour: Arc::new(Mutex::new(behaviour)),
            counts: Arc::new(Mutex::new(FakeCounts::default())),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind fake providers");
        let addr = listener.local_addr().unwrap();
        let state = shared.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state))
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        FakeProviders {
            addr,
            shared,
            _runtime: None,
            stop: Some(stop_tx),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the fakes do from now on.
    pub fn set(&self, change: impl FnOnce(&mut FakeBehaviour)) {
        change(&mut self.shared.behaviour.lock().unwrap());
    }

    pub fn counts(&self) -> FakeCounts {
        self.shared.counts.lock().unwrap().clone()
    }
}

impl Drop for FakeProviders {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/text-to-speech/{voice}/stream", post(tts))
        .route("/v1/audio/transcriptions", post(stt))
        .route("/v1/listen", axum::routing::get(stt_stream))
        .with_state(shared)
}

fn error_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"error\":{\"message\":\"fake failure\"}}",
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

/// Streams `chunks` with `first` delay then `interval` between them,
/// honouring stall/disconnect faults.
fn paced_body(
    chunks: Vec<Bytes>,
    first: Duration,
    interval: Duration,
    fault: Option<Fault>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        tokio::time::sleep(first).await;
        for (i, chunk) in chunks.into_iter().enumerate() {
            match fault {
                Some(Fault::StallAfter(n)) if i == n => {
                    // Hold the connection open, send nothing (bounded).
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                Some(Fault::DisconnectAfter(n)) if i == n => {
                    let _ = tx.send(Err(std::io::Error::other("fake disconnect"))).await;
                    return;
                }
                _ => {}
            }
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn chat(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = {
        let mut b = shared.behaviour.lock().unwrap();
        if let Some(reply) = b.llm_replies.pop_front() {
            b.llm_reply = reply;
        }
        b.clone()
    };
    {
        let mut counts = shared.counts.lock().unwrap();
        counts.llm += 1;
        counts.last_chat = serde_json::from_slice(&body).ok();
    }
    if let Some(Fault::Status(status)) = behaviour.llm_fault {
        tokio::time::sleep(behaviour.llm_ttfb.min(Duration::from_millis(100))).await;
        if status == 401 {
            // As OpenAI-compatible servers do: the key sent, in the body.
            let key = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let body = format!(
                "{{\"error\":{{\"message\":\"Incorrect API key provided: {key}. You can find your API key at https://platform.example/account/api-keys.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}}}"
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        return error_response(status);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let role = serde_json::json!({"id":"fake","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]});
    chunks.push(Bytes::from(format!("data: {role}\n\n")));
    if behaviour.llm_fault == Some(Fault::Garbage) {
        chunks.push(Bytes::from("data: {this is not json\n\n"));
    }
    let words: Vec<&str> = behaviour.llm_reply.split_inclusive(' ').collect();
    for word in &words {
        let chunk = serde_json::json!({"id":"fake","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":word}}]});
        chunks.push(Bytes::from(format!("data: {chunk}\n\n")));
    }
    let usage = serde_json::json!({"id":"fake","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":words.len(),"total_tokens":42 + words.len()}});
    chunks.push(Bytes::from(format!("data: {usage}\n\ndata: [DONE]\n\n")));
    let body = paced_body(
        chunks,
        behaviour.llm_ttfb,
        behaviour.llm_token_interval,
        behaviour.llm_fault.clone(),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

async fn tts(
    State(shared): State<Shared>,
    Path(_voice): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let text = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default();
    {
        let mut counts = shared.counts.lock().unwrap();
        counts.tts += 1;
        counts.tts_texts.push(text.clone());
        let format = query.get("output_format").cloned().unwrap_or_default();
        counts.tts_formats.push(format);
    }
    match behaviour.tts_fault {
        Some(Fault::Status(status)) => return error_response(status),
        Some(Fault::Garbage) => {
            tokio::time::sleep(behaviour.tts_ttfb).await;
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Bad Gateway</body></html>",
            )
                .into_response();
        }
        _ => {}
    }
    // About 70 ms of speech per character, like a real voice.
    let samples = (text.chars().count() * 560).clamp(1600, 8000 * 20);
    let ulaw: Vec<u8> = if behaviour.tts_tag_by_text {
        let (low, high) = tts_codes(&text);
        (0..samples)
            .map(|i| if (i / 40) % 2 == 0 { low } else { high })
            .collect()
    } else {
        behaviour
            .tts_audio
            .iter()
            .cycle()
            .take(samples)
            .copied()
            .collect()
    };
    let format = query
        .get("output_format")
        .map(String::as_str)
        .unwrap_or("mp3_44100_128");
    let (bytes, content_type, bytes_per_20ms): (Vec<u8>, &str, usize) = match format {
        "ulaw_8000" => (ulaw, "audio/basic", 160),
        "alaw_8000" => {
            let alaw = ulaw
                .iter()
                .map(|&c| sav::media::g711::ulaw_to_alaw(c))
                .collect();
            (alaw, "audio/x-alaw-basic", 160)
        }
        "pcm_16000" => {
            // μ-law → linear → naive 2× upsampling.
            let pcm: Vec<u8> = ulaw
                .iter()
                .flat_map(|&c| {
                    let s = decode(c).to_le_bytes();
                    [s[0], s[1], s[0], s[1]]
                })
                .collect();
            (pcm, "audio/pcm", 640)
        }
        _ => return error_response(400),
    };
    let per_chunk = bytes_per_20ms * behaviour.tts_speed.max(1) as usize;
    let chunks: Vec<Bytes> = bytes
        .chunks(per_chunk)
        .map(Bytes::copy_from_slice)
        .collect();
    let body = paced_body(
        chunks,
        behaviour.tts_ttfb,
        Duration::from_millis(20),
        behaviour.tts_fault.clone(),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap()
}

/// The scripted transcripts in turn; the last one repeats.
fn next_transcript(b: &mut FakeBehaviour) -> String {
    if b.stt_transcripts.len() > 1 {
        b.stt_transcripts.pop_front().unwrap_or_default()
    } else {
        b.stt_transcripts.front().cloned().unwrap_or_default()
    }
}

async fn stt(State(shared): State<Shared>, _body: Bytes) -> Response {
    let (behaviour, text) = {
        let mut b = shared.behaviour.lock().unwrap();
        let text = next_transcript(&mut b);
        (b.clone(), text)
    };
    shared.counts.lock().unwrap().stt += 1;
    tokio::time::sleep(behaviour.stt_latency).await;
    match behaviour.stt_fault {
        Some(Fault::Status(status)) => error_response(status),
        Some(Fault::Garbage) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>oops</html>",
        )
            .into_response(),
        _ => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "text": text }).to_string(),
        )
            .into_response(),
    }
}

async fn stt_stream(
    State(shared): State<Shared>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let (behaviour, text) = {
        let mut b = shared.behaviour.lock().unwrap();
        let text = next_transcript(&mut b);
        (b.clone(), text)
    };
    shared.counts.lock().unwrap().stt_stream_attempts += 1;
    if let Some(Fault::Status(status)) = behaviour.stt_stream_fault {
        return error_response(status);
    }
    {
        let mut counts = shared.counts.lock().unwrap();
        counts.stt_streams += 1;
        counts.stt_stream_queries.push(query.unwrap_or_default());
    }
    upgrade.on_upgrade(move |socket| listen(socket, shared, behaviour, text))
}

/// One Deepgram-style live session.
async fn listen(
    mut socket: axum::extract::ws::WebSocket,
    shared: Shared,
    behaviour: FakeBehaviour,
    text: String,
) {
    use axum::extract::ws::Message;
    let words: Vec<&str> = text.split_whitespace().collect();
    let result = |transcript: &str, is_final: bool, from_finalize: bool| {
        Message::Text(
            serde_json::json!({
                "type": "Results",
                "is_final": is_final,
                "speech_final": is_final,
                "from_finalize": from_finalize,
                "channel": { "alternatives": [{ "transcript": transcript, "confidence": 0.9 }] },
            })
            .to_string()
            .into(),
        )
    };
    let mut audio_messages = 0usize;
    let mut finalised = false;
    let mut said = 0usize;
    let mut next_partial: Option<tokio::time::Instant> = None;
    // Bounded: a session lasts at most a minute of the runtime's clock.
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let partial_at = next_partial.unwrap_or(end);
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(audio))) => {
                    audio_messages += 1;
                    shared.counts.lock().unwrap().stt_stream_bytes += audio.len();
                    if next_partial.is_none() && said == 0 {
                        next_partial = Some(tokio::time::Instant::now() + behaviour.stt_stream_first_partial);
                    }
                    if behaviour.stt_stream_fault == Some(Fault::DisconnectAfter(audio_messages)) {
                        return;
                    }
                }
                Some(Ok(Message::Text(command))) if command.contains("\"Finalize\"") => {
                    // Like the real one, a flush answers only when it held
                    // something (`stt_stream_finalize_reply` off: it had
                    // finalised already, the close carries the result).
                    if behaviour.stt_stream_finalize_reply {
                        tokio::time::sleep(behaviour.stt_stream_final_latency).await;
                        let last = behaviour.stt_stream_final_text.as_deref().unwrap_or(&text);
                        if socket.send(result(last, true, true)).await.is_err() {
                            return;
                        }
                        finalised = true;
                    }
                    next_partial = None;
                }
                Some(Ok(Message::Text(command))) if command.contains("\"CloseStream\"") => {
                    tokio::time::sleep(behaviour.stt_stream_final_latency).await;
                    if !finalised {
                        let last = behaviour.stt_stream_final_text.as_deref().unwrap_or(&text);
                        let _ = socket.send(result(last, true, false)).await;
                    }
                    let metadata = serde_json::json!({ "type": "Metadata", "duration": 1.0 });
                    let _ = socket.send(Message::Text(metadata.to_string().into())).await;
                    let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1000,
                        reason: "".into(),
                    }))).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = tokio::time::sleep_until(partial_at) => {
                if tokio::time::Instant::now() >= end {
                    return;
                }
                if said < words.len() {
                    said += 1;
                    if socket.send(result(&words[..said].join(" "), false, false)).await.is_err() {
                        return;
                    }
                }
                next_partial = (said < words.len())
                    .then(|| tokio::time::Instant::now() + behaviour.stt_stream_word_interval);
            }
        }
    }
}

/// The two μ-law codes a text is spoken in when `tts_tag_by_text` is set:
/// one of sixteen loud pairs (0x20/0xA0 … 0x3E/0xBE), chosen by an FNV-1a
/// hash of the trimmed text.
pub fn tts_codes(text: &str) -> (u8, u8) {
    let hash = text.trim().bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let k = (hash % 16) as u8;
    (0x20 + 2 * k, 0xA0 + 2 * k)
}

/// G.711 μ-law decode (for the PCM output format).
fn decode(code: u8) -> i16 {
    let u = !code;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// The quick start's voice call: fake providers that hear, in order, the
/// sentences of `examples/caller/transcripts.txt`, and the shipped
/// `voice.toml`'s provider sections pointed at them (to append to a test's
/// configuration).
pub fn quickstart_voice() -> (FakeProviders, String) {
    let caller = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/caller");
    let said = std::fs::read_to_string(caller.join("transcripts.txt")).unwrap();
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            stt_transcripts: said.lines().map(String::from).collect(),
            ..Default::default()
        },
    );
    let voice = std::fs::read_to_string(caller.join("voice.toml")).unwrap();
    let providers = &voice[voice.find("\n# The fake providers").expect("providers")..];
    let sections = providers.replace("http://127.0.0.1:8089", &fake.base_url());
    (fake, sections)
}
