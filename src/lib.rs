//! sav: an after-sales phone support voicebot that is its own SIP/RTP
//! endpoint.
//!
//! The crate follows the layers of `DESIGN.md`:
//! - [`conversation`]: what the bot says and when (the call flow), as a
//!   sans-IO state machine;
//! - [`cache`]: the phrase cache, μ-law clips loaded once and shared;
//! - [`media`]: the sans-IO media cores (G.711, pacer, playout scheduler,
//!   DTMF, RTP packets) and the tokio task that drives them on real sockets;
//! - [`sip`]: the rsipstack glue (transports, INVITE handling, SDP);
//! - [`store`]: customers, call records and the CRM outbox (SQLite, or
//!   PostgreSQL for several instances);
//! - [`metrics`]: Prometheus `/metrics` and readiness `/healthz`;
//! - [`timeline`]: each call's timeline and its drawing (`sav report`);
//! - [`config`]: `sav.toml`, with the repository's copy as embedded default.
//!
//! The protocol and media cores take time and events in and hand frames and
//! actions out; tokio tasks own the sockets and timers.

pub mod app;
pub mod cache;
pub mod call;
pub mod config;
pub mod conversation;
pub mod media;
pub mod metrics;
pub mod providers;
pub mod redact;
pub mod sip;
pub mod store;
pub mod text;
pub mod time;
pub mod timeline;

/// Installs ring as the process-wide rustls crypto provider, once. rsipstack's
/// TLS and reqwest both rely on it; a second provider in the tree would make
/// the first TLS use panic. Safe to call any number of times.
pub fn install_crypto_provider() {
    // An Err means a provider is installed already: nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
