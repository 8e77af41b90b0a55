//! The conversation: what the bot says and when, as a sans-IO state machine.
//!
//! Events come in ([`CallEvent`]: the call is established, a segment finished
//! playing, a key was pressed, the caller went quiet…) and actions go out
//! ([`CallAction`]: play a cached phrase, stop playback, hang up). The call
//! task in `sip/` feeds it and carries out what it asks.
//!
//! The flow: greet and welcome from the cache, then take turns. When speech
//! providers are configured ([`HybridConfig`]), each time the caller stops
//! talking a cached filler plays at once while the utterance is transcribed
//! and the reply is generated behind it (the seed's `say_hybrid`); a reply
//! that is late gets another filler, a provider failure gets a cached
//! fallback. Speech over the bot stops it (barge-in); when that turns out to
//! be a cough or an "mhm", the interrupted reply resumes. The hang-up key gets
//! a cached goodbye before the BYE; the transfer key, a REFER.

use crate::config::CallConfig;

pub mod guide;
pub mod reply;
pub mod speakable;
pub mod speech;

/// The turn-taking settings, present when STT, LLM and TTS are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridConfig {
    /// Cached phrases that cover the wait, used in turn, never the same
    /// twice in a row.
    pub fillers: Vec<String>,
    /// Said when a provider fails.
    pub fallback: String,
    /// Words that are no real interruption ("mhm", "oui"…), lower case.
    pub backchannel: Vec<String>,
    /// Said when the caller's words could not be made out (empty transcript).
    pub not_understood: Option<String>,
}

impl HybridConfig {
    /// No words, or only backchannel words: not a turn of its own.
    pub fn is_backchannel(&self, transcript: &str) -> bool {
        let words: Vec<String> = transcript
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        words
            .iter()
            .all(|w| self.backchannel.iter().any(|b| b == w))
    }
}

/// What happened on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The ACK arrived: media flows from now.
    Established,
    /// The playout queue ran dry: the bot finished what it was saying.
    PlayoutIdle,
    /// The caller pressed a key (RFC 4733).
    Dtmf(char),
    /// No RTP from the caller for the configured timeout.
    RtpTimeout,
    /// The transferee reached the target (NOTIFY sipfrag 2xx).
    TransferSucceeded,
    /// The REFER was refused or the target did not answer.
    TransferFailed,
    /// The caller started speaking (past the VAD's minimum).
    SpeechStarted,
    /// The caller stopped speaking (after the VAD's hang-over).
    SpeechEnded,
    /// What the caller said.
    Transcript(String),
    /// Speech-to-text failed.
    TranscriptFailed,
    /// The reply's next audio is late: the line went silent waiting for it.
    Starved,
    /// The reply's first generated audio started playing.
    ReplyAudible,
    /// The LLM or TTS failed (or the reply came out empty).
    ReplyFailed,
    /// The reply is generated to its end (its last audio is queued).
    ReplyDone,
}

/// What the call task should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Queue a cached phrase behind what is playing.
    Play(String),
    /// Play a cached phrase now, ahead of a reply that waits for its audio
    /// (never cutting what is playing).
    PlayFront(String),
    /// Drop everything queued (the caller took the turn).
    StopPlayout,
    /// Send the utterance just heard to speech-to-text.
    Transcribe,
    /// Queue the slot of a reply (behind what is queued), before its text is
    /// known, so that the reply plays as soon as its audio is there.
    OpenReply,
    /// Generate the reply to this caller text into the open slot.
    Generate(String),
    /// Drop the reply: end its streams, stop its providers.
    CancelReply,
    /// The caller talks over the reply: keep making it, play none of it.
    PauseReply,
    /// Queue the interrupted reply again, from the sentence it was in.
    ResumeReply,
    /// Blind transfer (REFER) to this target.
    Transfer(String),
    /// End the call with BYE.
    Hangup(HangupReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// The caller asked to end the call (hang-up key) and heard the goodbye.
    CallerDone,
    /// The caller's media stopped.
    RtpTimeout,
    /// The caller is with a human now.
    Transferred,
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
    /// A transcript is awaited for the caller's last turn.
    awaiting_transcript: bool,
    /// Fillers said while waiting in this turn.
    fillers_this_turn: u32,
}

/// Fillers in one turn before the reply is given up for the fallback
/// phrase (a provider that hangs without an error).
const MAX_FILLERS_PER_TURN: u32 = 4;

impl Conversation {
    pub fn new(flow: CallConfig) -> Self {
        Self {
            flow,
            hybrid: None,
            phase: Phase::Answering,
            last_filler: None,
            reply_open: false,
            reply_interrupted: false,
            reply_has_content: false,
            reply_generating: false,
            awaiting_transcript: false,
            fillers_this_turn: 0,
        }
    }

    /// With speech providers: turn-taking with fillers and generated replies.
    pub fn with_hybrid(mut self, hybrid: HybridConfig) -> Self {
        self.hybrid = Some(hybrid);
        self
    }

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

    fn fallback(&self) -> Option<String> {
        self.hybrid.as_ref().map(|h| h.fallback.clone())
    }

    /// Cancels the reply if there is one.
    fn cancel_reply(&mut self, actions: &mut Vec<CallAction>) {
        if self.reply_open {
            self.reply_open = false;
            self.reply_interrupted = false;
            self.reply_has_content = false;
            self.reply_generating = false;
            actions.push(CallAction::CancelReply);
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
                let mut actions: Vec<CallAction> = self.filler(Play).into_iter().collect();
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
                        self.reply_has_content = true;
                        self.reply_generating = true;
                        actions.push(OpenReply);
                        actions.push(Generate(text.clone()));
                        actions
                    }
                } else if words.is_empty() {
                    // Nothing understood: say so rather than go silent.
                    let mut actions = Vec::new();
                    self.cancel_reply(&mut actions);
                    self.phase = Phase::Listening;
                    actions.extend(self.flow_not_understood().map(Play));
                    actions
                } else {
                    // The caller's own turn: "oui" answering a question is an answer.
                    self.reply_has_content = true;
                    self.reply_generating = true;
                    vec![Generate(text.clone())]
                }
            }
            (Phase::Thinking | Phase::Replying, CallEvent::Starved) => {
                self.filler_or_give_up(PlayFront)
            }
            // The line ran dry while we still wait for the transcript or the
            // reply: keep it alive.
            (Phase::Thinking | Phase::Replying, CallEvent::PlayoutIdle)
                if self.awaiting_transcript || self.reply_generating =>
            {
                self.filler_or_give_up(Play)
            }
            (Phase::Thinking, CallEvent::ReplyAudible) => {
                self.phase = Phase::Replying;
                Vec::new()
            }
            (_, CallEvent::ReplyDone) => {
                self.reply_generating = false;
                Vec::new()
            }
            (Phase::Thinking | Phase::Replying | Phase::Interrupted, CallEvent::ReplyFailed)
            | (Phase::Thinking, CallEvent::TranscriptFailed) => {
                let mut actions = Vec::new();
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                if self.phase != Phase::Interrupted {
                    self.phase = Phase::Listening;
                    actions.extend(self.fallback().map(Play));
                }
                actions
            }
            (Phase::Thinking | Phase::Replying, CallEvent::PlayoutIdle) => {
                // Everything said.
                self.reply_open = false;
                self.phase = Phase::Listening;
                Vec::new()
            }
            _ => return None,
        };
        Some(actions)
    }

    /// Another filler (`Play` or `PlayFront`), or, after too many for one
    /// turn, give up on the reply: the fallback phrase.
    fn filler_or_give_up(&mut self, play: fn(String) -> CallAction) -> Vec<CallAction> {
        if self.fillers_this_turn >= MAX_FILLERS_PER_TURN {
            let mut actions = Vec::new();
            self.cancel_reply(&mut actions);
            self.awaiting_transcript = false;
            self.phase = Phase::Listening;
            actions.extend(self.fallback().map(CallAction::Play));
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

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, event: CallEvent) -> Vec<CallAction> {
        use CallAction::*;
        if let Some(actions) = self.handle_turn(&event) {
            return actions;
        }
        let talking = matches!(
            self.phase,
            Phase::Thinking | Phase::Replying | Phase::Interrupted
        );
        match (self.phase, event) {
            (Phase::Thinking | Phase::Replying | Phase::Interrupted, CallEvent::Dtmf(digit))
                if talking && digit.eq_ignore_ascii_case(&self.flow.hangup_digit) =>
            {
                let mut actions = vec![StopPlayout];
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                self.phase = Phase::SayingGoodbye;
                actions.push(Play(self.flow.goodbye.clone()));
                actions
            }
            (Phase::Thinking | Phase::Replying | Phase::Interrupted, CallEvent::Dtmf(digit))
                if talking
                    && digit.eq_ignore_ascii_case(&self.flow.transfer_digit)
                    && self.flow.transfer_to.is_some() =>
            {
                let mut actions = vec![StopPlayout];
                self.cancel_reply(&mut actions);
                self.awaiting_transcript = false;
                self.phase = Phase::AnnouncingTransfer;
                actions.push(Play(self.flow.transfer.clone()));
                actions
            }
            (Phase::Answering, CallEvent::Established) => {
                self.phase = Phase::Greeting;
                self.flow.greeting.iter().cloned().map(Play).collect()
            }
            (Phase::Greeting, CallEvent::PlayoutIdle) => {
                self.phase = Phase::Listening;
                Vec::new()
            }
            (Phase::Greeting | Phase::Listening, CallEvent::Dtmf(digit))
                if digit.eq_ignore_ascii_case(&self.flow.hangup_digit) =>
            {
                self.phase = Phase::SayingGoodbye;
                vec![StopPlayout, Play(self.flow.goodbye.clone())]
            }
            (Phase::Greeting | Phase::Listening, CallEvent::Dtmf(digit))
                if digit.eq_ignore_ascii_case(&self.flow.transfer_digit)
                    && self.flow.transfer_to.is_some() =>
            {
                self.phase = Phase::AnnouncingTransfer;
                vec![StopPlayout, Play(self.flow.transfer.clone())]
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
                vec![Hangup(HangupReason::Transferred)]
            }
            (Phase::Transferring, CallEvent::TransferFailed) => {
                // Back to the bot: say so, and keep the line open.
                self.phase = Phase::Greeting;
                vec![Play(self.flow.transfer_failed.clone())]
            }
            (Phase::SayingGoodbye, CallEvent::PlayoutIdle) => {
                self.phase = Phase::Ended;
                vec![Hangup(HangupReason::CallerDone)]
            }
            (Phase::Ended, _) => Vec::new(),
            (_, CallEvent::RtpTimeout) => {
                self.phase = Phase::Ended;
                vec![StopPlayout, Hangup(HangupReason::RtpTimeout)]
            }
            // Other keys, idle while listening, a second Established: nothing to do.
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallAction::*;

    fn config() -> CallConfig {
        CallConfig {
            greeting: vec!["greet".into(), "welcome".into()],
            hangup_digit: '#',
            goodbye: "goodbye".into(),
            transfer_to: Some("sip:support@pbx".into()),
            transfer_digit: '0',
            transfer: "transfer".into(),
            transfer_failed: "transfer_failed".into(),
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
            vec![Play("filler_hum".into()), OpenReply, Transcribe],
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
            vec![Play("filler_ok".into())]
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
            vec![Play("filler_ok".into())]
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
            assert!(matches!(c.handle(CallEvent::PlayoutIdle)[..], [Play(_)]));
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
            vec![Play("filler_hum".into()), OpenReply, Transcribe]
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
            Play("filler_ok".into())
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
            vec![Play("filler_ok".into()), Transcribe],
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
}
