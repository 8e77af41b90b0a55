//! The tokio side of turn-taking: carries out the conversation's speech
//! actions (transcribe, open/generate/cancel/resume a reply, fillers in
//! front) on the media driver and the providers, and turns what comes back
//! (transcripts, reply audio, playout events) into conversation events.
//!
//! A reply is a series of streamed segments, one per sentence. The first is
//! opened (queued empty behind the filler) as soon as the caller stops
//! talking, so it plays the moment its audio is there and the playout's
//! starvation report covers a late provider. Every sentence's audio is also
//! kept here, so a reply cut by a false interruption can be queued again from
//! the sentence it was in.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::PhraseCache;
use crate::conversation::reply::{self, Providers, SpeechMsg};
use crate::conversation::{CallAction, CallEvent};
use crate::media::driver::{MediaDriver, MediaId};
use crate::media::playout::{PlayoutEvent, SegmentEnd, SegmentKind, StreamId, MAX_STREAM_BYTES};
use crate::providers::llm::ChatMessage;

/// Messages queued from speech tasks to the call.
pub const SPEECH_QUEUE: usize = 256;
/// Label prefix of reply segments in playout events.
const REPLY_LABEL: &str = "reply#";

#[derive(Debug, Default)]
struct Sentence {
    text: String,
    /// Audio so far (kept to resume after a false interruption), bounded.
    audio: Vec<u8>,
    done: bool,
    /// The playout stream now carrying it.
    stream: Option<StreamId>,
}

#[derive(Debug, Default)]
struct Reply {
    id: u64,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Opened before its text: becomes sentence 0's stream.
    open_stream: Option<StreamId>,
    sentences: Vec<Sentence>,
    /// Index of the sentence playing when the caller barged in.
    interrupted_at: Option<usize>,
    /// Sentences heard to their end.
    completed: usize,
    audible: bool,
}

/// Timings of one turn, logged for the benchmark.
#[derive(Debug, Default, Clone, Copy)]
struct TurnTiming {
    speech_end: Option<Instant>,
    first_filler: Option<Instant>,
    first_generated: Option<Instant>,
}

pub struct SpeechSession {
    providers: Providers,
    driver: MediaDriver,
    media: MediaId,
    cache: Arc<PhraseCache>,
    tx: mpsc::Sender<SpeechMsg>,
    utterance: Option<Vec<i16>>,
    history: Vec<ChatMessage>,
    reply: Option<Reply>,
    replies: u64,
    streams: u64,
    /// Segments this session queued (for the stale-Idle check).
    pub enqueued: u64,
    timing: TurnTiming,
}

impl SpeechSession {
    pub fn new(
        providers: Providers,
        driver: MediaDriver,
        media: MediaId,
        cache: Arc<PhraseCache>,
    ) -> (Self, mpsc::Receiver<SpeechMsg>) {
        let (tx, rx) = mpsc::channel(SPEECH_QUEUE);
        (
            Self {
                providers,
                driver,
                media,
                cache,
                tx,
                utterance: None,
                history: Vec::new(),
                reply: None,
                replies: 0,
                streams: 0,
                enqueued: 0,
                timing: TurnTiming::default(),
            },
            rx,
        )
    }

    /// The caller's turn just ended: keep its audio for `Transcribe`.
    pub fn caller_stopped(&mut self, utterance: Vec<i16>) {
        self.utterance = Some(utterance);
        self.timing = TurnTiming {
            speech_end: Some(Instant::now()),
            ..TurnTiming::default()
        };
    }

    /// Carries out a speech action; returns false for actions that are not
    /// the session's.
    pub async fn act(&mut self, action: &CallAction) -> bool {
        match action {
            CallAction::Transcribe => match self.utterance.take() {
                Some(utterance) => reply::transcribe(&self.providers, utterance, self.tx.clone()),
                None => {
                    let _ = self.tx.send(SpeechMsg::Transcript(Ok(String::new()))).await;
                }
            },
            CallAction::OpenReply => {
                self.cancel().await;
                self.replies += 1;
                let stream = self.queue_stream(0).await;
                self.reply = Some(Reply {
                    id: self.replies,
                    open_stream: Some(stream),
                    ..Reply::default()
                });
            }
            CallAction::Generate(text) => {
                self.history.push(ChatMessage::user(text.clone()));
                let messages = reply::messages(
                    &self.providers.system_prompt,
                    &self.history,
                    self.providers.history_turns,
                );
                if let Some(reply) = self.reply.as_mut() {
                    info!(reply = reply.id, "generating");
                    reply.task = Some(reply::generate(
                        &self.providers,
                        reply.id,
                        messages,
                        self.tx.clone(),
                    ));
                }
            }
            CallAction::CancelReply => self.cancel().await,
            CallAction::ResumeReply => self.resume().await,
            CallAction::PlayFront(key) => {
                if let Some(clip) = self.cache.clip(key) {
                    self.enqueued += 1;
                    self.driver
                        .enqueue_front(self.media, SegmentKind::Clip(clip.clone()))
                        .await;
                }
            }
            _ => return false,
        }
        true
    }

    /// A message from the speech tasks; some become conversation events.
    pub async fn on_message(&mut self, msg: SpeechMsg) -> Option<CallEvent> {
        match msg {
            SpeechMsg::Transcript(Ok(text)) => {
                info!(chars = text.chars().count(), "transcript");
                Some(CallEvent::Transcript(text))
            }
            SpeechMsg::Transcript(Err(error)) => {
                warn!(%error, kind = error.kind(), "speech-to-text failed");
                Some(CallEvent::TranscriptFailed)
            }
            SpeechMsg::Failed { reply, error } if self.is_current(reply) => {
                warn!(%error, kind = error.kind(), "reply generation failed");
                Some(CallEvent::ReplyFailed)
            }
            SpeechMsg::Sentence { reply, index, text } if self.is_current(reply) => {
                let stream = match self.reply.as_mut().and_then(|r| r.open_stream.take()) {
                    Some(stream) if index == 0 => stream,
                    _ => self.queue_stream(index).await,
                };
                if let Some(r) = self.reply.as_mut() {
                    while r.sentences.len() <= index {
                        r.sentences.push(Sentence::default());
                    }
                    r.sentences[index].text = text;
                    r.sentences[index].stream = Some(stream);
                }
                None
            }
            SpeechMsg::Audio {
                reply,
                index,
                chunk,
            } if self.is_current(reply) => {
                let stream = self
                    .reply
                    .as_mut()
                    .and_then(|r| r.sentences.get_mut(index))
                    .and_then(|s| {
                        let room = MAX_STREAM_BYTES.saturating_sub(s.audio.len());
                        s.audio.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        s.stream
                    });
                if let Some(stream) = stream {
                    self.driver.feed(self.media, stream, chunk).await;
                }
                None
            }
            SpeechMsg::SentenceDone { reply, index } if self.is_current(reply) => {
                let stream = self
                    .reply
                    .as_mut()
                    .and_then(|r| r.sentences.get_mut(index))
                    .and_then(|s| {
                        s.done = true;
                        s.stream
                    });
                if let Some(stream) = stream {
                    self.driver.end_stream(self.media, stream).await;
                }
                None
            }
            SpeechMsg::Done { reply, text, usage } if self.is_current(reply) => {
                debug!(reply, ?usage, "reply complete");
                self.history.push(ChatMessage::assistant(text));
                // A reply without a sentence: its opened slot closes empty.
                if let Some(stream) = self.reply.as_mut().and_then(|r| r.open_stream.take()) {
                    self.driver.end_stream(self.media, stream).await;
                }
                None
            }
            // From a reply that was cancelled since.
            _ => None,
        }
    }

    /// A playout event; reports the reply's first audio and starvation, and
    /// notes which sentence a barge-in cut.
    pub fn on_playout(&mut self, event: &PlayoutEvent) -> Option<CallEvent> {
        match event {
            PlayoutEvent::Started { label, .. } => {
                if let Some((reply, index)) = parse_label(label) {
                    if self.is_current(reply) {
                        let r = self.reply.as_mut()?;
                        let _ = index;
                        if !r.audible {
                            r.audible = true;
                            self.timing.first_generated.get_or_insert_with(Instant::now);
                            self.log_timing();
                            return Some(CallEvent::ReplyAudible);
                        }
                    }
                } else if self.timing.speech_end.is_some() && self.timing.first_filler.is_none() {
                    self.timing.first_filler = Some(Instant::now());
                }
                None
            }
            PlayoutEvent::Finished { label, end, .. } => {
                if let Some((reply, index)) = parse_label(label) {
                    if let Some(r) = self.reply.as_mut().filter(|r| r.id == reply) {
                        match end {
                            SegmentEnd::Completed => r.completed = r.completed.max(index + 1),
                            SegmentEnd::Interrupted => {
                                r.interrupted_at.get_or_insert(index);
                            }
                        }
                    }
                }
                None
            }
            PlayoutEvent::Starved { .. } => Some(CallEvent::Starved),
            PlayoutEvent::Idle { .. } => None,
        }
    }

    fn is_current(&self, reply: u64) -> bool {
        self.reply.as_ref().is_some_and(|r| r.id == reply)
    }

    async fn queue_stream(&mut self, index: usize) -> StreamId {
        self.streams += 1;
        let stream = StreamId(self.streams);
        let label = format!("{REPLY_LABEL}{}.{index}", self.replies);
        self.enqueued += 1;
        self.driver
            .enqueue(
                self.media,
                SegmentKind::Stream {
                    id: stream,
                    label: Arc::from(label.as_str()),
                },
            )
            .await;
        stream
    }

    /// Drops the current reply: its task, and its streams from the playout.
    async fn cancel(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        if let Some(task) = reply.task {
            task.abort();
        }
        let streams = reply
            .open_stream
            .into_iter()
            .chain(reply.sentences.iter().filter_map(|s| s.stream));
        for stream in streams {
            self.driver.remove_stream(self.media, stream).await;
        }
    }

    /// Queues the interrupted reply again, from the sentence it was in.
    async fn resume(&mut self) {
        let Some(reply) = self.reply.as_ref() else {
            return;
        };
        let from = reply.interrupted_at.unwrap_or(reply.completed);
        let count = reply.sentences.len();
        let reply_id = reply.id;
        info!(
            reply = reply_id,
            from_sentence = from,
            "resuming the reply after a false interruption"
        );
        if count == 0 || from >= count {
            // Nothing spoken yet (or all of it was): a fresh slot for what comes.
            if reply.open_stream.is_some() || count == 0 {
                let stream = self.queue_stream(0).await;
                if let Some(r) = self.reply.as_mut() {
                    r.open_stream = Some(stream);
                    r.interrupted_at = None;
                }
            }
            return;
        }
        for index in from..count {
            let stream = self.queue_stream(index).await;
            let (audio, done) = match self.reply.as_mut().and_then(|r| r.sentences.get_mut(index)) {
                Some(s) => {
                    s.stream = Some(stream);
                    (s.audio.clone(), s.done)
                }
                None => continue,
            };
            if !audio.is_empty() {
                self.driver.feed(self.media, stream, audio).await;
            }
            if done {
                self.driver.end_stream(self.media, stream).await;
            }
        }
        if let Some(r) = self.reply.as_mut() {
            r.interrupted_at = None;
        }
    }

    fn log_timing(&self) {
        let t = self.timing;
        let ms = |a: Option<Instant>| match (t.speech_end, a) {
            (Some(end), Some(at)) => Some(at.saturating_duration_since(end).as_millis() as u64),
            _ => None,
        };
        info!(
            end_of_speech_to_filler_ms = ?ms(t.first_filler),
            end_of_speech_to_generated_ms = ?ms(t.first_generated),
            "turn timing"
        );
    }
}

/// `reply#<reply>.<sentence>` → (reply, sentence).
fn parse_label(label: &str) -> Option<(u64, usize)> {
    let rest = label.strip_prefix(REPLY_LABEL)?;
    let (reply, index) = rest.split_once('.')?;
    Some((reply.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_labels_round_trip() {
        assert_eq!(parse_label("reply#3.2"), Some((3, 2)));
        assert_eq!(parse_label("filler_hum"), None);
        assert_eq!(parse_label("reply#x.1"), None);
    }
}
