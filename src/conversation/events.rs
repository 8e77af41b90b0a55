//! What the conversation takes in and gives out: the call's events
//! ([`CallEvent`]), the actions the call carries out ([`CallAction`]), and
//! how a call ends ([`HangupReason`], [`Outcome`]).

use std::time::Duration;

use super::Note;

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
    /// What the caller said as the streaming recogniser had it at the end
    /// of the turn (its partial transcript, stable): answered at once, the
    /// final transcript confirms or corrects it.
    SpeculativeTranscript(String),
    /// The final transcript says what the speculative one said.
    TranscriptConfirmed(String),
    /// The final transcript says something else: the reply is asked again.
    TranscriptCorrected(String),
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
    /// The LLM's classification `id` of the caller's problem (`None`: it
    /// failed).
    Classified { id: u64, reply: Option<String> },
    /// The no-input timer `id` (armed by [`CallAction::ArmNoInput`]) ran
    /// out.
    NoInput(u64),
}

/// What the call task should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Queue a cached phrase behind what is playing.
    Play(String),
    /// Queue a cached filler behind what is playing: it covers a wait
    /// (the transcript, the reply), and is counted and drawn as a filler.
    PlayFiller(String),
    /// Play a cached filler now, ahead of a reply that waits for its audio
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
    /// Speak this fixed text (TTS only) into the open slot.
    Speak(String),
    /// Generate a one-off line from this instruction (not the conversation
    /// so far) into the open slot.
    Compose(String),
    /// Ask the LLM which problem the caller's `text` is (answer in
    /// `CallEvent::Classified` with the same `id`).
    Classify {
        id: u64,
        system: String,
        text: String,
    },
    /// Something for the call record (the problem, a step given).
    Note(Note),
    /// Drop the reply: end its streams, stop its providers.
    CancelReply,
    /// The caller talks over the reply: keep making it, play none of it.
    PauseReply,
    /// Queue the interrupted reply again, from the sentence it was in.
    ResumeReply,
    /// Blind transfer (REFER) to this target.
    Transfer(String),
    /// Deliver [`CallEvent::NoInput`] with this `id` after `after`, unless
    /// another timer is armed first (one timer at a time: the new one
    /// replaces it). A timer that is no longer wanted is ignored when it
    /// fires.
    ArmNoInput { id: u64, after: Duration },
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
    /// The bot finished the call (solved, or a human will call back).
    Finished,
}

/// How the call ended for the support team (the call record's outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The caller confirmed the fix worked.
    Resolved,
    /// Handed over to a human (the transfer succeeded).
    Transferred,
    /// The transfer to a human failed.
    TransferFailed,
    /// No one to transfer to: a human will call back.
    Callback,
    /// The caller ended the call with the hang-up key.
    CallerEnded,
    /// The caller's media stopped.
    RtpTimeout,
    /// The caller hung up before the flow reached an outcome.
    Abandoned,
    /// A shutdown ended the call (the drain bound passed).
    Interrupted,
    /// We ended the call for another reason (the media path failed, the
    /// session timer lapsed, an unusable answer).
    Ended,
}

impl Outcome {
    /// Every outcome (the metrics show each from the start).
    pub const ALL: [Outcome; 9] = [
        Outcome::Resolved,
        Outcome::Transferred,
        Outcome::TransferFailed,
        Outcome::Callback,
        Outcome::CallerEnded,
        Outcome::RtpTimeout,
        Outcome::Abandoned,
        Outcome::Interrupted,
        Outcome::Ended,
    ];

    /// The name in call records, metrics and CRM events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Transferred => "transferred",
            Outcome::TransferFailed => "transfer_failed",
            Outcome::Callback => "callback",
            Outcome::CallerEnded => "caller_ended",
            Outcome::RtpTimeout => "rtp_timeout",
            Outcome::Abandoned => "abandoned",
            Outcome::Interrupted => "interrupted",
            Outcome::Ended => "ended",
        }
    }
}
