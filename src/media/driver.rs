//! The tokio side of the media path.
//!
//! One [`MediaDriver`] task paces the outbound RTP of every call: it keeps
//! each call's next due time in a heap, sleeps until the earliest, re-reads
//! the clock when it wakes, and sends every frame that is due (catching up a
//! late wake-up) from that call's [`PlayoutScheduler`]. Nothing on that path
//! allocates, locks or blocks: packets are built in a stack buffer and sent
//! with `try_send_to`.
//!
//! Each call also has a receive task ([`spawn_receiver`](crate::media::receiver::spawn_receiver)): the shell of the
//! sans-IO [`InboundCore`](crate::media::inbound::InboundCore) (latch, voice activity, RFC 4733 digits, RTP
//! timeout), which owns the socket and the timer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::media::codec::{Codec, Decoder, FRAME_BYTES};
use crate::media::dtmf::KeyPress;
use crate::media::pacer::{Pacer, RtpClock};
use crate::media::playout::{
    FrameSource, PlayoutEvent, PlayoutScheduler, SegmentKind, StreamId, StreamPolicy,
};
use crate::media::rtcp;
use crate::media::rtp::{self, PACKET_LEN};
use crate::media::sent_audio::SentAudio;
use crate::media::srtp::{self, MasterKey, SrtpContext};
use crate::metrics::Metrics;

/// Commands queued to the driver; bounded so a stuck driver pushes back.
const COMMAND_QUEUE: usize = 1024;
/// Events queued per call to its conversation.
pub const EVENT_QUEUE: usize = 64;
/// An RTP packet with room for its SRTP tag.
const SRTP_PACKET_LEN: usize = PACKET_LEN + srtp::MAX_RTP_OVERHEAD;
/// An RTCP report with room for SRTCP's index and tag.
pub(crate) const REPORT_LEN: usize = rtcp::MAX_PACKET + srtp::RTCP_OVERHEAD;

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
    pub(crate) metrics: Arc<Metrics>,
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
