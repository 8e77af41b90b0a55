//! Generating a reply: the LLM's text streamed, cut into sentences, each
//! sentence spoken by the TTS as soon as it is complete, the audio streamed
//! back chunk by chunk. Runs as a task per reply; the call task turns its
//! messages into playout (streams behind the filler) and conversation events.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};

use crate::conversation::reply_book::{Failure, Line, Made, Role};
use crate::media::codec::Codec;
use crate::metrics::{AudioSource, CallUsage};
use crate::providers::llm::{ChatMessage, LlmClient};
use crate::providers::sentences::SentenceSplitter;
use crate::providers::stt::{SpeechToText, SttSession};
use crate::providers::tts::TextToSpeech;
use crate::providers::ProviderError;
use crate::timeline::{CallTrace, Provider, RequestSpan};

/// The providers a call talks with (each optional: without STT the caller
/// answers with keys; without TTS nothing is generated).
#[derive(Clone)]
pub struct Providers {
    pub llm: Option<Arc<LlmClient>>,
    pub tts: Option<Arc<dyn TextToSpeech>>,
    pub stt: Option<Arc<dyn SpeechToText>>,
    pub system_prompt: String,
    pub history_turns: usize,
    /// Replies are asked for on a stable partial transcript (set per call).
    pub speculate: bool,
}

impl Providers {
    /// The speech providers that are configured (`[stt]`, `[llm]`, `[tts]`).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Providers>, ProviderError> {
        if !config.speech_enabled() {
            info!("no speech providers: cached phrases and DTMF menus only");
            return Ok(None);
        }
        let llm = match &config.llm {
            Some(llm) => Some(Arc::new(crate::providers::llm::LlmClient::new(
                llm.clone(),
            )?)),
            None => None,
        };
        let tts = match &config.tts {
            Some(tts) => Some(crate::providers::tts::engine(tts)?),
            None => None,
        };
        let stt: Option<Arc<dyn crate::providers::stt::SpeechToText>> = match &config.stt {
            Some(stt) => {
                let batch = crate::providers::stt::OpenAiTranscriber::new(stt.clone())?;
                match &stt.streaming {
                    Some(streaming) => Some(Arc::new(
                        crate::providers::stt_stream::StreamingTranscriber::new(
                            streaming.clone(),
                            stt.language.clone(),
                            batch,
                        )?,
                    )),
                    None => Some(Arc::new(batch)),
                }
            }
            None => None,
        };
        info!(
            llm = config.llm.as_ref().map(|l| l.model.as_str()).unwrap_or("-"),
            tts = tts.as_ref().map(|t| t.name()).unwrap_or("-"),
            stt = config.stt.as_ref().map(|s| s.model.as_str()).unwrap_or("-"),
            stt_streaming = config
                .stt
                .as_ref()
                .and_then(|s| s.streaming.as_ref())
                .map(|s| s.model.as_str())
                .unwrap_or("-"),
            "speech providers"
        );
        if stt.is_none() {
            info!("no [stt]: callers answer with keys (DTMF menus)");
        }
        Ok(Some(Providers {
            llm,
            tts,
            stt,
            system_prompt: config.hybrid.system_prompt.clone(),
            history_turns: config.hybrid.history_turns,
            speculate: false,
        }))
    }
}

/// A provider's error, as the reply book takes it.
pub fn failure(error: ProviderError) -> Failure {
    Failure {
        kind: error.kind(),
        message: error.to_string(),
    }
}

/// A line of the reply book's prompt, as the LLM takes it.
pub fn chat(line: Line) -> ChatMessage {
    match line.role {
        Role::System => ChatMessage::system(line.text),
        Role::User => ChatMessage::user(line.text),
        Role::Assistant => ChatMessage::assistant(line.text),
    }
}

/// Characters of a classification read at most (the answer is one word).
const MAX_CLASSIFICATION: usize = 200;

/// Starts transcribing the caller's turn `turn`: the session that heard
/// it as it was spoken (streaming), or a new one given the whole turn.
pub fn transcribe(
    stt: &dyn SpeechToText,
    streamed: Option<Box<dyn SttSession>>,
    turn: u64,
    utterance: &[i16],
    out: mpsc::Sender<Made>,
    trace: CallTrace,
) {
    let session = streamed.unwrap_or_else(|| {
        let mut session = stt.session();
        session.push(utterance);
        session
    });
    let seconds = utterance.len() as f64 / 8000.0;
    tokio::spawn(
        async move {
            let request = trace.request(Provider::Stt, format!("turn#{turn}"));
            trace.used(CallUsage {
                stt_seconds: seconds,
                ..Default::default()
            });
            let result = session.finish().await;
            let took = request.end(result.is_ok());
            trace.metrics().stt_latency.observe(took.as_secs_f64());
            let _ = out
                .send(Made::Transcript {
                    turn,
                    result: result.map_err(failure),
                })
                .await;
        }
        .in_current_span(),
    );
}

/// Starts generating reply `reply` to `messages` (the conversation so far,
/// or a one-off instruction).
pub fn generate(
    llm: Arc<LlmClient>,
    tts: Arc<dyn TextToSpeech>,
    reply: u64,
    messages: Vec<ChatMessage>,
    codec: Codec,
    out: mpsc::Sender<Made>,
    trace: CallTrace,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let tts = Speaker {
                tts: tts.as_ref(),
                codec,
            };
            if let Err(error) = run(reply, &llm, tts, &messages, &out, &trace).await {
                let _ = out
                    .send(Made::Failed {
                        reply,
                        error: failure(error),
                    })
                    .await;
            }
        }
        .in_current_span(),
    )
}

/// Starts speaking a fixed `text` as reply `reply` (TTS only), sentence by
/// sentence.
pub fn speak_text(
    tts: Arc<dyn TextToSpeech>,
    reply: u64,
    text: String,
    codec: Codec,
    out: mpsc::Sender<Made>,
    trace: CallTrace,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let tts = Speaker {
                tts: tts.as_ref(),
                codec,
            };
            let mut splitter = SentenceSplitter::new();
            let mut sentences = splitter.push(&text);
            sentences.extend(splitter.finish());
            let mut index = 0;
            for sentence in &sentences {
                match speak(reply, index, sentence, tts, &out, &trace).await {
                    Ok(Spoken::Yes) => index += 1,
                    Ok(Spoken::Nothing) => {}
                    Ok(Spoken::Cancelled) => return,
                    Err(error) => {
                        let _ = out
                            .send(Made::Failed {
                                reply,
                                error: failure(error),
                            })
                            .await;
                        return;
                    }
                }
            }
            let _ = out
                .send(Made::Done {
                    reply,
                    text,
                    sentences: index,
                })
                .await;
        }
        .in_current_span(),
    )
}

/// Starts classification `id`: the LLM's short answer to `messages`.
pub fn classify(
    llm: Arc<LlmClient>,
    id: u64,
    messages: Vec<ChatMessage>,
    out: mpsc::Sender<Made>,
    trace: CallTrace,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut request = trace.request(Provider::Llm, format!("classify#{id}"));
            let result = async {
                let mut stream = llm.stream(&messages).await?;
                let mut text = String::new();
                while let Some(piece) = stream.next_text().await? {
                    text.push_str(&piece);
                    if text.len() >= MAX_CLASSIFICATION {
                        break;
                    }
                }
                llm_done(&trace, &mut request, &stream);
                Ok(crate::text::cut(&text, MAX_CLASSIFICATION).to_string())
            }
            .await;
            request.end(result.is_ok());
            let _ = out
                .send(Made::Classified {
                    id,
                    result: result.map_err(failure),
                })
                .await;
        }
        .in_current_span(),
    )
}

async fn run(
    reply: u64,
    llm: &LlmClient,
    tts: Speaker<'_>,
    messages: &[ChatMessage],
    out: &mpsc::Sender<Made>,
    trace: &CallTrace,
) -> Result<(), ProviderError> {
    let mut request = trace.request(Provider::Llm, format!("reply#{reply}"));
    let generated = generate_text(reply, llm, tts, messages, out, trace, &mut request).await;
    settle(request, generated).map(|_| ())
}

/// Ends a provider request by what came of it: done, failed, or cancelled
/// (the span marks that itself when dropped).
fn settle(
    request: RequestSpan,
    result: Result<Spoken, ProviderError>,
) -> Result<Spoken, ProviderError> {
    match &result {
        Ok(Spoken::Cancelled) => {}
        Ok(_) => {
            request.end(true);
        }
        Err(_) => {
            request.end(false);
        }
    }
    result
}

async fn generate_text(
    reply: u64,
    llm: &LlmClient,
    tts: Speaker<'_>,
    messages: &[ChatMessage],
    out: &mpsc::Sender<Made>,
    trace: &CallTrace,
    request: &mut RequestSpan,
) -> Result<Spoken, ProviderError> {
    let mut stream = llm.stream(messages).await?;
    let mut splitter = SentenceSplitter::new();
    let mut text = String::new();
    let mut index = 0;
    while let Some(piece) = stream.next_text().await? {
        text.push_str(&piece);
        for sentence in splitter.push(&piece) {
            match speak(reply, index, &sentence, tts, out, trace).await? {
                Spoken::Yes => index += 1,
                Spoken::Nothing => {}
                Spoken::Cancelled => return Ok(Spoken::Cancelled),
            }
        }
    }
    if let Some(rest) = splitter.finish() {
        match speak(reply, index, &rest, tts, out, trace).await? {
            Spoken::Yes => index += 1,
            Spoken::Nothing => {}
            Spoken::Cancelled => return Ok(Spoken::Cancelled),
        }
    }
    debug!(reply, first_token_ms = ?stream.first_token.map(|t| (t - stream.started).as_millis()), "reply generated");
    llm_done(trace, request, &stream);
    let _ = out
        .send(Made::Done {
            reply,
            text,
            sentences: index,
        })
        .await;
    Ok(Spoken::Yes)
}

/// The TTS and the codec it speaks in for this reply.
#[derive(Clone, Copy)]
struct Speaker<'a> {
    tts: &'a dyn TextToSpeech,
    codec: Codec,
}

/// What became of a sentence.
enum Spoken {
    Yes,
    /// Nothing speakable in it (markdown, emoji): no index used.
    Nothing,
    /// The call is gone: stop generating (and paying for) the reply.
    Cancelled,
}

async fn speak(
    reply: u64,
    index: usize,
    sentence: &str,
    tts: Speaker<'_>,
    out: &mpsc::Sender<Made>,
    trace: &CallTrace,
) -> Result<Spoken, ProviderError> {
    let text = crate::conversation::speakable::sanitise(sentence);
    if text.is_empty() {
        return Ok(Spoken::Nothing);
    }
    let mut request = trace.request(Provider::Tts, format!("reply#{reply}.{index}"));
    trace.used(CallUsage {
        tts_characters: text.chars().count() as u64,
        ..Default::default()
    });
    let spoken = speak_audio(reply, index, text, tts, out, trace, &mut request).await;
    settle(request, spoken)
}

async fn speak_audio(
    reply: u64,
    index: usize,
    text: String,
    tts: Speaker<'_>,
    out: &mpsc::Sender<Made>,
    trace: &CallTrace,
    request: &mut RequestSpan,
) -> Result<Spoken, ProviderError> {
    let announce = Made::Sentence { reply, index };
    if out.send(announce).await.is_err() {
        return Ok(Spoken::Cancelled);
    }
    let mut audio = tts.tts.synthesize(text, tts.codec);
    let mut first = true;
    while let Some(chunk) = audio.recv().await {
        let chunk = chunk?;
        if first && !chunk.is_empty() {
            first = false;
            if let Some(after) = request.first_byte_at(tokio::time::Instant::now().into_std()) {
                trace.metrics().first_byte(AudioSource::api, after);
            }
        }
        if out
            .send(Made::Audio {
                reply,
                index,
                chunk,
            })
            .await
            .is_err()
        {
            return Ok(Spoken::Cancelled);
        }
    }
    if out.send(Made::SentenceDone { reply, index }).await.is_err() {
        return Ok(Spoken::Cancelled);
    }
    Ok(Spoken::Yes)
}

/// An LLM answer read: its time to first token, total time and tokens.
fn llm_done(
    trace: &CallTrace,
    request: &mut RequestSpan,
    stream: &crate::providers::llm::LlmStream,
) {
    let metrics = trace.metrics();
    if let Some(first) = stream.first_token {
        let after = first.saturating_duration_since(stream.started);
        metrics.llm_first_token.observe(after.as_secs_f64());
        request.first_byte_at(request.asked() + after);
    }
    metrics
        .llm_total
        .observe(request.asked().elapsed().as_secs_f64());
    if let Some(usage) = stream.usage() {
        trace.used(CallUsage {
            llm_prompt_tokens: usage.prompt_tokens,
            llm_completion_tokens: usage.completion_tokens,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_prompt_lines_keep_their_roles() {
        let lines = [
            (Role::System, "prompt", "system"),
            (Role::User, "u", "user"),
            (Role::Assistant, "a", "assistant"),
        ];
        for (role, text, expected) in lines {
            let message = chat(Line {
                role,
                text: text.into(),
            });
            assert_eq!((message.role, message.content.as_str()), (expected, text));
        }
    }

    #[test]
    fn a_provider_error_keeps_its_kind_for_the_book() {
        let f = failure(ProviderError::NotConfigured("llm"));
        assert_eq!(f.kind, "not_configured");
        assert!(f.message.contains("llm"), "{}", f.message);
    }
}
