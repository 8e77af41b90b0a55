//! Whole calls in process on a paused clock: the real call
//! (`sav::call::run`) with a SIP leg driven by hand ([`Leg::pair`]), the real
//! media driver sending RTP to a loopback socket that plays the caller's
//! phone, the fake providers as tasks of the same runtime (their latencies
//! are virtual time too), and a store in a scratch directory.
//!
//! The caller's voice and keys go in as media events (what the VAD and the
//! RFC 4733 decoder would report); what the caller hears is every RTP
//! payload sav sent, placed on the call's media clock by its timestamp.
//!
//! The clock is paused and moved by the test, 1 ms at a time, with the
//! runtime's sockets polled at every step ([`step`]): the test task never
//! waits idle, so tokio never jumps the clock to the next timer while a
//! loopback packet or an HTTP response is still on its way (a provider
//! would then time out in virtual time without ever being late).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sav::call::{self, reply::Providers, CallEnd, Caller, Live, Services};
use sav::config::Config;
use sav::media::codec::{Codec, Decoder};
use sav::media::driver::{MediaDriver, MediaEvent};
use sav::media::g711;
use sav::media::handle::RemoteMedia;
use sav::media::rtp::PayloadTypes;
use sav::metrics::Metrics;
use sav::sip::leg::{Ending, Leg, LegCommand, LegEvent, LegPeer};
use sav::store::Store;
use sav::timeline::CallTrace;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fake_providers::{FakeBehaviour, FakeProviders};
use super::{decode_ulaw, fake_providers_config, free_conversation, workdir, REPO};

/// Frames the caller heard, each at its place on the call's media clock
/// (its RTP sequence number × 20 ms from the first frame), with its payload.
pub type Heard = Arc<Mutex<Vec<(Duration, Vec<u8>)>>>;

/// How a test call is set up.
pub struct Setup {
    /// A scratch directory name (target/test-work/NAME).
    pub name: &'static str,
    /// Fake LLM, TTS and STT; `None`: the embedded defaults (keys only).
    pub providers: Option<FakeBehaviour>,
    /// The provider sections for the fakes at this base URL; `None`: all
    /// three with their default settings.
    pub provider_config: Option<fn(&str) -> String>,
    /// Drop the knowledge base: every turn goes to the LLM.
    pub free_conversation: bool,
    /// Changes to the configuration text.
    pub edit: fn(String) -> String,
    /// Customers (CSV with a header) imported before the call.
    pub customers: Option<&'static str>,
    /// The caller's From user.
    pub from: &'static str,
    /// The codec the call was negotiated with (what the phone hears is
    /// kept as μ-law whatever it is, so every matcher works alike).
    pub codec: Codec,
    /// The caller's line returns sav's own audio (a PSTN hybrid): the phone
    /// then sends RTP (PCMU), one frame for each frame it hears, carrying
    /// that echo, the line's noise and what the caller says
    /// ([`TestCall::says_audio`]), and the call listens to it for real.
    pub line: Option<EchoLine>,
}

/// A caller's line that returns what sav sent: `delay` later, `loss_db`
/// down, through a hybrid's short dispersive path, over comfort noise at
/// `noise_dbfs`.
#[derive(Debug, Clone, Copy)]
pub struct EchoLine {
    pub delay: Duration,
    pub loss_db: f32,
    pub noise_dbfs: f32,
}

/// A hybrid's echo path (its impulse response, 8 kHz, a few milliseconds
/// long), scaled to `loss_db` of echo return loss.
fn hybrid_path(loss_db: f32) -> Vec<f32> {
    let shape = [0.05f32, 0.35, 1.0, 0.55, -0.3, -0.25, 0.1, 0.05, -0.02];
    let energy: f32 = shape.iter().map(|h| h * h).sum();
    let gain = 10f32.powf(-loss_db / 20.0) / energy.sqrt();
    shape.iter().map(|h| h * gain).collect()
}

/// What the phone of an echoing line keeps: what it heard (8 kHz, by
/// sample position on the media clock) and what the caller is to say.
#[derive(Default)]
struct LineState {
    sent: Vec<i16>,
    /// Utterances queued, the one being spoken and how far.
    queued: std::collections::VecDeque<Vec<i16>>,
    speaking: Option<(Vec<i16>, usize)>,
    /// Where (media time) each utterance began to be sent.
    began: Vec<Duration>,
    noise: u32,
    seq: u16,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            name: "call",
            providers: None,
            provider_config: None,
            free_conversation: false,
            edit: |c| c,
            customers: None,
            from: "anonymous",
            codec: Codec::Pcmu,
            line: None,
        }
    }
}

/// One call at a time in a test binary: the clock is stepped by spinning,
/// and two spinning calls on a two-core machine would starve the kernel's
/// loopback delivery.
static ONE_CALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A call in progress.
pub struct TestCall {
    _one: tokio::sync::MutexGuard<'static, ()>,
    pub peer: LegPeer,
    /// Into the call's media events: the caller's voice and keys.
    media: mpsc::Sender<MediaEvent>,
    pub heard: Heard,
    /// The payload type of each frame heard, in order.
    pub payload_types: Arc<Mutex<Vec<u8>>>,
    /// Where the caller's phone receives RTP.
    pub phone: std::net::SocketAddr,
    /// The phone's socket, to send RTP from, and where sav receives it.
    phone_out: Arc<UdpSocket>,
    sav_rtp: std::net::SocketAddr,
    /// An echoing line's phone, when the call has one.
    line: Option<Arc<Mutex<LineState>>>,
    /// When the call was established (virtual time).
    pub t0: Instant,
    pub fakes: Option<FakeProviders>,
    pub store: Store,
    pub services: Arc<Services>,
    call: tokio::task::JoinHandle<CallEnd>,
    call_id: String,
}

/// A call that ended.
pub struct Ended {
    pub end: CallEnd,
    /// The call record as the CRM event carries it.
    pub record: serde_json::Value,
    pub heard: Vec<(Duration, Vec<u8>)>,
    /// The payload type of each frame heard.
    pub payload_types: Vec<u8>,
    /// What the leg was asked, in order.
    pub commands: Vec<LegCommand>,
    /// The call's timeline as stored (on the test's clock).
    pub timeline: sav::timeline::CallTimeline,
    /// The process's metrics after the call (OpenMetrics text).
    pub metrics: String,
}

impl TestCall {
    /// Sets up the process's side, starts the call, establishes it, and
    /// pauses the clock. Call from a current-thread runtime.
    pub async fn start(setup: Setup) -> TestCall {
        let one = ONE_CALL.lock().await;
        // SAV_TEST_LOG=debug shows sav's log lines of the failing test.
        if let Ok(filter) = std::env::var("SAV_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = workdir(setup.name);
        let fakes = match setup.providers {
            Some(behaviour) => Some(FakeProviders::spawn_here(behaviour).await),
            None => None,
        };
        let mut text = std::fs::read_to_string(format!("{REPO}/sav.toml")).unwrap();
        if setup.free_conversation {
            text = free_conversation(&text);
        }
        if let Some(fakes) = &fakes {
            text += &match setup.provider_config {
                Some(sections) => sections(&fakes.base_url()),
                None => fake_providers_config(
                    &fakes.base_url(),
                    "model = \"fake\"\nfirst_token_timeout_ms = 6000\n",
                    "output_format = \"ulaw_8000\"\n",
                    "model = \"whisper\"\n",
                ),
            };
        }
        // The caller sends no RTP here: no RTP timeout within a test.
        text = text.replace("rtp_timeout_secs = 30", "rtp_timeout_secs = 3600");
        // Each call loads its own cache: G.722 and Opus only when needed.
        text = text.replace("code_at_start = true", "code_at_start = false");
        let db = dir.join("sav.db");
        text = text.replace(
            "url = \"sqlite://sav.db\"",
            &format!("url = \"sqlite://{}\"", db.display()),
        );
        let text = (setup.edit)(text);
        let config =
            Config::from_toml(&text, "test", std::path::Path::new(REPO)).expect("test config");
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&config.store.url, &config.base_dir, "test")
            .await
            .expect("store");
        if let Some(csv) = setup.customers {
            sav::store::import::import_customers(&store, csv.as_bytes(), "33")
                .await
                .expect("customers imported");
        }
        let services = Arc::new(Services {
            live: std::sync::RwLock::new(Arc::new(Live::load(config.clone()).expect("cache"))),
            metrics: metrics.clone(),
            driver: MediaDriver::spawn(metrics.clone()),
            shutdown: CancellationToken::new(),
            providers: Providers::from_config(&config).expect("providers"),
            store: store.clone(),
            board: Default::default(),
            config,
        });
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let sav_rtp = socket.local_addr().unwrap();
        let phone = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let phone_addr = phone.local_addr().unwrap();
        let phone_out = phone.clone();
        let heard: Heard = Arc::default();
        let (leg, peer) = Leg::pair();
        let (tap, tapped) = oneshot::channel();
        let call_id = format!("{}@test", setup.name);
        let caller = Caller {
            call_id: call_id.clone(),
            from_user: setup.from.into(),
            asserted: None,
        };
        let trace = CallTrace::new(metrics);
        let call_services = services.clone();
        let call = tokio::spawn(async move {
            let mut leg = leg;
            let end = call::run(
                call_services,
                &mut leg,
                sav::media::ports::MediaSockets::rtp_only(socket),
                caller,
                trace,
                Some(tap),
            )
            .await;
            leg.finish().await;
            end
        });
        // The customer lookup and the record's creation run on the store's
        // threads: let them finish on the real clock before pausing it.
        let begun = std::time::Instant::now();
        loop {
            let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls")
                .fetch_one(store.pool())
                .await
                .unwrap_or(0);
            if calls > 0 {
                break;
            }
            assert!(begun.elapsed() < Duration::from_secs(10), "no call record");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::pause();
        let t0 = Instant::now();
        let listen = heard.clone();
        let payload_types: Arc<Mutex<Vec<u8>>> = Arc::default();
        let types = payload_types.clone();
        let codec = setup.codec;
        let line_state: Option<Arc<Mutex<LineState>>> = setup.line.map(|_| {
            Arc::new(Mutex::new(LineState {
                noise: 0x5EED,
                ..LineState::default()
            }))
        });
        let line = setup.line.map(|l| (l, line_state.clone().unwrap()));
        let line_out = phone.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // The last packet's timestamp, where it was in media time, and
            // its clock rate.
            let mut last: Option<(u32, Duration, u32)> = None;
            let mut last_seq: Option<u16> = None;
            // The phone's decoder, for the codec of the payload type last heard.
            let mut decoder: Option<Decoder> = None;
            while let Ok((len, _)) = phone.recv_from(&mut buf).await {
                if len < 12 {
                    continue;
                }
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                // The phone decodes by the payload type (a re-offer may
                // change the codec mid-call).
                let pt = buf[1] & 0x7F;
                let sent_in = Codec::from_static(pt)
                    .or((pt == Codec::Opus.offer_payload_type()).then_some(Codec::Opus))
                    .expect("PCMU, PCMA, G722 or opus");
                // One packet after the other (RFC 3550 §5.1), on a clock of
                // whole frames that runs on through a hold; a packet's
                // timestamp steps from the last one on that one's clock
                // (the first after a change of clock rate ends the last
                // frame of the old one).
                let at = match last {
                    None => Duration::ZERO,
                    Some((last_ts, last_at, rate)) => {
                        let ticks = ts.wrapping_sub(last_ts);
                        assert_eq!(ticks % (rate / 50), 0, "RTP timestamp off the frame clock");
                        last_at
                            + Duration::from_micros(u64::from(ticks) * 1_000_000 / u64::from(rate))
                    }
                };
                last = Some((ts, at, sent_in.clock_rate()));
                let mut heard = listen.lock().unwrap();
                let decoder = match decoder.as_mut() {
                    Some(d) if d.codec() == sent_in => d,
                    _ => decoder.insert(Decoder::new(sent_in)),
                };
                let mut pcm = [0i16; 960];
                let n = decoder.decode(&buf[12..len], &mut pcm);
                let payload: Vec<u8> = pcm[..n].iter().map(|&s| g711::encode(s)).collect();
                if let Some((line, state)) = &line {
                    let frame = line_frame(line, state, at, &payload);
                    let _ = line_out.try_send_to(&frame, sav_rtp);
                }
                heard.push((at, payload));
                types.lock().unwrap().push(pt);
                drop(heard);
                last_seq = match last_seq {
                    Some(last) => {
                        assert_eq!(seq, last.wrapping_add(1), "RTP sequence broken");
                        Some(seq)
                    }
                    None => Some(seq),
                };
            }
        });
        peer.events
            .send(LegEvent::Established(phone_media(phone_addr, codec, true)))
            .await
            .unwrap();
        let mut tapped = tapped;
        let media = loop {
            match tapped.try_recv() {
                Ok(media) => break media,
                Err(oneshot::error::TryRecvError::Empty) => step().await,
                Err(oneshot::error::TryRecvError::Closed) => {
                    panic!("the call's media did not start")
                }
            }
        };
        TestCall {
            _one: one,
            peer,
            media,
            heard,
            payload_types,
            phone: phone_addr,
            phone_out,
            sav_rtp,
            line: line_state,
            t0,
            fakes,
            store,
            services,
            call,
            call_id,
        }
    }

    /// Virtual time since the call was established.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Lets `d` of virtual time pass, a step at a time.
    pub async fn wait(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            step().await;
        }
    }

    /// The caller presses a key (RFC 4733).
    pub async fn press(&self, digit: char) {
        self.media.send(MediaEvent::Dtmf(digit)).await.unwrap();
    }

    /// The caller starts talking (the VAD's start).
    pub async fn starts_talking(&self) {
        self.media.send(MediaEvent::SpeechStarted).await.unwrap();
    }

    /// The caller's turn ends after `spoken` of speech (the VAD's end).
    pub async fn stops_talking(&self, spoken: Duration) {
        let samples = (spoken.as_millis() as usize) * 8;
        self.media
            .send(MediaEvent::SpeechEnded(vec![0; samples]))
            .await
            .unwrap();
    }

    /// The caller speaks for `spoken` and stops, their audio going to the
    /// call as it is spoken (the VAD's 100 ms chunks for a streaming
    /// recogniser: the onset's 200 ms of pre-roll first, then one each 100 ms).
    pub async fn says_streaming(&self, spoken: Duration) {
        let chunk = |n: usize| -> Vec<i16> {
            (0..n)
                .map(|i| if (i / 20) % 2 == 0 { 3000 } else { -3000 })
                .collect()
        };
        self.starts_talking().await;
        self.media
            .send(MediaEvent::SpeechAudio(chunk(1600)))
            .await
            .unwrap();
        let chunks = spoken.as_millis() / 100;
        for _ in 0..chunks {
            self.wait(Duration::from_millis(100)).await;
            self.media
                .send(MediaEvent::SpeechAudio(chunk(800)))
                .await
                .unwrap();
        }
        self.stops_talking(spoken).await;
    }

    /// The caller speaks for `spoken` and stops.
    pub async fn says(&self, spoken: Duration) {
        self.starts_talking().await;
        self.wait(spoken).await;
        self.stops_talking(spoken).await;
    }

    /// On an echoing line: the caller says `pcm` (8 kHz), mixed into what
    /// the line returns from the next frame on (after what is queued).
    pub fn says_audio(&self, pcm: Vec<i16>) {
        let line = self.line.as_ref().expect("a call with an echoing line");
        line.lock().unwrap().queued.push_back(pcm);
    }

    /// On an echoing line: whether the caller is still saying something.
    pub fn caller_talking(&self) -> bool {
        let line = self.line.as_ref().expect("a call with an echoing line");
        let line = line.lock().unwrap();
        line.speaking.is_some() || !line.queued.is_empty()
    }

    /// On an echoing line: where (media time) each utterance began.
    pub fn utterances_began(&self) -> Vec<Duration> {
        let line = self.line.as_ref().expect("a call with an echoing line");
        line.lock().unwrap().began.clone()
    }

    /// Waits (virtual time, at most `limit`) until what was heard satisfies
    /// `done`; false on time out.
    pub async fn until(
        &self,
        limit: Duration,
        done: impl Fn(&[(Duration, Vec<u8>)]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(&self.heard.lock().unwrap()) {
                return true;
            }
            self.wait(Duration::from_millis(20)).await;
        }
        false
    }

    /// The next command the call gives its leg, within `limit`.
    pub async fn command(&mut self, limit: Duration) -> Option<LegCommand> {
        let end = Instant::now() + limit;
        loop {
            match self.peer.commands.try_recv() {
                Ok(LegCommand::Answer) => continue,
                Ok(command) => return Some(command),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= end => return None,
                Err(mpsc::error::TryRecvError::Empty) => step().await,
            }
        }
    }

    /// The REFER's outcome comes back (the target answered, or not).
    pub async fn transfer_ends(&self, ok: bool) {
        self.peer
            .events
            .send(LegEvent::Transfer { ok })
            .await
            .unwrap();
    }

    /// The phone sends one RTP packet of `payload` (PCMU) now.
    pub async fn send_rtp(&self, seq: u16, timestamp: u32, payload: &[u8; 160]) {
        let mut packet = [0u8; sav::media::rtp::PACKET_LEN];
        let len = sav::media::rtp::write_audio_packet(
            &mut packet,
            0,
            0x00C0_FFEE,
            seq,
            timestamp,
            false,
            payload,
        );
        self.phone_out
            .send_to(&packet[..len], self.sav_rtp)
            .await
            .unwrap();
    }

    /// The caller hangs up.
    pub async fn hang_up(self) -> Ended {
        self.peer
            .events
            .send(LegEvent::Ended(Ending::Remote))
            .await
            .unwrap();
        self.ended(Duration::from_secs(5)).await
    }

    /// Waits (at most `limit` of virtual time) for the call to end by itself.
    pub async fn ended(mut self, limit: Duration) -> Ended {
        let deadline = Instant::now() + limit;
        while !self.call.is_finished() {
            assert!(Instant::now() < deadline, "the call did not end in time");
            step().await;
        }
        let end = (&mut self.call).await.expect("the call did not panic");
        // The store's threads answer on the real clock.
        tokio::time::resume();
        let mut commands = Vec::new();
        while let Ok(command) = self.peer.commands.try_recv() {
            if command != LegCommand::Answer {
                commands.push(command);
            }
        }
        self.store.flush().await;
        let (id, timeline) = self
            .store
            .call_timeline(&self.call_id)
            .await
            .unwrap()
            .expect("call record");
        let record = self.store.call_event(&id).await.unwrap().expect("event");
        let heard = self.heard.lock().unwrap().clone();
        let payload_types = self.payload_types.lock().unwrap().clone();
        let metrics = self.services.metrics.render();
        Ended {
            metrics,
            end,
            record,
            heard,
            payload_types,
            commands,
            timeline,
        }
    }
}

/// The frame an echoing line returns for the one the phone just heard (at
/// `at` on the media clock, `heard` in μ-law): the echo of what sav sent,
/// the caller's voice, the line's noise; an RTP packet of PCMU.
fn line_frame(line: &EchoLine, state: &Mutex<LineState>, at: Duration, heard: &[u8]) -> Vec<u8> {
    let mut state = state.lock().unwrap();
    let state = &mut *state;
    let start = (at.as_micros() / 125) as usize;
    if state.sent.len() < start + heard.len() {
        state.sent.resize(start + heard.len(), 0);
    }
    for (i, &code) in heard.iter().enumerate() {
        state.sent[start + i] = g711::decode(code);
    }
    let path = hybrid_path(line.loss_db);
    let delay = (line.delay.as_micros() / 125) as usize;
    // Uniform noise of this RMS (√3 × RMS is its peak).
    let noise_peak = 32768.0 * 10f32.powf(line.noise_dbfs / 20.0) * 3f32.sqrt();
    if state.speaking.is_none() {
        if let Some(next) = state.queued.pop_front() {
            state.speaking = Some((next, 0));
            state.began.push(at);
        }
    }
    let mut payload = [0u8; 160];
    for (i, out) in payload.iter_mut().enumerate() {
        let n = start + i;
        let mut v = 0.0f32;
        for (k, &h) in path.iter().enumerate() {
            if let Some(j) = n.checked_sub(delay + k) {
                v += h * f32::from(state.sent.get(j).copied().unwrap_or(0));
            }
        }
        state.noise = state.noise.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let uniform = f32::from((state.noise >> 16) as u16) / 32768.0 - 1.0;
        v += uniform * noise_peak;
        if let Some((voice, pos)) = state.speaking.as_mut() {
            if let Some(&s) = voice.get(*pos) {
                v += f32::from(s);
                *pos += 1;
            }
        }
        *out = g711::encode(v.clamp(-32768.0, 32767.0) as i16);
    }
    if state
        .speaking
        .as_ref()
        .is_some_and(|(voice, pos)| *pos >= voice.len())
    {
        state.speaking = None;
    }
    state.seq = state.seq.wrapping_add(1);
    let mut packet = [0u8; sav::media::rtp::PACKET_LEN];
    let len = sav::media::rtp::write_audio_packet(
        &mut packet,
        0,
        0x0EC0_0EC0,
        state.seq,
        start as u32,
        false,
        &payload,
    );
    packet[..len].to_vec()
}

/// What the phone's SDP says: `codec` by its static payload type (Opus on
/// 111) and telephone-event 101, sending (or holding us: `sending` false).
pub fn phone_media(addr: std::net::SocketAddr, codec: Codec, sending: bool) -> RemoteMedia {
    let payload_type = codec.offer_payload_type();
    RemoteMedia {
        addr,
        codec,
        payload_type,
        receive: PayloadTypes {
            audio: payload_type,
            telephone_event: Some(101),
        },
        send_events: Some(101),
        sending,
        quiet_allowed: !sending,
        rtcp_mux: false,
        srtp: None,
    }
}

/// One step of the test's clock: 1 ms, then the runtime runs what that
/// woke and polls its sockets before the next step. Every 20 steps the
/// thread also makes sure the machine had real time to keep pace: at least
/// 20 ms / the clock ratio ([`clock_ratio`]) since the last such check (the kernel's loopback
/// delivery, which a busy or virtualised machine defers to a thread of its
/// own, and the fakes' HTTP exchanges need it; without it a provider would
/// time out in virtual time without ever being late).
pub async fn step() {
    tokio::time::advance(Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    let steps = STEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if steps.is_multiple_of(20) {
        keep_pace();
        tokio::task::yield_now().await;
    }
}

/// Sleeps what is left of 20 ms / the clock ratio ([`clock_ratio`]) since
/// this thread's last call.
fn keep_pace() {
    let least = Duration::from_micros(20_000 / clock_ratio());
    let spent = LAST_CHECK.with(|last| last.get().map_or(Duration::ZERO, |at| at.elapsed()));
    if spent < least {
        std::thread::sleep(least - spent);
    }
    LAST_CHECK.with(|last| last.set(Some(std::time::Instant::now())));
}

/// How many times faster than real time the test clock may run at most
/// (`SAV_TEST_CLOCK_RATIO`, default 10).
fn clock_ratio() -> u64 {
    static RATIO: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RATIO.get_or_init(|| {
        std::env::var("SAV_TEST_CLOCK_RATIO")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&r| r > 0)
            .unwrap_or(10)
    })
}

thread_local! {
    static LAST_CHECK: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}
static STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Mean absolute deviation of a μ-law payload's samples from their mean.
pub fn level(payload: &[u8]) -> u32 {
    // Around the frame's mean: a constant offset is no sound (a G.722
    // decoder settles on one in silence; phones and trunks block DC).
    let pcm = decode_ulaw(payload);
    let n = pcm.len().max(1) as i64;
    let mean = pcm.iter().map(|&s| i64::from(s)).sum::<i64>() / n;
    (pcm.iter()
        .map(|&s| (i64::from(s) - mean).abs())
        .sum::<i64>()
        / n) as u32
}

/// The longest run (ms) of silent frames after `from`.
pub fn longest_silence_after(heard: &[(Duration, Vec<u8>)], from: Duration) -> u64 {
    let mut run = 0u64;
    let mut longest = 0u64;
    for (_, payload) in heard.iter().filter(|(at, _)| *at >= from) {
        if level(payload) <= 100 {
            run += 20;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// The cached phrases heard, in order (a phrase is heard when its first
/// three frames go out back to back).
pub fn phrases_heard(heard: &[(Duration, Vec<u8>)], keys: &[&str]) -> Vec<String> {
    phrase_starts(heard, keys)
        .into_iter()
        .map(|(_, k)| k)
        .collect()
}

/// A μ-law code as it comes back from a call in A-law (there and back):
/// what the phone keeps of a μ-law phrase whatever the call's law, so
/// phrases are matched byte for byte in either.
fn through_alaw(code: u8) -> u8 {
    g711::alaw_to_ulaw(g711::ulaw_to_alaw(code))
}

/// Whether a frame heard is `expected` (μ-law), in either law: byte for
/// byte, or sample for sample within what two G.711 quantisations of the
/// same audio can differ by (an A-law call's phrases are encoded from the
/// same linear audio, not converted from the μ-law).
pub fn same_audio(heard: &[u8], expected: &[u8]) -> bool {
    if heard.starts_with(expected) {
        return true;
    }
    heard.len() >= expected.len()
        && heard.iter().zip(expected).all(|(&h, &e)| {
            let (h, e) = (i32::from(g711::decode(h)), i32::from(g711::decode(e)));
            (h - e).abs() <= e.abs() / 10 + 40
        })
}

/// The fake TTS's voice (it alternates these two codes), in either law.
pub fn is_generated(payload: &[u8]) -> bool {
    let voice = [0x20, 0xA0];
    payload
        .iter()
        .all(|&b| voice.contains(&b) || voice.iter().any(|&v| through_alaw(v) == b))
}

/// Frames the media clock passed without sending one (a stall, or a hold).
pub fn frames_missing(heard: &[(Duration, Vec<u8>)]) -> usize {
    heard
        .windows(2)
        .map(|w| ((w[1].0 - w[0].0).as_millis() / 20).saturating_sub(1) as usize)
        .sum()
}

/// Where each cached phrase started (media clock), in order: where its
/// first three audible frames went out back to back (clips open with
/// silence that many phrases share; a clip's last frame may be padded).
pub fn phrase_starts(heard: &[(Duration, Vec<u8>)], keys: &[&str]) -> Vec<(Duration, String)> {
    let clips: Vec<(String, usize, Vec<Vec<u8>>)> = keys
        .iter()
        .filter_map(|k| {
            let frames = super::cached_frames(k);
            let first = frames.iter().position(|f| level(f) > 100)?;
            Some((k.to_string(), first, frames))
        })
        .collect();
    let mut out = Vec::new();
    for i in 0..heard.len() {
        for (key, first, frames) in &clips {
            if frames.len() >= first + 3
                && i >= *first
                && heard.len() >= i + 3
                && (0..3).all(|j| same_audio(&heard[i + j].1, &frames[first + j]))
            {
                out.push((heard[i - first].0, key.clone()));
            }
        }
    }
    out
}

/// The caller's turns of the record: (kind, text).
pub fn caller_turns(record: &serde_json::Value) -> Vec<(String, String)> {
    record["transcript"]
        .as_array()
        .map(|turns| {
            turns
                .iter()
                .filter(|t| t["speaker"] == "caller")
                .map(|t| {
                    (
                        t["kind"].as_str().unwrap_or_default().to_string(),
                        t["text"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
