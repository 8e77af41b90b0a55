//! The receive task of one call: the shell of the sans-IO
//! [`InboundCore`] (latch, jitter buffer, echo canceller, voice activity,
//! RFC 4733 digits, RTP timeout) and of the call's RTCP session. It owns
//! the call's RTP socket for reading (and its RTCP socket) and the timer,
//! hands the core packets and time, and carries out its events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::media::driver::{MediaDriver, MediaEvent, MediaId, SenderState, REPORT_LEN};
use crate::media::echo::EchoStats;
use crate::media::inbound::{Dropped, InboundCore, InboundEvent, InboundRemote, DROP_REASONS};
use crate::media::jitter::JitterStats;
use crate::media::rtcp::{self, PeerView, RtcpSession, SenderInfo};
use crate::media::rtp;
use crate::media::sent_audio::SentAudio;
use crate::media::srtp::{SrtpContext, SrtpKeys};
use crate::media::stats::ReceiveStats;
use crate::media::vad::VadConfig;
use crate::redact::Pii;

/// Inbound RTP of one call.
pub struct ReceiverConfig {
    pub id: MediaId,
    pub socket: Arc<UdpSocket>,
    /// What the caller's SDP says (a re-offer, hold or resume changes it).
    pub remote: tokio::sync::watch::Receiver<InboundRemote>,
    pub rtp_timeout: Duration,
    pub driver: MediaDriver,
    pub events: mpsc::Sender<MediaEvent>,
    /// Listen to the caller (turn-taking on): voice activity and turns.
    pub vad: Option<VadConfig>,
    /// Copy the caller's audio here, placed in media time from `t0` (when
    /// the call was established).
    pub recording: Option<(crate::media::recording::RecordingTrack, Instant)>,
    /// RTCP on its own socket, when the call has one.
    pub rtcp: Option<RtcpSetup>,
    /// Take the bot's echo out of the caller's audio before listening:
    /// what the call sent, and when it was established (`t0`).
    pub echo: Option<(Arc<SentAudio>, Instant)>,
    /// Whether the caller's words so far leave the turn open (set by the
    /// call, read by the receive task's turn detector).
    pub words_open: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What a call's RTCP needs of its outbound stream.
pub struct RtcpSetup {
    pub socket: Arc<UdpSocket>,
    /// Our stream's SSRC and frame 0's time: with the stream's clock, the
    /// RTP time of any instant (the clock never stops, RFC 3550 §6.4.1).
    pub ssrc: u32,
    pub t0: Instant,
    /// What the stream sent so far (the driver counts).
    pub sent: Arc<SenderState>,
    /// Our CNAME (RFC 3550 §6.5.1).
    pub cname: String,
}

/// What a call's receive side ends with.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub stats: ReceiveStats,
    pub jitter: JitterStats,
    /// How the echo canceller did, when the call had one.
    pub echo: Option<EchoStats>,
    /// What the caller's RTCP said (round trip, its view of our stream).
    pub peer: PeerView,
}

/// The receive task's RTCP: the session, its socket and where the
/// caller's RTCP is.
struct Control {
    setup: RtcpSetup,
    session: RtcpSession,
    /// Where the caller's RTCP comes from (RTP port + 1 until it sends).
    peer: Option<SocketAddr>,
    buf: [u8; rtp::MAX_DATAGRAM],
    /// SRTCP, when the call is encrypted: the keys, our reports'
    /// context and the caller's.
    srtcp: Option<(SrtpKeys, SrtpContext, SrtpContext)>,
}

impl Control {
    fn new(setup: RtcpSetup, now: Instant, keys: Option<SrtpKeys>) -> Self {
        let session = RtcpSession::new(now.into_std(), setup.ssrc, rand::random());
        let mut control = Self {
            setup,
            session,
            peer: None,
            buf: [0; rtp::MAX_DATAGRAM],
            srtcp: None,
        };
        control.set_keys(keys);
        control
    }

    /// The call's SRTP keys (a re-offer may change them; the same keys
    /// keep their contexts and indexes).
    fn set_keys(&mut self, keys: Option<SrtpKeys>) {
        let Some(keys) = keys else {
            self.srtcp = None;
            return;
        };
        // Each side's context is made again only when its own key changed:
        // ours restarting its index under the same key would encrypt
        // reports with a keystream already used.
        match self.srtcp.as_mut() {
            Some((current, ours, theirs)) => {
                if current.ours != keys.ours {
                    *ours = keys.ours.context();
                }
                if current.theirs != keys.theirs {
                    *theirs = keys.theirs.context();
                }
                *current = keys;
            }
            None => self.srtcp = Some((keys, keys.ours.context(), keys.theirs.context())),
        }
    }

    /// The caller's report in `datagram`, in clear: its length, or `None`
    /// for SRTCP that does not authenticate.
    fn unprotect(&mut self, datagram: &mut [u8]) -> Option<usize> {
        match self.srtcp.as_mut() {
            None => Some(datagram.len()),
            Some((_, _, theirs)) => match theirs.unprotect_rtcp(datagram) {
                Ok(len) => Some(len),
                Err(error) => {
                    debug!(%error, "SRTCP dropped");
                    None
                }
            },
        }
    }

    /// Our side as a sender report says it, while we have sent.
    fn sender_info(&self, now: Instant) -> Option<SenderInfo> {
        let sent = &self.setup.sent;
        let packets = sent.packets();
        if packets == 0 {
            return None;
        }
        // The RTP clock at this very instant, paired with the NTP time
        // (RFC 3550 §6.4.1).
        let elapsed = now.saturating_duration_since(self.setup.t0);
        Some(SenderInfo {
            ntp: rtcp::ntp(SystemTime::now()),
            rtp_timestamp: sent.clock().timestamp_at(elapsed),
            packets: packets as u32,
            octets: sent.octets() as u32,
        })
    }

    /// Where to send: the caller's RTCP source once seen, else its RTP
    /// address (multiplexed) or the port above it.
    fn destination(&self, core: &InboundCore) -> SocketAddr {
        self.peer.unwrap_or_else(|| {
            let rtp = core.caller_addr();
            if core.rtcp_mux() {
                rtp
            } else {
                SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
            }
        })
    }

    /// Our report (or BYE) for the caller, written out: its length, where
    /// it goes, and whether on the RTP socket (multiplexed). Apart from
    /// [`Self::send`] so no borrow of the core lives across the send.
    fn write_report(
        &mut self,
        core: &InboundCore,
        out: &mut [u8; REPORT_LEN],
        bye: bool,
    ) -> Option<(usize, SocketAddr, bool)> {
        let now = Instant::now();
        let block = self
            .session
            .report(now.into_std(), core.caller_ssrc(), core.stats());
        let sender = self.sender_info(now);
        let report = out.first_chunk_mut::<{ rtcp::MAX_PACKET }>()?;
        let mut len = if bye {
            rtcp::write_bye(report, self.setup.ssrc, sender, block, &self.setup.cname)
        } else {
            rtcp::write_report(report, self.setup.ssrc, sender, block, &self.setup.cname)
        };
        if let Some((_, ours, _)) = self.srtcp.as_mut() {
            len = ours.protect_rtcp(out, len).ok()?;
        }
        Some((len, self.destination(core), core.rtcp_mux()))
    }

    /// Sends a written report: on the RTP socket when multiplexed.
    async fn send(&self, rtp: &UdpSocket, datagram: &[u8], to: SocketAddr, mux: bool) {
        let socket = if mux { rtp } else { &*self.setup.socket };
        if let Err(error) = socket.send_to(datagram, to).await {
            debug!(%error, "RTCP send failed");
        }
    }

    /// A datagram of the RTCP socket (in `buf`): the caller's reports.
    fn handle_own(&mut self, core: &InboundCore, len: usize, source: SocketAddr) {
        let len = len.min(self.buf.len());
        let mut datagram = self.buf;
        self.handle(core, &mut datagram[..len], source);
    }

    /// A datagram multiplexed on the RTP port: the caller's reports.
    fn handle(&mut self, core: &InboundCore, datagram: &mut [u8], source: SocketAddr) {
        if let Some(len) = self.unprotect(datagram) {
            take_report(
                &mut self.session,
                &mut self.peer,
                core,
                &datagram[..len],
                source,
            );
        }
    }
}

/// The caller's reports, if they come from the caller (its RTP address's
/// host); their source is where ours go from then on.
fn take_report(
    session: &mut RtcpSession,
    peer: &mut Option<SocketAddr>,
    core: &InboundCore,
    datagram: &[u8],
    source: SocketAddr,
) {
    if source.ip() != core.caller_addr().ip() {
        debug!(%source, "RTCP from another host dropped");
        return;
    }
    let ntp_now = rtcp::ntp(SystemTime::now());
    match session.handle_packet(Instant::now().into_std(), ntp_now, datagram) {
        Ok(()) => *peer = Some(source),
        Err(error) => debug!(%error, "bad RTCP dropped"),
    }
}

/// The next datagram on the RTCP socket, or never without one.
async fn recv_rtcp(control: &mut Option<Control>) -> Option<(usize, SocketAddr)> {
    match control {
        Some(control) => control.setup.socket.recv_from(&mut control.buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// The caller's SDP changed (a re-offer, a hold, a resume): the inbound
/// core and the RTCP's SRTP keys take it.
fn take_remote(core: &mut InboundCore, control: &mut Option<Control>, next: InboundRemote) {
    core.set_remote(Instant::now().into_std(), next);
    if let Some(control) = control.as_mut() {
        control.set_keys(next.srtp);
    }
}

/// Spawns the receive task of one call; it ends on RTP timeout or when the
/// returned handle is aborted.
pub fn spawn_receiver(config: ReceiverConfig) -> tokio::task::JoinHandle<Received> {
    tokio::spawn(receive(config))
}

/// The shell of [`InboundCore`]: reads the socket until the core's next
/// timeout, hands it packets and time, and carries out its events. Ends
/// when the RTP times out or the sender of `remote` is dropped (the call
/// stops its media), with the reception statistics.
async fn receive(config: ReceiverConfig) -> Received {
    let ReceiverConfig {
        id,
        socket,
        mut remote,
        rtp_timeout,
        driver,
        events,
        vad,
        recording,
        rtcp,
        echo,
        words_open,
    } = config;
    let keys = remote.borrow().srtp;
    let mut control = rtcp.map(|setup| Control::new(setup, Instant::now(), keys));
    let mut core = InboundCore::new(
        Instant::now().into_std(),
        *remote.borrow_and_update(),
        rtp_timeout,
        vad,
        recording.map(|(track, t0)| (track, t0.into_std())),
    );
    if let Some((sent, t0)) = echo {
        core = core.with_echo_cancelling(sent, t0.into_std());
    }
    if let Some(open) = words_open {
        core = core.with_words_open(open);
    }
    let mut buf = [0u8; rtp::MAX_DATAGRAM];
    // Every dropped packet is counted, by reason (the log has only a few).
    let drop_counters = Dropped::LABELS.map(|reason| {
        driver
            .metrics
            .rtp_dropped
            .get_or_create(&crate::metrics::ReasonLabel { reason })
            .clone()
    });
    let mut counted = [0u64; DROP_REASONS];
    'receive: while !core.is_done() {
        let deadline = Instant::from_std(core.poll_timeout());
        let report_at = control
            .as_ref()
            .map(|c| Instant::from_std(c.session.poll_timeout()));
        let received = tokio::select! {
            biased;
            changed = remote.changed() => match changed {
                Ok(()) => {
                    take_remote(&mut core, &mut control, *remote.borrow_and_update());
                    None
                }
                // The call stopped its media.
                Err(_) => break,
            },
            _ = crate::time::sleep_until_opt(report_at) => {
                if let Some(control) = control.as_mut() {
                    let mut out = [0u8; REPORT_LEN];
                    if let Some((len, to, mux)) = control.write_report(&core, &mut out, false) {
                        control.send(&socket, &out[..len], to, mux).await;
                    }
                }
                None
            }
            // The caller's audio before its reports: datagrams flooding the
            // RTCP port cannot hold the RTP back.
            received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)) => Some(received),
            Some((len, source)) = recv_rtcp(&mut control) => {
                if let Some(control) = control.as_mut() {
                    control.handle_own(&core, len, source);
                }
                None
            }
        };
        // Trust the clock, not the wake-up.
        let now = Instant::now().into_std();
        match received {
            None => {}
            // RTCP multiplexed on the RTP port (RFC 5761) goes to RTCP.
            Some(Ok(Ok((len, source)))) if core.rtcp_mux() && rtcp::is_rtcp(&buf[..len]) => {
                if let Some(control) = control.as_mut() {
                    control.handle(&core, &mut buf[..len], source);
                }
            }
            Some(Ok(Ok((len, source)))) => core.handle_datagram(now, source, &mut buf[..len]),
            Some(Ok(Err(e))) => {
                // ICMP port unreachable and the like surface here on Linux:
                // the socket itself is fine.
                debug!(media = id, error = %e, "RTP socket error");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(Err(_elapsed)) => core.handle_timeout(now),
        }
        let dropped = core.dropped_by_reason();
        if dropped != counted {
            for ((counter, now), before) in drop_counters.iter().zip(dropped).zip(counted) {
                counter.inc_by(now - before);
            }
            counted = dropped;
        }
        while let Some(event) = core.poll_event() {
            let event = match event {
                InboundEvent::Latch(addr) => {
                    debug!(media = id, "latching RTP to the caller's real source");
                    driver.latch(id, addr).await;
                    continue;
                }
                InboundEvent::Dropped {
                    source,
                    reason,
                    count,
                } => {
                    warn!(media = id, source = %Pii(&source.to_string()), error = %reason, dropped = count, "RTP packet dropped");
                    continue;
                }
                InboundEvent::SpeechStarted => MediaEvent::SpeechStarted,
                InboundEvent::SpeechEnded(utterance) => MediaEvent::SpeechEnded(utterance),
                InboundEvent::SpeechAudio(pcm) => MediaEvent::SpeechAudio(pcm),
                InboundEvent::Dtmf(digit) => {
                    debug!(media = id, %digit, "DTMF");
                    MediaEvent::Dtmf(digit)
                }
                InboundEvent::RtpTimeout => {
                    warn!(
                        media = id,
                        timeout_s = rtp_timeout.as_secs(),
                        "no RTP from the caller"
                    );
                    MediaEvent::RtpTimeout
                }
            };
            // Waiting for room in the call's queue must not outlive the
            // call: when it stops its media, go and say BYE.
            loop {
                tokio::select! {
                    biased;
                    permit = events.reserve() => {
                        if let Ok(permit) = permit {
                            permit.send(event);
                        }
                        break;
                    }
                    changed = remote.changed() => match changed {
                        Ok(()) => {
                            take_remote(&mut core, &mut control, *remote.borrow_and_update());
                        }
                        Err(_) => break 'receive,
                    },
                }
            }
        }
    }
    // The end of our stream, for the caller's RTCP (RFC 3550 §6.6).
    if let Some(control) = control.as_mut() {
        let mut out = [0u8; REPORT_LEN];
        if let Some((len, to, mux)) = control.write_report(&core, &mut out, true) {
            control.send(&socket, &out[..len], to, mux).await;
        }
    }
    Received {
        stats: core.stats().clone(),
        jitter: core.jitter_stats(),
        echo: core.echo_stats(),
        peer: control.map(|c| c.session.peer()).unwrap_or_default(),
    }
}
