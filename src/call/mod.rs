//! One call: from the INVITE to the BYE.
//!
//! The offer is checked before anything is created (400 for an unreadable
//! SDP, 488 for one we cannot accept, 503 past `max_calls`); then an RTP port
//! is bound, the dialog answers 180 and 200 with our SDP, and on the ACK the
//! conversation starts and the media driver sends frame 0 at once. The loop
//! then carries dialog events, media events and the conversation's actions
//! until either side hangs up.

pub mod reply;
mod shared;
pub mod speech;

pub use shared::{Live, Server};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::call::reply::SpeechMsg;
use crate::call::speech::SpeechSession;
use crate::conversation::guide::{Guide, Note};
use crate::conversation::{
    self, CallAction, CallEvent, Conversation, HangupReason, HybridConfig, KnownCaller,
};
use crate::media::driver::{self, MediaEvent, MediaId, ReceiverConfig, StreamStart};
use crate::media::playout::{PlayoutEvent, SegmentEnd, SegmentKind, StreamPolicy};
use crate::media::rtp::PayloadTypes;
use crate::media::vad::VadConfig;
use crate::metrics::PhraseSource;
use crate::redact::Pii;
use crate::sip::midcall::{self, SessionTimer};
use crate::sip::respond::reply_and_linger;
use crate::sip::sdp::{self, Direction, NegotiatedAudio, SdpError, SessionDescription};
use crate::store::{Speaker, TurnKind};
use crate::timeline::{CallTrace, Mark};

/// Time for an in-dialog response queued to rsipstack to leave before our BYE.
const NOTIFY_ANSWER_GRACE: Duration = Duration::from_millis(50);
/// The store's answer to "who is this caller" is waited for this long.
const CUSTOMER_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);
/// Seconds a caller is asked to wait before retrying when we are full.
const RETRY_AFTER_SECS: u32 = 5;

/// Entry point of a new INVITE (no To-tag).
pub async fn handle_invite(server: Arc<Server>, tx: Transaction) {
    let call_id = tx
        .original
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_else(|_| "-".into());
    let span = info_span!("call", call_id = %call_id);
    run(server, tx).instrument(span).await;
}

async fn run(server: Arc<Server>, mut tx: Transaction) {
    // The caller's number (the user part of From), for redacted logs.
    let caller = tx
        .original
        .from_header()
        .ok()
        .and_then(|h| h.uri().ok())
        .and_then(|uri| uri.auth.map(|auth| auth.user))
        .unwrap_or_default();
    let asserted = tx.original.header_value("P-Asserted-Identity");
    let remote = tx.connection.as_ref().and_then(|c| c.get_remote_addr());
    let transport = remote.and_then(|a| a.r#type).unwrap_or_default();
    let source = remote.map(|a| a.addr.to_string()).unwrap_or_default();
    info!(caller = %Pii(&caller), source = %Pii(&source), %transport, "INVITE");

    if server.draining() {
        server.metrics.refused("shutting_down");
        let headers = vec![Header::RetryAfter(RETRY_AFTER_SECS.to_string().into())];
        info!("call refused: shutting down (503)");
        return reply_and_linger(&mut tx, StatusCode::ServiceUnavailable, headers).await;
    }
    // The INVITE starts the call's timeline.
    let trace = CallTrace::new(server.metrics.clone());
    // RFC 3261 §8.2.2.3: an extension we do not support is 420.
    let unsupported = unsupported_extensions(&tx);
    if !unsupported.is_empty() {
        warn!(required = %unsupported, "INVITE requires an unsupported extension: 420");
        let headers = vec![Header::Unsupported(unsupported.into())];
        return reply_and_linger(&mut tx, StatusCode::BadExtension, headers).await;
    }

    // The offer, if the INVITE carries one.
    let offer = match read_offer(&tx) {
        Ok(offer) => offer,
        Err(OfferError::ContentType(content_type)) => {
            warn!(%content_type, "INVITE body is not SDP");
            let headers = vec![Header::Accept("application/sdp".into())];
            return reply_and_linger(&mut tx, StatusCode::UnsupportedMediaType, headers).await;
        }
        Err(OfferError::Sdp(error)) => {
            warn!(%error, "offer refused");
            let code = error.status_code();
            // Warning codes of RFC 3261 §20.43: 305 incompatible media
            // format, 399 miscellaneous.
            let warn_code = if code == 488 { 305 } else { 399 };
            let host = server.config.advertised_ip();
            let text = error.to_string().replace('"', "'");
            let headers = vec![Header::Warning(
                format!("{warn_code} {host} \"{text}\"").into(),
            )];
            return reply_and_linger(&mut tx, StatusCode::from(code), headers).await;
        }
    };

    // Session timers (RFC 4028): too short is 422; otherwise negotiated.
    let timer = midcall::session_timer(&tx.original);
    let peer_allows_update = midcall::header_tokens(&tx.original, &["Allow"])
        .iter()
        .any(|m| m.eq_ignore_ascii_case("UPDATE"));
    if let SessionTimer::TooSmall(asked) = timer {
        warn!(
            asked,
            min = midcall::MIN_SE,
            "session interval too small: 422"
        );
        let headers = vec![Header::Other("Min-SE".into(), midcall::MIN_SE.to_string())];
        return reply_and_linger(&mut tx, StatusCode::from(422), headers).await;
    }

    // A slot is taken only now, for a call we can answer: refusals above do
    // not hold one while their transactions linger.
    let Ok(permit) = server.calls.clone().try_acquire_owned() else {
        server.metrics.refused("max_calls");
        warn!(
            max_calls = server.config.sip.max_calls,
            "call refused: at max_calls"
        );
        let headers = vec![Header::RetryAfter(RETRY_AFTER_SECS.to_string().into())];
        return reply_and_linger(&mut tx, StatusCode::ServiceUnavailable, headers).await;
    };
    let socket = match server.ports.bind() {
        Ok(socket) => Arc::new(socket),
        Err(error) => {
            drop(permit);
            warn!(%error, "no RTP port for the call");
            return refuse(&mut tx, StatusCode::ServiceUnavailable, "no RTP port").await;
        }
    };
    let local_rtp = match socket.local_addr() {
        Ok(addr) => SocketAddr::new(server.config.advertised_ip(), addr.port()),
        Err(error) => {
            drop(permit);
            warn!(%error, "RTP socket has no address");
            return refuse(&mut tx, StatusCode::ServerInternalError, "RTP socket").await;
        }
    };
    if let Some((_, chosen)) = &offer {
        if chosen.remote.is_ipv4() != local_rtp.is_ipv4() {
            drop(permit);
            warn!("offer's address family differs from our RTP socket's: 488");
            let host = server.config.advertised_ip();
            let headers = vec![Header::Warning(
                format!("301 {host} \"Incompatible network address format\"").into(),
            )];
            return reply_and_linger(&mut tx, StatusCode::NotAcceptableHere, headers).await;
        }
    }
    let origin = sdp::Origin::new(u64::from(rand::random::<u32>()));
    let local_sdp = match &offer {
        Some((offer, chosen)) => sdp::answer(offer, chosen, local_rtp, origin),
        None => sdp::offer(local_rtp, origin),
    };

    let (state_tx, states) = server.dialogs.new_dialog_state_channel();
    let contact = contact_uri(&server, &tx);
    let dialog = match server
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(dialog) => dialog,
        Err(error) => {
            drop(permit);
            warn!(%error, "cannot create the dialog");
            return refuse(&mut tx, StatusCode::BadRequest, "invalid INVITE").await;
        }
    };
    // Every response of this INVITE carries the dialog's To-tag, also those
    // the stack builds from the request itself (the 487 after CANCEL):
    // RFC 3261 §12.1.1.
    tag_request_to(&mut tx, &dialog.id().local_tag);
    // The dialog answers through the INVITE transaction while handle() runs.
    // When the call ends with the INVITE still unanswered (BYE while ringing),
    // the guard fires and the INVITE gets its 487 (RFC 3261 §15.1.2).
    let ring_guard = CancellationToken::new();
    let ring_ended = ring_guard.clone();
    let mut dialog_task = dialog.clone();
    tokio::spawn(
        async move {
            tokio::select! {
                result = dialog_task.handle(&mut tx) => {
                    if let Err(error) = result {
                        debug!(%error, "INVITE transaction ended with an error");
                    }
                }
                _ = ring_ended.cancelled() => {
                    let answered = tx.last_response.as_ref().is_some_and(|r| r.status_code.code() >= 200);
                    if !answered {
                        debug!("call ended before the INVITE was answered: 487");
                        reply_and_linger(&mut tx, StatusCode::RequestTerminated, Vec::new()).await;
                    }
                }
            }
        }
        .in_current_span(),
    );

    // Who calls: the asserted identity (RFC 3325) when the PBX sets one, else
    // From; known customers are greeted by name.
    let number = caller_number(
        asserted.as_deref(),
        &caller,
        &server.config.store.country_code,
    );
    let customer = match &number {
        Some(number) => lookup_customer(&server, number).await,
        None => None,
    };
    let record = server.store.record_call(
        &dialog.id().call_id,
        number.as_deref().unwrap_or(&caller),
        customer.as_ref().map(|c| c.id),
    );
    if let Some(customer) = &customer {
        info!(
            customer = customer.id,
            tickets = customer.tickets.len(),
            "known customer"
        );
    }

    let recording = server
        .config
        .operations
        .recordings_dir
        .as_ref()
        .map(|_| crate::media::recording::Recording::default());
    server.metrics.active_calls.inc();
    let call = Call {
        live: server.live(),
        trace,
        recording,
        replies_counted: 0,
        server: server.clone(),
        dialog,
        states,
        socket,
        local_rtp,
        origin,
        local_sdp,
        offer: offer.map(|(_, chosen)| chosen),
        peer_allows_update,
        session_timer: match timer {
            SessionTimer::Active(negotiated) => Some(negotiated),
            _ => None,
        },
        quiet_allowed: Arc::new(AtomicBool::new(false)),
        expected_rtp: None,
        receive_types: None,
        answer_in_ack: false,
        enqueued: 0,
        customer,
        record: Some(record),
    };
    let (ending, dialog) = call.run().await;
    ring_guard.cancel();
    // The call's slot and RTP port are free from here; a BYE to a caller who
    // is gone may take 32 s and holds neither.
    drop(permit);
    if ending == Ending::Local {
        if let Err(error) = dialog.bye().await {
            warn!(%error, "BYE failed");
        }
    }
    server.dialogs.remove_dialog(&dialog.id());
    server.metrics.active_calls.dec();
    info!(?ending, "call ended");
}

/// The caller's number in E.164: the asserted identity's URI when there is
/// one, else the From user.
fn caller_number(asserted: Option<&str>, from_user: &str, country_code: &str) -> Option<String> {
    let asserted = asserted.map(|value| {
        // `"Name" <sip:+33…@host>` or a bare URI; the first of a list.
        let value = value.split(',').next().unwrap_or_default();
        match (value.find('<'), value.find('>')) {
            (Some(open), Some(close)) if open < close => value[open + 1..close].to_string(),
            _ => value.trim().to_string(),
        }
    });
    asserted
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(from_user))
        .find_map(|candidate| crate::store::phone::normalise(candidate, country_code).ok())
}

/// The customer with this number, if the store answers in time.
async fn lookup_customer(server: &Server, number: &str) -> Option<crate::store::Customer> {
    match tokio::time::timeout(CUSTOMER_LOOKUP_TIMEOUT, server.store.find_customer(number)).await {
        Ok(Ok(customer)) => customer,
        Ok(Err(error)) => {
            warn!(%error, "customer lookup failed");
            None
        }
        Err(_) => {
            warn!("customer lookup timed out");
            None
        }
    }
}

/// Option tags of `Require:` we do not support (we support `timer`), over
/// every Require header.
fn unsupported_extensions(tx: &Transaction) -> String {
    midcall::header_tokens(&tx.original, &["Require"])
        .into_iter()
        .filter(|tag| !tag.eq_ignore_ascii_case("timer"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Puts our To-tag into the INVITE as the transaction layer keeps it.
fn tag_request_to(tx: &mut Transaction, tag: &str) {
    let Ok(to) = tx.original.to_header() else {
        return;
    };
    if to.value().contains(";tag=") {
        return;
    }
    let tagged = format!("{};tag={tag}", to.value());
    tx.original.headers.unique_push(Header::To(tagged.into()));
}

enum OfferError {
    ContentType(String),
    Sdp(SdpError),
}

/// The offer of the INVITE, or `None` for a delayed offer (no body).
fn read_offer(
    tx: &Transaction,
) -> Result<Option<(SessionDescription, NegotiatedAudio)>, OfferError> {
    let body = &tx.original.body;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(content_type) = tx.original.header_value("Content-Type") {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/sdp") {
            return Err(OfferError::ContentType(content_type));
        }
    }
    let offer = SessionDescription::parse(body).map_err(OfferError::Sdp)?;
    let chosen = sdp::negotiate(&offer).map_err(OfferError::Sdp)?;
    Ok(Some((offer, chosen)))
}

async fn refuse(tx: &mut Transaction, status: StatusCode, why: &str) {
    debug!(%status, why, "refusing INVITE");
    reply_and_linger(tx, status, Vec::new()).await;
}

/// Our Contact for the dialog, on the transport the INVITE came in on.
fn contact_uri(server: &Server, tx: &Transaction) -> Option<Uri> {
    let transport = tx
        .connection
        .as_ref()
        .map(|c| c.transport())
        .unwrap_or_default();
    server.contact_uri(transport).parse().ok()
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The dialog ended on its own (caller BYE, CANCEL, ACK timeout).
    Remote,
    /// We hang up with BYE.
    Local,
}

/// What an in-dialog request means for the call.
enum InDialog {
    Nothing,
    End(Ending),
    Event(CallEvent),
}

struct Call {
    server: Arc<Server>,
    /// The phrases, cache and knowledge base as they were when the call
    /// came (a reload applies to the next calls).
    live: Arc<Live>,
    /// The call's timeline, metrics and API usage.
    trace: CallTrace,
    /// Both sides of the call, when recordings are on.
    recording: Option<crate::media::recording::Recording>,
    /// Generated replies already counted as phrases (a reply resumed after a
    /// cough starts again; it is still one phrase).
    replies_counted: u64,
    dialog: InviteDialog,
    states: DialogStateReceiver,
    socket: Arc<UdpSocket>,
    /// Our RTP address as written in SDP.
    local_rtp: SocketAddr,
    /// o= line identity; its version goes up with each new description.
    origin: sdp::Origin,
    /// Our current session description (answer or offer).
    local_sdp: String,
    /// The caller's offer as negotiated; `None` until the ACK for a delayed offer.
    offer: Option<NegotiatedAudio>,
    /// The RFC 4028 session timer of the dialog, if one runs.
    session_timer: Option<midcall::Negotiated>,
    /// The caller's Allow has UPDATE: our own refreshes may use it.
    peer_allows_update: bool,
    /// Set while the caller has us on hold and may send no RTP.
    quiet_allowed: Arc<AtomicBool>,
    /// Tells the receive task where the SDP says the caller's media is.
    expected_rtp: Option<watch::Sender<SocketAddr>>,
    /// Tells the receive task which payload types the caller sends.
    receive_types: Option<watch::Sender<PayloadTypes>>,
    /// An offerless re-INVITE was answered with our offer: the caller's
    /// answer comes in its ACK.
    answer_in_ack: bool,
    /// Segments asked of the playout scheduler so far: an Idle event that
    /// counts fewer is stale (it left before our last Play arrived).
    enqueued: u64,
    /// The caller, when the store knows them.
    customer: Option<crate::store::Customer>,
    /// The call record (taken when it is closed).
    record: Option<crate::store::Recorder>,
}

struct Media {
    id: MediaId,
    events: mpsc::Receiver<MediaEvent>,
    receiver: tokio::task::JoinHandle<()>,
    /// Turn-taking with generated replies, when providers are configured.
    speech: Option<(SpeechSession, mpsc::Receiver<SpeechMsg>)>,
    /// Actions of the conversation still to carry out (after the greeting's
    /// first phrases).
    pending: Vec<CallAction>,
}

impl Call {
    /// Runs the call; returns how it ended and its dialog (for the BYE).
    async fn run(mut self) -> (Ending, InviteDialog) {
        let (ending, outcome) = match self.until_established().await {
            Ok((media, conversation)) => self.established(media, conversation).await,
            Err(ending) => (ending, None),
        };
        // The record's outcome: what the flow decided, else how it ended.
        let outcome = match (outcome, ending) {
            (Some(outcome), _) => outcome.as_str(),
            (None, Ending::Remote) => "abandoned",
            (None, Ending::Local) if self.server.shutdown.is_cancelled() => "interrupted",
            (None, Ending::Local) => "ended",
        };
        info!(outcome, "call outcome");
        self.trace.mark(Mark::Hangup {
            by: match ending {
                Ending::Remote => "caller",
                Ending::Local => "bot",
            }
            .into(),
        });
        let timeline = self.trace.finish(
            &self.dialog.id().call_id,
            outcome,
            &self.server.config.costs,
        );
        let usage = timeline.usage;
        self.server.metrics.call_ended(outcome, timeline.cost);
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
        (ending, self.dialog)
    }

    /// Rings, answers, waits for the ACK. `Ok` with the started media and the
    /// conversation once the call is established.
    async fn until_established(&mut self) -> Result<(Media, Conversation), Ending> {
        let answer_after = Duration::from_millis(self.server.config.sip.answer_after_ms);
        let mut answer_at: Option<Instant> = None;
        loop {
            let deadline = answer_at;
            let state = tokio::select! {
                state = self.states.recv() => state,
                _ = sleep_until_opt(deadline) => {
                    answer_at = None;
                    self.accept();
                    continue;
                }
                _ = self.server.shutdown.cancelled() => {
                    return match self.dialog.state() {
                        // Our 200 is out: the call exists for the caller, end it with BYE.
                        DialogState::WaitAck(..) | DialogState::Confirmed(..) => Err(Ending::Local),
                        _ => {
                            let _ = self.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
                            Err(Ending::Remote)
                        }
                    };
                }
            };
            let Some(state) = state else {
                return Err(Ending::Remote);
            };
            match state {
                DialogState::Calling(_) => {
                    if let Err(error) = self.dialog.ringing(None, None) {
                        warn!(%error, "cannot send 180");
                    }
                    if answer_after.is_zero() {
                        self.accept();
                    } else {
                        answer_at = Some(Instant::now() + answer_after);
                    }
                }
                DialogState::Confirmed(..) => {
                    // The ACK: media flows from now.
                    let t0 = Instant::now();
                    self.trace.mark_at(t0.into_std(), Mark::Answered);
                    return self.start_media(t0).await;
                }
                DialogState::Terminated(_, reason) => {
                    info!(?reason, "call ended before it was established");
                    return Err(Ending::Remote);
                }
                other => debug!(state = %state_name(&other), "dialog state before ACK"),
            }
        }
    }

    fn accept(&self) {
        let mut headers = vec![
            Header::ContentType("application/sdp".into()),
            Header::Allow(crate::sip::ALLOW.into()),
        ];
        headers.extend(self.session_timer_headers());
        if let Err(error) = self
            .dialog
            .accept(Some(headers), Some(self.local_sdp.clone().into_bytes()))
        {
            warn!(%error, "cannot send 200");
        }
    }

    fn session_timer_headers(&self) -> Vec<Header> {
        self.session_timer
            .map(|timer| {
                midcall::session_timer_headers(&timer)
                    .into_iter()
                    .map(|(name, value)| Header::Other(name.into(), value))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn start_media(&mut self, t0: Instant) -> Result<(Media, Conversation), Ending> {
        // What the caller sends with: the payload types of the offer, which
        // is theirs, or ours for a delayed offer (RFC 3264 §5.1).
        let (negotiated, receive_types) = match self.offer.clone() {
            Some(negotiated) => {
                let types = PayloadTypes {
                    audio: negotiated.pcmu,
                    telephone_event: negotiated.telephone_event,
                };
                (negotiated, types)
            }
            None => match self.answer_from_ack() {
                Ok(negotiated) => {
                    let types = PayloadTypes {
                        audio: sdp::OFFERED_PCMU,
                        telephone_event: negotiated
                            .telephone_event
                            .map(|_| sdp::OFFERED_TELEPHONE_EVENT),
                    };
                    (negotiated, types)
                }
                Err(error) => {
                    // RFC 3261 §13.3.1.4: an unacceptable answer in the ACK
                    // ends the call with BYE.
                    warn!(%error, "delayed offer: the ACK's answer is not usable");
                    return Err(Ending::Local);
                }
            },
        };
        let server = self.server.clone();
        let server = &server;
        let id = server.next_media_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::channel(driver::EVENT_QUEUE);
        let live = self.live.clone();
        let config = &live.config;
        let providers = server.providers.as_ref();
        let listens = providers.is_some_and(|p| p.stt.is_some());
        let speaks = providers.is_some_and(|p| p.tts.is_some());
        let can_classify = providers.is_some_and(|p| p.llm.is_some());
        let can_generate = speaks && can_classify;
        let known = self.customer.as_ref().map(|c| KnownCaller {
            title: c.title.clone(),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            ticket: c
                .tickets
                .first()
                .map(|t| (t.product.clone(), t.problem.clone())),
        });
        let mut conversation = Conversation::new(config.call.clone()).with_greeting(
            conversation::greeting(&config.call, &config.flow, known.as_ref(), listens, speaks),
        );
        if providers.is_some() {
            conversation = conversation.with_hybrid(HybridConfig {
                fillers: config.hybrid.fillers.clone(),
                fallback: config.hybrid.fallback.clone(),
                backchannel: config
                    .hybrid
                    .backchannel
                    .iter()
                    .map(|w| w.to_lowercase())
                    .collect(),
                not_understood: config.hybrid.not_understood.clone(),
            });
        }
        if let Some(knowledge) = &live.knowledge {
            let first_name = known.as_ref().map(|k| k.first_name.as_str()).unwrap_or("");
            let ticket = known
                .as_ref()
                .and_then(|k| k.ticket.as_ref())
                .map(|(product, problem)| format!("{product} {problem}"))
                .unwrap_or_default();
            let guide = Guide::new(knowledge.clone(), can_classify, can_generate)
                .with_first_name(first_name)
                .with_ticket(&ticket);
            conversation = conversation.with_guide(guide);
        }
        // The greeting's cached phrases start the playout; what follows them
        // (a known customer's name, through TTS) is carried out once the
        // call's loop runs.
        let mut greeting = conversation
            .handle(CallEvent::Established)
            .into_iter()
            .peekable();
        let mut initial = Vec::new();
        while let Some(CallAction::Play(key)) = greeting.peek() {
            self.record_phrase(key);
            if let Some(segment) = self.segment(key) {
                initial.push(segment);
            }
            greeting.next();
        }
        let pending: Vec<CallAction> = greeting.collect();
        self.enqueued = initial.len() as u64;
        server
            .driver
            .start(StreamStart {
                id,
                socket: self.socket.clone(),
                remote: negotiated.remote,
                payload_type: negotiated.pcmu,
                ssrc: rand::random(),
                seq0: rand::random(),
                ts0: rand::random(),
                t0,
                initial,
                policy: StreamPolicy {
                    preroll_bytes: (config.hybrid.preroll_ms as usize) * 8,
                    starve_grace_frames: (config.hybrid.filler_grace_ms / 20).max(1) as u32,
                },
                events: events_tx.clone(),
                recording: self.recording.as_ref().map(|r| r.bot.clone()),
            })
            .await;
        let (expected_tx, expected_rx) = watch::channel(negotiated.remote);
        self.expected_rtp = Some(expected_tx);
        let (types_tx, types_rx) = watch::channel(receive_types);
        self.receive_types = Some(types_tx);
        let receiver = driver::spawn_receiver(ReceiverConfig {
            id,
            socket: self.socket.clone(),
            payload_types: types_rx,
            expected: expected_rx,
            rtp_timeout: Duration::from_secs(server.config.media.rtp_timeout_secs),
            quiet_allowed: self.quiet_allowed.clone(),
            driver: server.driver.clone(),
            events: events_tx,
            vad: listens.then(|| VadConfig {
                threshold: config.listen.vad_threshold,
                min_speech: Duration::from_millis(config.listen.min_speech_ms),
                hangover: Duration::from_millis(config.listen.hangover_ms),
                max_utterance: Duration::from_millis(config.listen.max_utterance_ms),
                ..VadConfig::default()
            }),
            recording: self.recording.as_ref().map(|r| (r.caller.clone(), t0)),
        });
        let speech = server.providers.clone().map(|mut providers| {
            providers.system_prompt = config.hybrid.system_prompt.clone();
            SpeechSession::new(
                providers,
                server.driver.clone(),
                id,
                live.cache.clone(),
                self.trace.clone(),
            )
        });
        info!(remote_rtp = %negotiated.remote, local_rtp = %self.local_rtp, "call established");
        self.offer = Some(negotiated.clone());
        self.apply_direction(id, negotiated.direction).await;
        if let Some(record) = &self.record {
            record.answered();
        }
        Ok((
            Media {
                id,
                events,
                receiver,
                speech,
                pending,
            },
            conversation,
        ))
    }

    fn answer_from_ack(&self) -> Result<NegotiatedAudio, SdpError> {
        let body = self
            .dialog
            .last_remote_ack()
            .map(|ack| ack.body)
            .unwrap_or_default();
        let answer = SessionDescription::parse(&body)?;
        sdp::negotiate(&answer)
    }

    /// A cached phrase said, in the call record.
    fn record_phrase(&mut self, key: &str) {
        let text = self.live.config.cache.phrases.get(key).cloned();
        if let Some(record) = self.record.as_mut() {
            record.turn(
                Speaker::Bot,
                TurnKind::Cached,
                text.as_deref().unwrap_or(key),
            );
        }
    }

    /// A playout event into the timeline and the phrase counts.
    fn observe_playout(&mut self, event: &PlayoutEvent) {
        match event {
            // Never sounded (an empty slot of a reply): not in the timeline.
            PlayoutEvent::Finished {
                end: SegmentEnd::Silent,
                ..
            } => {}
            PlayoutEvent::Started { label, .. } => {
                let source = self.source_of(label);
                let count = match crate::call::speech::reply_of(label) {
                    // One generated phrase per reply, whatever its sentences.
                    Some(reply) if reply > self.replies_counted => {
                        self.replies_counted = reply;
                        true
                    }
                    Some(_) => false,
                    None => true,
                };
                if count {
                    self.server.metrics.phrase(source);
                }
                self.trace.mark(Mark::SegmentStart {
                    label: label.to_string(),
                    source,
                });
            }
            PlayoutEvent::Finished { label, end, .. } => {
                let source = self.source_of(label);
                self.trace.mark(Mark::SegmentEnd {
                    label: label.to_string(),
                    source,
                    interrupted: *end == SegmentEnd::Interrupted,
                });
            }
            PlayoutEvent::Starved { .. } => self.trace.mark(Mark::Starved),
            PlayoutEvent::Idle { .. } => {}
        }
    }

    fn source_of(&self, label: &str) -> PhraseSource {
        if crate::call::speech::reply_of(label).is_some() {
            PhraseSource::generated
        } else if self.live.config.hybrid.fillers.iter().any(|f| f == label) {
            PhraseSource::filler
        } else {
            PhraseSource::cache
        }
    }

    /// Writes the call's recording, off the call's task.
    fn save_recording(&self, recording: crate::media::recording::Recording, record_id: &str) {
        let Some(dir) = &self.server.config.operations.recordings_dir else {
            return;
        };
        let path = self
            .server
            .config
            .base_dir
            .join(dir)
            .join(format!("{record_id}.wav"));
        tokio::task::spawn_blocking(move || match recording.write_wav(&path) {
            Ok(()) => info!(path = %path.display(), "call recorded"),
            Err(error) => warn!(path = %path.display(), %error, "cannot write the recording"),
        });
    }

    /// What the caller said or keyed, in the call record.
    fn record_event(&mut self, event: &CallEvent) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        match event {
            CallEvent::Transcript(text) => record.turn(Speaker::Caller, TurnKind::Speech, text),
            CallEvent::Dtmf(digit) => {
                record.turn(Speaker::Caller, TurnKind::Dtmf, &digit.to_string())
            }
            _ => {}
        }
    }

    fn segment(&self, key: &str) -> Option<SegmentKind> {
        match self.trace.cached(&self.live.cache, key) {
            Some(clip) => Some(SegmentKind::Clip(clip.clone())),
            None => {
                warn!(phrase = key, "phrase not in the cache");
                None
            }
        }
    }

    /// When the session timer next needs us: the refresh we send (we are the
    /// refresher) or the BYE when the caller's refresh has not come.
    fn session_deadline(&self) -> Option<std::time::Instant> {
        let timer = self.session_timer?;
        let now = Instant::now().into_std();
        Some(match timer.refresher {
            midcall::Refresher::Uas => midcall::refresh_at(now, timer.interval),
            midcall::Refresher::Uac => midcall::expiry(now, timer.interval),
        })
    }

    /// Sends our session refresh (RFC 4028 §7.4): UPDATE when the caller
    /// allows it, else a re-INVITE with our current description.
    fn spawn_refresh(&self, done: mpsc::Sender<bool>) {
        let Some(timer) = self.session_timer else {
            return;
        };
        let dialog = self.dialog.clone();
        let headers = vec![
            Header::Other(
                "Session-Expires".into(),
                format!("{};refresher=uas", timer.interval),
            ),
            Header::Supported("timer".into()),
        ];
        let use_update = self.peer_allows_update;
        let sdp = self.local_sdp.clone();
        tokio::spawn(
            async move {
                let result = if use_update {
                    dialog.update(Some(headers), None).await
                } else {
                    let mut headers = headers;
                    headers.push(Header::ContentType("application/sdp".into()));
                    dialog.reinvite(Some(headers), Some(sdp.into_bytes())).await
                };
                let ok = matches!(&result, Ok(Some(r)) if r.status_code.code() < 300);
                if !ok {
                    warn!(result = ?result.as_ref().map(|r| r.as_ref().map(|r| r.status_code.code())), "session refresh not accepted");
                }
                let _ = done.send(ok).await;
            }
            .in_current_span(),
        );
    }

    /// Applies what the caller's latest description says: where its media
    /// is, which payload types, which direction (hold, resume). Returns the
    /// negotiated stream as applied.
    async fn apply_remote(&mut self, media: MediaId, chosen: NegotiatedAudio) -> NegotiatedAudio {
        let mut chosen = chosen;
        // c=0.0.0.0 is the RFC 2543 way to hold (RFC 3264 §8.4): send
        // nothing, keep the address we had.
        if chosen.remote.ip().is_unspecified() {
            chosen.direction = Direction::Inactive;
            if let Some(previous) = &self.offer {
                chosen.remote = previous.remote;
            }
        }
        if self.offer.as_ref().map(|o| o.direction) != Some(chosen.direction) {
            info!(direction = ?chosen.direction, "media direction changed (hold/resume)");
        }
        if self.offer.as_ref().map(|o| o.remote) != Some(chosen.remote) {
            info!("caller's media moved");
            if let Some(expected) = &self.expected_rtp {
                let _ = expected.send(chosen.remote);
            }
            self.server.driver.latch(media, chosen.remote).await;
        }
        if self.offer.as_ref().map(|o| (o.pcmu, o.telephone_event))
            != Some((chosen.pcmu, chosen.telephone_event))
        {
            // Renumbered payload types: the caller sends, and expects, the new ones.
            if let Some(types) = &self.receive_types {
                let _ = types.send(PayloadTypes {
                    audio: chosen.pcmu,
                    telephone_event: chosen.telephone_event,
                });
            }
            self.server
                .driver
                .set_payload_type(media, chosen.pcmu)
                .await;
        }
        self.apply_direction(media, chosen.direction).await;
        self.offer = Some(chosen.clone());
        chosen
    }

    /// Our answered direction decides whether we send (hold, RFC 3264 §8.4)
    /// and whether the caller may stay silent.
    async fn apply_direction(&self, id: MediaId, ours: Direction) {
        let sending = matches!(ours, Direction::SendRecv | Direction::SendOnly);
        // Any hold: a phone that holds with sendonly often sends nothing
        // (no music on hold), so the RTP timeout waits for the resume.
        self.quiet_allowed
            .store(ours != Direction::SendRecv, Ordering::Relaxed);
        self.server.driver.set_sending(id, sending).await;
    }

    /// The established call: until one side hangs up.
    async fn established(
        &mut self,
        mut media: Media,
        mut conversation: Conversation,
    ) -> (Ending, Option<conversation::Outcome>) {
        let mut refresh_deadline = self.session_deadline();
        // Outcome of our own session refresh (when we are the refresher).
        let (refresh_tx, mut refresh_rx) = mpsc::channel::<bool>(1);
        let mut refreshing = false;
        // Outcome of a REFER sent by a task of its own (its response must not
        // hold up the NOTIFYs that this loop answers).
        let (transfer_tx, mut transfer_rx) = mpsc::channel::<CallEvent>(2);
        let mut transfer_deadline: Option<Instant> = None;
        let mut pending = std::mem::take(&mut media.pending);
        let ending = loop {
            let deadline = refresh_deadline.map(Instant::from_std);
            let actions = if !pending.is_empty() {
                std::mem::take(&mut pending)
            } else {
                let event = tokio::select! {
                    Some(msg) = recv_speech(&mut media.speech) => {
                        let Some((speech, _)) = media.speech.as_mut() else { continue };
                        match speech.on_message(msg).await {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                    Some(ok) = refresh_rx.recv() => {
                        refreshing = false;
                        if !ok {
                            warn!("our session refresh failed (RFC 4028): hanging up");
                            break Ending::Local;
                        }
                        refresh_deadline = self.session_deadline();
                        continue;
                    }
                    Some(event) = transfer_rx.recv() => event,
                    _ = sleep_until_opt(transfer_deadline) => {
                        warn!("transfer: no final NOTIFY in time");
                        CallEvent::TransferFailed
                    }
                    state = self.states.recv() => match state {
                        Some(state) => match self.on_dialog_state(state, media.id).await {
                            (InDialog::End(ending), _) => break ending,
                            (InDialog::Event(event), refreshed) => {
                                if refreshed {
                                    refresh_deadline = self.session_deadline();
                                }
                                event
                            }
                            (InDialog::Nothing, refreshed) => {
                                if refreshed {
                                    refresh_deadline = self.session_deadline();
                                }
                                continue;
                            }
                        },
                        None => break Ending::Remote,
                    },
                    event = media.events.recv() => match event {
                        Some(MediaEvent::Playout(PlayoutEvent::Idle { enqueued })) => {
                            let ours = self.enqueued + media.speech.as_ref().map_or(0, |(s, _)| s.enqueued);
                            if enqueued < ours {
                                // Left the driver before our last Play reached it.
                                continue;
                            }
                            CallEvent::PlayoutIdle
                        }
                        Some(MediaEvent::Playout(other)) => {
                            debug!(event = ?other, "playout");
                            self.observe_playout(&other);
                            match media.speech.as_mut().and_then(|(s, _)| s.on_playout(&other)) {
                                Some(event) => event,
                                None => continue,
                            }
                        }
                        Some(MediaEvent::SpeechStarted) => {
                            debug!("caller speaks");
                            self.trace.mark(Mark::CallerSpeechStart);
                            CallEvent::SpeechStarted
                        }
                        Some(MediaEvent::SpeechEnded(utterance)) => {
                            debug!(samples = utterance.len(), "caller stopped");
                            self.trace.mark(Mark::CallerSpeechEnd);
                            match media.speech.as_mut() {
                                Some((speech, _)) => {
                                    speech.caller_stopped(utterance);
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
                    _ = sleep_until_opt(deadline) => {
                        match self.session_timer.map(|t| t.refresher) {
                            Some(midcall::Refresher::Uas) if !refreshing => {
                                // Our turn to refresh the session.
                                refreshing = true;
                                refresh_deadline = None;
                                self.spawn_refresh(refresh_tx.clone());
                                continue;
                            }
                            _ => {
                                warn!("session timer expired without a refresh (RFC 4028): hanging up");
                                break Ending::Local;
                            }
                        }
                    }
                    _ = self.server.shutdown.cancelled() => break Ending::Local,
                };
                if matches!(
                    event,
                    CallEvent::TransferSucceeded | CallEvent::TransferFailed
                ) {
                    transfer_deadline = None;
                    self.trace.mark(Mark::TransferResult {
                        ok: event == CallEvent::TransferSucceeded,
                    });
                }
                if let CallEvent::Dtmf(digit) = event {
                    self.trace.mark(Mark::Dtmf { digit });
                    self.server.metrics.dtmf.inc();
                }
                self.record_event(&event);
                let caller_spoke = matches!(event, CallEvent::SpeechStarted);
                let actions = conversation.handle(event);
                if caller_spoke
                    && actions
                        .iter()
                        .any(|a| matches!(a, CallAction::StopPlayout | CallAction::PauseReply))
                {
                    self.trace.mark(Mark::BargeIn);
                    self.server.metrics.barge_ins.inc();
                }
                actions
            };
            if let Some((speech, _)) = media.speech.as_mut() {
                for text in speech.spoken.drain(..) {
                    if let Some(record) = self.record.as_mut() {
                        record.turn(Speaker::Bot, TurnKind::Generated, &text);
                    }
                }
            }
            let mut hangup = false;
            for action in actions {
                match action {
                    CallAction::Play(key) => {
                        self.record_phrase(&key);
                        if let Some(segment) = self.segment(&key) {
                            self.enqueued += 1;
                            self.server.driver.enqueue(media.id, segment).await;
                        }
                    }
                    CallAction::StopPlayout => self.server.driver.interrupt(media.id).await,
                    CallAction::Note(note) => {
                        if let Some(record) = self.record.as_mut() {
                            match &note {
                                Note::Problem(key) => {
                                    info!(problem = %key, "problem identified");
                                    record.problem(key);
                                }
                                Note::Step(key) => {
                                    info!(step = %key, "fix step given");
                                    record.step(key);
                                }
                            }
                        }
                    }
                    CallAction::Transfer(target) => {
                        info!(%target, "blind transfer (REFER)");
                        self.trace.mark(Mark::Transfer {
                            target: target.clone(),
                        });
                        self.server.metrics.transfers.inc();
                        if let Some(record) = &self.record {
                            record.transfer(&target);
                        }
                        transfer_deadline = Some(Instant::now() + midcall::TRANSFER_TIMEOUT);
                        let dialog = self.dialog.clone();
                        let outcome = transfer_tx.clone();
                        tokio::spawn(
                            async move {
                                let refer_to = format!("<{target}>");
                                match dialog.refer(refer_to, None, None).await {
                                    Ok(Some(response)) if response.status_code.code() < 300 => {
                                        debug!(status = %response.status_code, "REFER accepted; waiting for NOTIFY");
                                    }
                                    Ok(Some(response)) => {
                                        warn!(status = %response.status_code, "REFER refused");
                                        let _ = outcome.send(CallEvent::TransferFailed).await;
                                    }
                                    Ok(None) | Err(_) => {
                                        warn!("REFER got no answer");
                                        let _ = outcome.send(CallEvent::TransferFailed).await;
                                    }
                                }
                            }
                            .in_current_span(),
                        );
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
                    | CallAction::ResumeReply) => match media.speech.as_mut() {
                        Some((speech, _)) => {
                            if let CallAction::PlayFront(key) = &other {
                                self.record_phrase(key);
                            }
                            speech.act(&other).await;
                        }
                        None => debug!(action = ?other, "turn-taking action without providers"),
                    },
                    CallAction::Hangup(reason) => {
                        info!(?reason, "hanging up");
                        if reason == HangupReason::Transferred {
                            // The 200 to the final NOTIFY is sent by the
                            // dialog's transaction task; let it leave before
                            // our BYE so the transferee sees them in order.
                            tokio::time::sleep(NOTIFY_ANSWER_GRACE).await;
                        }
                        hangup = true;
                    }
                }
            }
            if hangup {
                break Ending::Local;
            }
        };
        self.server.driver.stop(media.id).await;
        media.receiver.abort();
        if ending == Ending::Remote {
            conversation.caller_left();
        }
        (ending, conversation.outcome())
    }

    /// An in-dialog request; also says whether it refreshed the session.
    async fn on_dialog_state(&mut self, state: DialogState, media: MediaId) -> (InDialog, bool) {
        match state {
            DialogState::Terminated(_, reason) => {
                match reason {
                    TerminatedReason::UacBye => info!("caller hung up"),
                    other => info!(reason = ?other, "dialog terminated"),
                }
                (InDialog::End(Ending::Remote), false)
            }
            DialogState::Updated(_, request, handle) => {
                // re-INVITE or UPDATE: a new offer (hold, resume, address
                // change), a session refresh, or both.
                let timer = midcall::session_timer(&request);
                if let SessionTimer::TooSmall(_) = timer {
                    let headers = vec![Header::Other("Min-SE".into(), midcall::MIN_SE.to_string())];
                    let _ = handle
                        .respond(StatusCode::from(422), Some(headers), None)
                        .await;
                    return (InDialog::Nothing, false);
                }
                // A refresh without Session-Expires turns the timer off (§9).
                self.session_timer = match timer {
                    SessionTimer::Active(negotiated) => Some(negotiated),
                    _ => None,
                };
                let has_offer = !request.body.iter().all(u8::is_ascii_whitespace);
                let mut headers = self.session_timer_headers();
                let body = if has_offer {
                    match SessionDescription::parse(&request.body).and_then(|offer| {
                        let chosen = sdp::negotiate(&offer)?;
                        Ok((offer, chosen))
                    }) {
                        Ok((offer, chosen)) => {
                            let chosen = self.apply_remote(media, chosen).await;
                            let new_sdp =
                                sdp::answer(&offer, &chosen, self.local_rtp, self.origin.next());
                            // RFC 3264 §8: the version changes only with the description.
                            if new_sdp_differs(&new_sdp, &self.local_sdp) {
                                self.origin = self.origin.next();
                                self.local_sdp = new_sdp;
                            }
                            self.offer = Some(chosen);
                            Some(self.local_sdp.clone())
                        }
                        Err(error) => {
                            // The session goes on as it was (RFC 3261 §14.2).
                            warn!(%error, "mid-call offer refused");
                            let _ = handle
                                .respond(StatusCode::from(error.status_code()), None, None)
                                .await;
                            return (InDialog::Nothing, false);
                        }
                    }
                } else if request.method == Method::Invite {
                    // An offerless re-INVITE: our current description is the
                    // offer, and the caller's answer comes in the ACK.
                    self.answer_in_ack = true;
                    Some(self.local_sdp.clone())
                } else {
                    None
                };
                if body.is_some() {
                    headers.push(Header::ContentType("application/sdp".into()));
                }
                let _ = handle
                    .respond(StatusCode::OK, Some(headers), body.map(String::into_bytes))
                    .await;
                (InDialog::Nothing, true)
            }
            DialogState::Info(_, request, handle) => {
                if request.body.is_empty() {
                    let _ = handle.reply(StatusCode::OK).await;
                    return (InDialog::Nothing, false);
                }
                let content_type = request.header_value("Content-Type").unwrap_or_default();
                match midcall::info_dtmf(&content_type, &request.body) {
                    Ok(Some(digit)) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        info!(%digit, "DTMF (INFO)");
                        (InDialog::Event(CallEvent::Dtmf(digit)), false)
                    }
                    Ok(None) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        (InDialog::Nothing, false)
                    }
                    Err(midcall::InfoError::UnsupportedType(kind)) => {
                        debug!(%kind, "INFO of a type we do not handle");
                        let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                        (InDialog::Nothing, false)
                    }
                    Err(error) => {
                        warn!(%error, "bad INFO");
                        let _ = handle.reply(StatusCode::BadRequest).await;
                        (InDialog::Nothing, false)
                    }
                }
            }
            DialogState::Confirmed(..) if self.answer_in_ack => {
                self.answer_in_ack = false;
                match self.answer_from_ack() {
                    Ok(chosen) => {
                        self.apply_remote(media, chosen).await;
                        (InDialog::Nothing, false)
                    }
                    Err(error) => {
                        // RFC 3261 §13.3.1.4 / RFC 3264 §8: an unusable answer ends the call.
                        warn!(%error, "the ACK's answer to our re-offer is not usable");
                        (InDialog::End(Ending::Local), false)
                    }
                }
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                (InDialog::Nothing, false)
            }
            DialogState::Notify(_, request, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                let is_refer = request
                    .header_value("Event")
                    .or_else(|| request.header_value("o"))
                    .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
                match midcall::sipfrag_status(&request.body).filter(|_| is_refer) {
                    Some(code) if (200..300).contains(&code) => {
                        info!(code, "transfer succeeded");
                        (InDialog::Event(CallEvent::TransferSucceeded), false)
                    }
                    Some(code) if code >= 300 => {
                        warn!(code, "transfer failed");
                        (InDialog::Event(CallEvent::TransferFailed), false)
                    }
                    Some(code) => {
                        debug!(code, "transfer in progress");
                        (InDialog::Nothing, false)
                    }
                    None => (InDialog::Nothing, false),
                }
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
                (InDialog::Nothing, false)
            }
            other => {
                debug!(state = %state_name(&other), "dialog state");
                (InDialog::Nothing, false)
            }
        }
    }
}

/// Whether two descriptions differ beyond their o= line.
fn new_sdp_differs(a: &str, b: &str) -> bool {
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("o="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    body(a) != body(b)
}

fn state_name(state: &DialogState) -> &'static str {
    match state {
        DialogState::Calling(_) => "calling",
        DialogState::Trying(_) => "trying",
        DialogState::Early(..) => "early",
        DialogState::WaitAck(..) => "wait-ack",
        DialogState::Confirmed(..) => "confirmed",
        DialogState::Updated(..) => "updated",
        DialogState::Publish(..) => "publish",
        DialogState::Notify(..) => "notify",
        DialogState::Refer(..) => "refer",
        DialogState::Message(..) => "message",
        DialogState::Info(..) => "info",
        DialogState::Options(..) => "options",
        DialogState::Terminated(..) => "terminated",
    }
}

/// The next speech message, or never when the call has no speech session.
async fn recv_speech(
    speech: &mut Option<(SpeechSession, mpsc::Receiver<SpeechMsg>)>,
) -> Option<SpeechMsg> {
    match speech {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
