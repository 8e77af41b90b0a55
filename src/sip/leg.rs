//! One call's SIP leg as a UAS: from the INVITE to the end of its dialog.
//!
//! [`Incoming`](crate::sip::incoming::Incoming) is a new INVITE (in
//! `incoming.rs`); its `answer` creates the dialog and spawns the leg's task
//! defined here, which rings, answers, waits for the
//! ACK and then answers every in-dialog request (re-INVITE/UPDATE offers and
//! session refreshes, INFO keys, NOTIFYs of a transfer, OPTIONS). The call
//! sees none of that: it gets [`LegEvent`]s (established, the caller's media
//! changed, a key, a transfer's outcome, the end) and sends [`LegCommand`]s
//! (transfer, hang up) through the [`Leg`] handle.
//!
//! Whoever decides the call is over, the leg ends the dialog properly: BYE
//! once our 200 is out, 503 (or 487 after a BYE while ringing) before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::media::codec::CodecChoice;
use crate::media::handle::RemoteMedia;
use crate::media::rtp::PayloadTypes;
use crate::sip::midcall::{self, SessionTimer};
use crate::sip::sdp::{self, Direction, NegotiatedAudio, SdpError, SessionDescription, SrtpPolicy};

/// Time for an in-dialog response queued to rsipstack to leave before our BYE.
const NOTIFY_ANSWER_GRACE: Duration = Duration::from_millis(50);
/// How long our 200 waits for its ACK before the call is dropped (RFC 3261
/// §13.3.1.4 says 64 × T1 = 32 s). Within this, the 200 is sent 5 times
/// (0, 0.5, 1.5, 3.5 and 7.5 s): a caller whose ACKs are lost that often has
/// no call to speak of, and an INVITE from a forged address neither holds a
/// call slot for 32 s nor makes us send 11 answers to its victim.
pub const ACK_WAIT: Duration = Duration::from_secs(8);
/// Events queued from the leg to its call.
pub(crate) const EVENT_QUEUE: usize = 16;

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The dialog ended on its own (caller BYE, CANCEL, ACK timeout).
    Remote,
    /// We hang up (BYE, or 503 before our 200).
    Local,
}

/// What the leg tells its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// The ACK came: media flows from now, to and from here.
    Established(RemoteMedia),
    /// A re-offer or the ACK's answer changed the caller's media (moved,
    /// renumbered, hold, resume).
    MediaChanged(RemoteMedia),
    /// A key sent with SIP INFO.
    Dtmf(char),
    /// Our REFER's outcome: the transferee reached the target, or not
    /// (refused, a failing NOTIFY, no final NOTIFY in time).
    Transfer { ok: bool },
    /// The dialog is over (or, for `Local`, the leg is ending it: a session
    /// timer that lapsed, an unusable answer in an ACK).
    Ended(Ending),
}

/// What the call asks of its leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCommand {
    /// The call is set up (the caller looked up): ring, then answer.
    Answer,
    /// Blind transfer (REFER) to this target.
    Transfer(String),
    /// End the call from our side.
    Hangup,
}

/// The call's side of its SIP leg.
pub struct Leg {
    pub(crate) events: mpsc::Receiver<LegEvent>,
    pub(crate) commands: mpsc::Sender<LegCommand>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
}

/// The other side of a [`Leg`] made by [`Leg::pair`]: what a test plays as
/// the caller's SIP side.
pub struct LegPeer {
    pub events: mpsc::Sender<LegEvent>,
    pub commands: mpsc::Receiver<LegCommand>,
}

impl Leg {
    /// A leg driven by hand: events in and commands out through the returned
    /// peer (in-process call tests).
    pub fn pair() -> (Leg, LegPeer) {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (commands, commands_rx) = mpsc::channel(EVENT_QUEUE);
        (
            Leg {
                events,
                commands,
                task: None,
            },
            LegPeer {
                events: events_tx,
                commands: commands_rx,
            },
        )
    }

    /// The next event; `None` once the leg is gone.
    pub async fn next_event(&mut self) -> Option<LegEvent> {
        self.events.recv().await
    }

    /// Sends a REFER; the outcome comes as [`LegEvent::Transfer`].
    pub async fn transfer(&self, target: String) {
        let _ = self.commands.send(LegCommand::Transfer(target)).await;
    }

    /// The call is ready for the caller: the leg rings and answers.
    pub async fn answer(&self) {
        let _ = self.commands.send(LegCommand::Answer).await;
    }

    /// Asks the leg to end the call from our side; [`LegEvent::Ended`]
    /// follows (`Remote` when it was still ringing: 503).
    pub async fn hangup(&self) {
        let _ = self.commands.send(LegCommand::Hangup).await;
    }

    /// Lets the leg go: a call it has not ended yet is ended from our side
    /// (BYE); waits until the leg is done with the dialog.
    pub async fn finish(mut self) {
        drop(self.commands);
        // Events nobody reads any more must not hold the leg up.
        self.events.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// What an in-dialog request means for the call.
enum InDialog {
    Nothing,
    End(Ending),
    Event(LegEvent),
}

/// The leg's task: the dialog and what it negotiated.
pub(crate) struct Session {
    pub(crate) dialogs: Arc<DialogLayer>,
    pub(crate) dialog: InviteDialog,
    pub(crate) states: DialogStateReceiver,
    pub(crate) events: mpsc::Sender<LegEvent>,
    /// Our RTP address as written in SDP.
    pub(crate) local_rtp: SocketAddr,
    /// o= line identity; its version goes up with each new description.
    pub(crate) origin: sdp::Origin,
    /// Our current session description (answer or offer).
    pub(crate) local_sdp: String,
    /// The caller's media as negotiated; `None` until the ACK for a
    /// delayed offer.
    pub(crate) offer: Option<NegotiatedAudio>,
    /// The RFC 4028 session timer of the dialog, if one runs.
    pub(crate) session_timer: Option<midcall::Negotiated>,
    /// The caller's Allow has UPDATE: our own refreshes may use it.
    pub(crate) peer_allows_update: bool,
    /// An offerless re-INVITE was answered with our offer: the caller's
    /// answer comes in its ACK.
    pub(crate) answer_in_ack: bool,
    /// A transfer succeeded: the 200 to its NOTIFY leaves before our BYE.
    pub(crate) transferred: bool,
    /// The codecs this call may use (re-offers are answered by it too).
    pub(crate) codecs: CodecChoice,
    /// Its SRTP policy and our key.
    pub(crate) srtp: SrtpPolicy,
    /// Our key has protected a stream: one that starts again (a new suite,
    /// SRTP back after plain RTP) takes a new key.
    pub(crate) key_used: bool,
    /// A 200 never ACKed ends with our BYE (a trusted source), or in
    /// silence.
    pub(crate) bye_if_unacked: bool,
}

/// What our session refresh got back: the description it offered (none for
/// an UPDATE) and the 2xx's body.
pub(crate) struct RefreshAnswer {
    offered: Option<String>,
    body: Vec<u8>,
}

impl Session {
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<LegCommand>,
        answer_after: Duration,
        ring_guard: CancellationToken,
    ) {
        let ending = match self.until_ready(&mut commands).await {
            Ok(()) => self.until_established(&mut commands, answer_after).await,
            Err(ending) => Err(ending),
        };
        let ending = match ending {
            Ok(()) => self.established(&mut commands).await,
            Err(ending) => ending,
        };
        let _ = self.events.send(LegEvent::Ended(ending)).await;
        ring_guard.cancel();
        if ending == Ending::Local {
            if self.transferred {
                // The 200 to the final NOTIFY is sent by the dialog's
                // transaction task; let it leave before our BYE so the
                // transferee sees them in order.
                tokio::time::sleep(NOTIFY_ANSWER_GRACE).await;
            }
            if let Err(error) = self.dialog.bye().await {
                warn!(%error, "BYE failed");
            }
        }
        self.dialogs.remove_dialog(&self.dialog.id());
    }

    /// Waits for the call to be ready (it looks the caller up first): the
    /// caller hears nothing before, as when the lookup came first. A hang-up
    /// meanwhile is a 503.
    async fn until_ready(
        &mut self,
        commands: &mut mpsc::Receiver<LegCommand>,
    ) -> Result<(), Ending> {
        loop {
            match commands.recv().await {
                Some(LegCommand::Answer) => return Ok(()),
                Some(LegCommand::Transfer(_)) => continue,
                Some(LegCommand::Hangup) | None => {
                    let _ = self
                        .dialog
                        .reject(Some(StatusCode::ServiceUnavailable), None);
                    return Err(Ending::Remote);
                }
            }
        }
    }

    /// Rings, answers, waits for the ACK; `Ok` once the call is established
    /// (and the call told).
    async fn until_established(
        &mut self,
        commands: &mut mpsc::Receiver<LegCommand>,
        answer_after: Duration,
    ) -> Result<(), Ending> {
        let mut answer_at: Option<Instant> = None;
        let mut ack_by: Option<Instant> = None;
        loop {
            let state = tokio::select! {
                state = self.states.recv() => state,
                _ = crate::time::sleep_until_opt(answer_at) => {
                    answer_at = None;
                    self.accept();
                    ack_by = Some(Instant::now() + ACK_WAIT);
                    continue;
                }
                _ = crate::time::sleep_until_opt(ack_by) => {
                    warn!(wait_s = ACK_WAIT.as_secs(), bye = self.bye_if_unacked, "no ACK for our 200: call dropped");
                    // RFC 3261 §13.3.1.4 ends it with a BYE; to an untrusted
                    // source, silence: a forged one would only get more of
                    // our messages.
                    return Err(if self.bye_if_unacked { Ending::Local } else { Ending::Remote });
                }
                command = commands.recv() => match command {
                    Some(LegCommand::Transfer(_) | LegCommand::Answer) => continue,
                    Some(LegCommand::Hangup) | None => {
                        return match self.dialog.state() {
                            // Our 200 is out: the call exists for the caller, end it with BYE.
                            DialogState::WaitAck(..) | DialogState::Confirmed(..) => Err(Ending::Local),
                            _ => {
                                let _ = self.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
                                Err(Ending::Remote)
                            }
                        };
                    }
                },
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
                        ack_by = Some(Instant::now() + ACK_WAIT);
                    } else {
                        answer_at = Some(Instant::now() + answer_after);
                    }
                }
                DialogState::Confirmed(..) => {
                    // The ACK: media flows from now.
                    let remote = self.media_at_ack()?;
                    let srtp = remote.srtp.map_or("off", |keys| keys.theirs.suite.name());
                    info!(remote_rtp = %remote.addr, local_rtp = %self.local_rtp, codec = %remote.codec, srtp, "call established");
                    let _ = self.events.send(LegEvent::Established(remote)).await;
                    return Ok(());
                }
                DialogState::Terminated(_, reason) => {
                    info!(?reason, "call ended before it was established");
                    return Err(Ending::Remote);
                }
                other => debug!(state = %state_name(&other), "dialog state before ACK"),
            }
        }
    }

    /// The caller's media when the ACK comes: the offer's, or for a delayed
    /// offer the answer in the ACK (RFC 3264 §5.1: then the caller sends
    /// with our payload numbers).
    fn media_at_ack(&mut self) -> Result<RemoteMedia, Ending> {
        let (negotiated, receive) = match self.offer.clone() {
            Some(negotiated) => {
                let types = PayloadTypes {
                    audio: negotiated.payload_type,
                    telephone_event: negotiated.telephone_event,
                };
                (negotiated, types)
            }
            None => match self.answer_from_ack() {
                Ok(negotiated) => {
                    // The caller sends with our offer's numbers.
                    let types = negotiated.receive.unwrap_or(PayloadTypes {
                        audio: negotiated.payload_type,
                        telephone_event: negotiated.telephone_event,
                    });
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
        self.key_used = negotiated.srtp.is_some();
        self.offer = Some(negotiated.clone());
        Ok(remote_media(&negotiated, receive))
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

    fn answer_from_ack(&mut self) -> Result<NegotiatedAudio, SdpError> {
        let body = self
            .dialog
            .last_remote_ack()
            .map(|ack| ack.body)
            .unwrap_or_default();
        let answer = SessionDescription::parse(&body)?;
        let chosen = sdp::negotiate_answer(&answer, &self.codecs, &self.local_sdp)?;
        self.answer_keeps_keystreams_unique(&chosen)?;
        Ok(chosen)
    }

    /// An answer to a description of ours carries the key we gave: it may
    /// go on with the current one, or start the first SRTP stream of the
    /// call, never start one again under a key used before (our
    /// description no longer offers it, see below: this is the backstop).
    /// An answer that leaves SRTP takes our key out of our description, so
    /// our later offers (refreshes) do not offer it again.
    fn answer_keeps_keystreams_unique(&mut self, chosen: &NegotiatedAudio) -> Result<(), SdpError> {
        let current = self
            .offer
            .as_ref()
            .and_then(|o| o.srtp)
            .map(|a| a.keys.ours);
        match chosen.srtp {
            Some(agreed) if current == Some(agreed.keys.ours) => Ok(()),
            Some(_) if self.key_used => Err(SdpError::Security(
                "the answer restarts our SRTP stream under a key already used",
            )),
            Some(_) => {
                self.key_used = true;
                Ok(())
            }
            None => {
                if self.local_sdp.contains("a=crypto:") {
                    self.local_sdp = self
                        .local_sdp
                        .split_inclusive('\n')
                        .filter(|line| !line.starts_with("a=crypto:"))
                        .collect();
                    self.origin = self.origin.next();
                    self.local_sdp = sdp::with_origin(&self.local_sdp, self.origin);
                }
                Ok(())
            }
        }
    }

    /// When the session timer next needs us: the refresh we send (we are the
    /// refresher) or the BYE when the caller's refresh has not come.
    fn session_deadline(&self) -> Option<Instant> {
        let timer = self.session_timer?;
        let now = Instant::now().into_std();
        Some(Instant::from_std(match timer.refresher {
            midcall::Refresher::Uas => midcall::refresh_at(now, timer.interval),
            midcall::Refresher::Uac => midcall::expiry(now, timer.interval),
        }))
    }

    /// Sends our session refresh (RFC 4028 §7.4): UPDATE when the caller
    /// allows it, else a re-INVITE with our current description.
    fn spawn_refresh(&self, done: mpsc::Sender<Option<RefreshAnswer>>) {
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
                    dialog.reinvite(Some(headers), Some(sdp.clone().into_bytes())).await
                };
                // Accepted: the answer to the description we sent (none
                // for an UPDATE, which offered nothing).
                let accepted = match &result {
                    Ok(Some(r)) if r.status_code.code() < 300 => Some(RefreshAnswer {
                        offered: (!use_update).then(|| sdp.clone()),
                        body: r.body.clone(),
                    }),
                    _ => None,
                };
                if accepted.is_none() {
                    warn!(result = ?result.as_ref().map(|r| r.as_ref().map(|r| r.status_code.code())), "session refresh not accepted");
                }
                let _ = done.send(accepted).await;
            }
            .in_current_span(),
        );
    }

    /// The answer to our refresh re-INVITE (our description as the offer):
    /// the caller may answer with a new key, codec or address. One that
    /// answers a description we have changed since (the caller's own
    /// re-INVITE crossed ours) is stale and left alone.
    async fn take_refresh_answer(&mut self, answer: RefreshAnswer) {
        let Some(offered) = answer.offered else {
            return;
        };
        if offered != self.local_sdp || answer.body.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let negotiated = SessionDescription::parse(&answer.body)
            .and_then(|a| sdp::negotiate_answer(&a, &self.codecs, &self.local_sdp))
            .and_then(|chosen| {
                self.answer_keeps_keystreams_unique(&chosen)?;
                Ok(chosen)
            });
        match negotiated {
            Ok(chosen) => {
                let chosen = self.held_in_place(chosen);
                if self.offer.as_ref() != Some(&chosen) {
                    self.apply_remote(chosen).await;
                }
            }
            // The session goes on as it was.
            Err(error) => warn!(%error, "the answer to our session refresh is not usable"),
        }
    }

    /// Sends the REFER from a task of its own (its response must not hold up
    /// the NOTIFYs this loop answers); a refusal comes back on `outcome`.
    fn spawn_refer(&self, target: String, outcome: mpsc::Sender<bool>) {
        let dialog = self.dialog.clone();
        tokio::spawn(
            async move {
                let refer_to = format!("<{target}>");
                match dialog.refer(refer_to, None, None).await {
                    Ok(Some(response)) if response.status_code.code() < 300 => {
                        debug!(status = %response.status_code, "REFER accepted; waiting for NOTIFY");
                    }
                    Ok(Some(response)) => {
                        warn!(status = %response.status_code, "REFER refused");
                        let _ = outcome.send(false).await;
                    }
                    Ok(None) | Err(_) => {
                        warn!("REFER got no answer");
                        let _ = outcome.send(false).await;
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// The established call: until one side ends it.
    async fn established(&mut self, commands: &mut mpsc::Receiver<LegCommand>) -> Ending {
        let mut refresh_deadline = self.session_deadline();
        // Outcome of our own session refresh (when we are the refresher).
        let (refresh_tx, mut refresh_rx) = mpsc::channel::<Option<RefreshAnswer>>(1);
        let mut refreshing = false;
        let (refer_tx, mut refer_rx) = mpsc::channel::<bool>(2);
        let mut transfer_deadline: Option<Instant> = None;
        loop {
            let event = tokio::select! {
                command = commands.recv() => match command {
                    Some(LegCommand::Answer) => continue,
                    Some(LegCommand::Transfer(target)) => {
                        info!(%target, "blind transfer (REFER)");
                        transfer_deadline = Some(Instant::now() + midcall::TRANSFER_TIMEOUT);
                        self.spawn_refer(target, refer_tx.clone());
                        continue;
                    }
                    Some(LegCommand::Hangup) | None => return Ending::Local,
                },
                Some(accepted) = refresh_rx.recv() => {
                    refreshing = false;
                    let Some(answer) = accepted else {
                        warn!("our session refresh failed (RFC 4028): hanging up");
                        return Ending::Local;
                    };
                    refresh_deadline = self.session_deadline();
                    self.take_refresh_answer(answer).await;
                    continue;
                }
                Some(ok) = refer_rx.recv() => LegEvent::Transfer { ok },
                _ = crate::time::sleep_until_opt(transfer_deadline) => {
                    warn!("transfer: no final NOTIFY in time");
                    LegEvent::Transfer { ok: false }
                }
                state = self.states.recv() => match state {
                    Some(state) => {
                        let (in_dialog, refreshed) = self.on_dialog_state(state).await;
                        if refreshed {
                            refresh_deadline = self.session_deadline();
                        }
                        match in_dialog {
                            InDialog::End(ending) => return ending,
                            InDialog::Event(event) => event,
                            InDialog::Nothing => continue,
                        }
                    }
                    None => return Ending::Remote,
                },
                _ = crate::time::sleep_until_opt(refresh_deadline) => {
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
                            return Ending::Local;
                        }
                    }
                }
            };
            if let LegEvent::Transfer { ok } = event {
                transfer_deadline = None;
                self.transferred |= ok;
            }
            if self.events.send(event).await.is_err() {
                // The call is gone without saying so: end the dialog.
                return Ending::Local;
            }
        }
    }

    /// Our key protects one stream from its start to its end (RFC 3711
    /// §9.1: a key never encrypts the same packet index twice): an
    /// agreement that would start our stream again under a key already
    /// used (another suite, SRTP back after plain RTP) gets a new key; one
    /// that goes on with the current key keeps it.
    fn keep_keystreams_unique(&mut self, chosen: &mut NegotiatedAudio) {
        let Some(agreed) = chosen.srtp.as_mut() else {
            return;
        };
        let current = self
            .offer
            .as_ref()
            .and_then(|o| o.srtp)
            .map(|a| a.keys.ours);
        if current == Some(agreed.keys.ours) {
            return;
        }
        if self.key_used {
            agreed.keys.ours = self.srtp.renew_key(agreed.keys.ours.suite);
        }
        self.key_used = true;
    }

    /// c=0.0.0.0 is the RFC 2543 way to hold (RFC 3264 §8.4): send
    /// nothing, keep the address we had.
    fn held_in_place(&self, mut chosen: NegotiatedAudio) -> NegotiatedAudio {
        if chosen.remote.ip().is_unspecified() {
            chosen.direction = Direction::Inactive;
            if let Some(previous) = &self.offer {
                chosen.remote = previous.remote;
            }
        }
        chosen
    }

    /// Applies what the caller's latest description says (c=0.0.0.0 is a
    /// hold that keeps the address) and tells the call when its media
    /// changed. Returns the negotiated stream as applied.
    async fn apply_remote(&mut self, chosen: NegotiatedAudio) -> NegotiatedAudio {
        let chosen = self.held_in_place(chosen);
        if self.offer.as_ref().map(|o| o.direction) != Some(chosen.direction) {
            info!(direction = ?chosen.direction, "media direction changed (hold/resume)");
        }
        if self.offer.as_ref().map(|o| o.codec) != Some(chosen.codec) {
            info!(codec = %chosen.codec, "codec changed");
        }
        let receive = chosen.receive.unwrap_or(PayloadTypes {
            audio: chosen.payload_type,
            telephone_event: chosen.telephone_event,
        });
        let _ = self
            .events
            .send(LegEvent::MediaChanged(remote_media(&chosen, receive)))
            .await;
        self.offer = Some(chosen.clone());
        chosen
    }

    /// An in-dialog request; also says whether it refreshed the session.
    async fn on_dialog_state(&mut self, state: DialogState) -> (InDialog, bool) {
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
                        let mut chosen = sdp::negotiate(&offer, &self.codecs, &self.srtp)?;
                        self.keep_keystreams_unique(&mut chosen);
                        Ok((offer, chosen))
                    }) {
                        Ok((offer, chosen)) => {
                            let chosen = self.apply_remote(chosen).await;
                            let new_sdp =
                                sdp::answer(&offer, &chosen, self.local_rtp, self.origin.next());
                            // RFC 3264 §8: the version changes only with the description.
                            if new_sdp_differs(&new_sdp, &self.local_sdp) {
                                self.origin = self.origin.next();
                                self.local_sdp = new_sdp;
                            }
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
                        (InDialog::Event(LegEvent::Dtmf(digit)), false)
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
                        self.apply_remote(chosen).await;
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
                        (InDialog::Event(LegEvent::Transfer { ok: true }), false)
                    }
                    Some(code) if code >= 300 => {
                        warn!(code, "transfer failed");
                        (InDialog::Event(LegEvent::Transfer { ok: false }), false)
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

/// The media path's view of a negotiated stream: our answer's direction
/// says whether we send (hold, RFC 3264 §8.4) and whether the caller may be
/// silent (a phone that holds with sendonly often sends nothing).
pub fn remote_media(negotiated: &NegotiatedAudio, receive: PayloadTypes) -> RemoteMedia {
    let ours = negotiated.direction;
    RemoteMedia {
        addr: negotiated.remote,
        payload_type: negotiated.payload_type,
        codec: negotiated.codec,
        receive,
        send_events: negotiated.telephone_event,
        sending: matches!(ours, Direction::SendRecv | Direction::SendOnly),
        quiet_allowed: ours != Direction::SendRecv,
        rtcp_mux: negotiated.rtcp_mux,
        srtp: negotiated.srtp.map(|agreed| agreed.keys),
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
