//! The tokio side of the media path.
//!
//! One [`MediaDriver`] task paces the outbound RTP of every call: it keeps
//! each call's next due time in a heap, sleeps until the earliest, re-reads
//! the clock when it wakes, and sends every frame that is due (catching up a
//! late wake-up) from that call's [`PlayoutScheduler`]. Nothing on that path
//! allocates, locks or blocks: packets are built in a stack buffer and sent
//! with `try_send_to`.
//!
//! Each call also has a receive task ([`spawn_receiver`]): the shell of the
//! sans-IO [`InboundCore`] (latch, voice activity, RFC 4733 digits, RTP
//! timeout), which owns the socket and the timer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::media::codec::{Codec, Decoder, FRAME_BYTES};
use crate::media::dtmf::KeyPress;
use crate::media::echo::EchoStats;
use crate::media::inbound::{Dropped, InboundCore, InboundEvent, InboundRemote, DROP_REASONS};
use crate::media::jitter::JitterStats;
use crate::media::pacer::{Pacer, RtpClock};
use crate::media::playout::{
    FrameSource, PlayoutEvent, PlayoutScheduler, SegmentKind, StreamId, StreamPolicy,
};
use crate::media::rtcp::{self, PeerView, RtcpSession, SenderInfo};
use crate::media::rtp::{self, PACKET_LEN};
use crate::media::sent_audio::SentAudio;
use crate::media::srtp::{self, MasterKey, SrtpContext, SrtpKeys};
use crate::media::stats::ReceiveStats;
use crate::media::vad::VadConfig;
use crate::metrics::Metrics;
use crate::redact::Pii;

/// Commands queued to the driver; bounded so a stuck driver pushes back.
const COMMAND_QUEUE: usize = 1024;
/// Events queued per call to its conversation.
pub const EVENT_QUEUE: usize = 64;
/// An RTP packet with room for its SRTP tag.
const SRTP_PACKET_LEN: usize = PACKET_LEN + srtp::MAX_RTP_OVERHEAD;
/// An RTCP report with room for SRTCP's index and tag.
const REPORT_LEN: usize = rtcp::MAX_PACKET + srtp::RTCP_OVERHEAD;

/// Identifies a call's media inside the driver.
pub type MediaId = u64;

/// What the media path reports to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Playout(PlayoutEvent),
    Dtmf(char),
    /// The caller started speaking (VAD, past the minimum duration).
    SpeechStarted,
    /// The caller's turn ended; its audio (8 kHz PCM) for speech-to-text.
    SpeechEnded(Vec<i16>),
    /// The turn's audio as it is spoken (for a streaming recogniser).
    SpeechAudio(Vec<i16>),
    /// No valid RTP from the caller for the configured timeout.
    RtpTimeout,
}

/// How one call's outbound stream starts.
#[derive(Debug)]
pub struct StreamStart {
    pub id: MediaId,
    pub socket: Arc<UdpSocket>,
    /// Where to send until the caller's own packets say otherwise.
    pub remote: SocketAddr,
    pub payload_type: u8,
    pub codec: Codec,
    pub ssrc: u32,
    pub seq0: u16,
    pub ts0: u32,
    /// When the call was established: frame 0 is due then.
    pub t0: Instant,
    /// Segments queued before the first frame, so frame 0 already speaks.
    pub initial: Vec<SegmentKind>,
    /// Jitter-buffer settings of generated speech.
    pub policy: StreamPolicy,
    pub events: mpsc::Sender<MediaEvent>,
    /// Copy the outbound audio here (the bot's side of a recording).
    pub recording: Option<crate::media::recording::RecordingTrack>,
    /// What the stream sent, for RTCP's sender reports.
    pub sent: Arc<SenderState>,
    /// Copy the outbound audio here too, as the echo canceller's reference.
    pub sent_audio: Option<Arc<SentAudio>>,
    /// Our SRTP key, when the call is encrypted.
    pub srtp: Option<MasterKey>,
}

/// What a call's outbound stream has sent and how its timestamps run, as
/// its RTCP sender reports say it (RFC 3550 §6.4.1): the driver writes it,
/// the receive task reads it every few seconds.
#[derive(Debug)]
pub struct SenderState {
    packets: AtomicU64,
    octets: AtomicU64,
    /// Changes only when a re-offer changes the clock rate.
    clock: std::sync::Mutex<RtpClock>,
}

impl SenderState {
    pub fn new(clock: RtpClock) -> Self {
        Self {
            packets: AtomicU64::new(0),
            octets: AtomicU64::new(0),
            clock: std::sync::Mutex::new(clock),
        }
    }

    fn count(&self, octets: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.octets.fetch_add(octets as u64, Ordering::Relaxed);
    }

    /// RTP packets sent so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Payload octets sent so far.
    pub fn octets(&self) -> u64 {
        self.octets.load(Ordering::Relaxed)
    }

    /// How the timestamps follow media time.
    pub fn clock(&self) -> RtpClock {
        *self
            .clock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_clock(&self, clock: RtpClock) {
        *self
            .clock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = clock;
    }
}

#[derive(Debug)]
enum Command {
    Start(Box<StreamStart>),
    Enqueue(MediaId, SegmentKind),
    EnqueueBefore(MediaId, StreamId, SegmentKind),
    Feed(MediaId, StreamId, Vec<u8>),
    EndStream(MediaId, StreamId),
    RemoveStream(MediaId, StreamId),
    Interrupt(MediaId),
    Latch(MediaId, SocketAddr),
    SetSending(MediaId, bool),
    SetCodec(MediaId, u8, Codec),
    SetSrtp(MediaId, Option<MasterKey>),
    /// A key pressed on the line (RFC 4733), after those already queued.
    Press(MediaId, KeyPress),
    /// Ends the stream; its frames sent so far are answered.
    Stop(MediaId, tokio::sync::oneshot::Sender<u64>),
}

/// Handle to the driver task; cheap to clone.
#[derive(Clone)]
pub struct MediaDriver {
    commands: mpsc::Sender<Command>,
    /// The next call's media id.
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// The process's metrics (the receive tasks count their drops there).
    metrics: Arc<Metrics>,
    /// The driver's own thread, woken when a command is queued (none: the
    /// driver is a task on the runtime).
    thread: Option<std::thread::Thread>,
}

/// Counters the driver keeps for the whole process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverStats {
    pub frames_sent: u64,
    pub send_errors: u64,
    pub late_frames: u64,
    pub skipped_frames: u64,
    pub events_dropped: u64,
    /// Frames not sent because the stream was on hold.
    pub held_frames: u64,
}

struct CallStream {
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    payload_type: u8,
    ssrc: u32,
    pacer: Pacer,
    scheduler: PlayoutScheduler,
    events: mpsc::Sender<MediaEvent>,
    /// False while the caller has us on hold (we answered recvonly/inactive).
    sending: bool,
    /// Frames in a row the bot owed speech and had none (a provider late).
    silent_run: u32,
    /// Underruns of this call already counted in the metrics.
    underruns: u64,
    /// Where this call's outbound audio is copied, when recorded.
    recording: Option<crate::media::recording::RecordingTrack>,
    /// ... and for the echo canceller, when the call has one.
    sent_audio: Option<Arc<SentAudio>>,
    /// Turns what we send back into PCM for those two.
    decoder: Option<Decoder>,
    /// What was sent, shared with the call's RTCP.
    sent: Arc<SenderState>,
    /// Our SRTP key and its context, when the call is encrypted.
    srtp: Option<(MasterKey, SrtpContext)>,
    /// Key presses to send, the first in progress (its packets take the
    /// place of the audio frames); at most [`MAX_KEYS`].
    keys: std::collections::VecDeque<KeyPress>,
    /// RTP timestamp ticks per frame (the codec's).
    step: u32,
}

/// Key presses queued per call at most; more are dropped (and counted).
const MAX_KEYS: usize = 32;

impl std::fmt::Debug for MediaDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaDriver").finish_non_exhaustive()
    }
}

impl MediaDriver {
    /// Spawns the driver task on the current runtime, on its timer (1 ms
    /// ticks; the in-process tests pause it).
    pub fn spawn(metrics: Arc<Metrics>) -> Self {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(run(rx, metrics.clone()));
        Self {
            commands,
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            metrics,
            thread: None,
        }
    }

    /// Spawns the driver on a thread of its own: the calls' clock waits
    /// for no SIP, HTTP or listening work on the process's workers. The
    /// thread sleeps until the next frame's instant (a deadline wait, not
    /// a 1 ms tick) or until a command is queued, and sends on each
    /// wake-up every frame due within [`BATCH`]: one wake-up for frames
    /// due together. Falls back to [`Self::spawn`] when the thread cannot
    /// be made.
    ///
    /// With `realtime`, the thread asks for real-time scheduling
    /// (SCHED_FIFO at [`REALTIME_PRIORITY`]) and says whether it got it.
    pub fn spawn_dedicated(metrics: Arc<Metrics>, realtime: bool) -> Self {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let started = {
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("sav-media".into())
                .spawn(move || {
                    if realtime {
                        match raise_to_realtime() {
                            Ok(()) => info!(
                                priority = REALTIME_PRIORITY,
                                "media clock on real-time scheduling"
                            ),
                            Err(error) => warn!(
                                %error,
                                "media clock at normal priority: real-time scheduling refused \
                                 (needs CAP_SYS_NICE or LimitRTPRIO)"
                            ),
                        }
                    }
                    run_on_thread(rx, &metrics)
                })
        };
        let thread = match started {
            Ok(handle) => handle.thread().clone(),
            Err(error) => {
                warn!(%error, "no thread for the media clock: it shares the workers");
                return Self::spawn(metrics);
            }
        };
        Self {
            commands,
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            metrics,
            thread: Some(thread),
        }
    }

    /// A media id no other call of this driver has.
    pub fn next_id(&self) -> MediaId {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn start(&self, start: StreamStart) {
        self.send(Command::Start(Box::new(start))).await;
    }

    pub async fn enqueue(&self, id: MediaId, segment: SegmentKind) {
        self.send(Command::Enqueue(id, segment)).await;
    }

    /// Queues a segment right before a stream that waits for audio (a filler
    /// covering it); dropped if that stream is sounding again meanwhile.
    pub async fn enqueue_before(&self, id: MediaId, stream: StreamId, segment: SegmentKind) {
        self.send(Command::EnqueueBefore(id, stream, segment)).await;
    }

    /// Audio for a queued stream.
    pub async fn feed(&self, id: MediaId, stream: StreamId, audio: Vec<u8>) {
        self.send(Command::Feed(id, stream, audio)).await;
    }

    /// The stream gets no more audio.
    pub async fn end_stream(&self, id: MediaId, stream: StreamId) {
        self.send(Command::EndStream(id, stream)).await;
    }

    /// The stream's reply was cancelled: out of the queue.
    pub async fn remove_stream(&self, id: MediaId, stream: StreamId) {
        self.send(Command::RemoveStream(id, stream)).await;
    }

    pub async fn interrupt(&self, id: MediaId) {
        self.send(Command::Interrupt(id)).await;
    }

    pub async fn latch(&self, id: MediaId, remote: SocketAddr) {
        self.send(Command::Latch(id, remote)).await;
    }

    /// The codec and payload type we send with (a re-offer may renumber
    /// it or change the codec; the clock goes on).
    pub async fn press(&self, id: MediaId, key: KeyPress) {
        self.send(Command::Press(id, key)).await;
    }

    pub async fn set_codec(&self, id: MediaId, payload_type: u8, codec: Codec) {
        self.send(Command::SetCodec(id, payload_type, codec)).await;
    }

    /// Protect what we send with `key` (SRTP), or send in clear (`None`).
    pub async fn set_srtp(&self, id: MediaId, key: Option<MasterKey>) {
        self.send(Command::SetSrtp(id, key)).await;
    }

    /// Hold (false) or resume (true) the outbound stream; the clock runs on.
    pub async fn set_sending(&self, id: MediaId, sending: bool) {
        self.send(Command::SetSending(id, sending)).await;
    }

    /// Ends the outbound stream; the RTP packets it sent (0 when the driver
    /// is gone).
    pub async fn stop(&self, id: MediaId) -> u64 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Stop(id, tx)).await;
        rx.await.unwrap_or(0)
    }

    async fn send(&self, command: Command) {
        if self.commands.send(command).await.is_err() {
            warn!("media driver is gone; command dropped");
        }
        if let Some(thread) = self.thread.as_ref() {
            thread.unpark();
        }
    }
}

/// Frames due within this of a wake-up leave on it (a little early rather
/// than a wake-up each).
pub const BATCH: Duration = Duration::from_micros(200);
/// How long the driver's thread sleeps with no call at all (it then looks
/// whether the process is still there).
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// The driver's thread asks the kernel for wake-ups this close to their
/// deadline (the default slack of a thread is 50 µs).
#[cfg(target_os = "linux")]
const TIMER_SLACK_NS: libc::c_ulong = 5_000;

/// The media clock's real-time priority (SCHED_FIFO, 1–99): above the
/// default of none, below what the kernel's own threads use.
pub const REALTIME_PRIORITY: i32 = 10;

/// Puts the calling thread on SCHED_FIFO at [`REALTIME_PRIORITY`].
fn raise_to_realtime() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: REALTIME_PRIORITY,
        };
        // SAFETY: `param` is a valid sched_param for the duration of the
        // call; pthread_self() is this thread.
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(rc))
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Everything the driver holds.
struct Driver {
    calls: HashMap<MediaId, CallStream>,
    /// (due, id): one entry per live call.
    timers: BinaryHeap<Reverse<(Instant, MediaId)>>,
    stats: DriverStats,
    packet: [u8; SRTP_PACKET_LEN],
}

impl Driver {
    fn new() -> Self {
        Self {
            calls: HashMap::new(),
            timers: BinaryHeap::new(),
            stats: DriverStats::default(),
            packet: [0u8; SRTP_PACKET_LEN],
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _))| *due)
    }

    /// Sends every frame due by `until` (trust the clock, not the wake-up).
    fn send_due(&mut self, until: Instant, metrics: &Metrics) {
        while let Some(&Reverse((due, id))) = self.timers.peek() {
            if due > until {
                break;
            }
            self.timers.pop();
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            send_due_frames(call, until, &mut self.packet, &mut self.stats, metrics);
            self.timers
                .push(Reverse((call.pacer.poll_timeout().into(), id)));
        }
    }
}

/// The driver as a task on the runtime's timer (up to its 1 ms tick late;
/// the in-process tests pause that clock).
async fn run(mut commands: mpsc::Receiver<Command>, metrics: Arc<Metrics>) {
    let mut driver = Driver::new();
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(command) = command else { break };
                apply(command, &mut driver.calls, &mut driver.timers, &metrics);
                // Take every command already waiting before sending frames,
                // so a call's first segments are queued before its frame 0.
                while let Ok(command) = commands.try_recv() {
                    apply(command, &mut driver.calls, &mut driver.timers, &metrics);
                }
            }
            _ = crate::time::sleep_until_opt(driver.next_due()) => {}
        }
        driver.send_due(Instant::now(), &metrics);
    }
    debug!(stats = ?driver.stats, "media driver stopped");
}

/// The whole milliseconds since the driver's start: every call's frames
/// fall due on them, so frames due together leave on one wake-up and the
/// thread wakes at most a thousand times a second, however many calls.
const GRID: Duration = Duration::from_millis(1);

/// A stream's clock started on the grid: its `t0` taken back to the last
/// whole millisecond since `epoch` (less than a millisecond early; the
/// call's own `t0`, which places the caller's audio for the echo canceller
/// and the recording, stays within that of it).
fn on_grid(mut command: Command, epoch: Instant) -> Command {
    if let Command::Start(start) = &mut command {
        start.t0 = grid_floor(start.t0, epoch);
    }
    command
}

/// The last grid instant at or before `t` (`epoch` when `t` is before it).
fn grid_floor(t: Instant, epoch: Instant) -> Instant {
    let since = t.saturating_duration_since(epoch);
    let steps = u64::try_from(since.as_nanos() / GRID.as_nanos()).unwrap_or(u64::MAX);
    let grid_nanos = u64::try_from(GRID.as_nanos()).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(steps.saturating_mul(grid_nanos))
}

/// The driver on its own thread: it sleeps until the next frame is due or
/// a command is queued (the handle unparks it), whichever comes first.
fn run_on_thread(mut commands: mpsc::Receiver<Command>, metrics: &Metrics) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes
    // only this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS);
    }
    let mut driver = Driver::new();
    let epoch = Instant::now();
    loop {
        loop {
            match commands.try_recv() {
                Ok(command) => apply(
                    on_grid(command, epoch),
                    &mut driver.calls,
                    &mut driver.timers,
                    metrics,
                ),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    debug!(stats = ?driver.stats, "media driver stopped");
                    return;
                }
            }
        }
        driver.send_due(Instant::now() + BATCH, metrics);
        // A command queued since try_recv has unparked us already: the
        // park returns at once.
        match driver.next_due() {
            Some(due) => {
                let left = due.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    std::thread::park_timeout(left);
                }
            }
            None => std::thread::park_timeout(IDLE_WAIT),
        }
    }
}

fn apply(
    command: Command,
    calls: &mut HashMap<MediaId, CallStream>,
    timers: &mut BinaryHeap<Reverse<(Instant, MediaId)>>,
    metrics: &Metrics,
) {
    match command {
        Command::Start(start) => {
            let StreamStart {
                id,
                socket,
                remote,
                payload_type,
                codec,
                ssrc,
                seq0,
                ts0,
                t0,
                initial,
                policy,
                events,
                recording,
                sent,
                sent_audio,
                srtp,
            } = *start;
            let mut pacer = Pacer::new(t0.into_std(), seq0, ts0);
            pacer.set_timestamp_step(codec.timestamp_step());
            sent.set_clock(pacer.clock());
            let mut scheduler = PlayoutScheduler::with_policy(policy);
            scheduler.set_codec(codec);
            for segment in initial {
                if scheduler.enqueue(segment).is_err() {
                    warn!(media = id, "playout queue full at start");
                }
            }
            calls.insert(
                id,
                CallStream {
                    socket,
                    remote,
                    payload_type,
                    ssrc,
                    pacer,
                    scheduler,
                    events,
                    sending: true,
                    silent_run: 0,
                    underruns: 0,
                    decoder: (recording.is_some() || sent_audio.is_some())
                        .then(|| Decoder::new(codec)),
                    recording,
                    sent_audio,
                    sent,
                    srtp: srtp.map(|key| (key, key.context())),
                    keys: std::collections::VecDeque::new(),
                    step: codec.timestamp_step(),
                },
            );
            timers.push(Reverse((t0, id)));
        }
        Command::Enqueue(id, segment) => {
            if let Some(call) = calls.get_mut(&id) {
                if call.scheduler.enqueue(segment).is_err() {
                    warn!(media = id, "playout queue full; segment dropped");
                }
            }
        }
        Command::EnqueueBefore(id, stream, segment) => {
            if let Some(call) = calls.get_mut(&id) {
                if call.scheduler.enqueue_before(stream, segment).is_none() {
                    debug!(media = id, "filler no longer needed: its stream started");
                }
            }
        }
        Command::Feed(id, stream, audio) => {
            if let Some(call) = calls.get_mut(&id) {
                call.scheduler.feed(stream, &audio);
            }
        }
        Command::EndStream(id, stream) => {
            if let Some(call) = calls.get_mut(&id) {
                call.scheduler.end_stream(stream);
            }
        }
        Command::RemoveStream(id, stream) => {
            if let Some(call) = calls.get_mut(&id) {
                call.scheduler.remove_stream(stream);
                forward_events(call);
            }
        }
        Command::Interrupt(id) => {
            if let Some(call) = calls.get_mut(&id) {
                call.scheduler.interrupt();
                forward_events(call);
            }
        }
        Command::Latch(id, remote) => {
            if let Some(call) = calls.get_mut(&id) {
                call.remote = remote;
            }
        }
        Command::SetCodec(id, payload_type, codec) => {
            if let Some(call) = calls.get_mut(&id) {
                call.payload_type = payload_type;
                call.scheduler.set_codec(codec);
                call.pacer.set_timestamp_step(codec.timestamp_step());
                call.step = codec.timestamp_step();
                call.sent.set_clock(call.pacer.clock());
                if let Some(decoder) = call.decoder.as_mut() {
                    if decoder.codec() != codec {
                        *decoder = Decoder::new(codec);
                    }
                }
            }
        }
        Command::Press(id, key) => {
            if let Some(call) = calls.get_mut(&id) {
                if call.keys.len() < MAX_KEYS {
                    call.keys.push_back(key);
                } else {
                    warn!(
                        media = id,
                        "key presses queued past {MAX_KEYS}; one dropped"
                    );
                }
            }
        }
        Command::SetSrtp(id, key) => {
            if let Some(call) = calls.get_mut(&id) {
                // The same key keeps its context (its rollover counter).
                if key != call.srtp.as_ref().map(|(ours, _)| *ours) {
                    call.srtp = key.map(|key| (key, key.context()));
                }
            }
        }
        Command::SetSending(id, sending) => {
            if let Some(call) = calls.get_mut(&id) {
                if sending && !call.sending {
                    call.scheduler.restart_talkspurt();
                }
                call.sending = sending;
            }
        }
        Command::Stop(id, sent) => {
            let mut frames = 0;
            if let Some(mut call) = calls.remove(&id) {
                end_silent_run(&mut call, metrics);
                frames = call.pacer.sent();
                debug!(
                    media = id,
                    sent = frames,
                    late = call.pacer.late_frames(),
                    skipped = call.pacer.skipped_frames(),
                    "outbound stream stopped"
                );
            }
            let _ = sent.send(frames);
        }
    }
}

fn send_due_frames(
    call: &mut CallStream,
    now: Instant,
    packet: &mut [u8; SRTP_PACKET_LEN],
    stats: &mut DriverStats,
    metrics: &Metrics,
) {
    if !call.sending {
        stats.held_frames += call.pacer.skip_due(now.into_std());
        return;
    }
    let late_before = call.pacer.late_frames();
    let skipped_before = call.pacer.skipped_frames();
    let sent_before = stats.frames_sent;
    let errors_before = stats.send_errors;
    while let Some(slot) = call.pacer.poll_frame(now.into_std()) {
        let frame = call.scheduler.next_frame();
        if frame.source == FrameSource::Waiting {
            call.silent_run += 1;
        } else {
            end_silent_run(call, metrics);
        }
        // A key press in progress sends its event in this frame's place.
        let event = loop {
            let Some(key) = call.keys.front_mut() else {
                break None;
            };
            match key.next_packet(slot.timestamp, call.step) {
                Some(event) => break Some(event),
                None => {
                    call.keys.pop_front();
                }
            }
        };
        if let Some(decoder) = call.decoder.as_mut().filter(|_| event.is_none()) {
            let mut pcm = [0i16; FRAME_BYTES];
            let n = decoder.decode(frame.payload(), &mut pcm);
            if let Some(recording) = call.recording.as_ref() {
                recording.put_pcm(slot.index, &pcm[..n]);
            }
            if let Some(sent_audio) = call.sent_audio.as_ref() {
                sent_audio.put(slot.index * FRAME_BYTES as u64, &pcm[..n]);
            }
        }
        let Some(rtp_packet) = packet.first_chunk_mut::<PACKET_LEN>() else {
            continue;
        };
        let (payload_type, timestamp, marker, payload) = match &event {
            Some(event) => (
                event.payload_type,
                event.timestamp,
                event.marker,
                &event.payload[..],
            ),
            None => (
                call.payload_type,
                slot.timestamp,
                frame.marker,
                frame.payload(),
            ),
        };
        let mut len = rtp::write_audio_packet(
            rtp_packet,
            payload_type,
            call.ssrc,
            slot.seq,
            timestamp,
            marker,
            payload,
        );
        if let Some((_, context)) = call.srtp.as_mut() {
            match context.protect_rtp(packet, len) {
                Ok(protected) => len = protected,
                Err(_) => {
                    // Cannot happen: the buffer has room for the tag.
                    stats.send_errors += 1;
                    continue;
                }
            }
        }
        match call.socket.try_send_to(&packet[..len], call.remote) {
            Ok(_) => {
                stats.frames_sent += 1;
                call.sent.count(payload.len());
            }
            // A full socket buffer or an ICMP error from the peer: the frame
            // is lost like any UDP datagram; the clock goes on.
            Err(_) => stats.send_errors += 1,
        }
    }
    let late = call.pacer.late_frames() - late_before;
    stats.late_frames += late;
    stats.skipped_frames += call.pacer.skipped_frames() - skipped_before;
    stats.events_dropped += forward_events(call);
    metrics
        .rtp_frames_sent
        .inc_by(stats.frames_sent - sent_before);
    if stats.send_errors > errors_before {
        metrics
            .rtp_send_errors
            .inc_by(stats.send_errors - errors_before);
    }
    if late > 0 {
        metrics.late_ticks.inc_by(late);
    }
    let underruns = call.scheduler.stats().underruns;
    if underruns > call.underruns {
        metrics.underruns.inc_by(underruns - call.underruns);
        call.underruns = underruns;
    }
}

/// A run of frames the bot owed and had no audio for has ended: into the
/// silent-run histogram.
fn end_silent_run(call: &mut CallStream, metrics: &Metrics) {
    if call.silent_run > 0 {
        metrics
            .silent_runs
            .observe(f64::from(call.silent_run) * 0.020);
        call.silent_run = 0;
    }
}

/// Passes playout events to the call; returns how many were dropped.
fn forward_events(call: &mut CallStream) -> u64 {
    let mut dropped = 0;
    while let Some(event) = call.scheduler.poll_event() {
        if call.events.try_send(MediaEvent::Playout(event)).is_err() {
            dropped += 1;
        }
    }
    dropped
}

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
                    let next = *remote.borrow_and_update();
                    core.set_remote(Instant::now().into_std(), next);
                    if let Some(control) = control.as_mut() {
                        control.set_keys(next.srtp);
                    }
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
                            let next = *remote.borrow_and_update();
                            core.set_remote(Instant::now().into_std(), next);
                            if let Some(control) = control.as_mut() {
                                control.set_keys(next.srtp);
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_start_on_the_millisecond_grid_never_later() {
        let epoch = Instant::now();
        for (offset_us, expected_ms) in [
            (0u64, 0u64),
            (999, 0),
            (1_000, 1),
            (1_500, 1),
            (86_400_000_123, 86_400_000),
        ] {
            let t0 = epoch + Duration::from_micros(offset_us);
            assert_eq!(
                grid_floor(t0, epoch),
                epoch + Duration::from_millis(expected_ms),
                "{offset_us} µs"
            );
        }
        let later = epoch + Duration::from_secs(1);
        assert_eq!(grid_floor(epoch, later), later);
    }
}
