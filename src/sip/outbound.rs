//! A call placed as a UAC (`sav call`, and the base of outbound callbacks):
//! the INVITE with our offer, the callee's answer as [`RemoteMedia`], then
//! the callee's BYE or ours. Signalling only: the call layer
//! (`call::outbound`) puts the media on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Method, StatusCode, Uri};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::SipAddr;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::media::codec::CodecChoice;
use crate::media::handle::RemoteMedia;
use crate::media::rtp::PayloadTypes;
use crate::sip::config::SipConfig;
use crate::sip::endpoint::SipEndpoint;
use crate::sip::sdp::{self, SessionDescription};

/// Longest wait for the INVITE's final response.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(64);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("{0:?} is not a SIP URI: {1}")]
    BadUri(String, String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("SIP: {0}")]
    Sip(Box<rsipstack::Error>),
    #[error(transparent)]
    Endpoint(#[from] crate::sip::endpoint::EndpointError),
    #[error("the extension's password: {0}")]
    NoPassword(crate::secret::SecretError),
    #[error("the call was not answered: {0}")]
    NotAnswered(String),
    #[error("the answer's SDP is not usable: {0}")]
    Answer(#[from] sdp::SdpError),
}

impl From<rsipstack::Error> for DialError {
    fn from(error: rsipstack::Error) -> Self {
        DialError::Sip(Box::new(error))
    }
}

/// An answered outbound call.
pub struct Dialed {
    /// The final response's status (2xx).
    pub status: u16,
    /// From the INVITE to its answer.
    pub setup: Duration,
    /// When the answer arrived.
    pub answered: Instant,
    /// The callee's media, from its answer.
    pub remote: RemoteMedia,
    dialogs: Arc<DialogLayer>,
    dialog: InviteDialog,
    states: DialogStateReceiver,
    /// Stops our endpoint.
    endpoint: CancellationToken,
}

impl Dialed {
    /// The call's SIP Call-ID (`sav report` finds the callee's record by
    /// it when the callee is a sav).
    pub fn call_id(&self) -> String {
        self.dialog.id().call_id
    }

    /// Resolves when the callee hangs up (its BYE).
    pub async fn hung_up(&mut self) {
        loop {
            match self.states.recv().await {
                Some(DialogState::Terminated(..)) | None => return,
                Some(_) => {}
            }
        }
    }

    /// Ends the call: our BYE unless the callee hung up, then our endpoint.
    pub async fn end(self, remote_hung_up: bool) {
        if !remote_hung_up {
            if let Err(error) = self.dialog.bye().await {
                warn!(%error, "BYE failed");
            }
        }
        self.dialogs.remove_dialog(&self.dialog.id());
        self.endpoint.cancel();
    }
}

/// Calls `target` offering `codecs` on our RTP port `rtp_port` (bound by
/// the caller on `config.listen`'s address); returns once it is answered.
pub async fn dial(
    config: &SipConfig,
    target: &str,
    rtp_port: u16,
    codecs: &CodecChoice,
) -> Result<Dialed, DialError> {
    crate::install_crypto_provider();
    let target_uri: Uri = target
        .parse()
        .map_err(|e: rsipstack::sip::Error| DialError::BadUri(target.to_string(), e.to_string()))?;
    // The extension's password, read before anything is sent: as for the
    // registration, a configured account without its password is an error.
    let credential = match config.register.as_ref() {
        Some(r) => Some(Credential {
            username: r.username.clone(),
            password: r.password().map_err(DialError::NoPassword)?,
            realm: None,
            auth_username: r.auth_username.clone(),
        }),
        None => None,
    };

    // Our own endpoint on an ephemeral port, so a running `sav serve` is no obstacle.
    let ip = config.advertised_ip();
    let (endpoint, cancel, sip_port) =
        SipEndpoint::ephemeral(&config.user_agent, config.listen.ip()).await?;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    // The callee's in-dialog requests (its BYE, a re-INVITE) to our dialog.
    let incoming = endpoint
        .incoming_transactions()
        .map_err(|e| DialError::Sip(Box::new(e)))?;
    tokio::spawn(route_in_dialog(incoming, dialogs.clone()));
    // `sav call` is a test caller: plain RTP, whatever [media] srtp says.
    let offer = sdp::offer(
        SocketAddr::new(ip, rtp_port),
        sdp::Origin::new(u64::from(rand::random::<u32>())),
        codecs,
        &sdp::SrtpPolicy::off(),
    );

    let register = config.register.as_ref();
    let contact = crate::sip::contact::format(
        crate::sip::contact::user(config),
        SocketAddr::new(ip, sip_port),
        "",
    );
    let contact: Uri = contact
        .parse()
        .map_err(|e: rsipstack::sip::Error| DialError::BadUri(contact.clone(), e.to_string()))?;
    let destination = match register.and_then(|r| r.outbound_proxy.as_ref()) {
        Some(proxy) => {
            let uri: Uri = proxy.parse().map_err(|e: rsipstack::sip::Error| {
                DialError::BadUri(proxy.clone(), e.to_string())
            })?;
            Some(SipAddr::try_from(&uri)?)
        }
        None => None,
    };
    let option = InviteOption {
        caller_display_name: None,
        caller_params: Vec::new(),
        caller: contact.clone(),
        callee: target_uri,
        destination,
        content_type: Some("application/sdp".into()),
        offer: Some(offer.clone().into_bytes()),
        contact,
        credential,
        headers: None,
        support_prack: false,
        call_id: Some(format!("{:016x}@{ip}", rand::random::<u64>())),
        session_id: None,
        route_set: Vec::new(),
    };
    let (state_tx, states) = dialogs.new_dialog_state_channel();
    let started = Instant::now();
    info!(target, "calling");
    let invited = tokio::time::timeout(ANSWER_TIMEOUT, dialogs.do_invite(option, state_tx)).await;
    let (dialog, response) = match invited {
        Ok(Ok(invited)) => invited,
        Ok(Err(error)) => {
            cancel.cancel();
            return Err(error.into());
        }
        Err(_) => {
            cancel.cancel();
            return Err(DialError::NotAnswered("no final response".into()));
        }
    };
    let answer = match response {
        Some(response) if (200..300).contains(&response.status_code.code()) => response,
        other => {
            cancel.cancel();
            return Err(DialError::NotAnswered(match other {
                Some(r) => format!("{} {}", r.status_code.code(), r.status_code),
                None => "no response".into(),
            }));
        }
    };
    let answered = Instant::now();
    let negotiated = SessionDescription::parse(&answer.body)
        .and_then(|a| sdp::negotiate_answer(&a, codecs, &offer));
    let remote = match negotiated {
        // The callee sends with the payload types of our offer (RFC 3264
        // §5.1), and takes events on those of its answer.
        Ok(chosen) => {
            let receive = chosen.receive.unwrap_or(PayloadTypes {
                audio: chosen.payload_type,
                telephone_event: None,
            });
            crate::sip::leg::remote_media(&chosen, receive)
        }
        Err(error) => {
            // Answered with nothing we can use: end it properly.
            let _ = dialog.bye().await;
            dialogs.remove_dialog(&dialog.id());
            cancel.cancel();
            return Err(error.into());
        }
    };
    Ok(Dialed {
        status: answer.status_code.code(),
        setup: answered - started,
        answered,
        remote,
        dialogs,
        dialog,
        states,
        endpoint: cancel,
    })
}

/// Hands each request that arrives to the dialog it belongs to; anything
/// else gets 481 (an outbound-only endpoint starts no dialog). Ends with
/// the endpoint.
async fn route_in_dialog(mut incoming: TransactionReceiver, dialogs: Arc<DialogLayer>) {
    while let Some(mut tx) = incoming.recv().await {
        match dialogs.match_dialog(&tx) {
            Some(mut dialog) => {
                tokio::spawn(async move {
                    if let Err(error) = dialog.handle(&mut tx).await {
                        debug!(%error, "in-dialog request failed");
                    }
                });
            }
            None if tx.original.method == Method::Ack => {}
            None => {
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registered_account_without_its_password_is_an_error() {
        let mut config: SipConfig = toml::from_str("listen = \"127.0.0.1:5060\"").unwrap();
        config.register = Some(crate::sip::config::RegisterConfig {
            registrar: "sip:pbx.invalid".into(),
            username: "201".into(),
            auth_username: None,
            password_env: Some("SAV_TEST_PASSWORD_NEVER_SET".into()),
            password_file: None,
            expires: 300,
            outbound_proxy: None,
            retry_min_secs: 2,
            retry_max_secs: 300,
        });
        let error = dial(
            &config,
            "sip:sav@127.0.0.1:5999",
            40000,
            &CodecChoice::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(&error, DialError::NoPassword(crate::secret::SecretError::NoVariable { name, .. }) if name == "SAV_TEST_PASSWORD_NEVER_SET"),
            "{error}"
        );
    }
}
