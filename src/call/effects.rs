//! What the conversation asks, carried out: phrases into the playout and
//! the call record, REFERs through the leg, speech actions to the reply
//! book; and what happened, into the timeline, the metrics and the record.

use tracing::{debug, info, warn};

use crate::call::speech::SpeechSession;
use crate::call::Call;
use crate::conversation::{CallAction, CallEvent, Note};

use crate::media::codec::Codec;
use crate::media::handle::MediaHandle;
use crate::media::playout::{Clip, PlayoutEvent, SegmentEnd, SegmentKind, SegmentTag};
use crate::media::recording::Recording;
use crate::metrics::PhraseSource;
use crate::sip::leg::Leg;
use crate::store::{Speaker, TurnKind};
use crate::timeline::Mark;

impl Call {
    /// Carries out one action; true when the call is to end (BYE).
    pub(super) async fn carry_out(
        &mut self,
        action: CallAction,
        leg: &Leg,
        media: &mut MediaHandle,
        speech: Option<&mut (
            SpeechSession,
            tokio::sync::mpsc::Receiver<crate::conversation::reply_book::Made>,
        )>,
    ) -> bool {
        match action {
            CallAction::Play(key) => {
                if let Some(clip) = self.clip(&key, media.codec()) {
                    media.enqueue(SegmentKind::Clip(clip)).await;
                }
            }
            CallAction::PlayFiller(key) => {
                if let Some(clip) = self.clip(&key, media.codec()) {
                    media.enqueue(SegmentKind::Filler(clip)).await;
                }
            }
            CallAction::StopPlayout => media.interrupt().await,
            CallAction::Note(note) => self.note(&note),
            CallAction::ArmNoInput { id, after } => {
                self.no_input = Some((tokio::time::Instant::now() + after, id));
            }
            CallAction::Transfer(target) => {
                self.trace.mark(Mark::Transfer {
                    target: target.clone(),
                });
                self.services.metrics.transfers.inc();
                if let Some(record) = &self.record {
                    record.transfer(&target);
                }
                leg.transfer(target).await;
            }
            other @ (CallAction::PlayFront(_)
            | CallAction::Speak(_)
            | CallAction::Compose(_)
            | CallAction::Classify { .. }
            | CallAction::Transcribe
            | CallAction::OpenReply
            | CallAction::Generate(_)
            | CallAction::CancelReply
            | CallAction::PauseReply
            | CallAction::ResumeReply) => match speech {
                Some((speech, _)) => {
                    speech.act(&other, media).await;
                }
                None => debug!(action = ?other, "turn-taking action without providers"),
            },
            CallAction::Hangup(reason) => {
                info!(?reason, "hanging up");
                return true;
            }
        }
        false
    }

    /// Something for the call record, the timeline and the metrics.
    fn note(&mut self, note: &Note) {
        if let Note::NoInput { escalated } = *note {
            info!(escalated, "no input from the caller");
            self.trace.mark(Mark::NoInput { escalated });
            let metrics = &self.services.metrics;
            match escalated {
                false => metrics.no_input_reprompts.inc(),
                true => metrics.no_input_escalations.inc(),
            };
        }
        let Some(record) = self.record.as_mut() else {
            return;
        };
        match note {
            Note::Problem(key) => {
                info!(problem = %key, "problem identified");
                record.problem(key);
            }
            Note::Step(key) => {
                info!(step = %key, "fix step given");
                record.step(key);
            }
            Note::NoInput { escalated: false } => record.note("no input: asked again"),
            Note::NoInput { escalated: true } => record.note("no input: handed over"),
        }
    }

    /// A cached phrase's segment for a call in `codec`, when the cache has
    /// it.
    pub(super) fn clip(&self, key: &str, codec: Codec) -> Option<Clip> {
        match self.trace.cached(&self.live.cache, key, codec) {
            Some(clip) => Some(clip.clone()),
            None => {
                warn!(phrase = key, "phrase not in the cache");
                None
            }
        }
    }

    /// A cached phrase the caller started hearing, in the call record.
    pub(super) fn record_phrase(&mut self, key: &str) {
        let text = self.live.config.cache.phrases.get(key).cloned();
        if let Some(record) = self.record.as_mut() {
            record.turn(
                Speaker::Bot,
                TurnKind::Cached,
                text.as_deref().unwrap_or(key),
            );
        }
    }

    /// Replies generated to their end, in the call record.
    pub(super) fn record_spoken(&mut self, speech: &mut SpeechSession) {
        for text in speech.spoken.drain(..) {
            if let Some(record) = self.record.as_mut() {
                record.turn(Speaker::Bot, TurnKind::Generated, &text);
            }
        }
    }

    /// An event about to reach the conversation, into the timeline, the
    /// metrics and the call record.
    pub(super) fn observe_event(&mut self, event: &CallEvent) {
        match event {
            CallEvent::TransferSucceeded | CallEvent::TransferFailed => {
                self.trace.mark(Mark::TransferResult {
                    ok: *event == CallEvent::TransferSucceeded,
                });
            }
            CallEvent::Dtmf(digit) => {
                self.trace.mark(Mark::Dtmf { digit: *digit });
                self.board.caller_turn_ended(true);
                self.services.metrics.dtmf.inc();
            }
            _ => {}
        }
        let Some(record) = self.record.as_mut() else {
            return;
        };
        match event {
            // A speculative transcript is recorded when the final one
            // confirms or corrects it.
            CallEvent::Transcript(text)
            | CallEvent::TranscriptConfirmed(text)
            | CallEvent::TranscriptCorrected(text) => {
                record.turn(Speaker::Caller, TurnKind::Speech, text)
            }
            CallEvent::Dtmf(digit) => {
                record.turn(Speaker::Caller, TurnKind::Dtmf, &digit.to_string())
            }
            _ => {}
        }
    }

    /// A playout event into the timeline and the phrase counts.
    pub(super) fn observe_playout(&mut self, event: &PlayoutEvent) {
        match event {
            // Never sounded (an empty slot of a reply): not in the timeline.
            PlayoutEvent::Finished {
                end: SegmentEnd::Silent,
                ..
            } => {}
            PlayoutEvent::Started { tag, .. } => {
                self.board.bot_started();
                let source = Self::source_of(tag);
                let count = match *tag {
                    // One generated phrase per reply, whatever its sentences.
                    SegmentTag::Reply { reply, .. } if reply > self.replies_counted => {
                        self.replies_counted = reply;
                        true
                    }
                    SegmentTag::Reply { .. } => false,
                    _ => true,
                };
                if count {
                    self.services.metrics.phrase(source);
                }
                // In the record when the caller starts hearing it.
                if let SegmentTag::Phrase(key) | SegmentTag::Filler(key) = tag {
                    self.record_phrase(key);
                }
                self.trace.mark(Mark::SegmentStart {
                    label: tag.to_string(),
                    source,
                });
            }
            PlayoutEvent::Finished { tag, end, .. } => {
                let source = Self::source_of(tag);
                self.trace.mark(Mark::SegmentEnd {
                    label: tag.to_string(),
                    source,
                    interrupted: *end == SegmentEnd::Interrupted,
                });
            }
            PlayoutEvent::Starved { .. } => self.trace.mark(Mark::Starved),
            PlayoutEvent::Idle { .. } => {}
        }
    }

    /// Why a segment plays, as its tag says: generated speech, a filler
    /// covering a wait, or another cached phrase.
    fn source_of(tag: &SegmentTag) -> PhraseSource {
        match tag {
            SegmentTag::Reply { .. } => PhraseSource::generated,
            SegmentTag::Filler(_) => PhraseSource::filler,
            SegmentTag::Phrase(_) | SegmentTag::Silence => PhraseSource::cache,
        }
    }

    /// Writes the call's recording, off the call's task.
    pub(super) fn save_recording(&self, recording: Recording, record_id: &str) {
        let config = &self.services.config;
        let Some(dir) = config.recordings_dir() else {
            return;
        };
        let path = dir.join(format!("{record_id}.wav"));
        tokio::task::spawn_blocking(move || match recording.write_wav(&path) {
            Ok(()) => info!(path = %path.display(), "call recorded"),
            Err(error) => warn!(path = %path.display(), %error, "cannot write the recording"),
        });
    }
}
