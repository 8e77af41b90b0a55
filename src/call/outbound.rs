//! `sav call`: place a call, play a WAV as the caller's voice, record what
//! comes back, and report how the call went (setup time, first audio, RTP
//! statistics). The tool to try a running bot, and the base of outbound
//! callbacks.
//!
//! The same layers as a served call: the SIP side is a UAC
//! ([`crate::sip::outbound::dial`]), the media is a [`MediaHandle`] on the
//! media driver (one pacer, one inbound core), so what `sav call` measures
//! is what sav's own media path does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::media::codec::{Codec, CodecChoice, Encoder};
use crate::media::driver::{MediaDriver, MediaEvent};
use crate::media::handle::{KeyError, MediaHandle, MediaSetup};
use crate::media::playout::{Clip, SegmentKind, StreamPolicy};
use crate::media::ports::MediaSockets;
use crate::media::recording::Recording;
use crate::media::vad::VadConfig;
use crate::media::{g711, resample};
use crate::metrics::Metrics;
use crate::sip::config::SipConfig;
use crate::sip::outbound::{dial, DialError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("cannot read {path}: {reason}")]
    Wav { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Resample(#[from] resample::ResampleError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What `sav call` does.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub target: String,
    /// Said to the callee (any WAV; converted to 8 kHz μ-law).
    pub play: Option<PathBuf>,
    /// What the callee says, as an 8 kHz 16-bit WAV.
    pub record: Option<PathBuf>,
    /// How long to stay on the line; by default the WAV's length + 2 s, or
    /// 10 s (120 s with keys to press).
    pub duration: Option<Duration>,
    /// The caller's turns: each said or pressed once the callee has spoken
    /// and then been quiet for [`QUIET_BEFORE_TURN`] (its prompt is over).
    pub turns: Vec<CallerTurn>,
    /// The codecs offered, in our order.
    pub codecs: CodecChoice,
}

/// One turn of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerTurn {
    /// A key pressed (RFC 4733).
    Key(char),
    /// A WAV said (16-bit, any rate).
    Say(PathBuf),
}

/// How the call went.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub target: String,
    /// The SIP Call-ID.
    pub call_id: String,
    pub status: u16,
    /// The codec of the answer.
    pub codec: Codec,
    pub setup: Duration,
    /// From the answer to the first RTP packet, and to the first audible one.
    pub first_packet: Option<Duration>,
    pub first_audio: Option<Duration>,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub max_gap: Duration,
    pub jitter_ms: f64,
    pub sent: u64,
    /// From the callee's RTCP: the round trip, and our packets it lost.
    pub round_trip: Option<Duration>,
    pub callee_reports_lost: Option<i32>,
    pub remote_hung_up: bool,
    pub duration: Duration,
    /// The caller's turns taken, and when (from the answer).
    pub taken: Vec<(String, Duration)>,
}

/// The callee's quiet after it spoke that lets the caller's next turn go:
/// its prompt is over (the pauses inside a prompt are shorter).
pub const QUIET_BEFORE_TURN: Duration = Duration::from_millis(1200);

impl std::fmt::Display for CallSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
            None => "none".into(),
        };
        writeln!(f, "call {}: answered {}", self.target, self.status)?;
        writeln!(f, "  call_id           {}", self.call_id)?;
        writeln!(f, "  codec             {}", self.codec)?;
        writeln!(
            f,
            "  setup_ms          {:.1}",
            self.setup.as_secs_f64() * 1000.0
        )?;
        writeln!(f, "  first_packet      {}", ms(self.first_packet))?;
        writeln!(f, "  first_audio       {}", ms(self.first_audio))?;
        writeln!(
            f,
            "  rtp_received      {} (expected {}, lost {}, out of order {})",
            self.received, self.expected, self.lost, self.out_of_order
        )?;
        writeln!(
            f,
            "  max_gap_ms        {:.1}",
            self.max_gap.as_secs_f64() * 1000.0
        )?;
        writeln!(f, "  jitter_ms         {:.2}", self.jitter_ms)?;
        writeln!(f, "  rtp_sent          {}", self.sent)?;
        writeln!(f, "  round_trip        {}", ms(self.round_trip))?;
        match self.callee_reports_lost {
            Some(lost) => writeln!(f, "  callee_lost       {lost} (its RTCP)")?,
            None => writeln!(f, "  callee_lost       no RTCP report")?,
        }
        if !self.taken.is_empty() {
            let turns: Vec<String> = self
                .taken
                .iter()
                .map(|(turn, at)| format!("{turn} at {:.1} s", at.as_secs_f64()))
                .collect();
            writeln!(f, "  turns             {}", turns.join(", "))?;
        }
        writeln!(f, "  duration_s        {:.2}", self.duration.as_secs_f64())?;
        write!(
            f,
            "  ended_by          {}",
            if self.remote_hung_up {
                "remote BYE"
            } else {
                "us (BYE)"
            }
        )
    }
}

/// Places the call, returns its summary.
pub async fn place_call(
    config: &SipConfig,
    request: CallRequest,
) -> Result<CallSummary, CallError> {
    let voice = match &request.play {
        Some(path) => load_wav(path)?,
        None => Vec::new(),
    };
    let duration = request.duration.unwrap_or_else(|| {
        if !request.turns.is_empty() {
            return Duration::from_secs(120);
        }
        Duration::from_millis(voice.len() as u64 / 8)
            + Duration::from_secs(if voice.is_empty() { 10 } else { 2 })
    });
    // The turns are read and checked before anything rings.
    let mut pending = Vec::with_capacity(request.turns.len());
    for turn in &request.turns {
        pending.push(match turn {
            CallerTurn::Key(key) => {
                if crate::media::dtmf::event_to_digit_code(*key).is_none() {
                    return Err(KeyError::NotAKey(*key).into());
                }
                Pending::Key(*key)
            }
            CallerTurn::Say(path) => Pending::Say(path.display().to_string(), load_wav(path)?),
        });
    }
    let sockets = MediaSockets::ephemeral_pair(config.listen.ip())?;
    let port = sockets.rtp.local_addr()?.port();
    let mut dialed = dial(config, &request.target, port, &request.codecs).await?;
    let codec = dialed.remote.codec;
    // What the caller will say, in the call's codec; keys only if the
    // callee takes telephone-events.
    let takes_keys = dialed.remote.send_events.is_some();
    if !takes_keys && pending.iter().any(|t| matches!(t, Pending::Key(_))) {
        dialed.end(false).await;
        return Err(KeyError::NoTelephoneEvent.into());
    }
    let turns: Vec<Ready> = pending
        .into_iter()
        .map(|turn| match turn {
            Pending::Key(key) => Ready::Key(key),
            Pending::Say(name, pcm) => Ready::Say(name, encode(codec, &pcm)),
        })
        .collect();

    // Our voice from frame 0 of the answer; theirs received and recorded.
    let answered = dialed.answered;
    let driver = MediaDriver::spawn(Arc::new(Metrics::new()));
    let recording = request.record.as_ref().map(|_| Recording::default());
    let initial = if voice.is_empty() {
        Vec::new()
    } else {
        vec![SegmentKind::Clip(Clip::new(
            "play",
            codec,
            encode(codec, &voice),
        ))]
    };
    let (mut media, mut events) = MediaHandle::start(
        &driver,
        MediaSetup {
            socket: sockets.rtp,
            rtcp: sockets.rtcp,
            cname: format!("sav@{}", config.advertised_ip()),
            remote: dialed.remote,
            t0: answered,
            initial,
            policy: StreamPolicy::default(),
            // The callee may be silent for the whole call: no timeout.
            rtp_timeout: duration + Duration::from_secs(60),
            // The caller's turns wait for the callee's prompts to end: its
            // voice heard.
            vad: (!turns.is_empty()).then(|| VadConfig {
                echo_cancelling: false,
                stream_audio: false,
                ..VadConfig::default()
            }),
            recording: recording.clone(),
        },
    )
    .await;
    let end_at = answered + duration;
    let mut turns = turns.into_iter();
    let mut next_turn = turns.next();
    let mut taken = Vec::new();
    // The callee spoke since the last key, and went quiet at.
    let mut spoke = false;
    let mut quiet_since: Option<Instant> = None;
    let remote_hung_up = loop {
        let turn_at = match (&next_turn, quiet_since) {
            (Some(_), Some(quiet)) if spoke => Some(quiet + QUIET_BEFORE_TURN),
            _ => None,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(end_at) => break false,
            _ = dialed.hung_up() => break true,
            _ = crate::time::sleep_until_opt(turn_at) => {
                match next_turn.take() {
                    // Checked above: the callee takes events, the key is one.
                    Some(Ready::Key(key)) if media.press(key).await.is_ok() => {
                        taken.push((format!("key {key}"), answered.elapsed()));
                    }
                    Some(Ready::Say(name, audio)) => {
                        media
                            .enqueue(SegmentKind::Clip(Clip::new("say", codec, audio)))
                            .await;
                        taken.push((format!("said {name}"), answered.elapsed()));
                    }
                    Some(Ready::Key(_)) | None => {}
                }
                next_turn = turns.next();
                spoke = false;
                quiet_since = None;
            }
            // Playout news and the callee's keys are not this tool's business.
            event = events.recv() => match event {
                Some(MediaEvent::SpeechStarted) => {
                    spoke = true;
                    quiet_since = None;
                }
                Some(MediaEvent::SpeechEnded(_)) => quiet_since = Some(Instant::now()),
                Some(MediaEvent::RtpTimeout) | None => {
                    // Keep the line open until the end; nothing more comes.
                    tokio::select! {
                        _ = tokio::time::sleep_until(end_at) => break false,
                        _ = dialed.hung_up() => break true,
                    }
                }
                Some(_) => {}
            }
        }
    };
    let stats = media.stop().await;
    let media_ended = Instant::now();
    let (status, setup, call_id) = (dialed.status, dialed.setup, dialed.call_id());
    dialed.end(remote_hung_up).await;

    let received = &stats.received;
    let since_answer =
        |t: Option<std::time::Instant>| t.map(|t| t.saturating_duration_since(answered.into_std()));
    if let (Some(path), Some(recording)) = (&request.record, &recording) {
        // What the callee said from its first packet on (each packet in
        // its place by timestamp): the wait before it is not its audio.
        let first = since_answer(received.first_arrival()).unwrap_or_default();
        let skip = (first.as_micros() * 8 / 1000) as usize;
        let heard: Vec<i16> = recording
            .caller
            .snapshot()
            .into_iter()
            .skip(skip)
            .map(g711::decode)
            .collect();
        write_wav(path, &heard)?;
    }
    Ok(CallSummary {
        target: request.target,
        call_id,
        status,
        codec,
        setup,
        first_packet: since_answer(received.first_arrival()),
        first_audio: since_answer(received.first_audio),
        received: received.packets,
        expected: received.expected(),
        lost: received.lost(),
        out_of_order: received.out_of_order,
        max_gap: received.max_gap,
        jitter_ms: received.jitter_ms(),
        sent: stats.sent,
        round_trip: stats.peer.rtt,
        callee_reports_lost: stats.peer.of_us.map(|b| b.cumulative_lost),
        remote_hung_up,
        duration: media_ended - answered,
        taken,
    })
}

/// A caller's turn as read before dialing (a WAV as 8 kHz PCM).
enum Pending {
    Key(char),
    Say(String, Vec<i16>),
}

/// A caller's turn made ready for the call's codec.
enum Ready {
    Key(char),
    Say(String, Vec<u8>),
}

/// 8 kHz linear PCM in `codec`.
fn encode(codec: Codec, pcm: &[i16]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(pcm.len());
    let mut encoder = Encoder::new(codec);
    encoder.encode_extend(pcm, &mut encoded);
    encoder.finish(&mut encoded);
    encoded
}

/// Any mono or stereo 16-bit WAV → 8 kHz linear PCM.
fn load_wav(path: &Path) -> Result<Vec<i16>, CallError> {
    let wav_err = |reason: String| CallError::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| {
        wav_err(format!(
            "{e} (a 16-bit PCM WAV is expected: sox in.wav -b 16 -e signed-integer out.wav)"
        ))
    })?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(wav_err(format!(
            "{}-bit {:?}; expected 16-bit PCM",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| wav_err(e.to_string()))?;
    let mono: Vec<i16> = samples
        .chunks(usize::from(spec.channels.max(1)))
        .map(|frame| (frame.iter().map(|&s| i32::from(s)).sum::<i32>() / frame.len() as i32) as i16)
        .collect();
    Ok(resample::resample(
        &mono,
        spec.sample_rate,
        resample::LINE_RATE,
    )?)
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<(), CallError> {
    let err = |reason: String| CallError::Record {
        path: path.to_path_buf(),
        reason,
    };
    crate::media::wav::write_file(path, 1, samples).map_err(|e| err(e.to_string()))
}
