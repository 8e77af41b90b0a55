//! A new INVITE, from admission to the end of its call.
//!
//! The request is checked before anything is held (503 while draining; 420,
//! 415, 400/488, 422 by the leg); a call slot is taken only for a call we
//! can answer (503 past `max_calls`), then an RTP port (503 when none is
//! free); the leg answers and the call runs. The slot and the port are free
//! as soon as the call is over, before our BYE completes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::StatusCode;
use rsipstack::transaction::transaction::Transaction;
use tracing::{info, info_span, warn, Instrument};

use crate::app::door::CallHold;
use crate::app::Server;
use crate::call::{self, Caller};
use crate::sip::incoming::Incoming;
use crate::timeline::CallTrace;

/// Entry point of a new INVITE (no To-tag). `hold` is the call its
/// untrusted source holds until the call is over.
pub async fn handle_invite(server: Arc<Server>, tx: Transaction, hold: Option<CallHold>) {
    // Checked when the configuration loaded: never the default here.
    let codecs = server.config.media.codec_choice().unwrap_or_default();
    let media = &server.config.media;
    let mut incoming = Incoming::new(tx, codecs, media.srtp, media.srtp_without_tls);
    // A source the admission holds to its limits is not sent a BYE for a
    // 200 it never ACKed.
    incoming.bye_if_unacked = hold.is_none();
    // Each call its own trace: its span has no parent.
    let span = info_span!(parent: None, "call", call_id = %incoming.call_id);
    answer(server, incoming).instrument(span).await;
    drop(hold);
}

/// Why an INVITE is refused here (`sav_calls_refused_total{reason}`).
const SHUTTING_DOWN: &str = "shutting_down";
const MAX_CALLS: &str = "max_calls";
pub(super) const REFUSALS: [&str; 2] = [SHUTTING_DOWN, MAX_CALLS];

async fn answer(server: Arc<Server>, mut incoming: Incoming) {
    incoming.log();
    let services = server.services.clone();
    let config = &services.config;
    if services.draining() {
        services.metrics.refused(SHUTTING_DOWN);
        info!("call refused: shutting down (503)");
        return incoming.refuse_busy().await;
    }
    // The INVITE starts the call's timeline.
    let trace = CallTrace::new(services.metrics.clone());
    if incoming.check(config.sip.advertised_ip()).await.is_err() {
        return;
    }
    // A slot is taken only now, for a call we can answer: refusals above do
    // not hold one while their transactions linger.
    let Ok(permit) = server.calls.clone().try_acquire_owned() else {
        services.metrics.refused(MAX_CALLS);
        warn!(
            max_calls = config.sip.max_calls,
            "call refused: at max_calls"
        );
        return incoming.refuse_busy().await;
    };
    // A drain that began since the first look may have found no call in
    // progress and moved on: a call let in now would start on a stopping
    // instance (and leave an abandoned record). Checked again holding the
    // slot, the drain's count sees every call it lets through.
    if services.draining() {
        drop(permit);
        services.metrics.refused(SHUTTING_DOWN);
        info!("call refused: shutting down (503)");
        return incoming.refuse_busy().await;
    }
    let sockets = match server.ports.bind_pair() {
        Ok(sockets) => sockets,
        Err(error) => {
            drop(permit);
            warn!(%error, "no RTP port for the call");
            return incoming
                .refuse(StatusCode::ServiceUnavailable, "no RTP port")
                .await;
        }
    };
    let local_rtp = match sockets.rtp.local_addr() {
        Ok(addr) => SocketAddr::new(config.sip.advertised_ip(), addr.port()),
        Err(error) => {
            drop(permit);
            warn!(%error, "RTP socket has no address");
            return incoming
                .refuse(StatusCode::ServerInternalError, "RTP socket")
                .await;
        }
    };
    let caller = Caller {
        call_id: incoming.call_id.clone(),
        from_user: incoming.from_user.clone(),
        asserted: incoming.asserted.clone(),
    };
    // The first call in a codec whose phrases are made on demand (G.722)
    // has them made while it rings, so its greeting starts with the answer.
    if let Some(codec) = incoming.codec() {
        call::prepare_phrases(&services.live().cache, codec).await;
    }
    let contact = server.contact_uri(incoming.transport()).parse().ok();
    let answer_after = Duration::from_millis(config.sip.answer_after_ms);
    let Ok(mut leg) = incoming
        .answer(&server.dialogs, local_rtp, contact, answer_after)
        .await
    else {
        return;
    };
    services.metrics.active_calls.inc();
    let end = call::run(services.clone(), &mut leg, sockets, caller, trace, None).await;
    // The call's slot and RTP port are free from here; a BYE to a caller who
    // is gone may take 32 s and holds neither.
    drop(permit);
    leg.finish().await;
    services.metrics.active_calls.dec();
    info!(ending = ?end.ending, "call ended");
}
