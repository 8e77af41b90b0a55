//! The tokio side of turn-taking: carries out the conversation's speech
//! actions (transcribe, open/generate/pause/resume/cancel a reply, fillers in
//! front of a waiting reply) on the media driver and the providers, and turns
//! what comes back (transcripts, reply audio, playout events) into
//! conversation events.
//!
//! A reply is a series of streamed segments, one per sentence. A slot (an
//! empty stream) always waits behind what is queued while the reply is being
//! made: the first is opened as soon as the caller stops talking, the next
//! one as soon as a sentence is queued. So the reply plays the moment its
//! audio is there, the playout's starvation report covers a late provider
//! (another filler), and the queue runs dry only when the reply is over.
//! Every sentence's audio is also kept here: when the caller talks over the
//! reply it is paused (made, not played) and, if that was only a cough or an
//! "mhm", queued again from the sentence it was in.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::PhraseCache;
use crate::call::reply::{self, Providers, SpeechMsg};
use crate::conversation::{CallAction, CallEvent};
use crate::media::handle::MediaHandle;
use crate::media::playout::{
    PlayoutEvent, SegmentEnd, SegmentKind, SegmentTag, StreamId, MAX_STREAM_BYTES,
};
use crate::providers::llm::ChatMessage;
use crate::providers::ProviderError;
use crate::timeline::CallTrace;

/// Messages queued from speech tasks to the call.
pub const SPEECH_QUEUE: usize = 256;
/// Caller audio kept for one turn (a turn the caller resumes after a pause
/// is transcribed whole): 60 s.
const MAX_TURN_SAMPLES: usize = 8000 * 60;

#[derive(Debug, Default)]
struct Sentence {
    /// Audio so far (kept to resume after a false interruption), bounded.
    audio: Vec<u8>,
    done: bool,
    /// The playout stream now carrying it (none while paused).
    stream: Option<StreamId>,
}

#[derive(Debug, Default)]
struct Reply {
    id: u64,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The waiting slot: becomes the next sentence's stream.
    slot: Option<StreamId>,
    sentences: Vec<Sentence>,
    /// The caller talks over it: keep making it, play none of it.
    paused: bool,
    /// Index of the sentence playing when the caller barged in.
    interrupted_at: Option<usize>,
    /// Sentences heard to their end.
    completed: usize,
    /// Generation finished.
    done: bool,
    audible: bool,
}

/// What a reply is made of.
enum ReplyKind {
    /// The LLM's answer to these messages, through TTS.
    Generate(Vec<ChatMessage>),
    /// This text, through TTS.
    Speak(String),
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
    cache: Arc<PhraseCache>,
    tx: mpsc::Sender<SpeechMsg>,
    /// The caller's audio of the turn not yet answered (several utterances
    /// when the caller paused and went on).
    turn_audio: Vec<i16>,
    /// Number of the latest transcription asked for.
    turn: u64,
    history: Vec<ChatMessage>,
    reply: Option<Reply>,
    replies: u64,
    streams: u64,
    /// The stream the last `Starved` was about: the filler goes before it.
    starved: Option<StreamId>,
    timing: TurnTiming,
    /// The classification being made, by id.
    classification: Option<(u64, tokio::task::JoinHandle<()>)>,
    /// Texts of replies generated to their end, for the call record.
    pub spoken: Vec<String>,
    /// The call's timeline, metrics and usage.
    trace: CallTrace,
}

impl Drop for SpeechSession {
    fn drop(&mut self) {
        // A reply still being made when the call ends: stop paying for it.
        if let Some(task) = self.reply.as_mut().and_then(|r| r.task.take()) {
            task.abort();
        }
        if let Some((_, task)) = self.classification.take() {
            task.abort();
        }
    }
}

impl SpeechSession {
    pub fn new(
        providers: Providers,
        cache: Arc<PhraseCache>,
        trace: CallTrace,
    ) -> (Self, mpsc::Receiver<SpeechMsg>) {
        let (tx, rx) = mpsc::channel(SPEECH_QUEUE);
        (
            Self {
                providers,
                cache,
                tx,
                turn_audio: Vec::new(),
                turn: 0,
                history: Vec::new(),
                reply: None,
                replies: 0,
                streams: 0,
                starved: None,
                timing: TurnTiming::default(),
                classification: None,
                spoken: Vec::new(),
                trace,
            },
            rx,
        )
    }

    /// The caller's turn just ended: keep its audio for `Transcribe`.
    pub fn caller_stopped(&mut self, utterance: Vec<i16>) {
        let room = MAX_TURN_SAMPLES.saturating_sub(self.turn_audio.len());
        self.turn_audio
            .extend_from_slice(&utterance[..utterance.len().min(room)]);
        self.timing = TurnTiming {
            speech_end: Some(Instant::now()),
            ..TurnTiming::default()
        };
    }

    /// Carries out a speech action; returns false for actions that are not
    /// the session's.
    pub async fn act(&mut self, action: &CallAction, media: &mut MediaHandle) -> bool {
        match action {
            CallAction::Transcribe => {
                // The whole turn so far: an earlier transcription (of its
                // first part) is superseded.
                self.turn += 1;
                match &self.providers.stt {
                    Some(stt) => reply::transcribe(
                        stt.as_ref(),
                        self.turn,
                        &self.turn_audio,
                        self.tx.clone(),
                        self.trace.clone(),
                    ),
                    None => {
                        let _ = self.tx.try_send(SpeechMsg::Transcript {
                            turn: self.turn,
                            result: Err(ProviderError::NotConfigured("stt")),
                        });
                    }
                }
            }
            CallAction::OpenReply => {
                self.cancel(media).await;
                self.replies += 1;
                let slot = self.queue_stream(0, media).await;
                self.reply = Some(Reply {
                    id: self.replies,
                    slot: Some(slot),
                    ..Reply::default()
                });
            }
            CallAction::Generate(text) => {
                self.history.push(ChatMessage::user(text.clone()));
                let keep = self.providers.history_turns.max(1);
                let excess = self.history.len().saturating_sub(keep * 2);
                self.history.drain(..excess);
                let messages = reply::messages(&self.providers.system_prompt, &self.history, keep);
                self.start_reply(ReplyKind::Generate(messages), media).await;
                self.turn_audio.clear();
            }
            CallAction::Compose(instruction) => {
                let messages = vec![
                    ChatMessage::system(self.providers.system_prompt.clone()),
                    ChatMessage::user(instruction.clone()),
                ];
                self.start_reply(ReplyKind::Generate(messages), media).await;
            }
            CallAction::Speak(text) => {
                self.start_reply(ReplyKind::Speak(text.clone()), media)
                    .await
            }
            CallAction::Classify { id, system, text } => {
                if let Some((_, task)) = self.classification.take() {
                    task.abort();
                }
                match self.providers.llm.clone() {
                    Some(llm) => {
                        info!(classification = id, "classifying the problem");
                        let messages = vec![
                            ChatMessage::system(system.clone()),
                            ChatMessage::user(text.clone()),
                        ];
                        let task = reply::classify(
                            llm,
                            *id,
                            messages,
                            self.tx.clone(),
                            self.trace.clone(),
                        );
                        self.classification = Some((*id, task));
                    }
                    None => {
                        let _ = self.tx.try_send(SpeechMsg::Classified {
                            id: *id,
                            result: Err(ProviderError::NotConfigured("llm")),
                        });
                    }
                }
                self.turn_audio.clear();
            }
            CallAction::CancelReply => {
                self.cancel(media).await;
                self.turn_audio.clear();
            }
            CallAction::PauseReply => self.pause(media).await,
            CallAction::ResumeReply => {
                self.turn_audio.clear();
                self.resume(media).await;
            }
            CallAction::PlayFront(key) => {
                if let Some(clip) = self.trace.cached(&self.cache, key) {
                    let clip = SegmentKind::Clip(clip.clone());
                    // Only a `Starved` stream asks for a filler in front.
                    match self.starved.take() {
                        Some(stream) => media.enqueue_before(stream, clip).await,
                        None => media.enqueue(clip).await,
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// A message from the speech tasks; some become conversation events.
    pub async fn on_message(
        &mut self,
        msg: SpeechMsg,
        media: &mut MediaHandle,
    ) -> Option<CallEvent> {
        match msg {
            SpeechMsg::Transcript { turn, .. } if turn != self.turn => {
                debug!(
                    turn,
                    latest = self.turn,
                    "transcript of an earlier part of the turn dropped"
                );
                None
            }
            SpeechMsg::Transcript {
                result: Ok(text), ..
            } => {
                info!(chars = text.chars().count(), "transcript");
                Some(CallEvent::Transcript(text))
            }
            SpeechMsg::Transcript {
                result: Err(error), ..
            } => {
                warn!(%error, kind = error.kind(), "speech-to-text failed");
                Some(CallEvent::TranscriptFailed)
            }
            SpeechMsg::Classified { id, result } => {
                if self
                    .classification
                    .as_ref()
                    .is_some_and(|(current, _)| *current == id)
                {
                    self.classification = None;
                }
                let reply = match result {
                    Ok(text) => {
                        info!(classification = id, answer = %crate::text::cut(&text, 40), "problem classified");
                        Some(text)
                    }
                    Err(error) => {
                        warn!(%error, kind = error.kind(), "classification failed");
                        None
                    }
                };
                Some(CallEvent::Classified { id, reply })
            }
            SpeechMsg::Failed { reply, error } if self.is_current(reply) => {
                warn!(%error, kind = error.kind(), "reply generation failed");
                Some(CallEvent::ReplyFailed)
            }
            SpeechMsg::Sentence { reply, index, .. } if self.is_current(reply) => {
                let paused = self.reply.as_ref().is_some_and(|r| r.paused);
                let stream = if paused {
                    None
                } else {
                    // The waiting slot carries it; a new slot waits behind it.
                    let stream = match self.reply.as_mut().and_then(|r| r.slot.take()) {
                        Some(stream) => stream,
                        None => self.queue_stream(index, media).await,
                    };
                    let next = self.queue_stream(index + 1, media).await;
                    if let Some(r) = self.reply.as_mut() {
                        r.slot = Some(next);
                    }
                    Some(stream)
                };
                if let Some(r) = self.reply.as_mut() {
                    while r.sentences.len() <= index {
                        r.sentences.push(Sentence::default());
                    }
                    r.sentences[index].stream = stream;
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
                    media.feed(stream, chunk).await;
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
                    media.end_stream(stream).await;
                }
                None
            }
            SpeechMsg::Done {
                reply,
                text,
                sentences,
            } if self.is_current(reply) => {
                debug!(reply, sentences, "reply complete");
                if let Some(r) = self.reply.as_mut() {
                    r.done = true;
                    r.task = None;
                }
                // The slot waiting for a next sentence closes empty.
                if let Some(slot) = self.reply.as_mut().and_then(|r| r.slot.take()) {
                    media.end_stream(slot).await;
                }
                if sentences == 0 {
                    // Nothing to say (a filter, an empty completion): that is
                    // a failure for the caller, who would hear nothing.
                    warn!(reply, "the reply had nothing to say");
                    return Some(CallEvent::ReplyFailed);
                }
                self.spoken.push(text.clone());
                self.history.push(ChatMessage::assistant(text));
                Some(CallEvent::ReplyDone)
            }
            // From a reply that was cancelled since.
            _ => None,
        }
    }

    /// A playout event; reports the reply's first audio and starvation, and
    /// notes which sentence a barge-in cut.
    pub fn on_playout(&mut self, event: &PlayoutEvent) -> Option<CallEvent> {
        match event {
            PlayoutEvent::Started { tag, .. } => {
                if let &SegmentTag::Reply { reply, .. } = tag {
                    let r = self.reply.as_mut().filter(|r| r.id == reply)?;
                    if !r.audible {
                        r.audible = true;
                        self.timing.first_generated.get_or_insert_with(Instant::now);
                        self.log_timing();
                        return Some(CallEvent::ReplyAudible);
                    }
                } else if self.timing.speech_end.is_some() && self.timing.first_filler.is_none() {
                    self.timing.first_filler = Some(Instant::now());
                }
                None
            }
            PlayoutEvent::Finished { tag, end, .. } => {
                if let &SegmentTag::Reply {
                    reply,
                    sentence: index,
                } = tag
                {
                    if let Some(r) = self.reply.as_mut().filter(|r| r.id == reply) {
                        match end {
                            // A slot that ended empty is done as well.
                            SegmentEnd::Completed | SegmentEnd::Silent => {
                                r.completed = r.completed.max(index + 1)
                            }
                            SegmentEnd::Interrupted => {
                                r.interrupted_at.get_or_insert(index);
                            }
                        }
                    }
                }
                None
            }
            PlayoutEvent::Starved { stream, .. } => {
                self.starved = Some(*stream);
                Some(CallEvent::Starved)
            }
            PlayoutEvent::Idle { .. } => None,
        }
    }

    /// Makes the current reply (its slot queued when it has none) and starts
    /// its task.
    async fn start_reply(&mut self, kind: ReplyKind, media: &mut MediaHandle) {
        if self.reply.as_ref().is_some_and(|r| r.task.is_some()) {
            // A generation already runs for this reply: start afresh.
            self.cancel(media).await;
        }
        if self.reply.is_none() {
            self.replies += 1;
            self.reply = Some(Reply {
                id: self.replies,
                ..Reply::default()
            });
        }
        // The reply's slot may have gone with a barge-in: queue one.
        if self.reply.as_ref().is_some_and(|r| r.slot.is_none()) {
            let slot = self.queue_stream(0, media).await;
            if let Some(r) = self.reply.as_mut() {
                r.slot = Some(slot);
                r.paused = false;
            }
        }
        let Some(id) = self.reply.as_ref().map(|r| r.id) else {
            return;
        };
        let (llm, tts) = (self.providers.llm.clone(), self.providers.tts.clone());
        let task = match (kind, llm, tts) {
            (ReplyKind::Generate(messages), Some(llm), Some(tts)) => {
                info!(reply = id, "generating");
                reply::generate(llm, tts, id, messages, self.tx.clone(), self.trace.clone())
            }
            (ReplyKind::Speak(text), _, Some(tts)) => {
                info!(reply = id, "speaking");
                reply::speak_text(tts, id, text, self.tx.clone(), self.trace.clone())
            }
            (_, llm, _) => {
                let missing = if llm.is_none() { "llm" } else { "tts" };
                let _ = self.tx.try_send(SpeechMsg::Failed {
                    reply: id,
                    error: ProviderError::NotConfigured(missing),
                });
                return;
            }
        };
        if let Some(r) = self.reply.as_mut() {
            r.task = Some(task);
        }
    }

    fn is_current(&self, reply: u64) -> bool {
        self.reply.as_ref().is_some_and(|r| r.id == reply)
    }

    async fn queue_stream(&mut self, index: usize, media: &mut MediaHandle) -> StreamId {
        self.streams += 1;
        let stream = StreamId(self.streams);
        media
            .enqueue(SegmentKind::Stream {
                id: stream,
                reply: self.replies,
                sentence: index,
            })
            .await;
        stream
    }

    /// The reply's streams, in the playout now.
    fn live_streams(reply: &Reply) -> Vec<StreamId> {
        reply
            .slot
            .into_iter()
            .chain(reply.sentences.iter().filter_map(|s| s.stream))
            .collect()
    }

    /// Drops the current reply: its task, and its streams from the playout.
    async fn cancel(&mut self, media: &mut MediaHandle) {
        let Some(mut reply) = self.reply.take() else {
            return;
        };
        if let Some(task) = reply.task.take() {
            task.abort();
        }
        for stream in Self::live_streams(&reply) {
            media.remove_stream(stream).await;
        }
    }

    /// The caller talks over the reply: none of it plays until resumed (the
    /// playout was already cleared; its streams are let go).
    async fn pause(&mut self, media: &mut MediaHandle) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        reply.paused = true;
        let streams = Self::live_streams(reply);
        reply.slot = None;
        for sentence in &mut reply.sentences {
            sentence.stream = None;
        }
        for stream in streams {
            media.remove_stream(stream).await;
        }
    }

    /// Queues the interrupted reply again, from the sentence it was in, and a
    /// slot for what is still to come.
    async fn resume(&mut self, media: &mut MediaHandle) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        reply.paused = false;
        let from = reply.interrupted_at.take().unwrap_or(reply.completed);
        let count = reply.sentences.len();
        let done = reply.done;
        info!(
            reply = reply.id,
            from_sentence = from,
            "resuming the reply after a false interruption"
        );
        for index in from..count {
            let stream = self.queue_stream(index, media).await;
            let (audio, finished) =
                match self.reply.as_mut().and_then(|r| r.sentences.get_mut(index)) {
                    Some(s) => {
                        s.stream = Some(stream);
                        (s.audio.clone(), s.done)
                    }
                    None => continue,
                };
            if !audio.is_empty() {
                media.feed(stream, audio).await;
            }
            if finished {
                media.end_stream(stream).await;
            }
        }
        if !done {
            let slot = self.queue_stream(count, media).await;
            if let Some(r) = self.reply.as_mut() {
                r.slot = Some(slot);
            }
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
