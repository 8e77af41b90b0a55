//! A new INVITE, before it is answered: who calls, and whether we can take
//! its offer (420, 415, 400/488, 422 are answered here). [`Incoming::answer`]
//! creates the dialog and starts the call's [`Leg`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::media::codec::CodecChoice;
use crate::media::srtp::SrtpMode;
use crate::redact::Pii;
use crate::sip::leg::{Leg, Session, EVENT_QUEUE};
use crate::sip::midcall::{self, SessionTimer};
use crate::sip::respond::{reply_and_linger, spawn_reply};
use crate::sip::sdp::{self, NegotiatedAudio, SdpError, SessionDescription, SrtpPolicy};

/// Seconds a caller is asked to wait before retrying when we are full.
const RETRY_AFTER_SECS: u32 = 5;

/// A new INVITE (no To-tag), not answered yet.
pub struct Incoming {
    tx: Transaction,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The user part of From.
    pub from_user: String,
    /// P-Asserted-Identity (RFC 3325), when the PBX sets one.
    pub asserted: Option<String>,
    offer: Option<(SessionDescription, NegotiatedAudio)>,
    timer: SessionTimer,
    peer_allows_update: bool,
    /// The codecs the call may use.
    codecs: CodecChoice,
    /// Whether its media may, must or must not be SRTP, and our key.
    srtp: SrtpPolicy,
    /// A 200 never ACKed ends with our BYE (RFC 3261 §13.3.1.4), not in
    /// silence: for sources we trust (a forged one would only get more of
    /// our messages).
    pub bye_if_unacked: bool,
}

/// The INVITE was answered with a failure; nothing more to do.
#[derive(Debug)]
pub struct Refused;

impl Incoming {
    /// A new INVITE, to be answered with one of `codecs`, in SRTP as
    /// `srtp` says (SDES keys only in a TLS dialog, unless
    /// `srtp_without_tls`).
    pub fn new(
        tx: Transaction,
        codecs: CodecChoice,
        srtp: SrtpMode,
        srtp_without_tls: bool,
    ) -> Incoming {
        let call_id = tx
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_else(|_| "-".into());
        let from_user = tx
            .original
            .from_header()
            .ok()
            .and_then(|h| h.uri().ok())
            .and_then(|uri| uri.auth.map(|auth| auth.user))
            .unwrap_or_default();
        let asserted = tx.original.header_value("P-Asserted-Identity");
        let timer = midcall::session_timer(&tx.original);
        let peer_allows_update = midcall::header_tokens(&tx.original, &["Allow"])
            .iter()
            .any(|m| m.eq_ignore_ascii_case("UPDATE"));
        let encrypted = tx.connection.as_ref().is_some_and(|c| {
            matches!(
                c.transport(),
                rsipstack::sip::Transport::Tls | rsipstack::sip::Transport::Wss
            )
        });
        let srtp = SrtpPolicy::new(srtp, encrypted || srtp_without_tls);
        Incoming {
            tx,
            call_id,
            from_user,
            asserted,
            offer: None,
            timer,
            peer_allows_update,
            codecs,
            srtp,
            bye_if_unacked: false,
        }
    }

    /// Logs the INVITE (numbers and addresses redacted).
    pub fn log(&self) {
        let remote = self
            .tx
            .connection
            .as_ref()
            .and_then(|c| c.get_remote_addr());
        let transport = remote.as_ref().and_then(|a| a.r#type).unwrap_or_default();
        let source = remote.map(|a| a.addr.to_string()).unwrap_or_default();
        info!(caller = %Pii(&self.from_user), source = %Pii(&source), %transport, "INVITE");
    }

    /// 503 with Retry-After: shutting down, or every call slot is taken.
    pub async fn refuse_busy(mut self) {
        let headers = vec![Header::RetryAfter(RETRY_AFTER_SECS.to_string().into())];
        reply_and_linger(&mut self.tx, StatusCode::ServiceUnavailable, headers).await;
    }

    /// A final failure response.
    pub async fn refuse(mut self, status: StatusCode, why: &str) {
        debug!(%status, why, "refusing INVITE");
        reply_and_linger(&mut self.tx, status, Vec::new()).await;
    }

    /// What can be refused from the request alone: an extension we do not
    /// support (420), a body that is not SDP (415), an unusable offer
    /// (400/488 with a Warning), a session interval too small (422).
    pub async fn check(&mut self, advertised: std::net::IpAddr) -> Result<(), Refused> {
        // RFC 3261 §8.2.2.3: an extension we do not support is 420.
        let unsupported = midcall::header_tokens(&self.tx.original, &["Require"])
            .into_iter()
            .filter(|tag| !tag.eq_ignore_ascii_case("timer"))
            .collect::<Vec<_>>()
            .join(", ");
        if !unsupported.is_empty() {
            warn!(required = %unsupported, "INVITE requires an unsupported extension: 420");
            let headers = vec![Header::Unsupported(unsupported.into())];
            reply_and_linger(&mut self.tx, StatusCode::BadExtension, headers).await;
            return Err(Refused);
        }
        // RFC 3261 §8.2.3: our answer carries SDP; a caller that does not
        // accept it gets 406 (RFC 4475 `sdp01`).
        let accept = midcall::header_tokens(&self.tx.original, &["Accept"]);
        if !accept.is_empty()
            && !accept.iter().any(|media| {
                let media = media.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|ok| media.eq_ignore_ascii_case(ok))
            })
        {
            warn!(accept = %accept.join(", "), "INVITE does not accept SDP: 406");
            let headers = vec![Header::Accept("application/sdp".into())];
            reply_and_linger(&mut self.tx, StatusCode::NotAcceptable, headers).await;
            return Err(Refused);
        }
        let offer = read_offer(&self.tx, &self.codecs, &self.srtp).and_then(|offer| {
            // Our offer would have to carry our key, which may not travel
            // in this dialog.
            if offer.is_none() && self.srtp.mode == SrtpMode::Mandatory && !self.srtp.keys_may_travel
            {
                return Err(OfferError::Sdp(SdpError::Security(
                    "no offer, and SRTP keys may not travel in unencrypted signalling ([media] srtp is mandatory)",
                )));
            }
            Ok(offer)
        });
        match offer {
            Ok(offer) => self.offer = offer,
            Err(OfferError::ContentType(content_type)) => {
                warn!(%content_type, "INVITE body is not SDP");
                let headers = vec![Header::Accept("application/sdp".into())];
                reply_and_linger(&mut self.tx, StatusCode::UnsupportedMediaType, headers).await;
                return Err(Refused);
            }
            Err(OfferError::Sdp(error)) => {
                warn!(%error, "offer refused");
                let code = error.status_code();
                // Warning codes of RFC 3261 §20.43: 305 incompatible media
                // format, 399 miscellaneous.
                let warn_code = if code == 488 { 305 } else { 399 };
                let text = error.to_string().replace('"', "'");
                let headers = vec![Header::Warning(
                    format!("{warn_code} {advertised} \"{text}\"").into(),
                )];
                reply_and_linger(&mut self.tx, StatusCode::from(code), headers).await;
                return Err(Refused);
            }
        }
        // Session timers (RFC 4028): too short is 422; otherwise negotiated.
        if let SessionTimer::TooSmall(asked) = self.timer {
            warn!(
                asked,
                min = midcall::MIN_SE,
                "session interval too small: 422"
            );
            let headers = vec![Header::Other("Min-SE".into(), midcall::MIN_SE.to_string())];
            reply_and_linger(&mut self.tx, StatusCode::from(422), headers).await;
            return Err(Refused);
        }
        Ok(())
    }

    /// The codec the answer will take, when the INVITE carried an offer
    /// (known once [`Self::check`] passed; `None` for a delayed offer).
    pub fn codec(&self) -> Option<crate::media::codec::Codec> {
        self.offer.as_ref().map(|(_, audio)| audio.codec)
    }

    /// The transport the INVITE came in on (our Contact follows it).
    pub fn transport(&self) -> rsipstack::sip::Transport {
        self.tx
            .connection
            .as_ref()
            .map(|c| c.transport())
            .unwrap_or_default()
    }

    /// Answers with our media at `local_rtp`: creates the dialog and starts
    /// the leg's task, which rings and answers once the call says it is
    /// ready ([`Leg::answer`]; 200 `answer_after` after the 180). 488 when
    /// the offer's address family is not our socket's (that response, and a
    /// 400 for a dialog that cannot be made, linger in a task of their own).
    pub async fn answer(
        self,
        dialogs: &Arc<DialogLayer>,
        local_rtp: SocketAddr,
        contact: Option<Uri>,
        answer_after: Duration,
    ) -> Result<Leg, Refused> {
        if let Some((_, chosen)) = &self.offer {
            if chosen.remote.is_ipv4() != local_rtp.is_ipv4() {
                warn!("offer's address family differs from our RTP socket's: 488");
                let host = local_rtp.ip();
                let headers = vec![Header::Warning(
                    format!("301 {host} \"Incompatible network address format\"").into(),
                )];
                // Lingers in a task of its own: the caller's call slot is
                // freed at once.
                spawn_reply(self.tx, StatusCode::NotAcceptableHere, headers);
                return Err(Refused);
            }
        }
        let origin = sdp::Origin::new(u64::from(rand::random::<u32>()));
        let local_sdp = match &self.offer {
            Some((offer, chosen)) => sdp::answer(offer, chosen, local_rtp, origin),
            None => sdp::offer(local_rtp, origin, &self.codecs, &self.srtp),
        };
        let (state_tx, states) = dialogs.new_dialog_state_channel();
        let dialog = match dialogs.get_or_create_server_invite(&self.tx, state_tx, None, contact) {
            Ok(dialog) => dialog,
            Err(error) => {
                warn!(%error, "cannot create the dialog");
                spawn_reply(self.tx, StatusCode::BadRequest, Vec::new());
                return Err(Refused);
            }
        };
        let mut tx = self.tx;
        // Every response of this INVITE carries the dialog's To-tag, also
        // those the stack builds from the request itself (the 487 after
        // CANCEL): RFC 3261 §12.1.1.
        tag_request_to(&mut tx, &dialog.id().local_tag);
        // The dialog answers through the INVITE transaction while handle()
        // runs. When the call ends with the INVITE still unanswered (BYE
        // while ringing), the guard fires and the INVITE gets its 487
        // (RFC 3261 §15.1.2).
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
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (commands, commands_rx) = mpsc::channel(EVENT_QUEUE);
        let session = Session {
            dialogs: dialogs.clone(),
            dialog,
            states,
            events: events_tx,
            local_rtp,
            origin,
            local_sdp,
            offer: self.offer.map(|(_, chosen)| chosen),
            session_timer: match self.timer {
                SessionTimer::Active(negotiated) => Some(negotiated),
                _ => None,
            },
            peer_allows_update: self.peer_allows_update,
            answer_in_ack: false,
            transferred: false,
            codecs: self.codecs,
            srtp: self.srtp,
            key_used: false,
            bye_if_unacked: self.bye_if_unacked,
        };
        let task = tokio::spawn(
            session
                .run(commands_rx, answer_after, ring_guard)
                .in_current_span(),
        );
        Ok(Leg {
            events,
            commands,
            task: Some(task),
        })
    }
}

enum OfferError {
    ContentType(String),
    Sdp(SdpError),
}

/// The offer of the INVITE, or `None` for a delayed offer (no body).
fn read_offer(
    tx: &Transaction,
    codecs: &CodecChoice,
    srtp: &SrtpPolicy,
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
    let chosen = sdp::negotiate(&offer, codecs, srtp).map_err(OfferError::Sdp)?;
    Ok(Some((offer, chosen)))
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
