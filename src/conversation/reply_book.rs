//! The reply book: turn-taking's bookkeeping of generated replies, as a
//! sans-IO state machine.
//!
//! The conversation decides *that* a reply is opened, generated, paused,
//! resumed or dropped ([`CallAction`]); the book decides *how*: which
//! playout streams carry it, which provider requests make it, what is kept
//! to play it again. It takes the conversation's speech actions
//! ([`ReplyBook::handle_action`]), what the providers made
//! ([`ReplyBook::handle_made`]) and what the playout did
//! ([`ReplyBook::handle_playout`]), and gives out operations
//! ([`ReplyBook::poll_op`]: media streams to open, feed, end or remove;
//! provider requests to start or stop; replies spoken, for the record).
//! The call's shell carries them out; nothing here does I/O or reads a
//! clock.
//!
//! A reply is a series of streamed segments, one per sentence. A slot (an
//! empty stream) always waits behind what is queued while the reply is being
//! made: the first is opened as soon as the caller stops talking, the next
//! one as soon as a sentence is announced. So the reply plays the moment its
//! audio is there, the playout's starvation report covers a late provider
//! (another filler goes in front of the starved stream), and the queue runs
//! dry only when the reply is over. Every sentence's audio is also kept:
//! when the caller talks over the reply it is paused (made, not played) and,
//! if that was only a cough or an "mhm", queued again from the sentence it
//! was in.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::conversation::{CallAction, CallEvent};

/// Caller audio kept for one turn (a turn the caller resumes after a pause
/// is transcribed whole): 60 s at 8 kHz.
pub const MAX_TURN_SAMPLES: usize = 8000 * 60;

/// What the book needs to know of the call.
#[derive(Debug, Clone)]
pub struct BookConfig {
    /// The LLM's system prompt, first of every prompt.
    pub system_prompt: String,
    /// Exchanges (caller + bot) of the conversation kept in a prompt.
    pub history_turns: usize,
    /// Audio kept per sentence to resume it (bytes), bounded like the
    /// playout's own streams.
    pub max_sentence_bytes: usize,
}

/// Who says a line of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One line of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub role: Role,
    pub text: String,
}

impl Line {
    fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
        }
    }
}

/// A provider request that failed, as the book logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short class of the error (`timeout`, `http`, `not_configured`…).
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the providers made, for the book.
#[derive(Debug)]
pub enum Made {
    /// The transcript of the caller's turn `turn` (only the latest counts).
    Transcript {
        turn: u64,
        result: Result<String, Failure>,
    },
    /// Sentence `index` of reply `reply` is complete and goes to TTS.
    Sentence { reply: u64, index: usize },
    /// Audio of sentence `index` (the call's codec, as the playout takes it).
    Audio {
        reply: u64,
        index: usize,
        chunk: Vec<u8>,
    },
    /// Sentence `index` is all synthesised.
    SentenceDone { reply: u64, index: usize },
    /// The reply is generated; `sentences` were spoken (0: nothing to say).
    Done {
        reply: u64,
        text: String,
        sentences: usize,
    },
    /// Making reply `reply` failed.
    Failed { reply: u64, error: Failure },
    /// The LLM's answer to classification `id`.
    Classified {
        id: u64,
        result: Result<String, Failure>,
    },
    /// A streaming recogniser's transcript so far of the caller's words.
    Partial { text: String },
    /// The transcript of turn `turn` taken from its stable partial, before
    /// the final one.
    Speculative { turn: u64, text: String },
}

/// What the playout did, for the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A segment started playing: sentence `.1` of reply `.0`, or a phrase
    /// or silence (`None`).
    Started { reply: Option<(u64, usize)> },
    /// Sentence `sentence` of reply `reply` left the playout: played out
    /// (or ended empty), or cut by a barge-in.
    Finished {
        reply: u64,
        sentence: usize,
        interrupted: bool,
    },
    /// Stream `stream` is at the head of the queue with no audio yet.
    Starved { stream: u64 },
}

/// What the book asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookOp {
    /// Queue an empty stream for sentence `sentence` of reply `reply`.
    OpenStream {
        stream: u64,
        reply: u64,
        sentence: usize,
    },
    /// Audio for a queued stream.
    Feed { stream: u64, audio: Vec<u8> },
    /// No more audio comes for this stream.
    EndStream(u64),
    /// Take this stream out of the playout.
    RemoveStream(u64),
    /// Play this cached filler: in front of the starved stream `before`,
    /// or behind what is queued.
    PlayFiller { key: String, before: Option<u64> },
    /// Transcribe the caller's turn so far (supersedes earlier turns).
    Transcribe { turn: u64, audio: Vec<i16> },
    /// Make reply `reply`: the LLM's answer to `prompt`, through TTS.
    Generate { reply: u64, prompt: Vec<Line> },
    /// Make reply `reply`: this text, through TTS.
    Speak { reply: u64, text: String },
    /// Ask the LLM for classification `id`.
    Classify { id: u64, prompt: Vec<Line> },
    /// Stop making reply `reply` (stop paying for it).
    StopReply(u64),
    /// Stop classification `id`.
    StopClassify(u64),
    /// A reply was generated to its end: its text, for the call record.
    Spoken(String),
}

#[derive(Debug, Default)]
struct Sentence {
    /// Audio so far (kept to resume after a false interruption), bounded.
    audio: Vec<u8>,
    done: bool,
    /// The playout stream now carrying it (none while paused).
    stream: Option<u64>,
}

#[derive(Debug, Default)]
struct Reply {
    id: u64,
    /// A provider request makes it now.
    making: bool,
    /// The waiting slot: becomes the next sentence's stream.
    slot: Option<u64>,
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

impl Reply {
    /// Lets go of the audio of the sentences heard to their end: a resumed
    /// reply starts at the sentence a barge-in cut, or after the last one
    /// heard, never before (a reply's audio is otherwise held for the rest
    /// of the call, until the next reply replaces it).
    fn release_heard(&mut self) {
        let replayable = self
            .interrupted_at
            .map_or(self.completed, |cut| cut.min(self.completed));
        for sentence in self.sentences.iter_mut().take(replayable) {
            sentence.audio = Vec::new();
        }
    }

    /// The reply's streams, in the playout now.
    fn live_streams(&self) -> impl Iterator<Item = u64> + '_ {
        self.slot
            .into_iter()
            .chain(self.sentences.iter().filter_map(|s| s.stream))
    }
}

/// What a reply is made of.
enum Making {
    Generate(Vec<Line>),
    Speak(String),
}

/// Timings of one turn, logged for the benchmark.
#[derive(Debug, Default, Clone, Copy)]
struct TurnTiming {
    speech_end: Option<Instant>,
    first_filler: Option<Instant>,
    first_generated: Option<Instant>,
}

/// The same words, whatever their case and punctuation: a final
/// transcript that says this says what the speculative one said.
fn same_words(a: &str, b: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    words(a) == words(b)
}

/// The replies of one call (see the module doc).
#[derive(Debug)]
pub struct ReplyBook {
    config: BookConfig,
    /// The caller's audio of the turn not yet answered (several utterances
    /// when the caller paused and went on).
    turn_audio: Vec<i16>,
    /// Number of the latest transcription asked for.
    turn: u64,
    /// The conversation so far (caller and bot lines).
    history: Vec<Line>,
    reply: Option<Reply>,
    replies: u64,
    streams: u64,
    /// The stream the last `Starved` was about: a filler goes before it.
    starved: Option<u64>,
    timing: TurnTiming,
    /// The classification being made.
    classification: Option<u64>,
    /// The turn answered on its speculative transcript, and that text.
    speculated: Option<(u64, String)>,
    ops: VecDeque<BookOp>,
}

impl ReplyBook {
    pub fn new(config: BookConfig) -> Self {
        Self {
            config,
            turn_audio: Vec::new(),
            turn: 0,
            history: Vec::new(),
            reply: None,
            replies: 0,
            streams: 0,
            starved: None,
            timing: TurnTiming::default(),
            classification: None,
            speculated: None,
            ops: VecDeque::new(),
        }
    }

    /// The turn's audio is transcribed or no longer needed: its memory goes
    /// too (a turn's capacity kept between turns is held for the whole call).
    fn forget_turn_audio(&mut self) {
        self.turn_audio = Vec::new();
    }

    /// The next operation for the shell.
    pub fn poll_op(&mut self) -> Option<BookOp> {
        self.ops.pop_front()
    }

    /// The caller's turn just ended at `now`: keep its audio for
    /// `Transcribe` (bounded by [`MAX_TURN_SAMPLES`]).
    pub fn caller_stopped(&mut self, now: Instant, utterance: &[i16]) {
        let room = MAX_TURN_SAMPLES.saturating_sub(self.turn_audio.len());
        self.turn_audio
            .extend_from_slice(&utterance[..utterance.len().min(room)]);
        self.timing = TurnTiming {
            speech_end: Some(now),
            ..TurnTiming::default()
        };
    }

    /// Takes a speech action of the conversation; false for actions that
    /// are not the book's.
    pub fn handle_action(&mut self, action: &CallAction) -> bool {
        match action {
            CallAction::Transcribe => {
                // The whole turn so far: an earlier transcription (of its
                // first part) is superseded.
                self.turn += 1;
                self.speculated = None;
                self.ops.push_back(BookOp::Transcribe {
                    turn: self.turn,
                    audio: self.turn_audio.clone(),
                });
            }
            CallAction::OpenReply => {
                self.cancel();
                self.replies += 1;
                let id = self.replies;
                let slot = self.open_stream(id, 0);
                self.reply = Some(Reply {
                    id,
                    slot: Some(slot),
                    ..Reply::default()
                });
            }
            CallAction::Generate(text) => {
                self.history.push(Line::new(Role::User, text.clone()));
                let keep = self.config.history_turns.max(1) * 2;
                let excess = self.history.len().saturating_sub(keep);
                self.history.drain(..excess);
                let mut prompt = vec![Line::new(Role::System, &self.config.system_prompt)];
                prompt.extend_from_slice(&self.history);
                self.start_reply(Making::Generate(prompt));
                self.forget_turn_audio();
            }
            CallAction::Compose(instruction) => {
                let prompt = vec![
                    Line::new(Role::System, &self.config.system_prompt),
                    Line::new(Role::User, instruction.clone()),
                ];
                self.start_reply(Making::Generate(prompt));
            }
            CallAction::Speak(text) => self.start_reply(Making::Speak(text.clone())),
            CallAction::Classify { id, system, text } => {
                if let Some(old) = self.classification.take() {
                    self.ops.push_back(BookOp::StopClassify(old));
                }
                info!(classification = id, "classifying the problem");
                self.ops.push_back(BookOp::Classify {
                    id: *id,
                    prompt: vec![
                        Line::new(Role::System, system.clone()),
                        Line::new(Role::User, text.clone()),
                    ],
                });
                self.classification = Some(*id);
                self.forget_turn_audio();
            }
            CallAction::CancelReply => {
                self.cancel();
                self.forget_turn_audio();
            }
            CallAction::PauseReply => self.pause(),
            CallAction::ResumeReply => {
                self.forget_turn_audio();
                self.resume();
            }
            CallAction::PlayFront(key) => {
                // Only a starved stream asks for a phrase in front of it.
                self.ops.push_back(BookOp::PlayFiller {
                    key: key.clone(),
                    before: self.starved.take(),
                });
            }
            _ => return false,
        }
        true
    }

    /// What a provider made; some of it is news for the conversation.
    pub fn handle_made(&mut self, made: Made) -> Option<CallEvent> {
        match made {
            Made::Partial { .. } => None,
            Made::Speculative { turn, text } if turn == self.turn => {
                info!(chars = text.chars().count(), "speculative transcript");
                self.speculated = Some((turn, text.clone()));
                Some(CallEvent::SpeculativeTranscript(text))
            }
            Made::Speculative { .. } => None,
            Made::Transcript { turn, .. } if turn != self.turn => {
                debug!(
                    turn,
                    latest = self.turn,
                    "transcript of an earlier part of the turn dropped"
                );
                None
            }
            Made::Transcript { turn, result }
                if self.speculated.as_ref().is_some_and(|(t, _)| *t == turn) =>
            {
                let (_, guessed) = self.speculated.take().unwrap_or_default();
                match result {
                    Ok(text) if same_words(&guessed, &text) => {
                        Some(CallEvent::TranscriptConfirmed(text))
                    }
                    Ok(text) => {
                        info!(
                            chars = text.chars().count(),
                            "the final transcript corrects the speculative one"
                        );
                        // The caller's line the reply was asked on is not
                        // what they said.
                        if self
                            .history
                            .last()
                            .is_some_and(|l| l.role == Role::User && l.text == guessed)
                        {
                            self.history.pop();
                        }
                        Some(CallEvent::TranscriptCorrected(text))
                    }
                    Err(error) => {
                        warn!(%error, kind = error.kind, "speech-to-text failed after the speculative transcript: it stands");
                        Some(CallEvent::TranscriptConfirmed(guessed))
                    }
                }
            }
            Made::Transcript {
                result: Ok(text), ..
            } => {
                info!(chars = text.chars().count(), "transcript");
                Some(CallEvent::Transcript(text))
            }
            Made::Transcript {
                result: Err(error), ..
            } => {
                warn!(%error, kind = error.kind, "speech-to-text failed");
                Some(CallEvent::TranscriptFailed)
            }
            Made::Classified { id, result } => {
                if self.classification == Some(id) {
                    self.classification = None;
                }
                let reply = match result {
                    Ok(text) => {
                        info!(classification = id, answer = %crate::text::cut(&text, 40), "problem classified");
                        Some(text)
                    }
                    Err(error) => {
                        warn!(%error, kind = error.kind, "classification failed");
                        None
                    }
                };
                Some(CallEvent::Classified { id, reply })
            }
            Made::Failed { reply, error } if self.is_current(reply) => {
                warn!(%error, kind = error.kind, "reply generation failed");
                Some(CallEvent::ReplyFailed)
            }
            Made::Sentence { reply, index } if self.is_current(reply) => {
                self.sentence_announced(reply, index);
                None
            }
            Made::Audio {
                reply,
                index,
                chunk,
            } if self.is_current(reply) => {
                let max = self.config.max_sentence_bytes;
                let stream = self
                    .reply
                    .as_mut()
                    .and_then(|r| r.sentences.get_mut(index))
                    .and_then(|s| {
                        let room = max.saturating_sub(s.audio.len());
                        s.audio.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        s.stream
                    });
                if let Some(stream) = stream {
                    self.ops.push_back(BookOp::Feed {
                        stream,
                        audio: chunk,
                    });
                }
                None
            }
            Made::SentenceDone { reply, index } if self.is_current(reply) => {
                let stream = self
                    .reply
                    .as_mut()
                    .and_then(|r| r.sentences.get_mut(index))
                    .and_then(|s| {
                        s.done = true;
                        // Kept as it is from now on: no room to grow into.
                        s.audio.shrink_to_fit();
                        s.stream
                    });
                if let Some(stream) = stream {
                    self.ops.push_back(BookOp::EndStream(stream));
                }
                None
            }
            Made::Done {
                reply,
                text,
                sentences,
            } if self.is_current(reply) => {
                debug!(reply, sentences, "reply complete");
                let slot = self.reply.as_mut().and_then(|r| {
                    r.done = true;
                    r.making = false;
                    r.slot.take()
                });
                // The slot waiting for a next sentence closes empty.
                if let Some(slot) = slot {
                    self.ops.push_back(BookOp::EndStream(slot));
                }
                if sentences == 0 {
                    // Nothing to say (a filter, an empty completion): that is
                    // a failure for the caller, who would hear nothing.
                    warn!(reply, "the reply had nothing to say");
                    return Some(CallEvent::ReplyFailed);
                }
                self.ops.push_back(BookOp::Spoken(text.clone()));
                self.history.push(Line::new(Role::Assistant, text));
                Some(CallEvent::ReplyDone)
            }
            // From a reply that was dropped since.
            _ => None,
        }
    }

    /// What the playout did at `now`: reports the reply's first audio and
    /// starvation, and notes which sentence a barge-in cut.
    pub fn handle_playout(&mut self, now: Instant, heard: Heard) -> Option<CallEvent> {
        match heard {
            Heard::Started {
                reply: Some((reply, _)),
            } => {
                let r = self.reply.as_mut().filter(|r| r.id == reply)?;
                if r.audible {
                    return None;
                }
                r.audible = true;
                self.timing.first_generated.get_or_insert(now);
                self.log_timing();
                Some(CallEvent::ReplyAudible)
            }
            Heard::Started { reply: None } => {
                if self.timing.speech_end.is_some() && self.timing.first_filler.is_none() {
                    self.timing.first_filler = Some(now);
                }
                None
            }
            Heard::Finished {
                reply,
                sentence,
                interrupted,
            } => {
                if let Some(r) = self.reply.as_mut().filter(|r| r.id == reply) {
                    if interrupted {
                        r.interrupted_at.get_or_insert(sentence);
                    } else {
                        // A slot that ended empty is done as well.
                        r.completed = r.completed.max(sentence + 1);
                    }
                    r.release_heard();
                }
                None
            }
            Heard::Starved { stream } => {
                self.starved = Some(stream);
                Some(CallEvent::Starved)
            }
        }
    }

    fn is_current(&self, reply: u64) -> bool {
        self.reply.as_ref().is_some_and(|r| r.id == reply)
    }

    /// A new stream for sentence `sentence` of reply `reply`, queued.
    fn open_stream(&mut self, reply: u64, sentence: usize) -> u64 {
        self.streams += 1;
        let stream = self.streams;
        self.ops.push_back(BookOp::OpenStream {
            stream,
            reply,
            sentence,
        });
        stream
    }

    /// Sentence `index` is coming: the waiting slot carries it and a new
    /// slot waits behind it (unless the reply is paused).
    fn sentence_announced(&mut self, reply: u64, index: usize) {
        let paused = self.reply.as_ref().is_some_and(|r| r.paused);
        let stream = if paused {
            None
        } else {
            let stream = match self.reply.as_mut().and_then(|r| r.slot.take()) {
                Some(stream) => stream,
                None => self.open_stream(reply, index),
            };
            let next = self.open_stream(reply, index + 1);
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
    }

    /// Makes the current reply (a slot queued when it has none).
    fn start_reply(&mut self, making: Making) {
        if self.reply.as_ref().is_some_and(|r| r.making) {
            // A request already makes this reply: start afresh.
            self.cancel();
        }
        if self.reply.is_none() {
            self.replies += 1;
            self.reply = Some(Reply {
                id: self.replies,
                ..Reply::default()
            });
        }
        let Some(id) = self.reply.as_ref().map(|r| r.id) else {
            return;
        };
        // The reply's slot may have gone with a barge-in: queue one.
        if self.reply.as_ref().is_some_and(|r| r.slot.is_none()) {
            let slot = self.open_stream(id, 0);
            if let Some(r) = self.reply.as_mut() {
                r.slot = Some(slot);
                r.paused = false;
            }
        }
        if let Some(r) = self.reply.as_mut() {
            r.making = true;
        }
        self.ops.push_back(match making {
            Making::Generate(prompt) => {
                info!(reply = id, "generating");
                BookOp::Generate { reply: id, prompt }
            }
            Making::Speak(text) => {
                info!(reply = id, "speaking");
                BookOp::Speak { reply: id, text }
            }
        });
    }

    /// Drops the current reply: its request, and its streams from the
    /// playout.
    fn cancel(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        if reply.making {
            self.ops.push_back(BookOp::StopReply(reply.id));
        }
        let streams: Vec<u64> = reply.live_streams().collect();
        self.ops
            .extend(streams.into_iter().map(BookOp::RemoveStream));
    }

    /// The caller talks over the reply: none of it plays until resumed (the
    /// playout was already cleared; its streams are let go).
    fn pause(&mut self) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        reply.paused = true;
        let streams: Vec<u64> = reply.live_streams().collect();
        reply.slot = None;
        for sentence in &mut reply.sentences {
            sentence.stream = None;
        }
        self.ops
            .extend(streams.into_iter().map(BookOp::RemoveStream));
    }

    /// Queues the interrupted reply again, from the sentence it was in, and a
    /// slot for what is still to come.
    fn resume(&mut self) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        reply.paused = false;
        let id = reply.id;
        let from = reply.interrupted_at.take().unwrap_or(reply.completed);
        let count = reply.sentences.len();
        let done = reply.done;
        info!(
            reply = id,
            from_sentence = from,
            "resuming the reply after a false interruption"
        );
        for index in from..count {
            let stream = self.open_stream(id, index);
            let Some(s) = self.reply.as_mut().and_then(|r| r.sentences.get_mut(index)) else {
                continue;
            };
            s.stream = Some(stream);
            let (audio, finished) = (s.audio.clone(), s.done);
            if !audio.is_empty() {
                self.ops.push_back(BookOp::Feed { stream, audio });
            }
            if finished {
                self.ops.push_back(BookOp::EndStream(stream));
            }
        }
        if !done {
            let slot = self.open_stream(id, count);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn book() -> ReplyBook {
        ReplyBook::new(BookConfig {
            system_prompt: "prompt".into(),
            history_turns: 2,
            max_sentence_bytes: 1000,
        })
    }

    fn ops(book: &mut ReplyBook) -> Vec<BookOp> {
        std::iter::from_fn(|| book.poll_op()).collect()
    }

    fn open(stream: u64, reply: u64, sentence: usize) -> BookOp {
        BookOp::OpenStream {
            stream,
            reply,
            sentence,
        }
    }

    fn feed(stream: u64, audio: &[u8]) -> BookOp {
        BookOp::Feed {
            stream,
            audio: audio.to_vec(),
        }
    }

    fn audio(reply: u64, index: usize, chunk: &[u8]) -> Made {
        Made::Audio {
            reply,
            index,
            chunk: chunk.to_vec(),
        }
    }

    fn failure() -> Failure {
        Failure {
            kind: "http",
            message: "500".into(),
        }
    }

    /// A reply opened and asked of the LLM; its first sentence announced.
    fn generating() -> ReplyBook {
        let mut b = book();
        assert!(b.handle_action(&CallAction::OpenReply));
        assert!(b.handle_action(&CallAction::Generate("hello".into())));
        ops(&mut b);
        b
    }

    #[test]
    fn each_sentence_takes_the_waiting_slot_and_opens_the_next() {
        let mut b = book();
        b.handle_action(&CallAction::OpenReply);
        assert_eq!(ops(&mut b), vec![open(1, 1, 0)]);
        b.handle_action(&CallAction::Generate("my box is dead".into()));
        assert_eq!(
            ops(&mut b),
            vec![BookOp::Generate {
                reply: 1,
                prompt: vec![
                    Line::new(Role::System, "prompt"),
                    Line::new(Role::User, "my box is dead"),
                ],
            }]
        );
        assert_eq!(b.handle_made(Made::Sentence { reply: 1, index: 0 }), None);
        assert_eq!(ops(&mut b), vec![open(2, 1, 1)]);
        b.handle_made(audio(1, 0, b"ab"));
        b.handle_made(Made::SentenceDone { reply: 1, index: 0 });
        b.handle_made(Made::Sentence { reply: 1, index: 1 });
        b.handle_made(audio(1, 1, b"cd"));
        assert_eq!(
            ops(&mut b),
            vec![
                feed(1, b"ab"),
                BookOp::EndStream(1),
                open(3, 1, 2),
                feed(2, b"cd")
            ]
        );
    }

    #[test]
    fn a_finished_reply_closes_its_slot_and_is_spoken() {
        let mut b = generating();
        b.handle_made(Made::Sentence { reply: 1, index: 0 });
        b.handle_made(Made::SentenceDone { reply: 1, index: 0 });
        ops(&mut b);
        let event = b.handle_made(Made::Done {
            reply: 1,
            text: "Unplug it.".into(),
            sentences: 1,
        });
        assert_eq!(event, Some(CallEvent::ReplyDone));
        assert_eq!(
            ops(&mut b),
            vec![BookOp::EndStream(2), BookOp::Spoken("Unplug it.".into())]
        );
        // The next prompt carries the exchange.
        b.handle_action(&CallAction::OpenReply);
        b.handle_action(&CallAction::Generate("done".into()));
        let prompt = ops(&mut b).into_iter().find_map(|op| match op {
            BookOp::Generate { prompt, .. } => Some(prompt),
            _ => None,
        });
        let texts: Vec<String> = prompt.unwrap().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["prompt", "hello", "Unplug it.", "done"]);
    }

    #[test]
    fn a_reply_with_nothing_to_say_is_a_failure() {
        let mut b = generating();
        let event = b.handle_made(Made::Done {
            reply: 1,
            text: String::new(),
            sentences: 0,
        });
        assert_eq!(event, Some(CallEvent::ReplyFailed));
        assert_eq!(ops(&mut b), vec![BookOp::EndStream(1)]);
    }

    #[test]
    fn a_failed_provider_fails_only_the_current_reply() {
        let mut b = generating();
        let stale = Made::Failed {
            reply: 7,
            error: failure(),
        };
        assert_eq!(b.handle_made(stale), None);
        let current = Made::Failed {
            reply: 1,
            error: failure(),
        };
        assert_eq!(b.handle_made(current), Some(CallEvent::ReplyFailed));
    }

    #[test]
    fn a_dropped_reply_stops_its_request_and_its_late_audio_is_ignored() {
        let mut b = generating();
        b.handle_made(Made::Sentence { reply: 1, index: 0 });
        ops(&mut b);
        b.handle_action(&CallAction::CancelReply);
        assert_eq!(
            ops(&mut b),
            vec![
                BookOp::StopReply(1),
                BookOp::RemoveStream(2),
                BookOp::RemoveStream(1)
            ]
        );
        b.handle_made(audio(1, 0, b"late"));
        let done = Made::Done {
            reply: 1,
            text: "x".into(),
            sentences: 1,
        };
        assert_eq!(b.handle_made(done), None);
        assert_eq!(ops(&mut b), vec![]);
    }

    #[test]
    fn generating_again_while_making_starts_a_new_reply() {
        let mut b = generating();
        b.handle_action(&CallAction::Speak("Un instant.".into()));
        assert_eq!(
            ops(&mut b),
            vec![
                BookOp::StopReply(1),
                BookOp::RemoveStream(1),
                open(2, 2, 0),
                BookOp::Speak {
                    reply: 2,
                    text: "Un instant.".into()
                }
            ]
        );
    }

    #[test]
    fn a_paused_reply_is_made_unheard_and_resumes_from_the_interrupted_sentence() {
        let mut b = generating();
        for index in 0..2 {
            b.handle_made(Made::Sentence { reply: 1, index });
            b.handle_made(audio(1, index, &[index as u8; 3]));
            b.handle_made(Made::SentenceDone { reply: 1, index });
        }
        ops(&mut b);
        // Sentence 0 was heard; the caller spoke during sentence 1.
        let finished = |sentence, interrupted| Heard::Finished {
            reply: 1,
            sentence,
            interrupted,
        };
        let now = Instant::now();
        b.handle_playout(now, finished(0, false));
        b.handle_playout(now, finished(1, true));
        b.handle_action(&CallAction::PauseReply);
        assert_eq!(
            ops(&mut b),
            vec![
                BookOp::RemoveStream(3),
                BookOp::RemoveStream(1),
                BookOp::RemoveStream(2)
            ]
        );
        // Made meanwhile: kept, not played.
        b.handle_made(Made::Sentence { reply: 1, index: 2 });
        b.handle_made(audio(1, 2, b"zz"));
        assert_eq!(ops(&mut b), vec![]);
        // Only a cough: sentence 1 again, then 2 (still being made), then a slot.
        b.handle_action(&CallAction::ResumeReply);
        assert_eq!(
            ops(&mut b),
            vec![
                open(4, 1, 1),
                feed(4, &[1, 1, 1]),
                BookOp::EndStream(4),
                open(5, 1, 2),
                feed(5, b"zz"),
                open(6, 1, 3),
            ]
        );
    }

    /// Bytes of audio the book holds (allocated, not only used).
    fn held(b: &ReplyBook) -> usize {
        let sentences: usize = b
            .reply
            .as_ref()
            .map_or(0, |r| r.sentences.iter().map(|s| s.audio.capacity()).sum());
        sentences + b.turn_audio.capacity() * 2
    }

    #[test]
    fn audio_heard_to_its_end_and_a_transcribed_turn_are_let_go() {
        let mut b = book();
        b.caller_stopped(Instant::now(), &[5; 16_000]);
        b.handle_action(&CallAction::Transcribe);
        b.handle_action(&CallAction::OpenReply);
        b.handle_action(&CallAction::Generate("u".into()));
        ops(&mut b);
        assert_eq!(held(&b), 0, "the turn's audio went to the transcription");
        for index in 0..3 {
            b.handle_made(Made::Sentence { reply: 1, index });
            b.handle_made(audio(1, index, &[index as u8; 400]));
            b.handle_made(Made::SentenceDone { reply: 1, index });
        }
        assert_eq!(held(&b), 1200);
        let finished = |sentence, interrupted| Heard::Finished {
            reply: 1,
            sentence,
            interrupted,
        };
        b.handle_playout(Instant::now(), finished(0, false));
        assert_eq!(held(&b), 800, "sentence 0 heard: never played again");
        // Cut in sentence 1: it and what follows stay for a resume.
        b.handle_playout(Instant::now(), finished(1, true));
        b.handle_action(&CallAction::PauseReply);
        assert_eq!(held(&b), 800);
        ops(&mut b);
        b.handle_action(&CallAction::ResumeReply);
        let fed: Vec<(u64, usize)> = ops(&mut b)
            .iter()
            .filter_map(|op| match op {
                BookOp::Feed { stream, audio } => Some((*stream, audio.len())),
                _ => None,
            })
            .collect();
        assert_eq!(fed.iter().map(|f| f.1).collect::<Vec<_>>(), [400, 400]);
        b.handle_playout(Instant::now(), finished(1, false));
        b.handle_playout(Instant::now(), finished(2, false));
        assert_eq!(held(&b), 0);
    }

    #[test]
    fn resuming_without_a_cut_sentence_starts_after_the_last_one_heard() {
        let mut b = generating();
        b.handle_made(Made::Sentence { reply: 1, index: 0 });
        b.handle_made(Made::SentenceDone { reply: 1, index: 0 });
        b.handle_made(Made::Done {
            reply: 1,
            text: "a".into(),
            sentences: 1,
        });
        b.handle_playout(
            Instant::now(),
            Heard::Finished {
                reply: 1,
                sentence: 0,
                interrupted: false,
            },
        );
        b.handle_action(&CallAction::PauseReply);
        ops(&mut b);
        b.handle_action(&CallAction::ResumeReply);
        // Heard to its end and made to its end: nothing to play again.
        assert_eq!(ops(&mut b), vec![]);
    }

    #[test]
    fn a_filler_goes_in_front_of_the_starved_stream_once() {
        let mut b = generating();
        let event = b.handle_playout(Instant::now(), Heard::Starved { stream: 1 });
        assert_eq!(event, Some(CallEvent::Starved));
        b.handle_action(&CallAction::PlayFront("filler_1".into()));
        b.handle_action(&CallAction::PlayFront("filler_2".into()));
        assert_eq!(
            ops(&mut b),
            vec![
                BookOp::PlayFiller {
                    key: "filler_1".into(),
                    before: Some(1)
                },
                BookOp::PlayFiller {
                    key: "filler_2".into(),
                    before: None
                },
            ]
        );
    }

    #[test]
    fn the_reply_is_audible_once_with_its_first_sentence() {
        let mut b = generating();
        let now = Instant::now();
        b.caller_stopped(now, &[0; 10]);
        let filler = b.handle_playout(now, Heard::Started { reply: None });
        assert_eq!(filler, None);
        let started = Heard::Started {
            reply: Some((1, 0)),
        };
        let later = now + Duration::from_millis(500);
        assert_eq!(
            b.handle_playout(later, started),
            Some(CallEvent::ReplyAudible)
        );
        assert_eq!(b.handle_playout(later, started), None);
        let other = Heard::Started {
            reply: Some((9, 0)),
        };
        assert_eq!(b.handle_playout(later, other), None);
    }

    #[test]
    fn the_whole_turn_is_transcribed_and_only_its_latest_transcript_counts() {
        let mut b = book();
        b.caller_stopped(Instant::now(), &[1, 2]);
        b.handle_action(&CallAction::Transcribe);
        b.caller_stopped(Instant::now(), &[3]);
        b.handle_action(&CallAction::Transcribe);
        assert_eq!(
            ops(&mut b),
            vec![
                BookOp::Transcribe {
                    turn: 1,
                    audio: vec![1, 2]
                },
                BookOp::Transcribe {
                    turn: 2,
                    audio: vec![1, 2, 3]
                },
            ]
        );
        let early = Made::Transcript {
            turn: 1,
            result: Ok("my".into()),
        };
        assert_eq!(b.handle_made(early), None);
        let latest = Made::Transcript {
            turn: 2,
            result: Ok("my box".into()),
        };
        assert_eq!(
            b.handle_made(latest),
            Some(CallEvent::Transcript("my box".into()))
        );
        let failed = Made::Transcript {
            turn: 2,
            result: Err(failure()),
        };
        assert_eq!(b.handle_made(failed), Some(CallEvent::TranscriptFailed));
        // Answered: the next turn starts empty.
        b.handle_action(&CallAction::Generate("my box".into()));
        b.handle_action(&CallAction::Transcribe);
        assert!(ops(&mut b).contains(&BookOp::Transcribe {
            turn: 3,
            audio: vec![]
        }));
    }

    #[test]
    fn a_speculative_transcript_is_confirmed_or_corrected_by_the_final_one() {
        let mut b = book();
        b.handle_action(&CallAction::Transcribe);
        let guess = |text: &str| Made::Speculative {
            turn: 1,
            text: text.into(),
        };
        let last = |result: Result<String, Failure>| Made::Transcript { turn: 1, result };
        assert_eq!(
            b.handle_made(guess("Ma box ne marche plus")),
            Some(CallEvent::SpeculativeTranscript(
                "Ma box ne marche plus".into()
            ))
        );
        b.handle_action(&CallAction::Generate("Ma box ne marche plus".into()));
        // The same words, punctuated: confirmed.
        assert_eq!(
            b.handle_made(last(Ok("Ma box ne marche plus.".into()))),
            Some(CallEvent::TranscriptConfirmed(
                "Ma box ne marche plus.".into()
            ))
        );
        assert_eq!(b.history.len(), 1);

        // Other words: corrected, and the guessed line leaves the history.
        b.handle_action(&CallAction::Transcribe);
        let guess2 = Made::Speculative {
            turn: 2,
            text: "la télé".into(),
        };
        b.handle_made(guess2);
        b.handle_action(&CallAction::Generate("la télé".into()));
        assert_eq!(b.history.len(), 2);
        let corrected = Made::Transcript {
            turn: 2,
            result: Ok("la télé aussi".into()),
        };
        assert_eq!(
            b.handle_made(corrected),
            Some(CallEvent::TranscriptCorrected("la télé aussi".into()))
        );
        assert_eq!(b.history.len(), 1);

        // The final failed: the guess stands. A guess for an older turn
        // is dropped.
        b.handle_action(&CallAction::Transcribe);
        assert_eq!(b.handle_made(guess("old")), None);
        b.handle_made(Made::Speculative {
            turn: 3,
            text: "oui".into(),
        });
        assert_eq!(
            b.handle_made(Made::Transcript {
                turn: 3,
                result: Err(failure())
            }),
            Some(CallEvent::TranscriptConfirmed("oui".into()))
        );
    }

    #[test]
    fn the_turn_audio_and_the_kept_sentence_audio_are_bounded() {
        let mut b = book();
        b.caller_stopped(Instant::now(), &vec![0; MAX_TURN_SAMPLES]);
        b.caller_stopped(Instant::now(), &[0; 100]);
        b.handle_action(&CallAction::Transcribe);
        match ops(&mut b).as_slice() {
            [BookOp::Transcribe { audio, .. }] => assert_eq!(audio.len(), MAX_TURN_SAMPLES),
            other => panic!("unexpected {other:?}"),
        }
        let mut b = generating();
        b.handle_made(Made::Sentence { reply: 1, index: 0 });
        b.handle_made(audio(1, 0, &[7; 1500]));
        b.handle_action(&CallAction::PauseReply);
        ops(&mut b);
        b.handle_action(&CallAction::ResumeReply);
        let fed: usize = ops(&mut b)
            .iter()
            .map(|op| match op {
                BookOp::Feed { audio, .. } => audio.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(fed, 1000);
    }

    #[test]
    fn the_prompt_keeps_the_system_prompt_and_the_last_exchanges() {
        let mut b = book();
        for i in 0..4 {
            b.handle_action(&CallAction::OpenReply);
            b.handle_action(&CallAction::Generate(format!("u{i}")));
            b.handle_made(Made::Done {
                reply: i + 1,
                text: format!("a{i}"),
                sentences: 1,
            });
        }
        b.handle_action(&CallAction::OpenReply);
        ops(&mut b);
        b.handle_action(&CallAction::Generate("u4".into()));
        let texts: Vec<String> = match ops(&mut b).pop() {
            Some(BookOp::Generate { prompt, .. }) => prompt.into_iter().map(|l| l.text).collect(),
            other => panic!("unexpected {other:?}"),
        };
        // Two exchanges kept: the oldest lines go first.
        assert_eq!(texts, ["prompt", "a2", "u3", "a3", "u4"]);
    }

    #[test]
    fn a_new_classification_stops_the_one_still_running() {
        let mut b = book();
        let classify = |id| CallAction::Classify {
            id,
            system: "s".into(),
            text: "t".into(),
        };
        b.handle_action(&classify(1));
        b.handle_action(&classify(2));
        let stops: Vec<BookOp> = ops(&mut b)
            .into_iter()
            .filter(|op| matches!(op, BookOp::StopClassify(_)))
            .collect();
        assert_eq!(stops, vec![BookOp::StopClassify(1)]);
        let answer = Made::Classified {
            id: 2,
            result: Ok("wifi".into()),
        };
        assert_eq!(
            b.handle_made(answer),
            Some(CallEvent::Classified {
                id: 2,
                reply: Some("wifi".into())
            })
        );
        b.handle_action(&classify(3));
        assert!(!ops(&mut b)
            .iter()
            .any(|op| matches!(op, BookOp::StopClassify(_))));
    }

    #[test]
    fn actions_that_are_not_speech_are_not_the_books() {
        let mut b = book();
        assert!(!b.handle_action(&CallAction::Play("welcome".into())));
        assert!(!b.handle_action(&CallAction::StopPlayout));
        assert_eq!(ops(&mut b), vec![]);
    }
}
