//! One call's media behind one handle: its outbound stream in the shared
//! [`MediaDriver`] and its receive task.
//!
//! The call owns the handle and is the only one that changes the media: what
//! to play ([`enqueue`](MediaHandle::enqueue) and the stream methods), where
//! the caller is and what it sends ([`apply_remote`](MediaHandle::apply_remote),
//! one call for a re-offer, a hold or a resume), and the end
//! ([`stop`](MediaHandle::stop)). The handle counts the segments it queued,
//! so a playout `Idle` that left the driver before the last of them arrived
//! is recognised as stale ([`is_stale_idle`](MediaHandle::is_stale_idle)).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::info;

use crate::media::codec::Codec;
use crate::media::driver::{self, MediaDriver, MediaEvent, MediaId, SenderState, StreamStart};
use crate::media::dtmf::KeyPress;
use crate::media::echo::EchoStats;
use crate::media::inbound::InboundRemote;
use crate::media::jitter::JitterStats;
use crate::media::pacer::RtpClock;
use crate::media::playout::{SegmentKind, StreamId, StreamPolicy};
use crate::media::receiver::{self, Received, ReceiverConfig, RtcpSetup};
use crate::media::recording::Recording;
use crate::media::rtcp::PeerView;
use crate::media::rtp::PayloadTypes;
use crate::media::sent_audio::SentAudio;
use crate::media::srtp::SrtpKeys;
use crate::media::stats::ReceiveStats;
use crate::media::vad::VadConfig;

/// Why a key cannot be pressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the other side did not accept telephone-event (RFC 4733): keys cannot be sent")]
    NoTelephoneEvent,
    #[error("{0:?} is not a key (0-9, *, #, A-D)")]
    NotAKey(char),
}

/// What the caller's session description says of its media, as the media
/// path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where the caller receives RTP (we latch to where it really sends
    /// from once its packets arrive).
    pub addr: SocketAddr,
    /// The codec of the call, both ways.
    pub codec: Codec,
    /// The payload type we send audio with.
    pub payload_type: u8,
    /// The payload types the caller sends.
    pub receive: PayloadTypes,
    /// The payload type the other side takes telephone-events on (its
    /// description's, at the codec's clock rate): the keys we press.
    pub send_events: Option<u8>,
    /// We send audio (false while the caller holds us: RFC 3264 §8.4).
    pub sending: bool,
    /// The caller may send nothing for now (any hold): no RTP timeout.
    pub quiet_allowed: bool,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// The media is SRTP/SRTCP with these keys.
    pub srtp: Option<SrtpKeys>,
}

impl RemoteMedia {
    /// The receive side's part.
    fn inbound(&self) -> InboundRemote {
        InboundRemote {
            expected: self.addr,
            types: self.receive,
            codec: self.codec,
            quiet_allowed: self.quiet_allowed,
            rtcp_mux: self.rtcp_mux,
            srtp: self.srtp,
        }
    }
}

/// How one call's media starts.
pub struct MediaSetup {
    pub socket: Arc<UdpSocket>,
    /// RTCP's socket (the port above RTP), when the call uses RTCP.
    pub rtcp: Option<Arc<UdpSocket>>,
    /// Our CNAME in RTCP.
    pub cname: String,
    pub remote: RemoteMedia,
    /// When the call was established: frame 0 is due then.
    pub t0: Instant,
    /// Segments queued before frame 0, so the greeting starts at once.
    pub initial: Vec<SegmentKind>,
    pub policy: StreamPolicy,
    pub rtp_timeout: Duration,
    /// Listen to the caller (turn-taking on).
    pub vad: Option<VadConfig>,
    /// Both sides of the call are copied here when recording.
    pub recording: Option<Recording>,
}

/// How long [`MediaHandle::stop`] waits for the receive task to hand over
/// its statistics.
const RECEIVER_STOP: Duration = Duration::from_millis(200);

/// What a call's media carried, when it stopped.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// RTP packets sent.
    pub sent: u64,
    /// The caller's packets (those the latch let in).
    pub received: ReceiveStats,
    /// What putting them in order dropped and concealed.
    pub jitter: JitterStats,
    /// How the echo canceller did, when the call had one.
    pub echo: Option<EchoStats>,
    /// What the caller's RTCP said: round trip, its view of our stream.
    pub peer: PeerView,
}

/// The call's side of its media.
pub struct MediaHandle {
    id: MediaId,
    driver: MediaDriver,
    receiver: tokio::task::JoinHandle<Received>,
    /// Tells the receive task what the caller's SDP says.
    inbound: watch::Sender<InboundRemote>,
    /// The remote description applied last.
    applied: RemoteMedia,
    /// Segments queued so far.
    enqueued: u64,
    /// The sender of the call's media events (kept for `injector`).
    events: mpsc::Sender<MediaEvent>,
    /// Whether the caller's words so far leave the turn open (read by the
    /// receive task's turn detector), when the call listens.
    words_open: Option<Arc<AtomicBool>>,
}

impl MediaHandle {
    /// Starts the outbound stream (frame 0 due at `t0`) and the receive task.
    pub async fn start(
        driver: &MediaDriver,
        setup: MediaSetup,
    ) -> (MediaHandle, mpsc::Receiver<MediaEvent>) {
        let id = driver.next_id();
        let (events_tx, events) = mpsc::channel(driver::EVENT_QUEUE);
        let remote = setup.remote;
        let enqueued = setup.initial.len() as u64;
        let (ssrc, ts0): (u32, u32) = (rand::random(), rand::random());
        // What the call sends, as the echo canceller's reference, when it
        // listens with one.
        let sent_audio = setup
            .vad
            .as_ref()
            .is_some_and(|vad| vad.echo_cancelling)
            .then(|| Arc::new(SentAudio::new()));
        let sent = Arc::new(SenderState::new(RtpClock {
            index: 0,
            timestamp: ts0,
            step: remote.codec.timestamp_step(),
        }));
        driver
            .start(StreamStart {
                id,
                socket: setup.socket.clone(),
                remote: remote.addr,
                payload_type: remote.payload_type,
                codec: remote.codec,
                ssrc,
                seq0: rand::random(),
                ts0,
                t0: setup.t0,
                initial: setup.initial,
                policy: setup.policy,
                events: events_tx.clone(),
                recording: setup.recording.as_ref().map(|r| r.bot.clone()),
                sent: sent.clone(),
                sent_audio: sent_audio.clone(),
                srtp: remote.srtp.map(|keys| keys.ours),
            })
            .await;
        let rtcp = setup.rtcp.map(|socket| RtcpSetup {
            socket,
            ssrc,
            t0: setup.t0,
            sent,
            cname: setup.cname,
        });
        let words_open = setup.vad.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
        let (inbound, inbound_rx) = watch::channel(remote.inbound());
        let receiver = receiver::spawn_receiver(ReceiverConfig {
            id,
            socket: setup.socket,
            remote: inbound_rx,
            rtp_timeout: setup.rtp_timeout,
            driver: driver.clone(),
            events: events_tx.clone(),
            vad: setup.vad,
            echo: sent_audio.map(|sent| (sent, setup.t0)),
            words_open: words_open.clone(),
            recording: setup.recording.map(|r| (r.caller, setup.t0)),
            rtcp,
        });
        if !remote.sending {
            driver.set_sending(id, false).await;
        }
        let handle = MediaHandle {
            id,
            driver: driver.clone(),
            receiver,
            inbound,
            applied: remote,
            enqueued,
            events: events_tx,
            words_open,
        };
        (handle, events)
    }

    /// Whether the caller's words so far leave their turn open (a partial
    /// transcript ending on "euh", "et", a comma…): the turn detector then
    /// waits the unfinished hang-over before it ends the turn.
    pub fn set_words_open(&self, open: bool) {
        if let Some(words) = &self.words_open {
            words.store(open, Ordering::Relaxed);
        }
    }

    /// Queues a segment behind what is playing.
    pub async fn enqueue(&mut self, segment: SegmentKind) {
        self.enqueued += 1;
        self.driver.enqueue(self.id, segment).await;
    }

    /// Queues a segment right before `stream`, which waits for audio (a
    /// filler covering it).
    pub async fn enqueue_before(&mut self, stream: StreamId, segment: SegmentKind) {
        self.enqueued += 1;
        self.driver.enqueue_before(self.id, stream, segment).await;
    }

    /// Audio for a queued stream.
    pub async fn feed(&self, stream: StreamId, audio: Vec<u8>) {
        self.driver.feed(self.id, stream, audio).await;
    }

    /// The stream gets no more audio.
    pub async fn end_stream(&self, stream: StreamId) {
        self.driver.end_stream(self.id, stream).await;
    }

    /// The stream is out of the queue.
    pub async fn remove_stream(&self, stream: StreamId) {
        self.driver.remove_stream(self.id, stream).await;
    }

    /// Drops everything queued (barge-in).
    pub async fn interrupt(&self) {
        self.driver.interrupt(self.id).await;
    }

    /// Presses `digit` on the line (RFC 4733, with the peer's
    /// telephone-event payload type), after any press still being sent.
    pub async fn press(&self, digit: char) -> Result<(), KeyError> {
        let payload_type = self.applied.send_events.ok_or(KeyError::NoTelephoneEvent)?;
        let key = KeyPress::new(digit, payload_type).ok_or(KeyError::NotAKey(digit))?;
        self.driver.press(self.id, key).await;
        Ok(())
    }

    /// An `Idle` that counts fewer segments than we queued left the driver
    /// before our last segment reached it.
    pub fn is_stale_idle(&self, enqueued: u64) -> bool {
        enqueued < self.enqueued
    }

    /// Applies the caller's latest description: where its media is, which
    /// payload types, whether we send (hold/resume) and whether it may be
    /// silent. Only what changed is passed on.
    pub async fn apply_remote(&mut self, remote: RemoteMedia) {
        let previous = self.applied;
        // The receive side: where the caller is, what it sends, whether it
        // may be silent (renumbered payload types, a move, a hold).
        self.inbound.send_if_modified(|inbound| {
            let next = remote.inbound();
            let changed = *inbound != next;
            *inbound = next;
            changed
        });
        // The send side.
        if previous.addr != remote.addr {
            info!("caller's media moved");
            self.driver.latch(self.id, remote.addr).await;
        }
        if (previous.payload_type, previous.codec) != (remote.payload_type, remote.codec) {
            self.driver
                .set_codec(self.id, remote.payload_type, remote.codec)
                .await;
        }
        let ours = remote.srtp.map(|keys| keys.ours);
        if previous.srtp.map(|keys| keys.ours) != ours {
            self.driver.set_srtp(self.id, ours).await;
        }
        if previous.sending != remote.sending {
            self.driver.set_sending(self.id, remote.sending).await;
        }
        self.applied = remote;
    }

    /// The codec the call sends now: what its phrases and generated audio
    /// are to be in.
    pub fn codec(&self) -> Codec {
        self.applied.codec
    }

    /// A sender into this call's media events, as if they came from the
    /// media path (the in-process call tests speak and press keys with it).
    pub fn injector(&self) -> mpsc::Sender<MediaEvent> {
        self.events.clone()
    }

    /// Ends the outbound stream and the receive task; what each carried.
    pub async fn stop(self) -> MediaStats {
        let sent = self.driver.stop(self.id).await;
        // The receive task ends when the watch closes (even while it waits
        // for room in a full event queue nobody reads now), sending RTCP
        // BYE; one that does not end in time is aborted.
        drop(self.inbound);
        let mut receiver = self.receiver;
        let received = match tokio::time::timeout(RECEIVER_STOP, &mut receiver).await {
            Ok(Ok(received)) => received,
            _ => {
                receiver.abort();
                Received::default()
            }
        };
        MediaStats {
            sent,
            received: received.stats,
            jitter: received.jitter,
            echo: received.echo,
            peer: received.peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::MediaSockets;

    /// A phone in PCMU (telephone-event 101) at `addr`, sending.
    fn pcmu_at(addr: SocketAddr, srtp: Option<SrtpKeys>) -> RemoteMedia {
        RemoteMedia {
            addr,
            codec: Codec::Pcmu,
            payload_type: 0,
            receive: PayloadTypes {
                audio: 0,
                telephone_event: Some(101),
            },
            send_events: Some(101),
            sending: true,
            quiet_allowed: false,
            rtcp_mux: false,
            srtp,
        }
    }

    /// A call's media on `ours`, to `remote`, from now, not listening.
    fn setup(ours: MediaSockets, remote: RemoteMedia) -> MediaSetup {
        MediaSetup {
            socket: ours.rtp,
            rtcp: ours.rtcp,
            cname: "sav@test".into(),
            remote,
            t0: Instant::now(),
            initial: Vec::new(),
            policy: StreamPolicy::default(),
            rtp_timeout: Duration::from_secs(30),
            vad: None,
            recording: None,
        }
    }

    /// One RFC 4733 packet of key `event` starting at `timestamp`.
    fn key(seq: u16, timestamp: u32, end: bool) -> Vec<u8> {
        let mut packet = vec![0x80, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&[5, if end { 0x8A } else { 0x0A }, 0x00, 0xA0]);
        packet
    }

    #[tokio::test]
    async fn a_call_whose_events_nobody_reads_still_says_bye_when_it_stops() {
        let ip = "127.0.0.1".parse().unwrap();
        let ours = MediaSockets::ephemeral_pair(ip).unwrap();
        let phone = MediaSockets::ephemeral_pair(ip).unwrap();
        let our_rtp = ours.rtp.local_addr().unwrap();
        let driver = MediaDriver::spawn(Arc::new(crate::metrics::Metrics::new()));
        let (media, events) = MediaHandle::start(
            &driver,
            setup(ours, pcmu_at(phone.rtp.local_addr().unwrap(), None)),
        )
        .await;
        // Far more key presses than the call's event queue holds, and
        // nobody reads them: the receive task ends up waiting for room.
        let presses = 2 * driver::EVENT_QUEUE as u16;
        for n in 0..presses {
            let timestamp = u32::from(n) * 800;
            phone
                .rtp
                .send_to(&key(2 * n, timestamp, false), our_rtp)
                .await
                .unwrap();
            phone
                .rtp
                .send_to(&key(2 * n + 1, timestamp, true), our_rtp)
                .await
                .unwrap();
        }
        // Let it read them all (bounded: at most 2 s).
        let waited = Instant::now();
        while events.len() < driver::EVENT_QUEUE && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(events.len(), driver::EVENT_QUEUE, "the queue filled up");
        let stats = media.stop().await;
        // It handed its statistics over (it was not aborted)...
        assert!(
            stats.received.packets > u64::from(presses),
            "{:?}",
            stats.received
        );
        // ...and said BYE on the phone's RTCP port (after any report).
        let rtcp = phone.rtcp.expect("the phone's RTCP socket");
        let mut buf = [0u8; 1500];
        let mut bye = false;
        while let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_secs(2), rtcp.recv_from(&mut buf)).await
        {
            bye = has_bye(&buf[..len]);
            if bye {
                break;
            }
        }
        assert!(bye, "no RTCP BYE");
        drop(events);
    }

    #[tokio::test]
    async fn a_pressed_key_goes_out_as_rfc_4733_in_the_audio_s_place() {
        let ip = "127.0.0.1".parse().unwrap();
        let ours = MediaSockets::ephemeral_pair(ip).unwrap();
        let phone = MediaSockets::ephemeral_pair(ip).unwrap();
        let driver = MediaDriver::spawn(Arc::new(crate::metrics::Metrics::new()));
        let (media, _events) = MediaHandle::start(
            &driver,
            setup(ours, pcmu_at(phone.rtp.local_addr().unwrap(), None)),
        )
        .await;
        assert_eq!(media.press('x').await, Err(KeyError::NotAKey('x')));
        // Audio first, then the press, then audio again; one sequence.
        let mut packets = Vec::new();
        for _ in 0..3 {
            packets.push(next(&phone.rtp).await);
        }
        media.press('#').await.unwrap();
        while packets.iter().filter(|p| p[1] & 0x7f == 101).count() < 7 && packets.len() <= 60 {
            packets.push(next(&phone.rtp).await);
        }
        packets.push(next(&phone.rtp).await);
        let types: Vec<u8> = packets.iter().map(|p| p[1] & 0x7f).collect();
        let first = types.iter().position(|&t| t == 101).expect("events sent");
        assert_eq!(types[first..first + 7], [101; 7], "{types:?}");
        assert_eq!(types[first + 7], 0, "audio again after the press");
        let seqs: Vec<u16> = packets
            .iter()
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
        let mut decoder = crate::media::dtmf::DtmfDecoder::new();
        let mut digits = Vec::new();
        for p in &packets[first..first + 7] {
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            if let Some(d) = decoder.handle_packet(ts, &p[12..]).unwrap() {
                digits.push(d.digit);
            }
        }
        assert_eq!(digits, ['#']);
        assert_eq!(
            packets[first][1] & 0x80,
            0x80,
            "the press's first packet is marked"
        );
        let mut none = pcmu_at(phone.rtp.local_addr().unwrap(), None);
        none.send_events = None;
        let mut media = media;
        media.apply_remote(none).await;
        assert_eq!(media.press('1').await, Err(KeyError::NoTelephoneEvent));
        media.stop().await;
    }

    /// Whether an RTCP compound packet holds a BYE.
    fn has_bye(compound: &[u8]) -> bool {
        let mut at = 0;
        while at + 4 <= compound.len() {
            if compound[at + 1] == 203 {
                return true;
            }
            let words = u16::from_be_bytes([compound[at + 2], compound[at + 3]]) as usize;
            at += 4 * (words + 1);
        }
        false
    }

    /// The next datagram on `socket` within 2 s.
    async fn next(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
            .await
            .expect("a datagram within 2 s")
            .unwrap();
        buf[..len].to_vec()
    }

    #[tokio::test]
    async fn an_srtp_call_sends_and_reads_only_with_its_keys_rtcp_included() {
        use crate::media::srtp::{MasterKey, Suite};
        let ip = "127.0.0.1".parse().unwrap();
        let ours = MediaSockets::ephemeral_pair(ip).unwrap();
        let phone = MediaSockets::ephemeral_pair(ip).unwrap();
        let phone_rtcp = phone.rtcp.expect("the phone's RTCP socket");
        let our_rtp = ours.rtp.local_addr().unwrap();
        let keys = SrtpKeys {
            ours: MasterKey::generate(Suite::AesCm128HmacSha1_80),
            theirs: MasterKey::generate(Suite::AesCm128HmacSha1_32),
        };
        let remote = pcmu_at(phone.rtp.local_addr().unwrap(), Some(keys));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let driver = MediaDriver::spawn(metrics.clone());
        let (mut media, mut events) = MediaHandle::start(&driver, setup(ours, remote)).await;
        // What we send is SRTP under our key: the tag of its suite, and
        // the phone reads 160 bytes of PCMU out of it, in sequence.
        let mut reader = keys.ours.context();
        let mut last_seq = None;
        for _ in 0..5 {
            let mut packet = next(&phone.rtp).await;
            assert_eq!(packet.len(), 12 + 160 + 10);
            let len = reader.unprotect_rtp(&mut packet).expect("our key reads it");
            assert_eq!((len, packet[1] & 0x7F), (12 + 160, 0));
            let seq = u16::from_be_bytes([packet[2], packet[3]]);
            if let Some(last) = last_seq {
                assert_eq!(seq, u16::wrapping_add(last, 1));
            }
            last_seq = Some(seq);
        }
        // A key press under the phone's key is obeyed; the same in clear,
        // or a replay of it, is not.
        let mut writer = keys.theirs.context();
        let mut protected = Vec::new();
        for (n, end) in [(0u16, false), (1, false), (2, true)] {
            let mut buf = key(n, 800, end);
            let len = buf.len();
            buf.resize(len + 4, 0);
            let len = writer.protect_rtp(&mut buf, len).unwrap();
            buf.truncate(len);
            phone.rtp.send_to(&buf, our_rtp).await.unwrap();
            protected.push(buf);
        }
        let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .expect("the key within 2 s");
        assert!(matches!(event, Some(MediaEvent::Dtmf('5'))), "{event:?}");
        for (n, end) in [(3u16, false), (4, true)] {
            phone
                .rtp
                .send_to(&key(n, 1600, end), our_rtp)
                .await
                .unwrap();
        }
        for replay in &protected {
            phone.rtp.send_to(replay, our_rtp).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(events.try_recv().is_err(), "nothing but the one key");
        let dropped = |reason: &'static str| {
            metrics
                .rtp_dropped
                .get_or_create(&crate::metrics::ReasonLabel { reason })
                .get()
        };
        assert_eq!((dropped("srtp_auth"), dropped("srtp_replay")), (2, 3));
        // A re-offer in clear: the stream goes on, unprotected, numbering
        // unbroken.
        media
            .apply_remote(RemoteMedia {
                srtp: None,
                ..remote
            })
            .await;
        // (Behind the frames queued on the phone's socket meanwhile.)
        let mut plain = false;
        let mut last = last_seq.expect("packets read");
        for _ in 0..200 {
            let packet = next(&phone.rtp).await;
            let seq = u16::from_be_bytes([packet[2], packet[3]]);
            assert_eq!(seq, last.wrapping_add(1), "numbering unbroken");
            last = seq;
            if packet.len() == 12 + 160 {
                plain = true;
                break;
            }
        }
        assert!(plain, "plain RTP after the re-offer");
        // Back to SRTP, under a new key of ours (the signalling never
        // restarts a stream under a used one), then the end: the RTCP BYE
        // is SRTCP under that key (after any report).
        let renewed = SrtpKeys {
            ours: MasterKey::generate(Suite::AesCm128HmacSha1_80),
            ..keys
        };
        media
            .apply_remote(RemoteMedia {
                srtp: Some(renewed),
                ..remote
            })
            .await;
        media.stop().await;
        let mut rtcp_reader = renewed.ours.context();
        let mut bye = false;
        for _ in 0..5 {
            let mut datagram = next(&phone_rtcp).await;
            let Ok(len) = rtcp_reader.unprotect_rtcp(&mut datagram) else {
                // A report under the old key, sent before the change.
                continue;
            };
            bye = has_bye(&datagram[..len]);
            if bye {
                break;
            }
        }
        assert!(bye, "no SRTCP BYE under our new key");
    }
}
