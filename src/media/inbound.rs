//! A call's inbound RTP, sans-IO: which source to believe (latch), what the
//! caller says (its audio put back in order and concealed where lost, then
//! voice activity and turns), which keys it presses (RFC 4733), and when its
//! media has stopped.
//!
//! Packets go in with [`InboundCore::handle_packet`], the passing of time
//! with [`InboundCore::handle_timeout`] (when [`InboundCore::poll_timeout`]
//! says); what follows comes out of [`InboundCore::poll_event`]. The receive
//! task of [`crate::media::driver`] owns the socket and the timer and does
//! nothing else.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::codec::{Codec, Decoder};
use crate::media::dtmf::DtmfDecoder;
use crate::media::echo::{EchoCanceller, EchoStats};
use crate::media::jitter::{JitterBuffer, JitterStats, Played, MAX_SAMPLES};
use crate::media::latch::{LatchDecision, RtpLatch};
use crate::media::recording::{CallerPlacer, RecordingTrack};
use crate::media::rtp::{self, Inbound, PayloadTypes};
use crate::media::sent_audio::SentAudio;
use crate::media::srtp::{MasterKey, SrtpContext, SrtpError, SrtpKeys};
use crate::media::stats::ReceiveStats;
use crate::media::vad::{TurnDetector, TurnEvent, VadConfig, FRAME_SAMPLES};

/// Silence fed to the turn detector when packets stop mid-turn (DTX, a
/// phone that sends nothing in silence), each time this long passes.
pub const SILENCE_POLL: Duration = Duration::from_millis(60);
/// Report the first few dropped packets of a call, then one in this many.
const REPORT_DROPS_EVERY: u64 = 500;
/// Events kept until polled; the shell polls after every input.
const MAX_EVENTS: usize = 64;
/// A packet counts as audible when its mean absolute sample exceeds this.
pub const AUDIBLE_LEVEL: u32 = 200;

/// What the caller's side of the SDP says, as the inbound path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundRemote {
    /// Where the SDP says the caller's media is.
    pub expected: SocketAddr,
    /// The payload types the caller sends.
    pub types: PayloadTypes,
    /// The codec of its audio payload type.
    pub codec: Codec,
    /// The caller may send nothing for now (it holds us): no RTP timeout.
    pub quiet_allowed: bool,
    /// RTCP comes on the RTP port (RFC 5761): the shell takes it out first.
    pub rtcp_mux: bool,
    /// The media is SRTP/SRTCP with these keys.
    pub srtp: Option<SrtpKeys>,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not RTP we can read.
    #[error("{0}")]
    Malformed(rtp::RtpError),
    /// From a source that is not (yet) the caller's.
    #[error("RTP from an unconfirmed source")]
    UnconfirmedSource,
    /// A telephone-event that is not one.
    #[error("bad telephone-event")]
    BadTelephoneEvent,
    /// An SRTP packet that does not authenticate with the caller's key, or
    /// one already received.
    #[error("SRTP: {0}")]
    Srtp(SrtpError),
}

/// How many reasons a packet is dropped for.
pub const DROP_REASONS: usize = 5;

impl Dropped {
    /// Every reason's label, in the order of [`InboundCore::dropped_by_reason`].
    pub const LABELS: [&'static str; DROP_REASONS] = [
        "malformed",
        "other_source",
        "bad_telephone_event",
        "srtp_auth",
        "srtp_replay",
    ];

    fn index(&self) -> usize {
        match self {
            Dropped::Malformed(_) => 0,
            Dropped::UnconfirmedSource => 1,
            Dropped::BadTelephoneEvent => 2,
            Dropped::Srtp(SrtpError::Replay) => 4,
            Dropped::Srtp(_) => 3,
        }
    }
}

/// What the inbound path reports.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundEvent {
    /// The caller's real source: send our RTP there from now on.
    Latch(SocketAddr),
    /// The caller started speaking (past the VAD's minimum).
    SpeechStarted,
    /// The caller's turn ended; its audio (8 kHz PCM).
    SpeechEnded(Vec<i16>),
    /// The next part of the turn in progress (8 kHz PCM), with
    /// [`VadConfig::stream_audio`]: ~100 ms at a time from its start, the
    /// rest just before `SpeechEnded`.
    SpeechAudio(Vec<i16>),
    /// A key (RFC 4733).
    Dtmf(char),
    /// No valid RTP from the caller for the timeout: the core is done.
    RtpTimeout,
    /// A packet was dropped: reported for the first few and then one in
    /// many (`count` is the total so far), so a flood cannot flood the log.
    Dropped {
        source: SocketAddr,
        reason: Dropped,
        count: u64,
    },
}

/// One call's inbound path.
pub struct InboundCore {
    latch: RtpLatch,
    /// Where the SDP says the caller's media is.
    expected: SocketAddr,
    types: PayloadTypes,
    /// The caller's audio to 8 kHz PCM, packet after packet in sequence
    /// order as the jitter buffer lets them out (a G.722 decoder must see
    /// them in order).
    decoder: Decoder,
    quiet_allowed: bool,
    rtcp_mux: bool,
    rtp_timeout: Duration,
    /// The caller's last valid packet (or the start, or the last quiet
    /// timeout while held).
    last_valid: Instant,
    /// The last packet or silence fed to the detector.
    last_activity: Instant,
    detector: Option<TurnDetector>,
    /// Puts the caller's audio in order before the detector hears it.
    jitter: JitterBuffer,
    dtmf: DtmfDecoder,
    /// The caller's side of the recording, placed on the call's clock from
    /// `t0`.
    recording: Option<(RecordingTrack, Instant)>,
    placer: CallerPlacer,
    /// Drops by reason (the order of [`Dropped::LABELS`]).
    dropped_by_reason: [u64; DROP_REASONS],
    /// The caller's SRTP key and its context, when the media is SRTP.
    srtp: Option<(MasterKey, SrtpContext)>,
    timed_out: bool,
    events: VecDeque<InboundEvent>,
    /// Reception of the caller's packets (RFC 3550 A.3, A.8).
    stats: ReceiveStats,
    /// The SSRC of the caller's audio last let in.
    caller_ssrc: Option<u32>,
    /// The bot's own voice taken out of the caller's audio before the
    /// detector hears it, when turned on.
    echo: Option<Box<EchoPath>>,
    /// Whether the caller's words so far leave the turn open, as the call
    /// last said (read once a packet).
    words_open: Option<Arc<AtomicBool>>,
    /// With streaming: samples of the turn in progress already reported.
    streamed: Option<usize>,
}

/// The echo canceller of a call, its reference and where it stands.
struct EchoPath {
    canceller: EchoCanceller,
    sent: Arc<SentAudio>,
    /// When the call was established: sample 0 of the media clock.
    t0: Instant,
    /// What was sent is read up to here.
    read_to: u64,
    scratch: [i16; FRAME_SAMPLES * 8],
    out: [i16; MAX_SAMPLES],
}

impl EchoPath {
    /// Brings in what was sent since the last read.
    fn catch_up(&mut self) {
        loop {
            let (start, n) = self.sent.read(self.read_to, &mut self.scratch);
            if n == 0 {
                break;
            }
            self.canceller.far(start, &self.scratch[..n]);
            self.read_to = start + n as u64;
        }
    }
}

impl InboundCore {
    /// `now` starts the RTP timeout; `vad` turns listening on.
    pub fn new(
        now: Instant,
        remote: InboundRemote,
        rtp_timeout: Duration,
        vad: Option<VadConfig>,
        recording: Option<(RecordingTrack, Instant)>,
    ) -> Self {
        Self {
            latch: RtpLatch::new(remote.expected, now),
            expected: remote.expected,
            types: remote.types,
            decoder: Decoder::new(remote.codec),
            quiet_allowed: remote.quiet_allowed,
            rtcp_mux: remote.rtcp_mux,
            rtp_timeout,
            last_valid: now,
            last_activity: now,
            streamed: vad.as_ref().filter(|v| v.stream_audio).map(|_| 0),
            detector: vad.map(TurnDetector::new),
            jitter: JitterBuffer::new(),
            dtmf: DtmfDecoder::new(),
            recording,
            placer: CallerPlacer::default(),
            dropped_by_reason: [0; DROP_REASONS],
            srtp: remote.srtp.map(|keys| (keys.theirs, keys.theirs.context())),
            timed_out: false,
            events: VecDeque::new(),
            stats: ReceiveStats::new(),
            caller_ssrc: None,
            echo: None,
            words_open: None,
        }
        .with_clock_rate(remote.codec.clock_rate())
    }

    /// The caller's audio goes through an echo canceller whose reference is
    /// what the call sent (`sent`, on the media clock that started at
    /// `t0`) before the detector hears it; the recording keeps the line as
    /// it was.
    pub fn with_echo_cancelling(mut self, sent: Arc<SentAudio>, t0: Instant) -> Self {
        self.echo = Some(Box::new(EchoPath {
            canceller: EchoCanceller::new(),
            sent,
            t0,
            read_to: 0,
            scratch: [0; FRAME_SAMPLES * 8],
            out: [0; MAX_SAMPLES],
        }));
        self
    }

    /// The call says, through `open`, whether the caller's words so far
    /// leave the turn open (the detector then waits the unfinished
    /// hang-over).
    pub fn with_words_open(mut self, open: Arc<AtomicBool>) -> Self {
        self.words_open = Some(open);
        self
    }

    /// How the echo canceller has done, when there is one.
    pub fn echo_stats(&self) -> Option<EchoStats> {
        self.echo.as_ref().map(|e| e.canceller.stats())
    }

    /// Every part that reads RTP timestamps runs on the codec's clock.
    fn with_clock_rate(mut self, rate: u32) -> Self {
        self.set_clock_rate(rate);
        self
    }

    fn set_clock_rate(&mut self, rate: u32) {
        self.jitter.set_clock_rate(rate);
        self.stats.set_clock_rate(rate);
        self.placer.set_clock_rate(rate);
        self.dtmf.set_clock_rate(rate);
    }

    /// A re-offer, hold or resume changed the caller's side at `now`. Only
    /// a new address starts the latch over (a hold keeps the source it
    /// proved); a resume gives the caller a whole timeout to send again.
    pub fn set_remote(&mut self, now: Instant, remote: InboundRemote) {
        if remote.expected != self.expected {
            self.expected = remote.expected;
            self.latch.expect(remote.expected, now);
        }
        if self.quiet_allowed && !remote.quiet_allowed {
            self.last_valid = now;
            self.last_activity = now;
        }
        self.types = remote.types;
        if remote.codec != self.decoder.codec() {
            self.decoder = Decoder::new(remote.codec);
            self.set_clock_rate(remote.codec.clock_rate());
        }
        self.quiet_allowed = remote.quiet_allowed;
        self.rtcp_mux = remote.rtcp_mux;
        // The same key keeps its context (rollover counter, replay window).
        let theirs = remote.srtp.map(|keys| keys.theirs);
        if theirs != self.srtp.as_ref().map(|(key, _)| *key) {
            self.srtp = theirs.map(|key| (key, key.context()));
        }
    }

    /// Reception of the caller's packets so far (those the latch let in).
    pub fn stats(&self) -> &ReceiveStats {
        &self.stats
    }

    /// Whether RTCP comes on the RTP port.
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }

    /// The SSRC of the caller's audio, once some was let in.
    pub fn caller_ssrc(&self) -> Option<u32> {
        self.caller_ssrc
    }

    /// Where the caller's media is as the latch has it (its proven source,
    /// else what its SDP says).
    pub fn caller_addr(&self) -> SocketAddr {
        self.latch.latched().unwrap_or(self.expected)
    }

    /// What the reordering dropped and concealed so far.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped_by_reason.iter().sum()
    }

    /// Packets dropped so far by reason, in the order of [`Dropped::LABELS`].
    pub fn dropped_by_reason(&self) -> [u64; DROP_REASONS] {
        self.dropped_by_reason
    }

    /// The RTP timeout fired: nothing more will come of this core.
    pub fn is_done(&self) -> bool {
        self.timed_out
    }

    /// When [`Self::handle_timeout`] is next due: the RTP timeout, or while
    /// the caller speaks, the next silence to feed the detector.
    pub fn poll_timeout(&self) -> Instant {
        let timeout = self.last_valid + self.rtp_timeout;
        let timeout = match self.jitter.poll_timeout() {
            Some(gap) => timeout.min(gap),
            None => timeout,
        };
        if self.in_speech() {
            timeout.min(self.last_activity + SILENCE_POLL)
        } else {
            timeout
        }
    }

    pub fn poll_event(&mut self) -> Option<InboundEvent> {
        self.events.pop_front()
    }

    /// One datagram from `source` as it came: SRTP is authenticated and
    /// decrypted in place first (before the latch sees it: a packet
    /// without the caller's key proves no source).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &mut [u8]) {
        if self.timed_out {
            return;
        }
        let len = match self.srtp.as_mut() {
            None => datagram.len(),
            Some((_, context)) => match context.unprotect_rtp(datagram) {
                Ok(len) => len,
                Err(error) => return self.drop_packet(source, Dropped::Srtp(error)),
            },
        };
        self.handle_packet(now, source, &datagram[..len]);
    }

    /// One RTP datagram from `source`, in clear.
    pub fn handle_packet(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        if self.timed_out {
            return;
        }
        let packet = match rtp::parse_inbound(datagram, &self.types) {
            Ok(packet) => packet,
            Err(error) => return self.drop_packet(source, Dropped::Malformed(error)),
        };
        let (ssrc, seq) = match packet {
            Inbound::Audio { ssrc, seq, .. } | Inbound::TelephoneEvent { ssrc, seq, .. } => {
                (ssrc, seq)
            }
        };
        match self.latch.on_packet(source, ssrc, seq, now) {
            LatchDecision::Accept => {}
            LatchDecision::Latch(addr) => self.push(InboundEvent::Latch(addr)),
            LatchDecision::Reject => {
                return self.drop_packet(source, Dropped::UnconfirmedSource);
            }
        }
        self.last_valid = now;
        self.last_activity = now;
        if self.caller_ssrc.is_some_and(|old| old != ssrc) {
            // A new source (a transfer, a bridge): its numbering starts
            // afresh.
            self.stats.new_source();
            self.jitter.restart();
        }
        self.caller_ssrc = Some(ssrc);
        match packet {
            Inbound::Audio {
                ssrc: _,
                seq,
                timestamp,
                payload,
                ..
            } => {
                self.stats.on_packet(now, seq, timestamp, false);
                self.jitter.push(now, seq, timestamp, payload);
                self.listen(now);
            }
            Inbound::TelephoneEvent {
                seq,
                timestamp,
                payload,
                ..
            } => {
                self.stats.on_event_packet(now, seq);
                // The key holds its place in the caller's audio.
                self.jitter.push(now, seq, timestamp, &[]);
                self.listen(now);
                match self.dtmf.handle_packet(timestamp, payload) {
                    Ok(Some(digit)) => self.push(InboundEvent::Dtmf(digit.digit)),
                    Ok(None) => {}
                    Err(_) => self.drop_packet(source, Dropped::BadTelephoneEvent),
                }
            }
        }
    }

    /// Time passed (call when [`Self::poll_timeout`] is reached).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timed_out {
            return;
        }
        self.jitter.handle_timeout(now);
        self.listen(now);
        let timeout = self.last_valid + self.rtp_timeout;
        if now < timeout {
            // Packets stopped mid-turn: the silence must still end it.
            if self.in_speech() && now >= self.last_activity + SILENCE_POLL {
                let silence = [0i16; crate::media::vad::FRAME_SAMPLES];
                for _ in 0..(SILENCE_POLL.as_millis() / 20) {
                    if let Some(detector) = self.detector.as_mut() {
                        hear(
                            detector,
                            &mut self.streamed,
                            &mut self.events,
                            now,
                            &silence,
                        );
                    }
                }
                self.last_activity = now;
            }
            return;
        }
        if self.quiet_allowed {
            // On hold: the caller may send nothing; the timeout starts over.
            self.last_valid = now;
            self.last_activity = now;
            return;
        }
        self.timed_out = true;
        self.push(InboundEvent::RtpTimeout);
    }

    /// The caller's audio that is in order now, decoded: to the turn
    /// detector, to the recording (what was received, placed by its
    /// timestamp), and looked at for loudness until the caller is heard.
    fn listen(&mut self, now: Instant) {
        let Self {
            jitter,
            decoder,
            detector,
            recording,
            placer,
            stats,
            events,
            caller_ssrc,
            echo,
            streamed,
            words_open,
            ..
        } = self;
        while let Some((played, timestamp, pcm)) = jitter.pop(decoder) {
            if pcm.is_empty() {
                continue;
            }
            // Where the packet goes on the call's clock: the first of a
            // source by its arrival, the next ones by their timestamps.
            let t0 = recording
                .as_ref()
                .map(|(_, t0)| *t0)
                .or(echo.as_ref().map(|e| e.t0));
            let position = t0.map(|t0| {
                let arrival = now.saturating_duration_since(t0).as_micros() as u64 * 8 / 1000;
                placer.place(caller_ssrc.unwrap_or(0), timestamp, arrival)
            });
            if played != Played::Concealed {
                if let (Some((track, _)), Some(offset)) = (recording.as_ref(), position) {
                    if let Ok(offset) = usize::try_from(offset) {
                        track.put_at_pcm(offset, pcm);
                    }
                }
            }
            // What the detector hears: the caller, without the bot's echo.
            let (heard, echo_alone): (&[i16], bool) = match (echo.as_mut(), position) {
                (Some(echo), Some(position)) => {
                    echo.catch_up();
                    let n = pcm.len().min(MAX_SAMPLES);
                    let alone = echo
                        .canceller
                        .process(position, &pcm[..n], &mut echo.out[..n]);
                    (&echo.out[..n], alone)
                }
                _ => (pcm, false),
            };
            if played == Played::Received && stats.first_audio.is_none() && is_audible(heard) {
                stats.heard(now);
            }
            if let Some(detector) = detector.as_mut() {
                // The barge-in decision trusts the canceller's: what it
                // judged to be the bot's echo alone is not the caller.
                detector.set_echo_alone(echo_alone);
                if let Some(open) = words_open.as_ref() {
                    detector.set_words_open(open.load(Ordering::Relaxed));
                }
                hear(detector, streamed, events, now, heard);
            }
        }
    }

    fn in_speech(&self) -> bool {
        self.detector.as_ref().is_some_and(TurnDetector::in_speech)
    }

    fn drop_packet(&mut self, source: SocketAddr, reason: Dropped) {
        self.dropped_by_reason[reason.index()] += 1;
        let count = self.dropped();
        if count <= 3 || count.is_multiple_of(REPORT_DROPS_EVERY) {
            self.push(InboundEvent::Dropped {
                source,
                reason,
                count,
            });
        }
    }

    fn push(&mut self, event: InboundEvent) {
        push_bounded(&mut self.events, event);
    }
}

/// Samples of turn audio streamed at a time (100 ms).
const STREAM_CHUNK: usize = 800;

/// The detector hears `pcm`; its turn events, and with streaming (`streamed`:
/// samples of the turn already sent) the turn's audio as it grows.
fn hear(
    detector: &mut TurnDetector,
    streamed: &mut Option<usize>,
    events: &mut VecDeque<InboundEvent>,
    now: Instant,
    pcm: &[i16],
) {
    match detector.push(now, pcm) {
        Some(TurnEvent::SpeechStarted { .. }) => {
            if let Some(sent) = streamed.as_mut() {
                *sent = 0;
            }
            push_bounded(events, InboundEvent::SpeechStarted);
        }
        Some(TurnEvent::SpeechEnded { utterance, .. }) => {
            if let Some(sent) = streamed.as_mut() {
                if *sent < utterance.len() {
                    push_bounded(
                        events,
                        InboundEvent::SpeechAudio(utterance[*sent..].to_vec()),
                    );
                }
                *sent = 0;
            }
            push_bounded(events, InboundEvent::SpeechEnded(utterance));
            return;
        }
        None => {}
    }
    if let Some(sent) = streamed.as_mut() {
        if detector.in_speech() {
            let turn = detector.utterance();
            while turn.len() >= *sent + STREAM_CHUNK {
                let chunk = turn[*sent..*sent + STREAM_CHUNK].to_vec();
                push_bounded(events, InboundEvent::SpeechAudio(chunk));
                *sent += STREAM_CHUNK;
            }
        }
    }
}

fn push_bounded(events: &mut VecDeque<InboundEvent>, event: InboundEvent) {
    if events.len() >= MAX_EVENTS {
        // Polled after every input, so this is a shell that stopped
        // polling: keep the newest.
        events.pop_front();
    }
    events.push_back(event);
}

/// Whether `pcm`'s mean absolute sample is over [`AUDIBLE_LEVEL`].
fn is_audible(pcm: &[i16]) -> bool {
    let sum: u32 = pcm.iter().map(|s| u32::from(s.unsigned_abs())).sum();
    sum / (pcm.len().max(1) as u32) > AUDIBLE_LEVEL
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "192.0.2.10:4000";

    fn remote() -> InboundRemote {
        InboundRemote {
            expected: CALLER.parse().unwrap(),
            types: PayloadTypes {
                audio: 0,
                telephone_event: Some(101),
            },
            codec: Codec::Pcmu,
            quiet_allowed: false,
            rtcp_mux: false,
            srtp: None,
        }
    }

    fn audio(seq: u16) -> Vec<u8> {
        let mut packet = [0u8; rtp::PACKET_LEN];
        let len = rtp::write_audio_packet(
            &mut packet,
            0,
            0x1234,
            seq,
            u32::from(seq) * 160,
            false,
            &[0xFF; 160],
        );
        packet[..len].to_vec()
    }

    fn key(seq: u16, timestamp: u32, event: u8) -> Vec<u8> {
        let mut packet = vec![0x80, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&[event, 0x0A, 0x00, 0xA0]);
        packet
    }

    fn events(core: &mut InboundCore) -> Vec<InboundEvent> {
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    #[test]
    fn the_signalled_source_latches_and_keys_come_out_once() {
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        core.handle_packet(t0, caller, &audio(1));
        assert_eq!(events(&mut core), vec![InboundEvent::Latch(caller)]);
        // A key press: three packets of one event, one digit.
        for seq in 2..5 {
            core.handle_packet(t0, caller, &key(seq, 8000, 5));
        }
        assert_eq!(events(&mut core), vec![InboundEvent::Dtmf('5')]);
    }

    #[test]
    fn another_source_is_dropped_and_reported_without_flooding() {
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        core.handle_packet(t0, caller, &audio(1));
        events(&mut core);
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        for seq in 0..1000u16 {
            // Not consecutive: never passes probation.
            core.handle_packet(t0, stranger, &audio(seq.wrapping_mul(7)));
        }
        let reported = events(&mut core);
        assert_eq!(core.dropped(), 1000);
        assert_eq!(reported.len(), 3 + 2, "{reported:?}");
        assert!(reported.iter().all(|e| matches!(
            e,
            InboundEvent::Dropped {
                reason: Dropped::UnconfirmedSource,
                ..
            }
        )));
        // Counted, not reported: only the first few and one in 500 are.
        core.handle_packet(t0, caller, &[1, 2, 3]);
        assert_eq!(core.dropped(), 1001);
        assert!(events(&mut core).is_empty());
        // Every drop counted by its reason (the metrics read these).
        assert_eq!(core.dropped_by_reason(), [1, 1000, 0, 0, 0]);
    }

    #[test]
    fn a_caller_who_never_sent_or_went_quiet_keeps_the_call_and_its_keys() {
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let caller: SocketAddr = CALLER.parse().unwrap();
        // A well-formed stream from elsewhere (consecutive, one SSRC), with
        // a '#' in it, `from` after the answer.
        let hijack = |core: &mut InboundCore, from: Instant| {
            for seq in 0..50u16 {
                let at = from + Duration::from_millis(20 * u64::from(seq));
                core.handle_packet(at, stranger, &audio(seq));
            }
            let at = from + Duration::from_secs(1);
            for seq in 50..53u16 {
                core.handle_packet(at, stranger, &key(seq, 8000, 11));
            }
            events(core)
        };
        // The caller has sent nothing yet, 3 s after the answer.
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        let seen = hijack(&mut core, t0 + Duration::from_secs(3));
        assert!(
            seen.iter()
                .all(|e| matches!(e, InboundEvent::Dropped { .. })),
            "{seen:?}"
        );
        assert_eq!(core.dropped(), 53);
        assert_eq!(core.caller_addr(), caller, "still sending to the caller");
        // The caller sent, then went quiet for 10 s.
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        core.handle_packet(t0, caller, &audio(1));
        events(&mut core);
        let seen = hijack(&mut core, t0 + Duration::from_secs(10));
        assert!(
            seen.iter()
                .all(|e| matches!(e, InboundEvent::Dropped { .. })),
            "{seen:?}"
        );
        assert_eq!(core.caller_addr(), caller);
    }

    #[test]
    fn srtp_is_read_with_the_callers_key_and_nothing_else_gets_in() {
        use crate::media::srtp::Suite;
        let theirs = MasterKey::generate(Suite::AesCm128HmacSha1_80);
        let keys = SrtpKeys {
            ours: MasterKey::generate(Suite::AesCm128HmacSha1_80),
            theirs,
        };
        let mut caller_side = theirs.context();
        let protect = |context: &mut SrtpContext, plain: Vec<u8>| {
            let mut buf = plain.clone();
            buf.resize(plain.len() + 10, 0);
            let len = context.protect_rtp(&mut buf, plain.len()).unwrap();
            buf.truncate(len);
            buf
        };
        let t0 = Instant::now();
        let remote = InboundRemote {
            srtp: Some(keys),
            ..remote()
        };
        let mut core = InboundCore::new(t0, remote, Duration::from_secs(30), None, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        // Plain RTP, or SRTP under another key, from a stranger during the
        // latch's window: refused before the latch sees it.
        let mut impostor = MasterKey::generate(Suite::AesCm128HmacSha1_80).context();
        for seq in 0..20u16 {
            core.handle_datagram(t0, stranger, &mut audio(seq));
            core.handle_datagram(t0, stranger, &mut protect(&mut impostor, audio(100 + seq)));
        }
        assert_eq!(core.dropped_by_reason(), [0, 0, 0, 40, 0]);
        assert_eq!(core.caller_addr(), caller, "no stranger latched");
        // The caller's packets are read, its keys obeyed.
        let first = protect(&mut caller_side, audio(1));
        core.handle_datagram(t0, caller, &mut first.clone());
        for seq in 2..5 {
            core.handle_datagram(
                t0,
                caller,
                &mut protect(&mut caller_side, key(seq, 8000, 5)),
            );
        }
        let seen = events(&mut core);
        assert!(seen.contains(&InboundEvent::Latch(caller)), "{seen:?}");
        assert!(seen.contains(&InboundEvent::Dtmf('5')), "{seen:?}");
        assert_eq!(core.stats().packets, 4);
        // A captured packet sent again, and one with a bit flipped.
        core.handle_datagram(t0, caller, &mut first.clone());
        let mut flipped = protect(&mut caller_side, audio(5));
        flipped[15] ^= 0x40;
        core.handle_datagram(t0, caller, &mut flipped);
        assert_eq!(core.dropped_by_reason(), [0, 0, 0, 41, 1]);
        assert_eq!(core.stats().packets, 4);
        // A re-offer with the same keys keeps the replay window; new keys
        // from the caller are read from then on.
        core.set_remote(
            t0,
            InboundRemote {
                srtp: Some(keys),
                ..remote
            },
        );
        core.handle_datagram(t0, caller, &mut first.clone());
        assert_eq!(core.dropped_by_reason()[4], 2);
        let renewed = MasterKey::generate(Suite::AesCm128HmacSha1_32);
        core.set_remote(
            t0,
            InboundRemote {
                srtp: Some(SrtpKeys {
                    theirs: renewed,
                    ..keys
                }),
                ..remote
            },
        );
        let mut renewed_side = renewed.context();
        core.handle_datagram(t0, caller, &mut protect(&mut renewed_side, audio(6)));
        assert_eq!(core.stats().packets, 5);
        core.handle_datagram(t0, caller, &mut protect(&mut caller_side, audio(7)));
        assert_eq!(core.dropped_by_reason()[3], 42);
    }

    #[test]
    fn reception_counts_the_callers_packets_and_when_it_is_first_heard() {
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        core.handle_packet(ms(0), caller, &audio(1));
        core.handle_packet(ms(20), caller, &key(2, 160, 5));
        let mut loud = [0u8; rtp::PACKET_LEN];
        let speech = [crate::media::g711::encode(4000); 160];
        let len = rtp::write_audio_packet(&mut loud, 0, 0x1234, 4, 480, false, &speech);
        core.handle_packet(ms(60), caller, &loud[..len]);
        // Not the caller's: not counted.
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        core.handle_packet(ms(61), stranger, &audio(900));
        // Seq 4 is heard when it comes out in order: once the window given
        // to seq 3 has passed.
        assert_eq!(core.stats().first_audio, None);
        assert_eq!(core.poll_timeout(), ms(120));
        core.handle_timeout(ms(120));
        let stats = core.stats();
        assert_eq!(
            (stats.packets, stats.expected(), stats.lost()),
            (3, 4, 1),
            "seq 3 never came"
        );
        assert_eq!(stats.first_audio, Some(ms(120)));
        assert_eq!(stats.max_gap, Duration::from_millis(40));
    }

    /// The welcome phrase, after 1 s of silence and followed by 2 s (8 kHz).
    fn spoken() -> Vec<i16> {
        let mut pcm = vec![0i16; 8000];
        pcm.extend(crate::media::wav::cached_phrase_8k("welcome"));
        pcm.extend(vec![0i16; 16_000]);
        pcm
    }

    /// [`spoken`] as 20 ms RTP packets (seq, payload) in μ-law.
    fn spoken_packets() -> Vec<(u16, Vec<u8>)> {
        spoken_packets_in(Codec::Pcmu)
    }

    fn spoken_packets_in(codec: Codec) -> Vec<(u16, Vec<u8>)> {
        let mut audio = Vec::new();
        let mut encoder = crate::media::codec::Encoder::new(codec);
        encoder.encode_extend(&spoken(), &mut audio);
        encoder.finish(&mut audio);
        let payload_type = codec.offer_payload_type();
        codec
            .frames(&audio)
            .enumerate()
            .map(|(n, frame)| {
                let seq = 1000 + n as u16;
                let mut packet = [0u8; rtp::PACKET_LEN];
                let len = rtp::write_audio_packet(
                    &mut packet,
                    payload_type,
                    0x1234,
                    seq,
                    u32::from(seq) * codec.timestamp_step(),
                    false,
                    frame,
                );
                (seq, packet[..len].to_vec())
            })
            .collect()
    }

    /// The normalised cross-correlation of `b` against `a` at the best lag
    /// of `b` up to `max_lag` samples either way, over `a`'s length.
    fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
        let correlate = |a: &[i16], b: &[i16]| {
            let n = a.len().min(b.len());
            let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
            for (&x, &y) in a[..n].iter().zip(&b[..n]) {
                let (x, y) = (f64::from(x), f64::from(y));
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            ab / (aa * bb).sqrt().max(1.0)
        };
        (0..=max_lag)
            .flat_map(|lag| {
                [
                    correlate(a, &b[lag.min(b.len())..]),
                    correlate(&a[lag.min(a.len())..], b),
                ]
            })
            .fold(f64::MIN, f64::max)
    }

    /// What the caller said, as the core hands it to speech-to-text, when
    /// the packets arrive in `order` (indices into the packets, 20 ms apart).
    fn utterance(packets: &[(u16, Vec<u8>)], order: &[usize]) -> (Vec<i16>, InboundCore) {
        utterance_in(Codec::Pcmu, packets, order)
    }

    fn utterance_in(
        codec: Codec,
        packets: &[(u16, Vec<u8>)],
        order: &[usize],
    ) -> (Vec<i16>, InboundCore) {
        let t0 = Instant::now();
        let vad = crate::media::vad::VadConfig::default();
        let remote = InboundRemote {
            types: PayloadTypes {
                audio: codec.offer_payload_type(),
                telephone_event: Some(101),
            },
            codec,
            ..remote()
        };
        let mut core = InboundCore::new(t0, remote, Duration::from_secs(30), Some(vad), None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut turns = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * n as u64);
            core.handle_packet(now, caller, &packets[i].1);
            if core.poll_timeout() <= now {
                core.handle_timeout(now);
            }
            turns.extend(events(&mut core));
        }
        let ended: Vec<Vec<i16>> = turns
            .into_iter()
            .filter_map(|e| match e {
                InboundEvent::SpeechEnded(utterance) => Some(utterance),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 1, "one turn");
        (ended.into_iter().next().unwrap(), core)
    }

    /// The arrival order of `len` packets on a rough line: every 10th
    /// swapped with the next, every 25th lost, every 40th sent twice; and
    /// the indices of the lost ones.
    fn rough_order(len: usize) -> (Vec<usize>, Vec<usize>) {
        let mut order = Vec::new();
        let mut lost = Vec::new();
        let mut i = 0;
        while i < len {
            if i % 25 == 24 {
                lost.push(i);
                i += 1;
                continue;
            }
            if i % 10 == 9 && i + 1 < len && (i + 1) % 25 != 24 {
                order.extend([i + 1, i]);
                i += 2;
                continue;
            }
            order.push(i);
            if i % 40 == 33 {
                order.push(i);
            }
            i += 1;
        }
        (order, lost)
    }

    /// Frames (160 samples) of `a` and `b` that differ, at the best of a
    /// shift of up to two frames either way (a turn may start or end a
    /// frame apart).
    fn frames_differing(a: &[i16], b: &[i16]) -> usize {
        let frames = |u: &[i16]| u.chunks(160).map(<[i16]>::to_vec).collect::<Vec<_>>();
        let (a, b) = (frames(a), frames(b));
        (0..=2)
            .flat_map(|shift| [(shift, 0), (0, shift)])
            .map(|(x, y)| {
                let pairs = a.iter().skip(x).zip(b.iter().skip(y));
                pairs.filter(|(p, q)| p != q).count()
            })
            .min()
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn with_streaming_the_turn_comes_in_parts_while_spoken_that_make_the_whole() {
        let packets = spoken_packets();
        let t0 = Instant::now();
        let vad = crate::media::vad::VadConfig {
            stream_audio: true,
            ..Default::default()
        };
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), Some(vad), None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut seen = Vec::new();
        for (n, packet) in packets.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * n as u64);
            core.handle_packet(now, caller, &packet.1);
            if core.poll_timeout() <= now {
                core.handle_timeout(now);
            }
            seen.extend(events(&mut core).into_iter().map(|e| (n, e)));
        }
        let at = |want: fn(&InboundEvent) -> bool| seen.iter().position(|(_, e)| want(e));
        let started = at(|e| *e == InboundEvent::SpeechStarted).expect("a turn");
        let ended = at(|e| matches!(e, InboundEvent::SpeechEnded(_))).expect("its end");
        let parts: Vec<&Vec<i16>> = seen
            .iter()
            .filter_map(|(_, e)| match e {
                InboundEvent::SpeechAudio(pcm) => Some(pcm),
                _ => None,
            })
            .collect();
        // Parts come between the start and the end, 100 ms each but the
        // last, and several while the caller still speaks.
        assert!(parts.len() >= 3, "{} parts", parts.len());
        assert!(
            seen[started..ended]
                .iter()
                .filter(|(_, e)| matches!(e, InboundEvent::SpeechAudio(_)))
                .count()
                == parts.len()
        );
        assert!(parts[..parts.len() - 1]
            .iter()
            .all(|p| p.len() == STREAM_CHUNK));
        let first_part_packet = seen
            .iter()
            .find(|(_, e)| matches!(e, InboundEvent::SpeechAudio(_)))
            .map(|(n, _)| *n)
            .unwrap();
        let end_packet = seen[ended].0;
        assert!(first_part_packet + 10 < end_packet, "streamed while spoken");
        let InboundEvent::SpeechEnded(utterance) = &seen[ended].1 else {
            unreachable!()
        };
        let joined: Vec<i16> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined.len(), utterance.len());
        assert!(joined == *utterance, "the parts are the turn");
    }

    #[test]
    fn reordered_duplicated_and_lost_packets_reach_the_detector_in_order_and_concealed() {
        let packets = spoken_packets();
        let in_order: Vec<usize> = (0..packets.len()).collect();
        let (clean, _) = utterance(&packets, &in_order);
        // Every 10th packet swapped with the next, every 25th lost, every
        // 40th sent twice.
        let (order, lost) = rough_order(packets.len());
        let (rough, core) = utterance(&packets, &order);
        let stats = core.jitter_stats();
        // A copy right behind its packet comes after it went out: late.
        assert!(stats.reordered > 5 && stats.late > 3, "{stats:?}");
        // The detector heard the frames that were sent, the lost ones made
        // up and the others in their place (the turn may end a frame apart:
        // a loss delays what follows it by up to the window).
        assert!(
            clean.len().abs_diff(rough.len()) <= 2 * 160,
            "{} samples against {}",
            rough.len(),
            clean.len()
        );
        let differing = frames_differing(&clean, &rough);
        assert!(
            differing <= lost.len(),
            "{differing} frames differ; {} were lost in the whole stream",
            lost.len()
        );
        assert!(stats.concealed >= 1, "{stats:?}");
    }

    #[test]
    fn a_g722_caller_is_decoded_in_sequence_order_whatever_the_arrival_order() {
        let packets = spoken_packets_in(Codec::G722);
        let in_order: Vec<usize> = (0..packets.len()).collect();
        let (clean, _) = utterance_in(Codec::G722, &packets, &in_order);
        // What the detector heard is the caller's speech through G.722's
        // lower band: compare with what was said, where it was said.
        let said = spoken();
        let start = said
            .windows(160)
            .position(|w| w.iter().any(|s| s.unsigned_abs() > 500))
            .unwrap_or(0);
        let best = (0..4000usize)
            .map(|lag| {
                let n = 8000.min(clean.len().saturating_sub(lag));
                let reference = &said[start..start + n];
                let heard = &clean[lag..lag + n];
                let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
                let noise: f64 = reference
                    .iter()
                    .zip(heard)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                10.0 * (signal / noise.max(1.0)).log10()
            })
            .fold(f64::MIN, f64::max);
        assert!(
            best > 15.0,
            "the caller's G.722 speech heard at {best:.1} dB SNR"
        );
        // Swapped and duplicated packets (none lost): the decoder still
        // sees them in sequence order, so the detector hears the same.
        let mut order = Vec::new();
        let mut i = 0;
        while i < packets.len() {
            if i % 10 == 9 && i + 1 < packets.len() {
                order.extend([i + 1, i, i]);
                i += 2;
            } else {
                order.push(i);
                i += 1;
            }
        }
        let (rough, core) = utterance_in(Codec::G722, &packets, &order);
        let stats = core.jitter_stats();
        assert!(stats.reordered > 5 && stats.concealed == 0, "{stats:?}");
        // The turn may end a few frames apart (a swapped packet comes out
        // with the one after it, so the frames around the voice's end are
        // heard up to a frame late, and the hang-over is counted from
        // them); frame for frame, the audio is the same.
        assert_eq!(
            frames_differing(&clean, &rough),
            0,
            "reordering changed what was decoded"
        );
        assert!(
            clean.len().abs_diff(rough.len()) <= 3 * 160,
            "{} against {}",
            clean.len(),
            rough.len()
        );
    }

    #[test]
    fn an_opus_caller_is_heard_through_loss_reordering_and_copies_with_its_fec() {
        let packets = spoken_packets_in(Codec::Opus);
        let in_order: Vec<usize> = (0..packets.len()).collect();
        let (clean, core) = utterance_in(Codec::Opus, &packets, &in_order);
        assert_eq!(core.jitter_stats().concealed, 0);
        // What the detector heard is the caller's speech (decoded by
        // libopus at 8 kHz, a few milliseconds late).
        let said = spoken();
        let start = said
            .windows(160)
            .position(|w| w.iter().any(|s| s.unsigned_abs() > 500))
            .unwrap_or(0);
        let heard = best_correlation(&said[start..start + 8000], &clean, 4000);
        assert!(heard > 0.8, "the caller's Opus speech heard at {heard:.3}");
        // Every 10th packet swapped with the next, every 25th lost, every
        // 40th sent twice: the lost ones come back from the next packet's
        // FEC (it is there by the time the gap is given up), the rest in
        // order, so the turn sounds the same.
        let (order, lost) = rough_order(packets.len());
        let lost = lost.len();
        let (rough, core) = utterance_in(Codec::Opus, &packets, &order);
        let stats = core.jitter_stats();
        assert!(stats.reordered > 5 && stats.late > 3, "{stats:?}");
        assert!(
            stats.concealed >= 2 && stats.recovered >= 1 && stats.recovered <= stats.concealed,
            "{lost} lost: {stats:?}"
        );
        assert!(
            clean.len().abs_diff(rough.len()) <= 3 * 160,
            "{} against {}",
            clean.len(),
            rough.len()
        );
        let same = best_correlation(&clean, &rough, 320);
        assert!(
            same > 0.95,
            "with loss and reordering: {same:.3} of the clean turn"
        );
    }

    /// The bot says the welcome phrase over and over for 10 s; the caller's
    /// line returns it `delay` samples later `loss_db` down over its noise,
    /// and the caller says the menu phrase from `caller_from` on when given.
    /// Returns when the detector heard a voice start (media time), and the
    /// canceller's figures.
    fn bot_over_an_echoing_line(
        (delay, loss_db): (usize, f32),
        cancelling: bool,
        caller_from: Option<usize>,
    ) -> (Vec<Duration>, Option<EchoStats>) {
        use crate::media::echo::line::{echo_of, hybrid, line_noise, plus};
        let frames = 500;
        let bot: Vec<i16> = crate::media::wav::cached_phrase_8k("welcome")
            .into_iter()
            .cycle()
            .take(frames * 160)
            .collect();
        let mut returned = plus(
            &echo_of(&bot, delay, &hybrid(loss_db)),
            &line_noise(bot.len()),
        );
        if let Some(from) = caller_from {
            let caller = crate::media::wav::cached_phrase_8k("menu");
            for (r, &c) in returned[from..].iter_mut().zip(&caller) {
                *r = r.saturating_add(c);
            }
        }
        let t0 = Instant::now();
        let sent = Arc::new(SentAudio::new());
        let mut core = InboundCore::new(
            t0,
            remote(),
            Duration::from_secs(30),
            Some(crate::media::vad::VadConfig::default()),
            None,
        );
        if cancelling {
            core = core.with_echo_cancelling(sent.clone(), t0);
        }
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut starts = Vec::new();
        for n in 0..frames {
            // Frame n goes out at n × 20 ms; the line's samples of that
            // frame come back in a packet 20 ms later.
            sent.put(n as u64 * 160, &bot[n * 160..(n + 1) * 160]);
            let now = t0 + Duration::from_millis(20 * (n as u64 + 1));
            let payload: Vec<u8> = returned[n * 160..(n + 1) * 160]
                .iter()
                .map(|&s| crate::media::g711::encode(s))
                .collect();
            let mut packet = [0u8; rtp::PACKET_LEN];
            let len = rtp::write_audio_packet(
                &mut packet,
                0,
                0x1234,
                n as u16,
                n as u32 * 160,
                false,
                &payload,
            );
            core.handle_packet(now, caller, &packet[..len]);
            for event in events(&mut core) {
                if event == InboundEvent::SpeechStarted {
                    starts.push(now - t0);
                }
            }
        }
        (starts, core.echo_stats())
    }

    #[test]
    fn the_bots_own_echo_is_not_taken_for_the_caller_and_the_caller_still_is() {
        // 60 ms at −12 dB (a typical hybrid), 120 ms at −6 dB (the worst
        // G.168 asks for).
        for line in [(480, 12.0), (960, 6.0)] {
            // Without the canceller, the echo starts "turns": the test can
            // tell.
            let (starts, _) = bot_over_an_echoing_line(line, false, None);
            assert!(
                !starts.is_empty(),
                "{line:?}: the echo never sounded like a voice"
            );
            // With it: no voice in 10 s of the bot speaking.
            let (starts, stats) = bot_over_an_echoing_line(line, true, None);
            let stats = stats.expect("a canceller");
            assert!(
                starts.is_empty(),
                "{line:?}: the echo taken for a voice at {starts:?}: {stats:?}"
            );
            assert!(stats.delay.is_some(), "{stats:?}");
            // The caller talking over the bot at 6 s is heard within 300 ms
            // of the voice's onset. (The line then clips where voice and
            // echo add up: the detector once panicked on that.)
            let from = 6 * 8000;
            let caller = crate::media::wav::cached_phrase_8k("menu");
            let onset = caller
                .chunks(160)
                .position(is_audible)
                .expect("the phrase has a voice");
            let onset = Duration::from_millis(((from + onset * 160) / 8) as u64);
            let (starts, _) = bot_over_an_echoing_line(line, true, Some(from));
            let heard = starts.iter().find(|&&at| at >= onset).copied();
            assert!(
                heard.is_some_and(|at| at - onset <= Duration::from_millis(300)),
                "{line:?}: the caller's voice from {onset:?} heard at {heard:?} ({starts:?})"
            );
            assert!(
                starts.iter().all(|&at| at >= onset),
                "{line:?}: before the caller: {starts:?}"
            );
        }
    }

    #[test]
    fn a_malformed_packet_is_dropped_with_its_reason() {
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        let caller: SocketAddr = CALLER.parse().unwrap();
        core.handle_packet(t0, caller, &[0x80, 0, 1]);
        assert!(matches!(
            events(&mut core)[..],
            [InboundEvent::Dropped {
                reason: Dropped::Malformed(_),
                count: 1,
                ..
            }]
        ));
    }

    #[test]
    fn silence_times_out_unless_the_caller_holds_us() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut core = InboundCore::new(t0, remote(), timeout, None, None);
        assert_eq!(core.poll_timeout(), t0 + timeout);
        core.handle_timeout(t0 + Duration::from_secs(29));
        assert!(events(&mut core).is_empty());
        // On hold, the timeout starts over instead.
        core.set_remote(
            t0,
            InboundRemote {
                quiet_allowed: true,
                ..remote()
            },
        );
        core.handle_timeout(t0 + timeout);
        assert!(events(&mut core).is_empty());
        assert_eq!(core.poll_timeout(), t0 + timeout * 2);
        // Resumed late in that window: a whole timeout to send again.
        let resumed = t0 + timeout * 2 - Duration::from_secs(1);
        core.set_remote(resumed, remote());
        assert_eq!(core.poll_timeout(), resumed + timeout);
        core.handle_timeout(t0 + timeout * 2);
        assert!(events(&mut core).is_empty());
        // Still silent: the call's media has stopped.
        core.handle_timeout(resumed + timeout);
        assert_eq!(events(&mut core), vec![InboundEvent::RtpTimeout]);
        assert!(core.is_done());
        core.handle_packet(resumed + timeout, CALLER.parse().unwrap(), &audio(9));
        assert!(events(&mut core).is_empty(), "nothing after the timeout");
    }

    #[test]
    fn a_hold_keeps_the_source_the_caller_proved() {
        let t0 = Instant::now();
        let mut core = InboundCore::new(t0, remote(), Duration::from_secs(30), None, None);
        // Behind NAT: the caller sends from elsewhere than its SDP says.
        let real: SocketAddr = "198.51.100.20:7000".parse().unwrap();
        for seq in 1..=3 {
            core.handle_packet(t0, real, &audio(seq));
        }
        // On probation for two packets, then believed.
        assert_eq!(events(&mut core).last(), Some(&InboundEvent::Latch(real)));
        assert_eq!(core.dropped(), 2);
        // A hold and a resume (same address): still latched, no packet lost.
        let held = InboundRemote {
            quiet_allowed: true,
            ..remote()
        };
        core.set_remote(t0, held);
        core.set_remote(t0, remote());
        core.handle_packet(t0, real, &audio(4));
        assert!(events(&mut core).is_empty());
        assert_eq!(core.dropped(), 2);
        // Nor can a stranger take over meanwhile.
        let stranger: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        for seq in 100..103 {
            core.handle_packet(t0, stranger, &audio(seq));
        }
        assert_eq!(core.dropped(), 5);
        // A new address in the SDP starts the latch over.
        let moved: SocketAddr = "192.0.2.99:4000".parse().unwrap();
        core.set_remote(
            t0,
            InboundRemote {
                expected: moved,
                ..remote()
            },
        );
        core.handle_packet(t0, moved, &audio(5));
        assert!(events(&mut core).contains(&InboundEvent::Latch(moved)));
    }
}
