//! The tokio side of registration: builds each REGISTER the sans-IO
//! [`Registration`] asks for, sends it through rsipstack's transaction layer
//! (to the outbound proxy when one is set), and feeds the final response back.
//! It also honours rport/received (RFC 3581): when the registrar sees us at
//! another address, Contact follows, in REGISTER and in dialogs alike.

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{typed, Header, Method, Response, SipMessage, StatusCode, Transport, Uri};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{endpoint::EndpointInnerRef, make_call_id, make_tag, CallIdFormat};
use rsipstack::transport::SipAddr;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::sip::config::RegisterConfig;
use crate::sip::registration::{
    ChallengeKind, RegisterRequest, RegisterResponse, Registration, RegistrationEvent,
    RegistrationPolicy,
};

/// Longest wait for one REGISTER's final response (64 × T1).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);
/// Longest wait for the unREGISTER at shutdown.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    #[error("the extension's password: {0}")]
    NoPassword(crate::secret::SecretError),
    #[error("sip.register.{key} = {value:?} is not a usable SIP URI: {reason}")]
    BadUri {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Registration state as the rest of sav sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    Registering,
    Registered,
    Failing,
    Unregistered,
}

pub use crate::sip::contact::LearnedAddress;

pub struct RegistrarClient {
    endpoint: EndpointInnerRef,
    config: RegisterConfig,
    password: String,
    registrar: Uri,
    aor: Uri,
    proxy: Option<SipAddr>,
    call_id: String,
    /// Contact transport suffix (`;transport=tcp`…), empty for UDP.
    transport_param: String,
    /// What the REGISTERs go over.
    transport: Transport,
    /// The configured address (advertised IP, SIP port).
    configured: SocketAddr,
    learned: LearnedAddress,
    status: watch::Sender<RegistrationStatus>,
}

impl RegistrarClient {
    pub fn new(
        endpoint: EndpointInnerRef,
        config: RegisterConfig,
        configured: SocketAddr,
        tls_port: u16,
        learned: LearnedAddress,
    ) -> Result<(Self, watch::Receiver<RegistrationStatus>), RegisterError> {
        let password = config.password().map_err(RegisterError::NoPassword)?;
        let parse = |key: &'static str, value: &str| {
            value.parse::<Uri>().map_err(|e| RegisterError::BadUri {
                key,
                value: value.to_string(),
                reason: e.to_string(),
            })
        };
        let registrar = parse("registrar", &config.registrar)?;
        let mut aor = registrar.clone();
        aor.auth = Some(rsipstack::sip::Auth {
            user: config.username.clone(),
            password: None,
        });
        aor.params.clear();
        let proxy = match &config.outbound_proxy {
            Some(proxy) => {
                let uri = parse("outbound_proxy", proxy)?;
                Some(SipAddr::try_from(&uri).map_err(|e| RegisterError::BadUri {
                    key: "outbound_proxy",
                    value: proxy.clone(),
                    reason: e.to_string(),
                })?)
            }
            None => None,
        };
        // The transport REGISTERs go over: the proxy's or the registrar's
        // `transport` parameter, TLS for a sips: URI, else UDP.
        let transport_of = |uri: &Uri| {
            uri.params.iter().find_map(|p| match p {
                rsipstack::sip::Param::Transport(t) => Some(*t),
                _ => None,
            })
        };
        let proxy_uri: Option<Uri> = config
            .outbound_proxy
            .as_deref()
            .and_then(|p| p.parse().ok());
        let transport = proxy_uri
            .as_ref()
            .and_then(transport_of)
            .or_else(|| transport_of(&registrar))
            .unwrap_or(if registrar.scheme == Some(rsipstack::sip::Scheme::Sips) {
                Transport::Tls
            } else {
                Transport::Udp
            });
        let transport_param = crate::sip::contact::transport_param(transport);
        // Contact names the listener of that transport.
        let configured = match transport {
            Transport::Tls => SocketAddr::new(configured.ip(), tls_port),
            _ => configured,
        };
        let (status, status_rx) = watch::channel(RegistrationStatus::Registering);
        Ok((
            Self {
                endpoint,
                password,
                registrar,
                aor,
                proxy,
                // The header's value (its Display would print the name too).
                call_id: make_call_id(Some(&configured.ip().to_string()), CallIdFormat::default())
                    .value()
                    .to_string(),
                transport_param,
                transport,
                configured,
                learned,
                status,
                config,
            },
            status_rx,
        ))
    }

    /// Runs until `unregister` fires, then removes the binding (bounded).
    pub async fn run(self, unregister: CancellationToken) {
        let span = info_span!("register", aor = %self.aor);
        self.run_inner(unregister).instrument(span).await
    }

    async fn run_inner(self, unregister: CancellationToken) {
        let policy = RegistrationPolicy {
            expires: self.config.expires,
            retry_min: Duration::from_secs(self.config.retry_min_secs),
            retry_max: Duration::from_secs(self.config.retry_max_secs),
        };
        let auth_user = self
            .config
            .auth_username
            .clone()
            .unwrap_or_else(|| self.config.username.clone());
        let mut core = Registration::new(
            policy,
            &auth_user,
            &self.password,
            &self.registrar.to_string(),
            Instant::now().into_std(),
            // From the operating system's generator: cnonces must not be
            // predictable.
            {
                let mut seed = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
                seed
            },
        );
        'registering: loop {
            let due = core.poll_timeout().map(Instant::from_std);
            let lapse = core.lapses_at().map(Instant::from_std);
            tokio::select! {
                _ = crate::time::sleep_until_opt(due) => {}
                _ = crate::time::sleep_until_opt(lapse) => {}
                _ = unregister.cancelled() => break,
            }
            core.handle_timeout(Instant::now().into_std());
            self.drain_events(&mut core);
            let Some(request) = core.poll_transmit(Instant::now().into_std()) else {
                continue;
            };
            // The binding may run out while the refresh waits for its
            // answer (up to Timer F): readiness follows the binding, not
            // the transaction.
            let sending = self.send(&request);
            tokio::pin!(sending);
            loop {
                let lapse = core.lapses_at().map(Instant::from_std);
                tokio::select! {
                    outcome = &mut sending => {
                        self.feed(&mut core, outcome);
                        break;
                    }
                    _ = crate::time::sleep_until_opt(lapse) => {
                        core.handle_timeout(Instant::now().into_std());
                        self.drain_events(&mut core);
                    }
                    _ = unregister.cancelled() => {
                        core.abandon(Instant::now().into_std());
                        break 'registering;
                    }
                }
            }
            self.drain_events(&mut core);
        }
        // Shutdown: Expires 0, answering a challenge if one comes (bounded).
        core.unregister(Instant::now().into_std());
        let deadline = Instant::now() + UNREGISTER_TIMEOUT;
        while let Some(request) = core.poll_transmit(Instant::now().into_std()) {
            match tokio::time::timeout_at(deadline, self.send(&request)).await {
                Ok(outcome) => self.feed(&mut core, outcome),
                Err(_) => core.handle_no_response(Instant::now().into_std(), "shutdown deadline"),
            }
            self.drain_events(&mut core);
        }
        self.drain_events(&mut core);
    }

    fn feed(&self, core: &mut Registration, outcome: Result<Response, String>) {
        let now = Instant::now().into_std();
        match outcome {
            // The stack's own 408 when Timer F fires: built from our
            // request, so its To has no tag, which a registrar's response
            // always carries (RFC 3261 §8.2.6.2). Nothing answered.
            Ok(response)
                if response.status_code.code() == 408
                    && response
                        .to_header()
                        .ok()
                        .and_then(|to| to.tag().ok().flatten())
                        .is_none() =>
            {
                core.handle_no_response(now, "no answer from the registrar (transaction timed out)")
            }
            Ok(response) => {
                let parsed = self.read_response(&response);
                let moved = parsed.status / 100 == 2 && self.learn_address(&response);
                core.handle_response(now, parsed);
                if moved {
                    // Register the reachable Contact now, not at the refresh.
                    core.refresh_now(now);
                }
            }
            Err(reason) => core.handle_no_response(now, &reason),
        }
    }

    fn drain_events(&self, core: &mut Registration) {
        while let Some(event) = core.poll_event() {
            match event {
                RegistrationEvent::Registered { expires } => {
                    info!(expires, contact = %self.contact(), "registered");
                    let _ = self.status.send(RegistrationStatus::Registered);
                }
                RegistrationEvent::Failed { reason, retry_in } => {
                    warn!(%reason, retry_in_ms = retry_in.as_millis() as u64, "registration failed");
                    let _ = self.status.send(RegistrationStatus::Failing);
                }
                RegistrationEvent::Unregistered => {
                    info!("unregistered");
                    let _ = self.status.send(RegistrationStatus::Unregistered);
                }
                RegistrationEvent::Lapsed { granted } => {
                    warn!(
                        granted_secs = granted,
                        "registration lapsed: the binding's granted time passed without a successful refresh"
                    );
                    let _ = self.status.send(RegistrationStatus::Failing);
                }
            }
        }
    }

    /// Our Contact: the learned address when the registrar told us one, else
    /// the configured one.
    fn contact(&self) -> String {
        let addr = self
            .learned
            .read()
            .ok()
            .and_then(|a| *a)
            .unwrap_or(self.configured);
        crate::sip::contact::format(&self.config.username, addr, &self.transport_param)
    }

    /// Sends one REGISTER and waits for its final response.
    async fn send(&self, request: &RegisterRequest) -> Result<Response, String> {
        // Via names the transport the request really goes over (RFC 3261
        // §18.1.1): the connection to the proxy or registrar.
        let target = match &self.proxy {
            Some(proxy) => Some(proxy.clone()),
            None => SipAddr::try_from(&self.registrar).ok(),
        };
        let local = match &target {
            Some(target) => self
                .endpoint
                .transport_layer
                .lookup(target, None)
                .await
                .ok()
                .map(|(connection, _)| connection.get_addr().clone()),
            None => None,
        };
        let via = self
            .endpoint
            .get_via(local, None)
            .map_err(|e| e.to_string())?;
        let from = typed::From {
            display_name: None,
            uri: self.aor.clone(),
            params: vec![],
        }
        .with_tag(make_tag());
        let to = typed::To {
            display_name: None,
            uri: self.aor.clone(),
            params: vec![],
        };
        let mut message = self.endpoint.make_request(
            Method::Register,
            self.registrar.clone(),
            via,
            from,
            to,
            request.cseq,
            Some(self.call_id.clone().into()),
        );
        let contact = self.contact();
        message
            .headers
            .unique_push(Header::Contact(format!("<{contact}>").into()));
        message
            .headers
            .unique_push(Header::Expires(request.expires.to_string().into()));
        message
            .headers
            .unique_push(Header::Allow(crate::sip::ALLOW.into()));
        for (kind, value) in &request.authorization {
            message.headers.push(match kind {
                ChallengeKind::Www => Header::Authorization(value.clone().into()),
                ChallengeKind::Proxy => Header::ProxyAuthorization(value.clone().into()),
            });
        }
        debug!(cseq = request.cseq, expires = request.expires, "REGISTER");
        let key = TransactionKey::from_request(&message, TransactionRole::Client)
            .map_err(|e| e.to_string())?;
        let mut tx = Transaction::new_client(key, message, self.endpoint.clone(), None);
        if let Some(proxy) = &self.proxy {
            tx.destination = Some(proxy.clone());
        }
        tx.send().await.map_err(|e| format!("cannot send: {e}"))?;
        let wait = async {
            while let Some(message) = tx.receive().await {
                if let SipMessage::Response(response) = message {
                    if response.status_code.code() >= 200 {
                        return Ok(response);
                    }
                }
            }
            Err("transaction ended without a final response (timeout)".to_string())
        };
        tokio::time::timeout(TRANSACTION_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err("no final response within 32 s".into()))
    }

    fn read_response(&self, response: &Response) -> RegisterResponse {
        let status = response.status_code.code();
        let mut parsed = RegisterResponse {
            status,
            ..Default::default()
        };
        let our_contact = self.contact();
        let mut contact_expires = None;
        let mut header_expires = None;
        for header in response.headers.iter() {
            match header {
                Header::WwwAuthenticate(v) if status == 401 => {
                    parsed.challenges.push(v.value().to_string())
                }
                Header::ProxyAuthenticate(v) if status == 407 => {
                    parsed.challenges.push(v.value().to_string())
                }
                Header::MinExpires(v) => parsed.min_expires = v.value().trim().parse().ok(),
                Header::Expires(v) => header_expires = v.value().trim().parse().ok(),
                Header::Contact(v) => {
                    // Our own binding among all the AOR's contacts.
                    for binding in v.value().split(',') {
                        if binding.contains(&our_contact)
                            || binding.contains(&contact_host(&our_contact))
                        {
                            contact_expires =
                                param(binding, "expires").and_then(|e| e.parse().ok());
                        }
                    }
                }
                _ => {}
            }
        }
        parsed.granted = contact_expires.or(header_expires);
        if status == StatusCode::IntervalTooBrief.code() && parsed.min_expires.is_none() {
            warn!("423 without Min-Expires");
        }
        parsed
    }

    /// RFC 3581: the registrar's view of our address, from the Via of its
    /// response. When it differs from our Contact, use it from now on.
    /// Returns true when our address changed.
    fn learn_address(&self, response: &Response) -> bool {
        // Over TCP/TLS, `received`/`rport` name the connection's ephemeral
        // port, where nothing listens: RFC 3581 learning is for UDP only.
        if self.transport != Transport::Udp {
            return false;
        }
        let Ok(via) = response.via_header() else {
            return false;
        };
        let value = via.value();
        let Some(received) = param(value, "received").and_then(|r| r.parse().ok()) else {
            return false;
        };
        let port = param(value, "rport")
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.configured.port());
        let seen = SocketAddr::new(received, port);
        let current = self
            .learned
            .read()
            .ok()
            .and_then(|a| *a)
            .unwrap_or(self.configured);
        if seen != current {
            info!(%seen, configured = %self.configured, "registrar sees us at another address (NAT); Contact follows");
            if let Ok(mut learned) = self.learned.write() {
                *learned = Some(seen);
            }
            return true;
        }
        false
    }
}

/// `host:port` of a contact URI.
fn contact_host(contact: &str) -> String {
    contact
        .split_once('@')
        .map(|(_, rest)| rest.split(';').next().unwrap_or(rest).to_string())
        .unwrap_or_default()
}

/// The value of `;name=value` in a header value (case-insensitive name).
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| {
            v.trim()
                .trim_matches('"')
                .split([',', '>', ' '])
                .next()
                .unwrap_or("")
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_params_of_via_and_contact() {
        let via = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.9;rport=40001";
        assert_eq!(param(via, "received").as_deref(), Some("203.0.113.9"));
        assert_eq!(param(via, "rport").as_deref(), Some("40001"));
        assert_eq!(param(via, "maddr"), None);
        let contact = "<sip:1001@127.0.0.1:5070>;expires=60";
        assert_eq!(param(contact, "expires").as_deref(), Some("60"));
        assert_eq!(
            contact_host("sip:1001@127.0.0.1:5070;transport=tcp"),
            "127.0.0.1:5070"
        );
        assert_eq!(
            crate::sip::contact::format("1001", "[::1]:5060".parse().unwrap(), ""),
            "sip:1001@[::1]:5060"
        );
    }
}
