//! The reply book's shell: carries out what the pure
//! [`crate::conversation::reply_book::ReplyBook`] asks (streams on
//! the media, provider tasks started and stopped, replies spoken for the
//! record) and feeds it what comes back (provider messages, playout events).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::PhraseCache;
use crate::call::reply::{self, chat, failure, Providers};
use crate::conversation::reply_book::{BookConfig, BookOp, Heard, Made, ReplyBook};
use crate::conversation::{turn_text, CallAction, CallEvent};
use crate::media::codec::Codec;
use crate::media::handle::MediaHandle;
use crate::media::playout::{
    PlayoutEvent, SegmentEnd, SegmentKind, SegmentTag, StreamId, MAX_STREAM_BYTES,
};
use crate::providers::stt::SttSession;
use crate::providers::ProviderError;
use crate::timeline::{CallTrace, Mark};
use tracing::{debug, Instrument};

/// Messages queued from provider tasks to the call.
pub const SPEECH_QUEUE: usize = 256;

pub struct SpeechSession {
    book: ReplyBook,
    providers: Providers,
    cache: Arc<PhraseCache>,
    tx: mpsc::Sender<Made>,
    /// The task making a reply, by reply id.
    making: Option<(u64, JoinHandle<()>)>,
    /// The codec the current reply's audio is made in (the call's when it
    /// was asked for; a re-offer may have changed the call's since).
    made_in: Codec,
    /// The classification being made, by id.
    classification: Option<(u64, JoinHandle<()>)>,
    /// Texts of replies generated to their end, for the call record.
    pub spoken: Vec<String>,
    /// The call's timeline, metrics and usage.
    trace: CallTrace,
    /// A streaming recogniser's session, hearing the caller's turn in
    /// progress.
    listening: Option<Box<dyn SttSession>>,
    /// The task handing that session's partial transcripts to the call.
    partials: Option<JoinHandle<()>>,
    /// Samples of the caller's turn the session heard.
    streamed: usize,
    /// The session's latest partial transcript, and when it came.
    partial: Option<(String, Instant)>,
    /// The caller is speaking (between the VAD's start and end): only then
    /// do partial transcripts say whether the turn is left open.
    speaking: bool,
}

/// A partial transcript unchanged this long at the end of the turn is
/// taken as the turn's transcript (the reply is asked for on it).
const STABLE_PARTIAL: std::time::Duration = std::time::Duration::from_millis(200);

impl Drop for SpeechSession {
    fn drop(&mut self) {
        // A reply still being made when the call ends: stop paying for it.
        for (_, task) in self
            .making
            .take()
            .into_iter()
            .chain(self.classification.take())
        {
            task.abort();
        }
        if let Some(task) = self.partials.take() {
            task.abort();
        }
    }
}

impl SpeechSession {
    pub fn new(
        providers: Providers,
        cache: Arc<PhraseCache>,
        trace: CallTrace,
    ) -> (Self, mpsc::Receiver<Made>) {
        let (tx, rx) = mpsc::channel(SPEECH_QUEUE);
        let book = ReplyBook::new(BookConfig {
            system_prompt: providers.system_prompt.clone(),
            history_turns: providers.history_turns,
            max_sentence_bytes: MAX_STREAM_BYTES,
        });
        (
            Self {
                book,
                providers,
                cache,
                tx,
                making: None,
                made_in: Codec::default(),
                classification: None,
                spoken: Vec::new(),
                trace,
                listening: None,
                partials: None,
                streamed: 0,
                partial: None,
                speaking: false,
            },
            rx,
        )
    }

    /// The caller started speaking: a streaming recogniser starts
    /// listening (its connection opens while they speak).
    pub fn caller_started(&mut self) {
        let Some(stt) = self.providers.stt.as_ref().filter(|s| s.streaming()) else {
            return;
        };
        let mut session = stt.session();
        if let Some(task) = self.partials.take() {
            task.abort();
        }
        if let Some(mut partials) = session.partials() {
            let tx = self.tx.clone();
            self.partials = Some(tokio::spawn(
                async move {
                    while let Some(text) = partials.recv().await {
                        if tx.send(Made::Partial { text }).await.is_err() {
                            break;
                        }
                    }
                }
                .in_current_span(),
            ));
        }
        self.listening = Some(session);
        self.streamed = 0;
        self.partial = None;
        self.speaking = true;
    }

    /// The caller's turn ended and is not transcribed (the conversation
    /// did not take it up): its stream is closed.
    pub fn turn_not_heard(&mut self) {
        self.listening = None;
        self.partial = None;
        self.speaking = false;
        if let Some(task) = self.partials.take() {
            task.abort();
        }
    }

    /// The caller's words as they are spoken, to the streaming recogniser.
    pub fn caller_audio(&mut self, pcm: &[i16]) {
        if let Some(session) = self.listening.as_mut() {
            session.push(pcm);
            self.streamed += pcm.len();
        }
    }

    /// The caller's turn just ended: its audio is kept for `Transcribe`.
    pub fn caller_stopped(&mut self, utterance: &[i16]) {
        self.speaking = false;
        self.book
            .caller_stopped(Instant::now().into_std(), utterance);
    }

    /// Carries out a speech action; false for actions that are not the
    /// book's.
    pub async fn act(&mut self, action: &CallAction, media: &mut MediaHandle) -> bool {
        let taken = self.book.handle_action(action);
        self.carry_out(media).await;
        taken
    }

    /// A message from the provider tasks; some become conversation events.
    pub async fn on_message(&mut self, made: Made, media: &mut MediaHandle) -> Option<CallEvent> {
        if let Made::Partial { text } = &made {
            debug!(chars = text.len(), "partial transcript");
            self.trace.mark(Mark::Partial);
            if self.listening.is_some() {
                self.partial = Some((text.clone(), Instant::now()));
                if self.speaking {
                    let open = turn_text::sounds_unfinished(text);
                    if open {
                        debug!("the caller's words so far leave the turn open");
                    }
                    media.set_words_open(open);
                }
            }
        }
        let event = self.book.handle_made(made);
        if let Some(CallEvent::TranscriptCorrected(_)) = &event {
            self.trace.metrics().speculative_restarts.inc();
        }
        self.carry_out(media).await;
        event
    }

    /// A playout event; reports the reply's first audio and starvation.
    pub fn on_playout(&mut self, event: &PlayoutEvent) -> Option<CallEvent> {
        let heard = match event {
            PlayoutEvent::Started { tag, .. } => Heard::Started {
                reply: match *tag {
                    SegmentTag::Reply { reply, sentence } => Some((reply, sentence)),
                    _ => None,
                },
            },
            PlayoutEvent::Finished {
                tag: SegmentTag::Reply { reply, sentence },
                end,
                ..
            } => Heard::Finished {
                reply: *reply,
                sentence: *sentence,
                interrupted: *end == SegmentEnd::Interrupted,
            },
            PlayoutEvent::Starved { stream, .. } => Heard::Starved { stream: stream.0 },
            PlayoutEvent::Finished { .. } | PlayoutEvent::Idle { .. } => return None,
        };
        // What the playout did never asks for an operation of its own.
        self.book.handle_playout(Instant::now().into_std(), heard)
    }

    /// The book's operations, carried out in order.
    async fn carry_out(&mut self, media: &mut MediaHandle) {
        while let Some(op) = self.book.poll_op() {
            match op {
                BookOp::OpenStream {
                    stream,
                    reply,
                    sentence,
                } => {
                    let id = StreamId(stream);
                    let segment = SegmentKind::Stream {
                        id,
                        reply,
                        sentence,
                    };
                    media.enqueue(segment).await;
                }
                BookOp::Feed { stream, audio } => {
                    let codec = media.codec();
                    let audio = if self.made_in == codec {
                        audio
                    } else {
                        crate::media::codec::transcode(self.made_in, codec, &audio)
                    };
                    media.feed(StreamId(stream), audio).await
                }
                BookOp::EndStream(stream) => media.end_stream(StreamId(stream)).await,
                BookOp::RemoveStream(stream) => media.remove_stream(StreamId(stream)).await,
                BookOp::PlayFiller { key, before } => {
                    if let Some(clip) = self.trace.cached(&self.cache, &key, media.codec()) {
                        let clip = SegmentKind::Filler(clip.clone());
                        match before {
                            Some(stream) => media.enqueue_before(StreamId(stream), clip).await,
                            None => media.enqueue(clip).await,
                        }
                    }
                }
                BookOp::Transcribe { turn, audio } => match &self.providers.stt {
                    Some(stt) => {
                        // The stream heard this turn only when it is one
                        // utterance (a caller who paused and went on: the
                        // whole turn goes to a new session).
                        let streamed = self
                            .listening
                            .take()
                            .filter(|_| audio.len() <= self.streamed);
                        let stable = self.partial.take().filter(|(text, at)| {
                            !text.trim().is_empty()
                                && Instant::now().saturating_duration_since(*at) >= STABLE_PARTIAL
                        });
                        if let (true, true, Some((text, _))) =
                            (self.providers.speculate, streamed.is_some(), stable)
                        {
                            self.trace.metrics().speculative_replies.inc();
                            self.missing(Made::Speculative { turn, text });
                        }
                        reply::transcribe(
                            stt.as_ref(),
                            streamed,
                            turn,
                            &audio,
                            self.tx.clone(),
                            self.trace.clone(),
                        )
                    }
                    None => self.missing(Made::Transcript {
                        turn,
                        result: Err(failure(ProviderError::NotConfigured("stt"))),
                    }),
                },
                BookOp::Generate { reply, prompt } => {
                    let (llm, tts) = (self.providers.llm.clone(), self.providers.tts.clone());
                    match (llm, tts) {
                        (Some(llm), Some(tts)) => {
                            let messages = prompt.into_iter().map(chat).collect();
                            let (tx, codec) = (self.tx.clone(), media.codec());
                            let trace = self.trace.clone();
                            let task = reply::generate(llm, tts, reply, messages, codec, tx, trace);
                            self.replace_making(reply, task, codec);
                        }
                        (llm, _) => {
                            let missing = if llm.is_none() { "llm" } else { "tts" };
                            self.missing(Made::Failed {
                                reply,
                                error: failure(ProviderError::NotConfigured(missing)),
                            });
                        }
                    }
                }
                BookOp::Speak { reply, text } => match self.providers.tts.clone() {
                    Some(tts) => {
                        let (tx, codec) = (self.tx.clone(), media.codec());
                        let trace = self.trace.clone();
                        let task = reply::speak_text(tts, reply, text, codec, tx, trace);
                        self.replace_making(reply, task, codec);
                    }
                    None => self.missing(Made::Failed {
                        reply,
                        error: failure(ProviderError::NotConfigured("tts")),
                    }),
                },
                BookOp::Classify { id, prompt } => match self.providers.llm.clone() {
                    Some(llm) => {
                        let messages = prompt.into_iter().map(chat).collect();
                        let task =
                            reply::classify(llm, id, messages, self.tx.clone(), self.trace.clone());
                        if let Some((_, old)) = self.classification.replace((id, task)) {
                            old.abort();
                        }
                    }
                    None => self.missing(Made::Classified {
                        id,
                        result: Err(failure(ProviderError::NotConfigured("llm"))),
                    }),
                },
                BookOp::StopReply(reply) => stop(&mut self.making, reply),
                BookOp::StopClassify(id) => stop(&mut self.classification, id),
                BookOp::Spoken(text) => self.spoken.push(text),
            }
        }
    }

    fn replace_making(&mut self, reply: u64, task: JoinHandle<()>, codec: Codec) {
        self.made_in = codec;
        if let Some((_, old)) = self.making.replace((reply, task)) {
            // Finished already (the book stops a reply it drops).
            old.abort();
        }
    }

    /// What a provider that is not configured would have answered, queued
    /// like a real answer.
    fn missing(&self, made: Made) {
        let _ = self.tx.try_send(made);
    }
}

/// Aborts the task of `id`, when it is the one running.
fn stop(task: &mut Option<(u64, JoinHandle<()>)>, id: u64) {
    if task.as_ref().is_some_and(|(current, _)| *current == id) {
        if let Some((_, task)) = task.take() {
            task.abort();
        }
    }
}
