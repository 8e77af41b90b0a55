//! The media path: sans-IO cores and the tokio tasks that drive them.
//!
//! - [`g711`]: μ-law codec tables;
//! - [`pacer`]: which frame is due now, with its seq/timestamp;
//! - [`playout`]: what the bot says in each frame;
//! - [`dtmf`]: RFC 4733 telephone-events ↔ digits (the caller's keys decoded; a
//!   key press sent by `sav call --dtmf`, in place of the audio frames);
//! - [`rtp`]: packet writing and reading;
//! - [`latch`]: symmetric RTP, which source the caller really sends from;
//! - [`resample`]: rate conversion to 8 kHz;
//! - [`recording`]: both sides of a call on one clock, as a stereo WAV;
//! - [`echo`]: the bot's own voice taken out of what the caller's line
//!   returns (a line echo canceller), with [`sent_audio`] its reference:
//!   what the call sent, shared by the driver and the receive task;
//! - [`driver`]: the tokio side: one task paces every call's outbound RTP,
//!   one receive task per call reads inbound RTP.

pub mod codec;
pub mod config;
pub mod driver;
pub mod dtmf;
pub mod echo;
pub mod g711;
pub mod g722;
pub mod handle;
pub mod inbound;
pub mod jitter;
pub mod latch;
pub mod pacer;
pub mod playout;
pub mod ports;
pub mod prosody;
pub mod receiver;
pub mod recording;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod sent_audio;
pub mod srtp;
pub mod stats;
pub mod vad;
pub mod wav;
