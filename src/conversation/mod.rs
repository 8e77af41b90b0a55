//! The conversation: what the bot says and when, as a sans-IO state machine.
//!
//! Events come in ([`CallEvent`]: the call is established, a segment finished
//! playing, a key was pressed, the caller went quiet…) and actions go out
//! ([`CallAction`]: play a cached phrase, stop playback, hang up). The call
//! task in `sip/` feeds it and carries out what it asks.
//!
//! This first flow is the seed's "new customer, 100 % cache" call: greet,
//! welcome, then keep the line open until the caller hangs up or presses the
//! hang-up key, which gets a cached goodbye before the BYE.

use crate::config::CallConfig;

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
}

/// What the call task should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Queue a cached phrase behind what is playing.
    Play(String),
    /// Drop everything queued (the caller took the turn).
    StopPlayout,
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
#[derive(Debug)]
pub struct Conversation {
    flow: CallConfig,
    phase: Phase,
}

impl Conversation {
    pub fn new(flow: CallConfig) -> Self {
        Self {
            flow,
            phase: Phase::Answering,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, event: CallEvent) -> Vec<CallAction> {
        use CallAction::*;
        match (self.phase, event) {
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
