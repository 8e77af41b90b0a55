//! The call: the one place that composes the SIP leg, the media, the
//! conversation, the providers, the store and the timeline.
//!
//! [`run`] takes an answered leg ([`Leg`]) and the call's RTP and RTCP
//! sockets. It
//! looks the caller up, waits for the leg to say the call is established,
//! starts the media with the greeting already queued (frame 0 speaks), and
//! then loops: leg events (the caller's media changed, INFO keys, transfer
//! outcomes, the end), media events (playout, voice activity, RFC 4733 keys,
//! RTP timeout) and provider messages become [`CallEvent`]s for the
//! [`Conversation`]; what it answers ([`CallAction`]s) is carried out in
//! [`effects`]. When the call ends its record, timeline, metrics and
//! recording are closed here.
//!
//! - [`setup`]: configuration and caller → the cores' settings;
//! - [`effects`]: carrying out the conversation's actions;
//! - [`speech`]: the reply book's shell (its streams on the media, its
//!   provider tasks);
//! - [`reply`]: the provider tasks themselves (STT, LLM → TTS);
//! - [`outbound`]: `sav call`, a UAC leg with the same media as a served
//!   call;
//! - [`Services`]/[`Live`]: what the process hands every call.

pub mod board;
pub mod effects;
pub mod outbound;
pub mod reply;
pub mod setup;
mod shared;
pub mod speech;

pub use shared::{Live, Services};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::PhraseCache;
use crate::call::setup::Abilities;
use crate::call::speech::SpeechSession;
use crate::conversation::reply_book::Made;
use crate::conversation::{self, CallAction, CallEvent, Conversation, Outcome};
use crate::media::codec::Codec;
use crate::media::driver::MediaEvent;
use crate::media::handle::{MediaHandle, MediaSetup, RemoteMedia};
use crate::media::playout::PlayoutEvent;
use crate::media::ports::MediaSockets;
use crate::media::recording::Recording;
use crate::sip::leg::{Ending, Leg, LegEvent};
use crate::store::Customer;
use crate::timeline::{CallTrace, Mark, MediaQuality};

/// Who is calling, as the SIP request says.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The user part of From.
    pub from_user: String,
    /// P-Asserted-Identity, when the PBX sets one.
    pub asserted: Option<String>,
}

/// How the call went, for whoever started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEnd {
    pub ending: Ending,
    /// The call record's outcome.
    pub outcome: Outcome,
}

/// Where a call hands out a sender into its media events once its media
/// runs, for tests that play the caller's voice and keys in process.
pub type MediaTap = Option<oneshot::Sender<mpsc::Sender<MediaEvent>>>;

/// Runs one answered call to its end; the leg is left to finish its
/// dialog (the caller's slot can be freed before our BYE completes).
pub async fn run(
    services: Arc<Services>,
    leg: &mut Leg,
    sockets: MediaSockets,
    caller: Caller,
    trace: CallTrace,
    tap: MediaTap,
) -> CallEnd {
    let config = &services.config;
    // Who calls: the asserted identity (RFC 3325) when the PBX sets one,
    // else From; known customers are greeted by name.
    let number = setup::caller_number(
        caller.asserted.as_deref(),
        &caller.from_user,
        &config.store.country_code,
    );
    let customer = match &number {
        Some(number) => setup::lookup_customer(&services.store, number).await,
        None => None,
    };
    let record = services.store.record_call(
        &caller.call_id,
        number.as_deref().unwrap_or(&caller.from_user),
        customer.as_ref().map(|c| c.id),
    );
    if let Some(customer) = &customer {
        info!(
            customer = customer.id,
            tickets = customer.tickets.len(),
            "known customer"
        );
    }
    let recording = config
        .operations
        .recordings_dir
        .as_ref()
        .map(|_| Recording::default());
    let name = customer.as_ref().map(|c| {
        format!("{} {} {}", c.title, c.first_name, c.last_name)
            .trim()
            .to_string()
    });
    let board = services.board.enter(
        &caller.call_id,
        number.as_deref().unwrap_or(&caller.from_user),
        name,
    );
    leg.answer().await;
    let call = Call {
        board,
        live: services.live(),
        services,
        trace,
        recording,
        replies_counted: 0,
        customer,
        record: Some(record),
        call_id: caller.call_id,
        tap,
        no_input: None,
    };
    call.run(leg, sockets).await
}

/// One call in progress.
pub struct Call {
    services: Arc<Services>,
    /// The call's entry among the calls in progress (the console's live
    /// view); it leaves with the call.
    board: board::Entry,
    /// The phrases, cache and knowledge base as they were when the call
    /// came (a reload applies to the next calls).
    live: Arc<Live>,
    /// The call's timeline, metrics and API usage.
    trace: CallTrace,
    /// Both sides of the call, when recordings are on.
    recording: Option<Recording>,
    /// Generated replies already counted as phrases (a reply resumed after a
    /// cough starts again; it is still one phrase).
    replies_counted: u64,
    /// The caller, when the store knows them.
    customer: Option<Customer>,
    /// The call record (taken when it is closed).
    record: Option<crate::store::Recorder>,
    call_id: String,
    tap: MediaTap,
    /// The conversation's no-input timer: when it runs out, and its id.
    no_input: Option<(Instant, u64)>,
}

/// The established call's moving parts.
struct Established {
    media: MediaHandle,
    events: mpsc::Receiver<MediaEvent>,
    /// Turn-taking with generated replies, when providers are configured.
    speech: Option<(SpeechSession, mpsc::Receiver<Made>)>,
    conversation: Conversation,
    /// Actions of the conversation still to carry out (after the greeting's
    /// first phrases).
    pending: Vec<CallAction>,
}

impl Call {
    async fn run(mut self, leg: &mut Leg, sockets: MediaSockets) -> CallEnd {
        let (ending, outcome) = match self.until_established(leg, sockets).await {
            Ok(established) => self.established(leg, established).await,
            Err(ending) => (ending, None),
        };
        // The record's outcome: what the flow decided, else how it ended.
        let outcome = match (outcome, ending) {
            (Some(outcome), _) => outcome,
            (None, Ending::Remote) => Outcome::Abandoned,
            (None, Ending::Local) if self.services.shutdown.is_cancelled() => Outcome::Interrupted,
            (None, Ending::Local) => Outcome::Ended,
        };
        self.close(ending, outcome);
        CallEnd { ending, outcome }
    }

    /// The call's end into its record, timeline, metrics and recording.
    fn close(&mut self, ending: Ending, outcome: Outcome) {
        let outcome = outcome.as_str();
        info!(outcome, "call outcome");
        self.trace.mark(Mark::Hangup {
            by: match ending {
                Ending::Remote => "caller",
                Ending::Local => "bot",
            }
            .into(),
        });
        let timeline = self
            .trace
            .finish(&self.call_id, outcome, &self.services.config.costs);
        let usage = timeline.usage;
        self.services.metrics.call_ended(outcome, timeline.cost);
        info!(
            cost = timeline.cost,
            currency = %timeline.currency,
            prompt_tokens = usage.llm_prompt_tokens,
            completion_tokens = usage.llm_completion_tokens,
            tts_characters = usage.tts_characters,
            stt_seconds = usage.stt_seconds,
            "usage of the call"
        );
        if let Some(record) = self.record.take() {
            if let Some(recording) = self.recording.take() {
                self.save_recording(recording, record.id());
            }
            record.end_with(outcome, Some(&timeline));
        }
    }

    /// Until the leg says the call is established (then the media starts)
    /// or ended. A shutdown meanwhile asks the leg to end it.
    async fn until_established(
        &mut self,
        leg: &mut Leg,
        sockets: MediaSockets,
    ) -> Result<Established, Ending> {
        let mut hanging_up = false;
        loop {
            tokio::select! {
                event = leg.next_event() => match event {
                    // The leg is ending it already (a shutdown): no media.
                    Some(LegEvent::Established(_)) if hanging_up => continue,
                    Some(LegEvent::Established(remote)) => {
                        let t0 = Instant::now();
                        self.trace.mark_at(t0.into_std(), Mark::Answered);
                        return Ok(self.start_media(t0, remote, sockets).await);
                    }
                    Some(LegEvent::Ended(ending)) => return Err(ending),
                    None => return Err(Ending::Remote),
                    Some(other) => debug!(event = ?other, "leg event before the call is up"),
                },
                _ = self.services.shutdown.cancelled(), if !hanging_up => {
                    hanging_up = true;
                    leg.hangup().await;
                }
            }
        }
    }

    async fn start_media(
        &mut self,
        t0: Instant,
        remote: RemoteMedia,
        sockets: MediaSockets,
    ) -> Established {
        let live = self.live.clone();
        prepare_phrases(&live.cache, remote.codec).await;
        let can = Abilities::of(self.services.providers.as_ref());
        let known = self.customer.as_ref().map(setup::known_caller);
        let mut conversation = setup::conversation(&live, known.as_ref(), can);
        // The greeting's cached phrases start the playout; what follows them
        // (a known customer's name, through TTS) is carried out once the
        // call's loop runs.
        let mut greeting = conversation
            .handle(CallEvent::Established)
            .into_iter()
            .peekable();
        let mut initial = Vec::new();
        while let Some(CallAction::Play(key)) = greeting.peek() {
            if let Some(clip) = self.clip(key, remote.codec) {
                initial.push(crate::media::playout::SegmentKind::Clip(clip));
            }
            greeting.next();
        }
        let pending: Vec<CallAction> = greeting.collect();
        self.board.phase(conversation.phase());
        let (media, events) = MediaHandle::start(
            &self.services.driver,
            MediaSetup {
                socket: sockets.rtp,
                rtcp: sockets.rtcp,
                cname: format!("sav@{}", self.services.config.sip.advertised_ip()),
                remote,
                t0,
                initial,
                policy: setup::stream_policy(&live),
                rtp_timeout: Duration::from_secs(self.services.config.media.rtp_timeout_secs),
                vad: setup::vad(&live, can),
                recording: self.recording.clone(),
            },
        )
        .await;
        if let Some(tap) = self.tap.take() {
            let _ = tap.send(media.injector());
        }
        let speech = self.services.providers.clone().map(|mut providers| {
            providers.system_prompt = live.config.hybrid.system_prompt.clone();
            // Free conversation only: the guide's decisions are not taken
            // back.
            providers.speculate =
                live.config.hybrid.speculative_reply && live.config.problems.is_empty();
            SpeechSession::new(providers, live.cache.clone(), self.trace.clone())
        });
        if let Some(record) = &self.record {
            record.answered();
        }
        Established {
            media,
            events,
            speech,
            conversation,
            pending,
        }
    }

    /// The established call: until one side hangs up. Returns how it ended
    /// and the flow's outcome.
    async fn established(
        &mut self,
        leg: &mut Leg,
        mut call: Established,
    ) -> (Ending, Option<conversation::Outcome>) {
        let mut pending = std::mem::take(&mut call.pending);
        let ending = loop {
            let actions = if !pending.is_empty() {
                std::mem::take(&mut pending)
            } else {
                let no_input = self.no_input;
                let event = tokio::select! {
                    id = no_input_timer(no_input) => {
                        self.no_input = None;
                        CallEvent::NoInput(id)
                    }
                    Some(msg) = recv_speech(&mut call.speech) => {
                        let Some((speech, _)) = call.speech.as_mut() else { continue };
                        match speech.on_message(msg, &mut call.media).await {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                    event = leg.next_event() => match event {
                        Some(LegEvent::MediaChanged(remote)) => {
                            prepare_phrases(&self.live.cache, remote.codec).await;
                            call.media.apply_remote(remote).await;
                            continue;
                        }
                        Some(LegEvent::Dtmf(digit)) => CallEvent::Dtmf(digit),
                        Some(LegEvent::Transfer { ok: true }) => CallEvent::TransferSucceeded,
                        Some(LegEvent::Transfer { ok: false }) => CallEvent::TransferFailed,
                        Some(LegEvent::Established(_)) => continue,
                        Some(LegEvent::Ended(ending)) => break ending,
                        None => break Ending::Remote,
                    },
                    event = call.events.recv() => match event {
                        Some(MediaEvent::Playout(PlayoutEvent::Idle { enqueued })) => {
                            if call.media.is_stale_idle(enqueued) {
                                // Left the driver before our last segment reached it.
                                continue;
                            }
                            self.board.bot_stopped();
                            CallEvent::PlayoutIdle
                        }
                        Some(MediaEvent::Playout(other)) => {
                            debug!(event = ?other, "playout");
                            self.observe_playout(&other);
                            match call.speech.as_mut().and_then(|(s, _)| s.on_playout(&other)) {
                                Some(event) => event,
                                None => continue,
                            }
                        }
                        Some(MediaEvent::SpeechAudio(pcm)) => {
                            if let Some((speech, _)) = call.speech.as_mut() {
                                speech.caller_audio(&pcm);
                            }
                            continue;
                        }
                        Some(MediaEvent::SpeechStarted) => {
                            debug!("caller speaks");
                            self.trace.mark(Mark::CallerSpeechStart);
                            self.board.caller_started();
                            call.media.set_words_open(false);
                            if let Some((speech, _)) = call.speech.as_mut() {
                                speech.caller_started();
                            }
                            CallEvent::SpeechStarted
                        }
                        Some(MediaEvent::SpeechEnded(utterance)) => {
                            debug!(samples = utterance.len(), "caller stopped");
                            self.trace.mark(Mark::CallerSpeechEnd);
                            self.board.caller_turn_ended(false);
                            call.media.set_words_open(false);
                            match call.speech.as_mut() {
                                Some((speech, _)) => {
                                    speech.caller_stopped(&utterance);
                                    CallEvent::SpeechEnded
                                }
                                None => continue,
                            }
                        }
                        Some(MediaEvent::Dtmf(digit)) => {
                            info!(%digit, "DTMF");
                            CallEvent::Dtmf(digit)
                        }
                        Some(MediaEvent::RtpTimeout) => CallEvent::RtpTimeout,
                        None => {
                            warn!("media path is gone; ending the call");
                            break Ending::Local;
                        }
                    },
                    _ = self.services.shutdown.cancelled() => break Ending::Local,
                };
                self.observe_event(&event);
                let caller_spoke = matches!(event, CallEvent::SpeechStarted);
                let turn_ended = matches!(event, CallEvent::SpeechEnded);
                let actions = call.conversation.handle(event);
                self.board.phase(call.conversation.phase());
                if turn_ended && !actions.contains(&CallAction::Transcribe) {
                    if let Some((speech, _)) = call.speech.as_mut() {
                        speech.turn_not_heard();
                    }
                }
                if caller_spoke
                    && actions
                        .iter()
                        .any(|a| matches!(a, CallAction::StopPlayout | CallAction::PauseReply))
                {
                    self.trace.mark(Mark::BargeIn);
                    self.services.metrics.barge_ins.inc();
                }
                actions
            };
            if let Some((speech, _)) = call.speech.as_mut() {
                self.record_spoken(speech);
            }
            let mut hangup = false;
            for action in actions {
                hangup |= self
                    .carry_out(action, leg, &mut call.media, call.speech.as_mut())
                    .await;
            }
            if hangup {
                break Ending::Local;
            }
        };
        let codec = call.media.codec();
        let media = call.media.stop().await;
        let received = &media.received;
        let metrics = &self.services.metrics;
        if received.expected() > 0 {
            metrics
                .rtp_loss
                .observe(received.lost() as f64 / received.expected() as f64);
            metrics.rtp_jitter.observe(received.jitter_ms() / 1000.0);
        }
        if let Some(rtt) = media.peer.rtt {
            metrics.rtp_round_trip.observe(rtt.as_secs_f64());
        }
        self.trace.media(MediaQuality {
            codec: codec.name().to_string(),
            rtp_sent: media.sent,
            rtp_received: received.packets,
            rtp_lost: received.lost(),
            jitter_ms: received.jitter_ms(),
            concealed: media.jitter.concealed,
            round_trip_ms: media.peer.rtt.map(|d| d.as_secs_f64() * 1000.0),
            caller_reports_lost: media.peer.of_us.map(|b| i64::from(b.cumulative_lost)),
        });
        info!(
            rtt_ms = media.peer.rtt.map(|d| d.as_millis() as u64),
            caller_sees_lost = media.peer.of_us.map(|b| b.cumulative_lost),
            rtp_sent = media.sent,
            rtp_received = received.packets,
            rtp_lost = received.lost(),
            jitter_ms = format_args!("{:.2}", received.jitter_ms()),
            reordered = media.jitter.reordered,
            late = media.jitter.late,
            duplicates = media.jitter.duplicates,
            concealed = media.jitter.concealed,
            recovered = media.jitter.recovered,
            oversize = media.jitter.oversize,
            echo_delay_ms = media.echo.and_then(|e| e.delay).map(|d| d / 8),
            echo_erle_db = media.echo.map(|e| format!("{:.1}", e.erle_db)),
            echo_frames = media.echo.map(|e| e.active_frames),
            "media of the call"
        );
        if ending == Ending::Remote {
            call.conversation.caller_left();
        }
        (ending, call.conversation.outcome())
    }
}

/// The no-input timer's id when it runs out; never when none is armed.
async fn no_input_timer(timer: Option<(Instant, u64)>) -> u64 {
    match timer {
        Some((at, id)) => {
            tokio::time::sleep_until(at).await;
            id
        }
        None => std::future::pending().await,
    }
}

/// The next speech message, or never when the call has no speech session.
async fn recv_speech(speech: &mut Option<(SpeechSession, mpsc::Receiver<Made>)>) -> Option<Made> {
    match speech {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Makes sure the phrase cache holds `codec`: the first call in G.722 has
/// it encoded, on a blocking thread (tens of milliseconds of CPU), while it
/// rings (or, for a delayed offer or a re-offer, before its phrases are
/// queued); every later call finds it made.
pub async fn prepare_phrases(cache: &Arc<PhraseCache>, codec: Codec) {
    if cache.is_ready(codec) {
        return;
    }
    let cache = cache.clone();
    if tokio::task::spawn_blocking(move || cache.prepare(codec))
        .await
        .is_err()
    {
        warn!(%codec, "phrases not encoded: the call converts them as they play");
    }
}
