//! The shell of [`Admission`]: the gate every SIP datagram and connection
//! passes, the checks of a parsed request, what a refused one is answered,
//! and the metrics and log of refusals and bans.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tracing::warn;

use crate::metrics::{Metrics, ReasonLabel};
use crate::redact::Pii;
use crate::sip::admission::{Admission, Refusal, Verdict};
use crate::sip::config::{AllowedSource, OptionsPolicy, RefusalAnswer, SipConfig};
use crate::sip::endpoint::PacketGate;
use crate::sip::respond::spawn_reply;

/// The door of the SIP port.
pub struct Door {
    admission: Mutex<Admission>,
    /// The source of the datagram the UDP socket has just let in: the
    /// transport's gate, which judges it again, lets it through once
    /// without taking a second token.
    passed: Mutex<Option<IpAddr>>,
    metrics: Arc<Metrics>,
    /// One counter per [`Refusal::ALL`], made at start (all exported at 0).
    refused: Vec<Counter>,
    answer: RefusalAnswer,
    options: OptionsPolicy,
}

/// A call an untrusted source holds: given back when dropped.
pub struct CallHold {
    door: Arc<Door>,
    ip: IpAddr,
}

impl Drop for CallHold {
    fn drop(&mut self) {
        self.door.lock().call_ended(self.ip);
    }
}

impl Door {
    /// The policy of `[sip.admission]`; `[sip] allow`'s sources and
    /// `registrar` (the addresses of the registrar and outbound proxy, see
    /// [`registrar_addresses`]) are trusted; INVITEs are for `[sip] users`
    /// and the registered extension.
    pub fn new(sip: &SipConfig, registrar: &[IpAddr], metrics: Arc<Metrics>) -> Door {
        let mut trusted = sip.allow.clone();
        trusted.extend(
            registrar
                .iter()
                .map(|ip| AllowedSource(ipnet::IpNet::from(*ip))),
        );
        let mut users = sip.users.clone();
        if let Some(register) = &sip.register {
            users.push(register.username.clone());
        }
        let refused = Refusal::ALL
            .iter()
            .map(|r| {
                metrics
                    .sip_refused
                    .get_or_create(&ReasonLabel { reason: r.label() })
                    .clone()
            })
            .collect();
        Door {
            admission: Mutex::new(Admission::new(
                sip.admission.clone(),
                &trusted,
                users,
                Instant::now(),
            )),
            passed: Mutex::new(None),
            metrics,
            refused,
            answer: sip.admission.refusal_answer,
            options: sip.admission.options,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gate of the transport layer: each new TCP/TLS connection, and
    /// each datagram (which the UDP socket's gate judged already).
    pub fn gate(self: &Arc<Self>) -> PacketGate {
        let door = self.clone();
        Arc::new(move |ip| {
            let mut passed = door.passed.lock().unwrap_or_else(|e| e.into_inner());
            if *passed == Some(ip) {
                *passed = None;
                return true;
            }
            drop(passed);
            door.packet(ip)
        })
    }

    /// The UDP socket's gate: every datagram, before the socket answers a
    /// malformed one itself (a banned or flooding source gets nothing).
    pub fn udp_gate(self: &Arc<Self>) -> PacketGate {
        let door = self.clone();
        Arc::new(move |ip| {
            let admitted = door.packet(ip);
            if admitted {
                *door.passed.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
            }
            admitted
        })
    }

    /// Told of each datagram the socket kept from the stack (too large,
    /// malformed): counted.
    pub fn wire_refusals(self: &Arc<Self>) -> crate::sip::wire::RefusalHook {
        let door = self.clone();
        Arc::new(move |source, why| {
            let mut admission = door.lock();
            let verdict = match why {
                crate::sip::wire::WireRefusal::TooLarge => Verdict::Refuse(Refusal::TooLarge),
                // Counted toward the source's ban, as going over its limits.
                crate::sip::wire::WireRefusal::Malformed => {
                    admission.handle_malformed(Instant::now(), source.ip())
                }
            };
            // The datagram never reaches the stack: no pass left for it.
            *door.passed.lock().unwrap_or_else(|e| e.into_inner()) = None;
            door.report(&mut admission, verdict);
        })
    }

    fn packet(&self, ip: IpAddr) -> bool {
        let mut admission = self.lock();
        let verdict = admission.handle_packet(Instant::now(), ip);
        self.report(&mut admission, verdict)
    }

    /// A new INVITE: `Ok(Some(hold))` for an untrusted source (the call it
    /// holds until the hold is dropped), `Ok(None)` for a trusted one, or
    /// what to answer.
    pub fn invite(
        self: &Arc<Self>,
        ip: IpAddr,
        user_agent: Option<&str>,
        user: &str,
    ) -> Result<Option<CallHold>, RefusalAnswer> {
        let mut admission = self.lock();
        if admission.is_trusted(ip) {
            return Ok(None);
        }
        let verdict = admission.handle_invite(Instant::now(), ip, user_agent, user);
        if self.report(&mut admission, verdict) {
            Ok(Some(CallHold {
                door: self.clone(),
                ip,
            }))
        } else {
            Err(self.answer)
        }
    }

    /// Any other request outside a dialog.
    pub fn request(
        &self,
        ip: IpAddr,
        method: Method,
        user_agent: Option<&str>,
    ) -> Result<(), RefusalAnswer> {
        let mut admission = self.lock();
        let verdict = admission.handle_request(Instant::now(), ip, user_agent);
        if !self.report(&mut admission, verdict) {
            return Err(self.answer);
        }
        if method == Method::Options
            && self.options == OptionsPolicy::Trusted
            && !admission.is_trusted(ip)
        {
            return Err(RefusalAnswer::Silence);
        }
        Ok(())
    }

    /// Answers a refused request as the policy says (or not at all).
    pub fn refuse(&self, tx: Transaction, answer: RefusalAnswer) {
        match answer {
            // Dropping the transaction forgets it: nothing is sent, and a
            // retransmission is judged again.
            RefusalAnswer::Silence => drop(tx),
            RefusalAnswer::Forbidden => spawn_reply(tx, StatusCode::Forbidden, Vec::new()),
            RefusalAnswer::NotFound => spawn_reply(tx, StatusCode::NotFound, Vec::new()),
        }
    }

    /// Counts a refusal and logs new bans; whether the request is admitted.
    fn report(&self, admission: &mut Admission, verdict: Verdict) -> bool {
        let bans = admission.bans();
        let counted = self.metrics.sip_bans.get();
        if bans > counted {
            self.metrics.sip_bans.inc_by(bans - counted);
        }
        while let Some(banned) = admission.poll_banned() {
            warn!(source = %Pii(&banned.to_string()), "source banned for a while: over its limits, or a scanner");
        }
        match verdict {
            Verdict::Admit => true,
            Verdict::Refuse(refusal) => {
                let index = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
                if let Some(counter) = self.refused.get(index) {
                    counter.inc();
                }
                false
            }
        }
    }
}

/// The addresses of the registrar and the outbound proxy of
/// `[sip.register]` (the PBX that sends us its calls): given by address, or
/// looked up once at start (a name that does not resolve is logged, and
/// the PBX is then held to the limits of any source unless listed in
/// `trusted`).
pub async fn registrar_addresses(sip: &SipConfig) -> Vec<IpAddr> {
    let Some(register) = &sip.register else {
        return Vec::new();
    };
    let mut addresses = Vec::new();
    for uri in std::iter::once(&register.registrar).chain(register.outbound_proxy.as_ref()) {
        let Ok(parsed) = uri.parse::<rsipstack::sip::Uri>() else {
            continue;
        };
        let port = parsed
            .host_with_port
            .port
            .map(|p| p.value())
            .unwrap_or(5060);
        match parsed.host_with_port.host {
            rsipstack::sip::Host::IpAddr(ip) => addresses.push(ip),
            rsipstack::sip::Host::Domain(name) => {
                let name = name.to_string();
                let lookup = tokio::net::lookup_host(format!("{name}:{port}"));
                let found = tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await;
                match found {
                    Ok(Ok(found)) => addresses.extend(found.map(|addr| addr.ip())),
                    _ => {
                        warn!(%name, "the registrar's name does not resolve: [sip.admission] does not trust it")
                    }
                }
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A door whose untrusted sources may send `burst` datagrams and then
    /// (practically) nothing more.
    fn door(burst: u32) -> Arc<Door> {
        let mut sip = crate::config::Config::load(None)
            .expect("the embedded configuration")
            .sip;
        sip.admission.source_rate = 0.001;
        sip.admission.source_burst = burst;
        Arc::new(Door::new(&sip, &[], Arc::new(Metrics::new())))
    }

    #[test]
    fn a_datagram_the_udp_socket_let_in_takes_one_token_not_two() {
        let door = door(3);
        let (socket, stack) = (door.udp_gate(), door.gate());
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        // Each datagram is judged by the socket, then by the stack's
        // transport: three pass both, as the burst allows three.
        for n in 0..3 {
            assert!(socket(ip), "datagram {n} at the socket");
            assert!(stack(ip), "datagram {n} at the transport");
        }
        assert!(!socket(ip), "the fourth is over the burst");
        // The pass is for that source only, and only once.
        let other: IpAddr = "198.51.100.10".parse().unwrap();
        assert!(socket(other));
        assert!(!stack(ip), "no pass for another source's datagram");
    }

    #[test]
    fn a_datagram_kept_from_the_stack_leaves_no_pass_behind() {
        let door = door(2);
        let (socket, stack, refusals) = (door.udp_gate(), door.gate(), door.wire_refusals());
        let ip: IpAddr = "198.51.100.11".parse().unwrap();
        let source = std::net::SocketAddr::new(ip, 5060);
        // Let in by the socket (one token), then found malformed: the
        // stack never sees it, so the next datagram the transport judges
        // (a TCP connection, say) takes the last token, and the one after
        // finds none.
        assert!(socket(ip));
        refusals(source, crate::sip::wire::WireRefusal::Malformed);
        assert!(stack(ip));
        assert!(!stack(ip), "a pass was left for a datagram that never came");
        let malformed = door
            .metrics
            .sip_refused
            .get_or_create(&ReasonLabel {
                reason: Refusal::Malformed.label(),
            })
            .get();
        assert_eq!(malformed, 1, "the malformed datagram is counted");
    }
}
