//! `sav call`: place a call as a UAC, play a WAV as the caller's voice,
//! record what comes back, and report how the call went (setup time, first
//! audio, RTP statistics). The tool to try a running bot, and the base of
//! outbound callbacks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::Uri;
use rsipstack::transport::SipAddr;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::media::pacer::Pacer;
use crate::media::playout::FRAME_BYTES;
use crate::media::rtp::{self, Inbound, PayloadTypes, PACKET_LEN};
use crate::media::stats::ReceiveStats;
use crate::media::{g711, resample};
use crate::sip::config::SipConfig;
use crate::sip::endpoint::SipEndpoint;
use crate::sip::sdp::{self, SessionDescription};

/// A frame counts as audible when its mean absolute sample exceeds this.
const AUDIBLE_LEVEL: u32 = 200;
/// Longest wait for the INVITE's final response.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(64);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("{0:?} is not a SIP URI: {1}")]
    BadUri(String, String),
    #[error("cannot read {path}: {reason}")]
    Wav { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("SIP: {0}")]
    Sip(Box<rsipstack::Error>),
    #[error(transparent)]
    Endpoint(#[from] crate::sip::endpoint::EndpointError),
    #[error("environment variable {0} (sip.register.password_env) is not set")]
    NoPassword(String),
    #[error("the call was not answered: {0}")]
    NotAnswered(String),
    #[error("the answer's SDP is not usable: {0}")]
    Answer(#[from] sdp::SdpError),
    #[error(transparent)]
    Resample(#[from] resample::ResampleError),
}

impl From<rsipstack::Error> for CallError {
    fn from(error: rsipstack::Error) -> Self {
        CallError::Sip(Box::new(error))
    }
}

/// What `sav call` does.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub target: String,
    /// Said to the callee (any WAV; converted to 8 kHz μ-law).
    pub play: Option<PathBuf>,
    /// What the callee says, as an 8 kHz 16-bit WAV.
    pub record: Option<PathBuf>,
    /// How long to stay on the line; by default the WAV's length + 2 s, or 10 s.
    pub duration: Option<Duration>,
}

/// How the call went.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub target: String,
    pub status: u16,
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
    pub remote_hung_up: bool,
    pub duration: Duration,
}

impl std::fmt::Display for CallSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
            None => "none".into(),
        };
        writeln!(f, "call {}: answered {}", self.target, self.status)?;
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
    crate::install_crypto_provider();
    let target: Uri = request.target.parse().map_err(|e: rsipstack::sip::Error| {
        CallError::BadUri(request.target.clone(), e.to_string())
    })?;
    // The extension's password, read before anything is sent: as for the
    // registration, a configured account without its password is an error.
    let credential = match config.register.as_ref() {
        Some(r) => Some(Credential {
            username: r.username.clone(),
            password: std::env::var(&r.password_env)
                .map_err(|_| CallError::NoPassword(r.password_env.clone()))?,
            realm: None,
            auth_username: r.auth_username.clone(),
        }),
        None => None,
    };
    let voice = match &request.play {
        Some(path) => load_wav(path)?,
        None => Vec::new(),
    };
    let duration = request.duration.unwrap_or_else(|| {
        Duration::from_millis(voice.len() as u64 / 8)
            + Duration::from_secs(if voice.is_empty() { 10 } else { 2 })
    });

    // Our own endpoint on an ephemeral port, so a running `sav serve` is no obstacle.
    let ip = config.advertised_ip();
    let bind_ip = config.listen.ip();
    let (endpoint, cancel, sip_port) = SipEndpoint::ephemeral(&config.user_agent, bind_ip).await?;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));

    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let local_rtp = SocketAddr::new(ip, socket.local_addr()?.port());
    let offer = sdp::offer(
        local_rtp,
        sdp::Origin::new(u64::from(rand::random::<u32>())),
    );

    let register = config.register.as_ref();
    let contact = crate::sip::contact::format(
        crate::sip::contact::user(config),
        SocketAddr::new(ip, sip_port),
        "",
    );
    let contact: Uri = contact
        .parse()
        .map_err(|e: rsipstack::sip::Error| CallError::BadUri(contact.clone(), e.to_string()))?;
    let destination = match register.and_then(|r| r.outbound_proxy.as_ref()) {
        Some(proxy) => {
            let uri: Uri = proxy.parse().map_err(|e: rsipstack::sip::Error| {
                CallError::BadUri(proxy.clone(), e.to_string())
            })?;
            Some(SipAddr::try_from(&uri)?)
        }
        None => None,
    };
    let option = InviteOption {
        caller_display_name: None,
        caller_params: Vec::new(),
        caller: contact.clone(),
        callee: target,
        destination,
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        contact,
        credential,
        headers: None,
        support_prack: false,
        call_id: Some(format!("{:016x}@{ip}", rand::random::<u64>())),
        session_id: None,
        route_set: Vec::new(),
    };
    let (state_tx, mut states) = dialogs.new_dialog_state_channel();
    let started = Instant::now();
    info!(target = %request.target, "calling");
    let (dialog, response) =
        tokio::time::timeout(ANSWER_TIMEOUT, dialogs.do_invite(option, state_tx))
            .await
            .map_err(|_| CallError::NotAnswered("no final response".into()))??;
    let Some(response) = response else {
        return Err(CallError::NotAnswered("no response".into()));
    };
    let status = response.status_code.code();
    if !(200..300).contains(&status) {
        return Err(CallError::NotAnswered(format!(
            "{status} {}",
            response.status_code
        )));
    }
    let answered = Instant::now();
    let answer = SessionDescription::parse(&response.body)?;
    let chosen = sdp::negotiate(&answer)?;
    // The callee sends with the payload types of our offer (RFC 3264 §5.1).
    let receive_types = PayloadTypes {
        audio: sdp::OFFERED_PCMU,
        telephone_event: Some(sdp::OFFERED_TELEPHONE_EVENT),
    };

    // Media: our voice paced out, theirs received and recorded.
    let mut pacer = Pacer::new(answered.into_std(), rand::random(), rand::random());
    let ssrc: u32 = rand::random();
    let mut stats = ReceiveStats::new();
    let mut recording: Vec<i16> = Vec::new();
    let mut packet = [0u8; PACKET_LEN];
    let mut buf = [0u8; rtp::MAX_DATAGRAM];
    let end_at = answered + duration;
    let mut remote_hung_up = false;
    let mut position = 0usize;
    let mut first = true;
    loop {
        let next_frame = Instant::from_std(pacer.poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(next_frame.min(end_at)) => {}
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, _)) = received {
                    if let Ok(Inbound::Audio { seq, timestamp, payload, .. }) = rtp::parse_inbound(&buf[..len], &receive_types) {
                        let start = recording.len();
                        recording.extend(payload.iter().map(|&c| g711::decode(c)));
                        let level: u32 = recording[start..].iter().map(|s| s.unsigned_abs() as u32).sum::<u32>()
                            / (payload.len().max(1) as u32);
                        stats.on_packet(Instant::now().into_std(), seq, timestamp, level > AUDIBLE_LEVEL);
                    }
                }
                continue;
            }
            state = states.recv() => {
                if let Some(DialogState::Terminated(..)) = state {
                    remote_hung_up = true;
                    break;
                }
                continue;
            }
        }
        let now = Instant::now();
        if now >= end_at {
            break;
        }
        while let Some(slot) = pacer.poll_frame(now.into_std()) {
            let mut frame = [g711::SILENCE; FRAME_BYTES];
            if position < voice.len() {
                let take = (voice.len() - position).min(FRAME_BYTES);
                frame[..take].copy_from_slice(&voice[position..position + take]);
                position += take;
            }
            let len = rtp::write_audio_packet(
                &mut packet,
                chosen.pcmu,
                ssrc,
                slot.seq,
                slot.timestamp,
                first,
                &frame,
            );
            first = false;
            if let Err(error) = socket.send_to(&packet[..len], chosen.remote).await {
                warn!(%error, "RTP send failed");
            }
        }
    }
    let media_ended = Instant::now();
    if !remote_hung_up {
        if let Err(error) = dialog.bye().await {
            warn!(%error, "BYE failed");
        }
    }
    dialogs.remove_dialog(&dialog.id());
    cancel.cancel();

    if let Some(path) = &request.record {
        write_wav(path, &recording)?;
    }
    let since_answer =
        |t: Option<std::time::Instant>| t.map(|t| t.saturating_duration_since(answered.into_std()));
    Ok(CallSummary {
        target: request.target,
        status,
        setup: answered - started,
        first_packet: since_answer(stats.first_arrival()),
        first_audio: since_answer(stats.first_audio),
        received: stats.packets,
        expected: stats.expected(),
        lost: stats.lost(),
        out_of_order: stats.out_of_order,
        max_gap: stats.max_gap,
        jitter_ms: stats.jitter_ms(),
        sent: pacer.sent(),
        remote_hung_up,
        duration: media_ended - answered,
    })
}

/// Any mono or stereo 16-bit WAV → 8 kHz μ-law.
fn load_wav(path: &Path) -> Result<Vec<u8>, CallError> {
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
    let line = resample::resample(&mono, spec.sample_rate, resample::LINE_RATE)?;
    let mut out = Vec::with_capacity(line.len());
    g711::encode_extend(&line, &mut out);
    Ok(out)
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<(), CallError> {
    let err = |reason: String| CallError::Record {
        path: path.to_path_buf(),
        reason,
    };
    crate::media::wav::write_file(path, 1, samples).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registered_account_without_its_password_is_an_error() {
        let mut config: SipConfig = toml::from_str("listen = \"127.0.0.1:5060\"").unwrap();
        config.register = Some(crate::sip::config::RegisterConfig {
            registrar: "sip:pbx.invalid".into(),
            username: "201".into(),
            auth_username: None,
            password_env: "SAV_TEST_PASSWORD_NEVER_SET".into(),
            expires: 300,
            outbound_proxy: None,
            retry_min_secs: 2,
            retry_max_secs: 300,
        });
        let request = CallRequest {
            target: "sip:sav@127.0.0.1:5999".into(),
            play: None,
            record: None,
            duration: Some(Duration::from_secs(1)),
        };
        let error = place_call(&config, request).await.unwrap_err();
        assert!(
            matches!(&error, CallError::NoPassword(name) if name == "SAV_TEST_PASSWORD_NEVER_SET"),
            "{error}"
        );
    }
}
