//! The conversation: what the bot says and when, as a sans-IO state machine.
//!
//! Events come in ([`CallEvent`]: the call is established, a segment finished
//! playing, a key was pressed, the caller went quiet…) and actions go out
//! ([`CallAction`]: play a cached phrase, stop playback, hang up). The call
//! (`call/`) feeds it and carries out what it asks; the speech actions go to
//! the [`reply_book`], which turns them into playout streams and provider
//! requests.
//!
//! The flow: greet and welcome from the cache, then take turns. When speech
//! providers are configured ([`HybridConfig`]), each time the caller stops
//! talking a cached filler plays at once while the utterance is transcribed
//! and the reply is generated behind it (the seed's `say_hybrid`); a reply
//! that is late gets another filler, a provider failure gets a cached
//! fallback. Speech over the bot stops it (barge-in); when that turns out to
//! be a cough or an "mhm", the interrupted reply resumes. The hang-up key gets
//! a cached goodbye before the BYE; the transfer key, a REFER.

use std::time::Duration;

use crate::conversation::config::NoInputEscalation;
pub use crate::conversation::config::{CallConfig, HybridConfig};
pub use events::{CallAction, CallEvent, HangupReason, Outcome};
pub use greeting::{greeting, Greeting, KnownCaller};

pub mod config;
pub mod events;
pub mod greeting;
pub mod guide;
pub mod reply_book;
pub mod speakable;
pub mod turn_text;

/// Something for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The problem's type was found.
    Problem(String),
    /// A fix step was given.
    Step(String),
    /// The caller said and pressed nothing: the reprompt was said, or
    /// (`escalated`) the call escalated.
    NoInput { escalated: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the ACK.
    Answering,
    /// Saying the greeting phrases.
    Greeting,
    /// The line is open: silence until the caller acts.
    Listening,
    /// The caller's turn ended: a filler plays while the reply is made.
    Thinking,
    /// The generated reply is playing.
    Replying,
    /// The caller talks over the bot; the reply waits to see whether it was
    /// a real interruption.
    Interrupted,
    /// Saying goodbye before hanging up.
    SayingGoodbye,
    /// Saying the transfer phrase before the REFER.
    AnnouncingTransfer,
    /// The REFER is out: waiting for its outcome.
    Transferring,
    /// A hang-up was asked for; nothing more will be said.
    Ended,
}

/// The call flow of one call.
#[derive(Debug, Clone)]
pub struct Conversation {
    flow: CallConfig,
    hybrid: Option<HybridConfig>,
    /// The guided SAV flow, when there is a knowledge base.
    guide: Option<guide::Guide>,
    greeting: Greeting,
    phase: Phase,
    /// Index of the last filler said.
    last_filler: Option<usize>,
    /// A reply exists (opened, generating or playing) that can be cancelled.
    reply_open: bool,
    /// The reply was interrupted and may be resumed.
    reply_interrupted: bool,
    /// The open reply has (or is getting) generated speech.
    reply_has_content: bool,
    /// The reply's generation has not finished.
    reply_generating: bool,
    /// Said instead of `hybrid.fallback` when the open reply fails.
    reply_fallback: Option<String>,
    /// A transcript is awaited for the caller's last turn.
    awaiting_transcript: bool,
    /// The classification with this id is awaited, for this text.
    awaiting_class: Option<(u64, String)>,
    classifications: u64,
    /// Fillers said while waiting in this turn.
    fillers_this_turn: u32,
    /// Once the reply is said: goodbye, and the call ends.
    goodbye_after_reply: bool,
    /// Why the call ends after the goodbye.
    goodbye_reason: HangupReason,
    outcome: Option<Outcome>,
    /// The cached phrases of the guide's last question (said again when the
    /// caller only coughed or said "mhm" over them).
    last_said: Vec<String>,
    /// The caller talked over a cached phrase of the guide.
    said_interrupted: bool,
    /// A classification that came while the caller was talking.
    class_result: Option<(u64, Option<String>)>,
    /// No-input timers armed so far (the last one's id).
    no_input_timers: u64,
    /// The timer that counts now, while the line is open.
    no_input_armed: Option<u64>,
    /// Timers run out since the caller last said or pressed something.
    no_inputs: u32,
    /// Between the VAD's start and end of the caller's speech.
    caller_speaking: bool,
}

/// Fillers in one turn before the reply is given up for the fallback
/// phrase (a provider that hangs without an error).
const MAX_FILLERS_PER_TURN: u32 = 4;

impl Conversation {
    pub fn new(flow: CallConfig) -> Self {
        Self {
            greeting: Greeting {
                phrases: flow.greeting.clone(),
                ..Greeting::default()
            },
            flow,
            hybrid: None,
            guide: None,
            phase: Phase::Answering,
            last_filler: None,
            reply_open: false,
            reply_interrupted: false,
            reply_has_content: false,
            reply_generating: false,
            reply_fallback: None,
            awaiting_transcript: false,
            awaiting_class: None,
            classifications: 0,
            fillers_this_turn: 0,
            goodbye_after_reply: false,
            goodbye_reason: HangupReason::CallerDone,
            outcome: None,
            last_said: Vec::new(),
            said_interrupted: false,
            class_result: None,
            no_input_timers: 0,
            no_input_armed: None,
            no_inputs: 0,
            caller_speaking: false,
        }
    }

    /// With speech providers: fillers, fallback, turn-taking with generated
    /// replies.
    pub fn with_hybrid(mut self, hybrid: HybridConfig) -> Self {
        self.hybrid = Some(hybrid);
        self
    }

    /// The guided SAV flow.
    pub fn with_guide(mut self, guide: guide::Guide) -> Self {
        self.guide = Some(guide);
        self
    }

    /// What the caller hears on answer (default: `[call] greeting`).
    pub fn with_greeting(mut self, greeting: Greeting) -> Self {
        self.greeting = greeting;
        self
    }

    /// How the call went, when the flow decided it.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// The guided flow, if any.
    /// The next filler, never the one said last.
    fn next_filler(&mut self) -> Option<String> {
        let fillers = &self.hybrid.as_ref()?.fillers;
        if fillers.is_empty() {
            return None;
        }
        let next = match self.last_filler {
            Some(last) => (last + 1) % fillers.len(),
            None => 0,
        };
        self.last_filler = Some(next);
        Some(fillers[next].clone())
    }

    /// The phrase for a failed reply: its own fallback, or the general one.
    fn fallback(&mut self) -> Option<String> {
        self.reply_fallback
            .take()
            .or_else(|| self.hybrid.as_ref().map(|h| h.fallback.clone()))
    }

    /// Cancels the reply if there is one.
    fn cancel_reply(&mut self, actions: &mut Vec<CallAction>) {
        if self.reply_open {
            self.reply_open = false;
            self.reply_interrupted = false;
            self.reply_has_content = false;
            self.reply_generating = false;
            self.reply_fallback = None;
            actions.push(CallAction::CancelReply);
        }
    }

    /// Opens a reply slot (unless one is open) and fills it with `fill`.
    fn reply_with(&mut self, fill: CallAction, actions: &mut Vec<CallAction>) {
        if !self.reply_open {
            self.reply_open = true;
            actions.push(CallAction::OpenReply);
        }
        self.reply_has_content = true;
        self.reply_generating = true;
        actions.push(fill);
    }

    /// Something is still to come: a transcript, a classification, a reply.
    fn waiting(&self) -> bool {
        self.awaiting_transcript || self.awaiting_class.is_some() || self.reply_generating
    }

    /// The caller's words (a transcript of their own turn): the guide's
    /// decision, or (free conversation) a generated reply.
    fn respond_words(&mut self, text: &str) -> Vec<CallAction> {
        match self.guide.as_mut() {
            Some(guide) => {
                let decision = guide.on_words(text);
                self.apply(decision)
            }
            None if text.trim().is_empty() => {
                // Nothing understood: say so rather than go silent.
                let mut actions = Vec::new();
                self.cancel_reply(&mut actions);
                self.phase = Phase::Listening;
                actions.extend(self.flow_not_understood().map(CallAction::Play));
                actions
            }
            None => {
                let mut actions = Vec::new();
                self.reply_with(CallAction::Generate(text.to_string()), &mut actions);
                actions
            }
        }
    }

    /// Carries out a decision of the guide.
    fn apply(&mut self, decision: guide::Decision) -> Vec<CallAction> {
        use guide::Decision;
        use CallAction::*;
        let mut actions = Vec::new();
        self.awaiting_class = None;
        self.class_result = None;
        match decision {
            Decision::Say(phrases) => {
                self.cancel_reply(&mut actions);
                self.phase = Phase::Replying;
                if !phrases.is_empty() {
                    self.last_said = phrases.clone();
                }
                actions.extend(phrases.into_iter().map(Play));
            }
            Decision::Classify { system, text } => {
                self.classifications += 1;
                let id = self.classifications;
                self.awaiting_class = Some((id, text.clone()));
                self.phase = Phase::Thinking;
                actions.push(Classify { id, system, text });
            }
            Decision::Reply(text) => {
                self.phase = Phase::Thinking;
                self.reply_with(Generate(text), &mut actions);
            }
            Decision::Congratulate {
                filler,
                prompt,
                fallback,
            } => {
                self.cancel_reply(&mut actions);
                self.outcome = Some(Outcome::Resolved);
                self.goodbye_after_reply = true;
                self.goodbye_reason = HangupReason::Finished;
                self.phase = Phase::Replying;
                match prompt {
                    Some(prompt) => {
                        // The seed's say_hybrid("filler_ok", congratulation).
                        actions.push(PlayFiller(filler));
                        self.reply_with(Compose(prompt), &mut actions);
                        self.reply_fallback = Some(fallback);
                    }
                    None => actions.push(Play(fallback)),
                }
            }
            Decision::Escalate(_) => {
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                actions.extend(self.escalate());
            }
        }
        if let Some(guide) = self.guide.as_mut() {
            actions.extend(guide.take_notes().into_iter().map(Note));
        }
        actions
    }

    /// To a human: the transfer phrase then REFER, or, with no one to
    /// transfer to, the call-back phrase and the end of the call.
    fn escalate(&mut self) -> Vec<CallAction> {
        self.goodbye_after_reply = false;
        if self.flow.transfer_to.is_some() {
            self.phase = Phase::AnnouncingTransfer;
            vec![CallAction::Play(self.flow.transfer.clone())]
        } else {
            self.outcome = Some(Outcome::Callback);
            self.phase = Phase::SayingGoodbye;
            self.goodbye_reason = HangupReason::Finished;
            let callback = self
                .guide
                .as_ref()
                .map(|g| g.knowledge().flow.callback.clone());
            callback.into_iter().map(CallAction::Play).collect()
        }
    }

    /// A cough or an "mhm" over the guide: the classification under way
    /// goes on (or its answer, come meanwhile, is used), or the question cut
    /// short is asked again. Not a misunderstood turn.
    fn hesitation(&mut self) -> Vec<CallAction> {
        use CallAction::*;
        if let Some((want, text)) = self.awaiting_class.clone() {
            self.phase = Phase::Thinking;
            return match self.class_result.take() {
                Some((id, reply)) if id == want => {
                    self.awaiting_class = None;
                    match self.guide.as_mut() {
                        Some(guide) => {
                            let decision = guide.on_classified(reply.as_deref(), &text);
                            self.apply(decision)
                        }
                        None => Vec::new(),
                    }
                }
                // Still waiting: the fillers go on.
                _ => Vec::new(),
            };
        }
        let mut actions = Vec::new();
        self.cancel_reply(&mut actions);
        self.phase = Phase::Replying;
        actions.extend(self.last_said.clone().into_iter().map(Play));
        actions
    }

    /// The caller hung up: a call in transfer went to the human (many PBXs
    /// end our leg before, or instead of, the final NOTIFY).
    pub fn caller_left(&mut self) {
        if self.phase == Phase::Transferring && self.outcome.is_none() {
            self.outcome = Some(Outcome::Transferred);
        }
    }

    /// The turn-taking rules (with providers only).
    fn handle_turn(&mut self, event: &CallEvent) -> Option<Vec<CallAction>> {
        use CallAction::*;
        let hybrid = self.hybrid.clone()?;
        let actions = match (self.phase, event) {
            // Speech over the bot stops it at once; a reply being made is
            // paused (kept, not played) until we know what the caller said.
            (Phase::Greeting | Phase::Thinking | Phase::Replying, CallEvent::SpeechStarted) => {
                self.reply_interrupted = self.reply_open && self.reply_has_content;
                // A cached question cut short (not a generated reply, which
                // resumes on its own).
                self.said_interrupted = self.guide.is_some()
                    && !self.reply_interrupted
                    && matches!(self.phase, Phase::Greeting | Phase::Replying);
                self.phase = Phase::Interrupted;
                let mut actions = vec![StopPlayout];
                if self.reply_open {
                    actions.push(PauseReply);
                }
                actions
            }
            (Phase::Listening, CallEvent::SpeechStarted) => {
                self.phase = Phase::Interrupted;
                Vec::new()
            }
            // The caller's turn ended: a filler now, the reply behind it.
            (Phase::Interrupted | Phase::Listening, CallEvent::SpeechEnded) => {
                self.phase = Phase::Thinking;
                self.fillers_this_turn = 0;
                self.awaiting_transcript = true;
                // A classification under way stays wanted unless the caller
                // now says something of substance (decided on the transcript).
                let mut actions: Vec<CallAction> = self.filler(PlayFiller).into_iter().collect();
                if !self.reply_open {
                    self.reply_open = true;
                    self.reply_has_content = false;
                    actions.push(OpenReply);
                }
                actions.push(Transcribe);
                actions
            }
            (Phase::Thinking, CallEvent::Transcript(text)) if self.awaiting_transcript => {
                self.awaiting_transcript = false;
                let words = text.trim();
                if self.reply_interrupted {
                    self.reply_interrupted = false;
                    if words.is_empty() || hybrid.is_backchannel(words) {
                        // A cough or an "mhm" over the bot: the reply goes on.
                        self.phase = Phase::Replying;
                        vec![ResumeReply]
                    } else {
                        // A real new turn: the old reply is no longer wanted.
                        let mut actions = Vec::new();
                        self.cancel_reply(&mut actions);
                        self.reply_open = true;
                        self.reply_has_content = false;
                        actions.push(OpenReply);
                        actions.extend(self.respond_words(text));
                        actions
                    }
                } else if self.guide.is_some()
                    && (words.is_empty() || hybrid.is_backchannel(words))
                    && (self.said_interrupted || self.awaiting_class.is_some())
                {
                    self.said_interrupted = false;
                    self.hesitation()
                } else {
                    // The caller's own turn: "oui" answering a question is an answer.
                    self.said_interrupted = false;
                    self.respond_words(text)
                }
            }
            // The classification came while the caller was talking: kept
            // until we know whether that was a new turn.
            (Phase::Interrupted, CallEvent::Classified { id, reply })
                if self
                    .awaiting_class
                    .as_ref()
                    .is_some_and(|(want, _)| want == id) =>
            {
                self.class_result = Some((*id, reply.clone()));
                Vec::new()
            }
            (Phase::Thinking, CallEvent::Classified { id, reply })
                if self
                    .awaiting_class
                    .as_ref()
                    .is_some_and(|(want, _)| want == id) =>
            {
                let (_, text) = self.awaiting_class.take().unwrap_or_default();
                match self.guide.as_mut() {
                    Some(guide) => {
                        let decision = guide.on_classified(reply.as_deref(), &text);
                        self.apply(decision)
                    }
                    None => Vec::new(),
                }
            }
            (Phase::Greeting | Phase::Thinking | Phase::Replying, CallEvent::Starved) => {
                self.filler_or_give_up(PlayFront)
            }
            // The line ran dry while we still wait for the transcript or the
            // reply: keep it alive.
            (Phase::Thinking | Phase::Replying, CallEvent::PlayoutIdle) if self.waiting() => {
                self.filler_or_give_up(PlayFiller)
            }
            (Phase::Thinking, CallEvent::ReplyAudible) => {
                self.phase = Phase::Replying;
                Vec::new()
            }
            (Phase::Thinking | Phase::Replying | Phase::Interrupted, CallEvent::ReplyFailed)
            | (Phase::Thinking, CallEvent::TranscriptFailed) => {
                let mut actions = Vec::new();
                let fallback = self.fallback();
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                self.awaiting_class = None;
                if self.phase != Phase::Interrupted {
                    self.phase = Phase::Replying;
                    actions.extend(fallback.map(Play));
                }
                actions
            }
            _ => return None,
        };
        Some(actions)
    }

    /// Another filler (`PlayFiller` or `PlayFront`), or, after too many for one
    /// turn, give up on the reply: the fallback phrase.
    fn filler_or_give_up(&mut self, play: fn(String) -> CallAction) -> Vec<CallAction> {
        if self.fillers_this_turn >= MAX_FILLERS_PER_TURN {
            let mut actions = Vec::new();
            let fallback = self.fallback();
            self.cancel_reply(&mut actions);
            self.awaiting_transcript = false;
            self.awaiting_class = None;
            if self.phase != Phase::Greeting {
                self.phase = Phase::Replying;
            }
            actions.extend(fallback.map(CallAction::Play));
            return actions;
        }
        self.filler(play).into_iter().collect()
    }

    fn filler(&mut self, play: fn(String) -> CallAction) -> Option<CallAction> {
        let key = self.next_filler()?;
        self.fillers_this_turn += 1;
        Some(play(key))
    }

    fn flow_not_understood(&self) -> Option<String> {
        self.hybrid.as_ref().and_then(|h| h.not_understood.clone())
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The call is with the bot and the caller can act (keys, words).
    fn live(&self) -> bool {
        matches!(
            self.phase,
            Phase::Greeting
                | Phase::Listening
                | Phase::Thinking
                | Phase::Replying
                | Phase::Interrupted
        )
    }

    /// A key the guide answers (not hang-up or transfer): whatever plays
    /// stops, the guide's decision follows.
    fn guided_digit(&mut self, digit: char) -> Option<Vec<CallAction>> {
        if !self.live() {
            return None;
        }
        let is_transfer = digit == self.flow.transfer_digit;
        let decision = if is_transfer {
            guide::Decision::Escalate(guide::Escalation::Asked)
        } else {
            self.guide.as_mut()?.on_digit(digit)?
        };
        if is_transfer {
            // The guide is done: a human takes over.
            if let Some(guide) = self.guide.as_mut() {
                guide.close();
            }
        }
        let mut actions = vec![CallAction::StopPlayout];
        self.cancel_reply(&mut actions);
        self.awaiting_transcript = false;
        self.greeting.then.clear();
        actions.extend(self.apply(decision));
        Some(actions)
    }

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, event: CallEvent) -> Vec<CallAction> {
        if matches!(event, CallEvent::SpeechStarted | CallEvent::Dtmf(_)) {
            // The caller is there: the count starts again.
            self.no_inputs = 0;
            self.no_input_armed = None;
        }
        match event {
            CallEvent::SpeechStarted => self.caller_speaking = true,
            CallEvent::SpeechEnded => self.caller_speaking = false,
            _ => {}
        }
        let mut actions = match event {
            CallEvent::NoInput(id) => self.no_input(id),
            CallEvent::SpeculativeTranscript(text) => {
                self.handle_event(CallEvent::Transcript(text))
            }
            CallEvent::TranscriptConfirmed(_) => Vec::new(),
            CallEvent::TranscriptCorrected(text) => self.corrected(text),
            event => self.handle_event(event),
        };
        self.arm_no_input(&mut actions);
        actions
    }

    /// The final transcript differs from the one the reply was asked on:
    /// while that reply is still the one being made or said, it is
    /// dropped and asked again (free conversation; the guide's decisions
    /// are not speculated on).
    fn corrected(&mut self, text: String) -> Vec<CallAction> {
        let mut actions = Vec::new();
        if self.guide.is_some()
            || !matches!(self.phase, Phase::Thinking | Phase::Replying)
            || !self.reply_open
        {
            return actions;
        }
        self.cancel_reply(&mut actions);
        self.reply_open = true;
        self.reply_has_content = false;
        self.phase = Phase::Thinking;
        actions.push(CallAction::OpenReply);
        actions.extend(self.respond_words(&text));
        actions
    }

    /// While the line is open (the bot waits for the caller), a no-input
    /// timer runs; out of it, none.
    fn arm_no_input(&mut self, actions: &mut Vec<CallAction>) {
        let config = &self.flow.no_input;
        // No timer while the caller talks (a turn the phase did not take
        // up: speech over a transfer announcement, keys pressed meanwhile).
        if !config.enabled || self.phase != Phase::Listening || self.caller_speaking {
            self.no_input_armed = None;
            return;
        }
        if self.no_input_armed.is_some() {
            return;
        }
        let doing_a_step = self
            .guide
            .as_ref()
            .is_some_and(|g| matches!(g.stage(), guide::Stage::Step(_)));
        let after = if self.no_inputs > 0 {
            config.escalate_after_s
        } else if doing_a_step {
            config.step_reprompt_after_s
        } else {
            config.reprompt_after_s
        };
        self.no_input_timers += 1;
        self.no_input_armed = Some(self.no_input_timers);
        actions.push(CallAction::ArmNoInput {
            id: self.no_input_timers,
            after: Duration::from_secs_f64(after),
        });
    }

    /// A no-input timer ran out: the first time, the reprompt and the last
    /// question again; the second, the escalation.
    fn no_input(&mut self, id: u64) -> Vec<CallAction> {
        use CallAction::*;
        if self.no_input_armed != Some(id) || self.phase != Phase::Listening {
            return Vec::new();
        }
        self.no_input_armed = None;
        self.no_inputs += 1;
        let config = self.flow.no_input.clone();
        if self.no_inputs == 1 {
            self.phase = Phase::Replying;
            let mut actions = vec![
                Note(self::Note::NoInput { escalated: false }),
                Play(config.reprompt),
            ];
            if self.guide.is_some() {
                actions.extend(self.last_said.iter().cloned().map(Play));
            }
            return actions;
        }
        self.no_inputs = 0;
        let mut actions = vec![Note(self::Note::NoInput { escalated: true })];
        let transfer = match config.escalation {
            Some(NoInputEscalation::Transfer) | None => self.flow.transfer_to.is_some(),
            Some(NoInputEscalation::Callback) => false,
        };
        // A transfer that already failed in this call is not tried again.
        if transfer && self.outcome != Some(Outcome::TransferFailed) {
            if let Some(guide) = self.guide.as_mut() {
                guide.close();
            }
            actions.extend(self.escalate());
        } else {
            self.outcome = Some(Outcome::Callback);
            self.phase = Phase::SayingGoodbye;
            self.goodbye_reason = HangupReason::Finished;
            actions.push(Play(config.callback));
        }
        actions
    }

    fn handle_event(&mut self, event: CallEvent) -> Vec<CallAction> {
        use CallAction::*;
        if let CallEvent::Dtmf(digit) = event {
            let hangup = digit == self.flow.hangup_digit;
            if self.guide.is_some() && !hangup {
                if let Some(actions) = self.guided_digit(digit) {
                    return actions;
                }
            }
        }
        if let Some(actions) = self.handle_turn(&event) {
            return actions;
        }
        match (self.phase, event) {
            // The hang-up key, whenever the caller can be heard: goodbye, BYE.
            (_, CallEvent::Dtmf(digit)) if self.live() && digit == self.flow.hangup_digit => {
                let mut actions = vec![StopPlayout];
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                self.awaiting_class = None;
                self.say_goodbye(HangupReason::CallerDone, &mut actions);
                actions
            }
            // The transfer key (the guided flow has its own way there).
            (_, CallEvent::Dtmf(digit))
                if self.live()
                    && digit == self.flow.transfer_digit
                    && self.flow.transfer_to.is_some() =>
            {
                let mut actions = vec![StopPlayout];
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                actions.extend(self.escalate());
                actions
            }
            (Phase::Answering, CallEvent::Established) => {
                self.phase = Phase::Greeting;
                let greeting = self.greeting.clone();
                // Cut short by a cough, or a silent caller: its question
                // again (the menu after a spoken greeting, the phrase the
                // spoken part stands for, else its last phrase).
                let question = greeting
                    .then
                    .last()
                    .or(greeting
                        .speak
                        .as_ref()
                        .and_then(|(_, stand_in)| stand_in.as_ref()))
                    .or(greeting.phrases.last());
                self.last_said = question.cloned().into_iter().collect();
                let mut actions: Vec<CallAction> = greeting.phrases.into_iter().map(Play).collect();
                if let Some((text, fallback)) = greeting.speak {
                    self.reply_fallback = fallback;
                    self.reply_with(Speak(text), &mut actions);
                }
                actions
            }
            (Phase::Thinking | Phase::Replying, CallEvent::PlayoutIdle) => {
                // Everything said.
                self.reply_open = false;
                self.reply_fallback = None;
                if self.goodbye_after_reply {
                    self.phase = Phase::SayingGoodbye;
                    vec![Play(self.flow.goodbye.clone())]
                } else {
                    self.phase = Phase::Listening;
                    Vec::new()
                }
            }
            (Phase::Greeting, CallEvent::PlayoutIdle) => {
                self.reply_open = false;
                self.reply_generating = false;
                let then = std::mem::take(&mut self.greeting.then);
                if then.is_empty() {
                    self.phase = Phase::Listening;
                }
                then.into_iter().map(Play).collect()
            }
            (Phase::Greeting, CallEvent::ReplyFailed) => {
                // The greeting's spoken part failed: its cached stand-in.
                let mut actions = Vec::new();
                let fallback = self.reply_fallback.take();
                self.cancel_reply(&mut actions);
                actions.extend(fallback.map(Play));
                actions
            }
            (_, CallEvent::ReplyDone) => {
                self.reply_generating = false;
                Vec::new()
            }
            (Phase::AnnouncingTransfer, CallEvent::PlayoutIdle) => match &self.flow.transfer_to {
                Some(target) => {
                    self.phase = Phase::Transferring;
                    vec![Transfer(target.clone())]
                }
                None => {
                    self.phase = Phase::Listening;
                    Vec::new()
                }
            },
            (Phase::Transferring, CallEvent::TransferSucceeded) => {
                self.phase = Phase::Ended;
                self.outcome = Some(Outcome::Transferred);
                vec![Hangup(HangupReason::Transferred)]
            }
            (Phase::Transferring, CallEvent::TransferFailed) => {
                // Back to the bot: say so, and keep the line open; the guide
                // takes up where the call stood.
                self.phase = Phase::Greeting;
                self.outcome = Some(Outcome::TransferFailed);
                if let Some(guide) = self.guide.as_mut() {
                    guide.reopen();
                }
                vec![Play(self.flow.transfer_failed.clone())]
            }
            (Phase::SayingGoodbye, CallEvent::PlayoutIdle) => {
                self.phase = Phase::Ended;
                vec![Hangup(self.goodbye_reason)]
            }
            (Phase::Ended, _) => Vec::new(),
            (_, CallEvent::RtpTimeout) => {
                self.phase = Phase::Ended;
                self.outcome.get_or_insert(Outcome::RtpTimeout);
                vec![StopPlayout, Hangup(HangupReason::RtpTimeout)]
            }
            // Other keys, idle while listening, a second Established: nothing to do.
            _ => Vec::new(),
        }
    }

    /// The hang-up key: goodbye, then BYE.
    fn say_goodbye(&mut self, reason: HangupReason, actions: &mut Vec<CallAction>) {
        self.phase = Phase::SayingGoodbye;
        self.goodbye_reason = reason;
        self.outcome.get_or_insert(Outcome::CallerEnded);
        actions.push(CallAction::Play(self.flow.goodbye.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallAction::*;

    fn config() -> CallConfig {
        CallConfig {
            greeting: vec!["greet".into(), "welcome".into()],
            disclosure: None,
            greeting_dtmf: vec!["greet".into(), "menu".into()],
            hangup_digit: '#',
            goodbye: "goodbye".into(),
            transfer_to: Some("sip:support@pbx".into()),
            transfer_digit: '0',
            transfer: "transfer".into(),
            transfer_failed: "transfer_failed".into(),
            // The no-input timer has its own tests below; the others
            // follow the flow without it.
            no_input: config::NoInputConfig {
                enabled: false,
                ..Default::default()
            },
        }
    }

    fn flow() -> Conversation {
        Conversation::new(config())
    }

    fn hybrid() -> Conversation {
        Conversation::new(config()).with_hybrid(HybridConfig {
            fillers: vec![
                "filler_hum".into(),
                "filler_ok".into(),
                "filler_let_me_see".into(),
            ],
            fallback: "sorry".into(),
            backchannel: vec!["mhm".into(), "oui".into(), "hum".into()],
            not_understood: Some("not_understood".into()),
        })
    }

    /// Greeted and listening.
    fn listening() -> Conversation {
        let mut c = hybrid();
        c.handle(CallEvent::Established);
        c.handle(CallEvent::PlayoutIdle);
        assert_eq!(c.phase(), Phase::Listening);
        c
    }

    #[test]
    fn end_of_speech_plays_a_filler_at_once_and_opens_the_reply_behind_it() {
        let mut c = listening();
        assert!(
            c.handle(CallEvent::SpeechStarted).is_empty(),
            "nothing to stop"
        );
        assert_eq!(
            c.handle(CallEvent::SpeechEnded),
            vec![PlayFiller("filler_hum".into()), OpenReply, Transcribe],
            "the filler comes first: it is the next frame the caller hears"
        );
        assert_eq!(c.phase(), Phase::Thinking);
        assert_eq!(
            c.handle(CallEvent::Transcript("Ma box est en panne".into())),
            vec![Generate("Ma box est en panne".into())]
        );
        assert_eq!(c.handle(CallEvent::ReplyAudible), vec![]);
        assert_eq!(c.phase(), Phase::Replying);
        assert_eq!(c.handle(CallEvent::ReplyDone), vec![]);
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);
    }

    #[test]
    fn a_slow_transcript_gets_fillers_and_is_still_answered() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        // The filler ended before the transcript came: another one, not silence.
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![PlayFiller("filler_ok".into())]
        );
        assert_eq!(c.phase(), Phase::Thinking);
        assert_eq!(
            c.handle(CallEvent::Transcript("Bonjour".into())),
            vec![Generate("Bonjour".into())]
        );
    }

    #[test]
    fn the_line_running_dry_mid_reply_gets_a_filler_not_listening() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        c.handle(CallEvent::Transcript("Bonjour".into()));
        c.handle(CallEvent::ReplyAudible);
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![PlayFiller("filler_ok".into())]
        );
        assert_eq!(c.phase(), Phase::Replying, "barge-in still stops it");
        assert_eq!(
            c.handle(CallEvent::SpeechStarted),
            vec![StopPlayout, PauseReply]
        );
    }

    #[test]
    fn an_interruption_transcribed_after_its_filler_ended_is_still_answered() {
        for (said, expected) in [
            ("mhm", vec![ResumeReply]),
            (
                "Non, c'est le téléphone",
                vec![
                    CancelReply,
                    OpenReply,
                    Generate("Non, c'est le téléphone".into()),
                ],
            ),
        ] {
            let mut c = listening();
            c.handle(CallEvent::SpeechStarted);
            c.handle(CallEvent::SpeechEnded);
            c.handle(CallEvent::Transcript("Ma box est en panne".into()));
            c.handle(CallEvent::ReplyAudible);
            c.handle(CallEvent::SpeechStarted);
            // The stop itself empties the queue: nothing to do while the
            // caller talks.
            assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
            c.handle(CallEvent::SpeechEnded);
            // STT is slower than the filler: the line gets another one.
            assert!(matches!(
                c.handle(CallEvent::PlayoutIdle)[..],
                [PlayFiller(_)]
            ));
            assert_eq!(c.handle(CallEvent::Transcript(said.into())), expected);
            assert_eq!(
                c.phase(),
                if said == "mhm" {
                    Phase::Replying
                } else {
                    Phase::Thinking
                }
            );
        }
    }

    #[test]
    fn two_utterances_before_the_transcript_make_one_turn_and_one_reply() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        assert_eq!(
            c.handle(CallEvent::SpeechEnded),
            vec![PlayFiller("filler_hum".into()), OpenReply, Transcribe]
        );
        // The caller goes on before anything was generated: the filler
        // stops, the open reply waits.
        assert_eq!(
            c.handle(CallEvent::SpeechStarted),
            vec![StopPlayout, PauseReply]
        );
        // One reply for the whole turn: no second OpenReply.
        let ended = c.handle(CallEvent::SpeechEnded);
        assert!(!ended.contains(&OpenReply), "{ended:?}");
        assert_eq!(ended.last(), Some(&Transcribe));
        // The transcript of the whole turn (the session drops the stale one
        // of its first part) is generated once; a second one is not.
        assert_eq!(
            c.handle(CallEvent::Transcript("Bonjour, ma box est en panne".into())),
            vec![Generate("Bonjour, ma box est en panne".into())]
        );
        assert_eq!(c.handle(CallEvent::Transcript("Bonjour".into())), vec![]);
    }

    #[test]
    fn a_provider_that_hangs_gets_the_fallback_after_a_few_fillers() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        c.handle(CallEvent::Transcript("Bonjour".into()));
        for _ in 0..3 {
            assert!(matches!(c.handle(CallEvent::Starved)[..], [PlayFront(_)]));
        }
        assert_eq!(
            c.handle(CallEvent::Starved),
            vec![CancelReply, Play("sorry".into())]
        );
        assert_eq!(c.phase(), Phase::Replying, "saying the fallback");
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);
    }

    #[test]
    fn the_transfer_key_works_while_the_bot_talks() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        assert_eq!(
            c.handle(CallEvent::Dtmf('0')),
            vec![StopPlayout, CancelReply, Play("transfer".into())]
        );
        assert_eq!(c.phase(), Phase::AnnouncingTransfer);
    }

    #[test]
    fn a_late_reply_gets_other_fillers_never_the_same_twice_in_a_row() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        c.handle(CallEvent::Transcript("Bonjour".into()));
        assert_eq!(
            c.handle(CallEvent::Starved),
            vec![PlayFront("filler_ok".into())]
        );
        assert_eq!(
            c.handle(CallEvent::Starved),
            vec![PlayFront("filler_let_me_see".into())]
        );
        assert_eq!(
            c.handle(CallEvent::Starved),
            vec![PlayFront("filler_hum".into())]
        );
        // The next turn does not start with the filler said last.
        c.handle(CallEvent::ReplyAudible);
        c.handle(CallEvent::PlayoutIdle);
        c.handle(CallEvent::SpeechStarted);
        assert_eq!(
            c.handle(CallEvent::SpeechEnded)[0],
            PlayFiller("filler_ok".into())
        );
    }

    #[test]
    fn provider_failures_get_the_cached_fallback_and_the_call_goes_on() {
        for failure in [CallEvent::ReplyFailed, CallEvent::TranscriptFailed] {
            let mut c = listening();
            c.handle(CallEvent::SpeechStarted);
            c.handle(CallEvent::SpeechEnded);
            assert_eq!(
                c.handle(failure.clone()),
                vec![CancelReply, Play("sorry".into())],
                "{failure:?}"
            );
            assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
            assert_eq!(c.phase(), Phase::Listening);
            // The caller can speak again.
            c.handle(CallEvent::SpeechStarted);
            assert_eq!(c.handle(CallEvent::SpeechEnded).last(), Some(&Transcribe));
        }
    }

    #[test]
    fn barge_in_stops_the_reply_and_a_cough_resumes_it() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        c.handle(CallEvent::Transcript("Ma box".into()));
        c.handle(CallEvent::ReplyAudible);
        assert_eq!(
            c.handle(CallEvent::SpeechStarted),
            vec![StopPlayout, PauseReply],
            "barge-in"
        );
        assert_eq!(c.phase(), Phase::Interrupted);
        assert_eq!(
            c.handle(CallEvent::SpeechEnded),
            vec![PlayFiller("filler_ok".into()), Transcribe],
            "the reply stays open"
        );
        for cough in ["", "Mhm.", "oui oui", " hum "] {
            let mut again = c.clone();
            assert_eq!(
                again.handle(CallEvent::Transcript(cough.into())),
                vec![ResumeReply],
                "{cough:?}"
            );
            assert_eq!(again.phase(), Phase::Replying);
        }
        // A real interruption: the old reply goes, a new one comes.
        assert_eq!(
            c.handle(CallEvent::Transcript(
                "Non attendez, c'est le téléphone".into()
            )),
            vec![
                CancelReply,
                OpenReply,
                Generate("Non attendez, c'est le téléphone".into())
            ]
        );
    }

    #[test]
    fn a_short_answer_is_a_turn_and_nothing_understood_is_said_so() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        // "Oui" answering the bot's question is an answer, not a backchannel.
        assert_eq!(
            c.handle(CallEvent::Transcript("Oui.".into())),
            vec![Generate("Oui.".into())]
        );
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        assert_eq!(
            c.handle(CallEvent::Transcript(" ".into())),
            vec![CancelReply, Play("not_understood".into())]
        );
        assert_eq!(c.phase(), Phase::Listening);
    }

    #[test]
    fn hangup_key_during_a_reply_cancels_it() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        assert_eq!(
            c.handle(CallEvent::Dtmf('#')),
            vec![StopPlayout, CancelReply, Play("goodbye".into())]
        );
        assert_eq!(c.phase(), Phase::SayingGoodbye);
    }

    #[test]
    fn without_providers_speech_changes_nothing() {
        let mut c = flow();
        c.handle(CallEvent::Established);
        c.handle(CallEvent::PlayoutIdle);
        assert!(c.handle(CallEvent::SpeechStarted).is_empty());
        assert!(c.handle(CallEvent::SpeechEnded).is_empty());
        assert_eq!(c.phase(), Phase::Listening);
    }

    #[test]
    fn zero_announces_then_transfers_and_hangs_up_on_success() {
        let mut c = flow();
        c.handle(CallEvent::Established);
        c.handle(CallEvent::PlayoutIdle);
        assert_eq!(
            c.handle(CallEvent::Dtmf('0')),
            vec![StopPlayout, Play("transfer".into())]
        );
        assert_eq!(c.phase(), Phase::AnnouncingTransfer);
        assert!(
            c.handle(CallEvent::Dtmf('#')).is_empty(),
            "no goodbye while transferring"
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Transfer("sip:support@pbx".into())]
        );
        assert_eq!(c.phase(), Phase::Transferring);
        assert_eq!(
            c.handle(CallEvent::TransferSucceeded),
            vec![Hangup(HangupReason::Transferred)]
        );
        assert_eq!(c.phase(), Phase::Ended);
    }

    #[test]
    fn failed_transfer_says_so_and_the_call_goes_on() {
        let mut c = flow();
        c.handle(CallEvent::Established);
        c.handle(CallEvent::Dtmf('0'));
        c.handle(CallEvent::PlayoutIdle);
        assert_eq!(
            c.handle(CallEvent::TransferFailed),
            vec![Play("transfer_failed".into())]
        );
        assert!(c.handle(CallEvent::PlayoutIdle).is_empty());
        assert_eq!(c.phase(), Phase::Listening);
        // The caller can still ask again, or leave.
        assert_eq!(
            c.handle(CallEvent::Dtmf('0')),
            vec![StopPlayout, Play("transfer".into())]
        );
    }

    #[test]
    fn zero_does_nothing_without_a_transfer_target() {
        let mut c = Conversation::new(CallConfig {
            transfer_to: None,
            ..config()
        });
        c.handle(CallEvent::Established);
        assert!(c.handle(CallEvent::Dtmf('0')).is_empty());
        assert_eq!(c.phase(), Phase::Greeting);
    }

    #[test]
    fn greets_then_listens_then_says_goodbye_on_hash() {
        let mut c = flow();
        assert_eq!(
            c.handle(CallEvent::Established),
            vec![Play("greet".into()), Play("welcome".into())]
        );
        assert_eq!(c.phase(), Phase::Greeting);
        assert!(c.handle(CallEvent::PlayoutIdle).is_empty());
        assert_eq!(c.phase(), Phase::Listening);
        assert!(
            c.handle(CallEvent::Dtmf('5')).is_empty(),
            "other keys do nothing"
        );
        assert_eq!(
            c.handle(CallEvent::Dtmf('#')),
            vec![StopPlayout, Play("goodbye".into())]
        );
        assert_eq!(c.phase(), Phase::SayingGoodbye);
        assert!(
            c.handle(CallEvent::Dtmf('#')).is_empty(),
            "a second # is ignored"
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::CallerDone)]
        );
        assert_eq!(c.phase(), Phase::Ended);
        assert!(c.handle(CallEvent::PlayoutIdle).is_empty());
    }

    #[test]
    fn hash_during_greeting_cuts_it_short() {
        let mut c = flow();
        c.handle(CallEvent::Established);
        assert_eq!(
            c.handle(CallEvent::Dtmf('#')),
            vec![StopPlayout, Play("goodbye".into())]
        );
    }

    #[test]
    fn rtp_timeout_hangs_up_from_any_live_phase() {
        for setup in [0, 1, 2] {
            let mut c = flow();
            c.handle(CallEvent::Established);
            if setup >= 1 {
                c.handle(CallEvent::PlayoutIdle);
            }
            if setup >= 2 {
                c.handle(CallEvent::Dtmf('#'));
            }
            assert_eq!(
                c.handle(CallEvent::RtpTimeout),
                vec![StopPlayout, Hangup(HangupReason::RtpTimeout)]
            );
            assert!(c.handle(CallEvent::RtpTimeout).is_empty());
        }
    }

    #[test]
    fn nothing_is_said_before_the_ack() {
        let mut c = flow();
        assert!(c.handle(CallEvent::PlayoutIdle).is_empty());
        assert!(c.handle(CallEvent::Dtmf('#')).is_empty());
        assert_eq!(c.phase(), Phase::Answering);
    }

    // The guided SAV flow over the embedded sav.toml's knowledge base.

    fn knowledge() -> std::sync::Arc<guide::Knowledge> {
        let config = crate::config::Config::load(None).expect("embedded sav.toml");
        std::sync::Arc::new(guide::Knowledge::new(config.problems, config.flow))
    }

    /// Voice (STT) with an LLM and a TTS, greeted and listening.
    fn guided(transfer_to: Option<&str>) -> Conversation {
        let mut call = config();
        call.transfer_to = transfer_to.map(String::from);
        let mut c = Conversation::new(call)
            .with_hybrid(hybrid().hybrid.clone().unwrap())
            .with_guide(guide::Guide::new(knowledge(), true, true).with_first_name("Pierre"));
        c.handle(CallEvent::Established);
        c.handle(CallEvent::PlayoutIdle);
        c
    }

    /// The caller says `words` as a turn of their own; the actions that follow
    /// the transcript.
    fn says(c: &mut Conversation, words: &str) -> Vec<CallAction> {
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        c.handle(CallEvent::Transcript(words.into()))
    }

    fn notes(actions: &[CallAction]) -> Vec<guide::Note> {
        actions
            .iter()
            .filter_map(|a| match a {
                Note(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn guided_voice_call_fixed_at_the_second_step_then_congratulated_and_ended() {
        let mut c = guided(None);
        let actions = says(&mut c, "Ma box internet ne marche plus");
        assert_eq!(
            actions,
            vec![
                CancelReply,
                Play("internet_restart".into()),
                Note(super::Note::Problem("internet".into())),
                Note(super::Note::Step("internet_restart".into())),
            ],
            "the filler played at the end of speech; the step follows it"
        );
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);
        assert_eq!(
            says(&mut c, "C'est fait."),
            vec![CancelReply, Play("verify".into())]
        );
        c.handle(CallEvent::PlayoutIdle);
        let actions = says(&mut c, "Non, ça ne marche toujours pas");
        assert_eq!(actions[1], Play("internet_cables".into()));
        assert_eq!(
            notes(&actions),
            vec![super::Note::Step("internet_cables".into())]
        );
        c.handle(CallEvent::PlayoutIdle);
        says(&mut c, "voilà c'est fait");
        c.handle(CallEvent::PlayoutIdle);
        let actions = says(&mut c, "Oui ça marche !");
        assert_eq!(
            actions,
            vec![
                CancelReply,
                PlayFiller("filler_ok".into()),
                OpenReply,
                Compose("Le client Pierre a résolu son problème. Génère UNE phrase courte (max 10 mots) pour le féliciter.".into()),
            ]
        );
        assert_eq!(c.outcome(), Some(Outcome::Resolved));
        // The congratulation is late: a filler, not silence.
        assert!(matches!(c.handle(CallEvent::Starved)[..], [PlayFront(_)]));
        c.handle(CallEvent::ReplyAudible);
        assert_eq!(c.handle(CallEvent::ReplyDone), vec![]);
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Play("goodbye".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::Finished)]
        );
    }

    #[test]
    fn without_the_llm_the_congratulation_is_the_cached_one() {
        let mut c = guided(None);
        says(&mut c, "ma box");
        c.handle(CallEvent::PlayoutIdle);
        says(&mut c, "c'est fait");
        c.handle(CallEvent::PlayoutIdle);
        let actions = says(&mut c, "oui");
        assert_eq!(
            actions[..3],
            [CancelReply, PlayFiller("filler_ok".into()), OpenReply]
        );
        // The LLM is down.
        assert_eq!(
            c.handle(CallEvent::ReplyFailed),
            vec![CancelReply, Play("congratulations".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Play("goodbye".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::Finished)]
        );
        assert_eq!(c.outcome(), Some(Outcome::Resolved));
    }

    #[test]
    fn an_unsure_problem_is_classified_behind_fillers_and_stale_answers_are_dropped() {
        let mut c = guided(None);
        let actions = says(&mut c, "Plus rien ne s'affiche dans le salon");
        let [Classify { id, system, text }] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert!(system.contains("- tv :"), "{system}");
        assert_eq!(text, "Plus rien ne s'affiche dans le salon");
        assert_eq!(c.phase(), Phase::Thinking);
        // The filler ended before the LLM answered: another one.
        assert!(matches!(
            c.handle(CallEvent::PlayoutIdle)[..],
            [PlayFiller(_)]
        ));
        assert_eq!(
            c.handle(CallEvent::Classified {
                id: id + 1,
                reply: Some("phone".into())
            }),
            vec![],
            "not the classification asked for"
        );
        let actions = c.handle(CallEvent::Classified {
            id: *id,
            reply: Some("tv".into()),
        });
        assert_eq!(actions[..2], [CancelReply, Play("tv_restart".into())]);
        // An unknown type: the LLM answers the caller instead.
        let mut c = guided(None);
        let actions = says(&mut c, "Je voudrais changer d'offre");
        let [Classify { id, .. }] = actions[..] else {
            panic!()
        };
        assert_eq!(
            c.handle(CallEvent::Classified {
                id,
                reply: Some("inconnu".into())
            }),
            vec![Generate("Je voudrais changer d'offre".into())]
        );
    }

    #[test]
    fn asking_for_an_agent_transfers_and_without_a_target_a_human_calls_back() {
        let mut c = guided(Some("sip:support@pbx"));
        says(&mut c, "ma box");
        assert_eq!(
            says(&mut c, "je veux parler à un conseiller"),
            vec![CancelReply, Play("transfer".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Transfer("sip:support@pbx".into())]
        );
        assert_eq!(
            c.handle(CallEvent::TransferSucceeded),
            vec![Hangup(HangupReason::Transferred)]
        );
        assert_eq!(c.outcome(), Some(Outcome::Transferred));

        let mut c = guided(None);
        assert_eq!(
            says(&mut c, "un conseiller s'il vous plaît"),
            vec![CancelReply, Play("callback".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::Finished)]
        );
        assert_eq!(c.outcome(), Some(Outcome::Callback));
    }

    #[test]
    fn the_last_failed_step_and_misunderstood_turns_escalate() {
        let mut c = guided(Some("sip:support@pbx"));
        says(&mut c, "ma box");
        says(&mut c, "ça ne marche toujours pas");
        assert_eq!(
            says(&mut c, "toujours pas"),
            vec![CancelReply, Play("transfer".into())]
        );
        let mut c = guided(Some("sip:support@pbx"));
        // An empty transcript is a misunderstood turn.
        assert_eq!(says(&mut c, "")[1], Play("problem_unknown".into()));
        // So is a description the LLM cannot classify (here: it failed):
        // the LLM's own reply keeps the conversation going.
        let [Classify { id, .. }] = says(&mut c, "euh bon alors")[..] else {
            panic!()
        };
        assert_eq!(
            c.handle(CallEvent::Classified { id, reply: None }),
            vec![Generate("euh bon alors".into())]
        );
        c.handle(CallEvent::ReplyDone);
        c.handle(CallEvent::PlayoutIdle);
        let actions = says(&mut c, "");
        assert_eq!(actions, vec![CancelReply, Play("transfer".into())]);
        assert_eq!(c.phase(), Phase::AnnouncingTransfer);
    }

    #[test]
    fn a_dtmf_only_call_runs_on_menus_from_greeting_to_goodbye() {
        let mut call = config();
        call.transfer_to = None;
        let greeting = greeting(&call, &knowledge().flow, None, false, false);
        assert_eq!(greeting.phrases, ["greet", "menu"]);
        let mut c = Conversation::new(call)
            .with_greeting(greeting)
            .with_guide(guide::Guide::new(knowledge(), false, false));
        assert_eq!(
            c.handle(CallEvent::Established),
            vec![Play("greet".into()), Play("menu".into())]
        );
        assert_eq!(
            c.handle(CallEvent::Dtmf('7')),
            vec![StopPlayout, Play("menu".into())],
            "not in the menu: the menu again"
        );
        // The caller does not wait for the end of the menu.
        let actions = c.handle(CallEvent::Dtmf('1'));
        assert_eq!(actions[..2], [StopPlayout, Play("internet_restart".into())]);
        c.handle(CallEvent::PlayoutIdle);
        assert_eq!(c.phase(), Phase::Listening);
        assert_eq!(
            c.handle(CallEvent::Dtmf('2')),
            vec![
                StopPlayout,
                Play("internet_cables".into()),
                Note(super::Note::Step("internet_cables".into()))
            ]
        );
        assert_eq!(
            c.handle(CallEvent::Dtmf('1')),
            vec![StopPlayout, Play("verify".into())]
        );
        assert_eq!(
            c.handle(CallEvent::Dtmf('1')),
            vec![StopPlayout, Play("congratulations".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Play("goodbye".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::Finished)]
        );
        assert_eq!(c.outcome(), Some(Outcome::Resolved));
    }

    #[test]
    fn the_transfer_key_escalates_in_the_guided_flow_and_hash_still_hangs_up() {
        let mut c = guided(None);
        assert_eq!(
            c.handle(CallEvent::Dtmf('0')),
            vec![StopPlayout, Play("callback".into())]
        );
        assert_eq!(c.outcome(), Some(Outcome::Callback));
        let mut c = guided(None);
        says(&mut c, "ma box");
        assert_eq!(
            c.handle(CallEvent::Dtmf('#')),
            vec![StopPlayout, Play("goodbye".into())]
        );
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::CallerDone)]
        );
        assert_eq!(c.outcome(), Some(Outcome::CallerEnded));
    }

    #[test]
    fn a_known_customer_hears_greet_then_their_name_and_ticket_spoken() {
        let flow = knowledge().flow.clone();
        let dupont = KnownCaller {
            title: "Monsieur".into(),
            first_name: "Jean".into(),
            last_name: "Dupont".into(),
            ticket: Some(("box internet".into(), "plus de connexion".into())),
        };
        let g = greeting(&config(), &flow, Some(&dupont), true, true);
        assert_eq!(g.phrases, ["greet"]);
        let (text, fallback) = g.speak.clone().unwrap();
        assert!(
            text.starts_with("Monsieur Dupont, je vois votre ticket concernant votre box internet : plus de connexion."),
            "{text}"
        );
        assert_eq!(fallback.as_deref(), Some("welcome"));
        assert!(g.then.is_empty());
        // Without a TTS, the cached greeting.
        let plain = greeting(&config(), &flow, Some(&dupont), true, false);
        assert_eq!(plain.phrases, ["greet", "welcome"]);
        assert!(plain.speak.is_none());
        // Without a ticket.
        let no_ticket = KnownCaller {
            ticket: None,
            ..dupont.clone()
        };
        let (text, _) = greeting(&config(), &flow, Some(&no_ticket), true, true)
            .speak
            .unwrap();
        assert!(text.starts_with("Monsieur Dupont, bonjour."), "{text}");

        let mut c = hybrid().with_greeting(g);
        assert_eq!(
            c.handle(CallEvent::Established),
            vec![
                Play("greet".into()),
                OpenReply,
                Speak(text_of(&dupont, &flow))
            ]
        );
        // The TTS fails: the cached welcome instead, then the caller's turn.
        assert_eq!(
            c.handle(CallEvent::ReplyFailed),
            vec![CancelReply, Play("welcome".into())]
        );
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);

        // Keys only: the menu follows the spoken name.
        let g = greeting(&config(), &flow, Some(&dupont), false, true);
        assert_eq!(g.then, ["menu"]);
        let mut c = flow_with(g);
        c.handle(CallEvent::Established);
        c.handle(CallEvent::ReplyAudible);
        c.handle(CallEvent::ReplyDone);
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![Play("menu".into())]);
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);
    }

    #[test]
    fn a_cough_or_an_mhm_over_a_step_says_it_again_and_counts_for_nothing() {
        let mut c = guided(Some("sip:support@pbx"));
        says(&mut c, "ma box");
        // The caller talks over the step: "oui" is no answer yet.
        assert_eq!(
            says(&mut c, "oui"),
            vec![CancelReply, Play("internet_restart".into())]
        );
        assert_eq!(
            says(&mut c, ""),
            vec![CancelReply, Play("internet_restart".into())]
        );
        assert_eq!(
            says(&mut c, "mhm"),
            vec![CancelReply, Play("internet_restart".into())]
        );
        c.handle(CallEvent::PlayoutIdle);
        // Said after the step ended, "oui" is an answer.
        assert_eq!(
            says(&mut c, "oui"),
            vec![CancelReply, Play("verify".into())]
        );
    }

    #[test]
    fn a_hesitation_while_the_problem_is_classified_keeps_the_classification() {
        let mut c = guided(None);
        let [Classify { id, .. }] = says(&mut c, "Plus rien ne s'affiche")[..] else {
            panic!()
        };
        // "Euh…" while the LLM thinks: the classification stands, and its
        // answer, come while the caller was talking, is used.
        c.handle(CallEvent::SpeechStarted);
        assert_eq!(
            c.handle(CallEvent::Classified {
                id,
                reply: Some("tv".into())
            }),
            vec![]
        );
        c.handle(CallEvent::SpeechEnded);
        let actions = c.handle(CallEvent::Transcript("hum".into()));
        assert_eq!(
            actions[..2],
            [CancelReply, Play("tv_restart".into())],
            "{actions:?}"
        );
        // The same, the answer coming after the hesitation.
        let mut c = guided(None);
        let [Classify { id, .. }] = says(&mut c, "Plus rien ne s'affiche")[..] else {
            panic!()
        };
        assert_eq!(says(&mut c, "hum"), vec![]);
        assert_eq!(c.phase(), Phase::Thinking);
        let actions = c.handle(CallEvent::Classified {
            id,
            reply: Some("tv".into()),
        });
        assert_eq!(actions[..2], [CancelReply, Play("tv_restart".into())]);
        // Words of substance instead: a new description, a new classification.
        let mut c = guided(None);
        says(&mut c, "Plus rien ne s'affiche");
        assert!(matches!(
            says(&mut c, "c'est le décodeur")[..],
            [_, Play(ref key), ..] if key == "tv_restart"
        ));
    }

    #[test]
    fn after_a_failed_transfer_the_guided_call_goes_on_where_it_stood() {
        let mut c = guided(Some("sip:support@pbx"));
        says(&mut c, "ma box");
        c.handle(CallEvent::PlayoutIdle);
        c.handle(CallEvent::Dtmf('0'));
        c.handle(CallEvent::PlayoutIdle);
        assert_eq!(c.phase(), Phase::Transferring);
        assert_eq!(
            c.handle(CallEvent::TransferFailed),
            vec![Play("transfer_failed".into())]
        );
        assert_eq!(c.handle(CallEvent::PlayoutIdle), vec![]);
        assert_eq!(c.phase(), Phase::Listening);
        assert_eq!(c.outcome(), Some(Outcome::TransferFailed));
        // The step the caller was on is still the question.
        assert_eq!(
            says(&mut c, "c'est fait"),
            vec![CancelReply, Play("verify".into())]
        );
        // The caller's leg ended by the PBX while transferring: transferred.
        let mut c = guided(Some("sip:support@pbx"));
        c.handle(CallEvent::Dtmf('0'));
        c.handle(CallEvent::PlayoutIdle);
        c.caller_left();
        assert_eq!(c.outcome(), Some(Outcome::Transferred));
    }

    fn text_of(caller: &KnownCaller, flow: &guide::FlowConfig) -> String {
        greeting(&config(), flow, Some(caller), true, true)
            .speak
            .unwrap()
            .0
    }

    fn flow_with(g: Greeting) -> Conversation {
        flow().with_greeting(g)
    }

    // The no-input timer.

    fn with_no_input(mut call: CallConfig) -> CallConfig {
        call.no_input = config::NoInputConfig {
            reprompt_after_s: 7.0,
            step_reprompt_after_s: 90.0,
            escalate_after_s: 5.0,
            ..Default::default()
        };
        call
    }

    /// The timer an action list arms, if any.
    fn armed(actions: &[CallAction]) -> Option<(u64, Duration)> {
        actions.iter().find_map(|a| match a {
            ArmNoInput { id, after } => Some((*id, *after)),
            _ => None,
        })
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Keys only, the guide's menu, a transfer target or not.
    fn keys_only(transfer_to: Option<&str>) -> Conversation {
        let mut call = with_no_input(config());
        call.transfer_to = transfer_to.map(String::from);
        let greeting = greeting(&call, &knowledge().flow, None, false, false);
        Conversation::new(call)
            .with_greeting(greeting)
            .with_guide(guide::Guide::new(knowledge(), false, false))
    }

    #[test]
    fn a_silent_caller_hears_the_reprompt_and_the_menu_then_a_human_is_called() {
        let mut c = keys_only(Some("sip:support@pbx"));
        let actions = c.handle(CallEvent::Established);
        assert_eq!(armed(&actions), None, "the bot speaks: no timer");
        let (first, after) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed");
        assert_eq!(after, secs(7.0));
        assert_eq!(
            c.handle(CallEvent::NoInput(first)),
            vec![
                Note(super::Note::NoInput { escalated: false }),
                Play("still_there".into()),
                Play("menu".into()),
            ]
        );
        assert_eq!(c.phase(), Phase::Replying);
        // The reprompt said: the second wait, shorter.
        let (second, after) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed again");
        assert!(second > first);
        assert_eq!(after, secs(5.0));
        // The first timer, fired late, is no longer the one that counts.
        assert!(c.handle(CallEvent::NoInput(first)).is_empty());
        assert_eq!(
            c.handle(CallEvent::NoInput(second)),
            vec![
                Note(super::Note::NoInput { escalated: true }),
                Play("transfer".into())
            ]
        );
        assert_eq!(c.phase(), Phase::AnnouncingTransfer);
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Transfer("sip:support@pbx".into())]
        );
        // The transfer fails: back on the line, the count starts again,
        // and the next escalation is the call-back (not a second transfer).
        c.handle(CallEvent::TransferFailed);
        let (third, after) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed");
        assert_eq!(after, secs(7.0));
        assert_eq!(
            c.handle(CallEvent::NoInput(third))[..2],
            [
                Note(super::Note::NoInput { escalated: false }),
                Play("still_there".into())
            ]
        );
        let (fourth, _) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed");
        assert_eq!(
            c.handle(CallEvent::NoInput(fourth)),
            vec![
                Note(super::Note::NoInput { escalated: true }),
                Play("callback".into())
            ]
        );
        assert_eq!(c.outcome(), Some(Outcome::Callback));
        assert_eq!(
            c.handle(CallEvent::PlayoutIdle),
            vec![Hangup(HangupReason::Finished)]
        );
    }

    #[test]
    fn a_key_or_a_word_starts_the_count_again() {
        let mut c = keys_only(None);
        c.handle(CallEvent::Established);
        let (first, _) = armed(&c.handle(CallEvent::PlayoutIdle)).unwrap();
        c.handle(CallEvent::NoInput(first));
        let (second, after) = armed(&c.handle(CallEvent::PlayoutIdle)).unwrap();
        assert_eq!(after, secs(5.0), "one reprompt said");
        // A key the menu does not know: the line stays open, a new full wait.
        let actions = c.handle(CallEvent::Dtmf('7'));
        assert!(c.handle(CallEvent::NoInput(second)).is_empty(), "stale");
        let (third, after) = match armed(&actions) {
            Some(timer) => timer,
            None => armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed after the menu"),
        };
        assert_eq!(after, secs(7.0), "the count started again");
        assert_eq!(
            c.handle(CallEvent::NoInput(third))[1],
            Play("still_there".into()),
            "a reprompt again, not the escalation"
        );
    }

    #[test]
    fn while_a_fix_step_is_carried_out_the_wait_is_the_long_one() {
        let mut c = keys_only(None);
        c.handle(CallEvent::Established);
        c.handle(CallEvent::PlayoutIdle);
        // Internet: the first step is said.
        let actions = c.handle(CallEvent::Dtmf('1'));
        assert!(
            actions.contains(&Play("internet_restart".into())),
            "{actions:?}"
        );
        let (id, after) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed");
        assert_eq!(after, secs(90.0));
        // The reprompt asks the step's question again.
        assert_eq!(
            c.handle(CallEvent::NoInput(id)),
            vec![
                Note(super::Note::NoInput { escalated: false }),
                Play("still_there".into()),
                Play("internet_restart".into()),
            ]
        );
    }

    #[test]
    fn speech_over_the_reprompt_stops_it_and_no_timer_runs_while_the_caller_talks() {
        let mut call = with_no_input(config());
        call.transfer_to = None;
        let mut c = Conversation::new(call).with_hybrid(hybrid().hybrid.clone().unwrap());
        c.handle(CallEvent::Established);
        let (id, _) = armed(&c.handle(CallEvent::PlayoutIdle)).unwrap();
        // Free conversation: the reprompt alone.
        assert_eq!(
            c.handle(CallEvent::NoInput(id)),
            vec![
                Note(super::Note::NoInput { escalated: false }),
                Play("still_there".into())
            ]
        );
        let actions = c.handle(CallEvent::SpeechStarted);
        assert_eq!(actions, vec![StopPlayout]);
        assert_eq!(armed(&actions), None);
        let actions = c.handle(CallEvent::SpeechEnded);
        assert_eq!(armed(&actions), None, "thinking: no timer");
        c.handle(CallEvent::Transcript("Ma box ne marche plus".into()));
        c.handle(CallEvent::ReplyAudible);
        c.handle(CallEvent::ReplyDone);
        let (_, after) = armed(&c.handle(CallEvent::PlayoutIdle)).expect("armed");
        assert_eq!(after, secs(7.0), "the caller spoke: a full wait again");
    }

    #[test]
    fn a_corrected_transcript_drops_the_reply_asked_on_the_guess_and_asks_again() {
        let mut c = listening();
        c.handle(CallEvent::SpeechStarted);
        c.handle(CallEvent::SpeechEnded);
        assert_eq!(
            c.handle(CallEvent::SpeculativeTranscript("ma box".into())),
            vec![Generate("ma box".into())]
        );
        assert!(c
            .handle(CallEvent::TranscriptConfirmed("ma box".into()))
            .is_empty());
        assert_eq!(
            c.handle(CallEvent::TranscriptCorrected("ma télé".into())),
            vec![CancelReply, OpenReply, Generate("ma télé".into())]
        );
        assert_eq!(c.phase(), Phase::Thinking);
        // Once the reply is said and done, a late correction is let go.
        c.handle(CallEvent::ReplyAudible);
        c.handle(CallEvent::ReplyDone);
        c.handle(CallEvent::PlayoutIdle);
        assert!(c
            .handle(CallEvent::TranscriptCorrected("autre chose".into()))
            .is_empty());
    }

    #[test]
    fn off_it_never_arms() {
        let mut c = keys_only(None);
        c.flow.no_input.enabled = false;
        c.handle(CallEvent::Established);
        assert_eq!(armed(&c.handle(CallEvent::PlayoutIdle)), None);
        assert!(c.handle(CallEvent::NoInput(1)).is_empty());
        assert_eq!(c.phase(), Phase::Listening);
    }
}
