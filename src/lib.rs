//! sav: an after-sales phone support voicebot that is its own SIP/RTP
//! endpoint.
//!
//! The layout (ARCHITECTURE.md has the whole picture: who owns what, how a
//! call flows from INVITE to BYE, how each level is tested):
//!
//! - [`app`]: the process (`run`, told to stop or reload through a channel;
//!   `serve` feeds it signals): listeners, dispatch and admission of INVITEs,
//!   providers, store and outbox, metrics, SIGHUP reload, drain on SIGTERM;
//! - [`call`]: the only module that composes a call: the per-call loop over
//!   the SIP leg, the media, the conversation, the providers, the store and
//!   the timeline (`setup`, `effects`, `speech`, `reply`), and the call
//!   board (`board`: the calls in progress as the console shows them);
//! - [`conversation`]: pure decisions (sans-IO): the SAV flow, turn-taking,
//!   fillers, barge-in; `CallEvent` in, `CallAction` out; the reply book
//!   (a generated reply's streams and provider requests);
//! - [`sip`]: signalling only: the endpoint, a new INVITE (`incoming`), one
//!   leg as `LegEvent`s and `LegCommand`s (`leg`), SDP, digest,
//!   registration, session timers, `sav call`;
//! - [`media`]: owns its sockets: the driver that paces every call's RTP,
//!   each call's receive task (`receiver`), one `MediaHandle` per call, and
//!   the sans-IO cores (the inbound path, codecs, jitter buffer, RTCP, SRTP,
//!   echo canceller, pacer, playout, latch, DTMF, VAD, RTP);
//! - [`providers`]: LLM, TTS and STT clients;
//! - [`cache`]: the phrase cache, clips loaded once and shared;
//! - [`store`]: customers, call records, the CRM outbox and the retention
//!   purge (SQLite, or PostgreSQL for several instances);
//! - [`timeline`]: each call's timeline and its drawing (`sav report`);
//! - [`metrics`]: Prometheus `/metrics`, `/livez` and `/readyz`;
//! - [`secret`]: a secret setting from its `_env` variable or its `_file`;
//! - [`console`]: the after-sales team's pages and JSON API (live calls
//!   from the call board, calls, a call, the day's figures, phrases,
//!   callbacks), behind sign-in or bearer tokens;
//! - [`config`]: `sav.toml` assembled from each layer's section (the
//!   process's and the console's sections are its own);
//! - leaves any layer may use: [`redact`] (personal data in logs),
//!   [`text`] (text cut on a character boundary), [`time`] (sleeping until
//!   an optional deadline).
//!
//! Who may import whom: `app` and `call` compose (`console`, started by
//! `app`, reads the call board and places callbacks through `call`);
//! `config` imports none of call, app, console; `sip` imports only media;
//! `media` only metrics; `conversation` nothing; the leaves (`redact`,
//! `secret`, `text`, `time`) are for everyone. No two top-level modules
//! import each other in a cycle (`tests/layers.rs` checks each layer
//! against its list in ARCHITECTURE.md). The protocol and media cores take time and
//! events in and hand frames and actions out; tokio tasks own the sockets
//! and timers.

pub mod app;
pub mod cache;
pub mod call;
pub mod config;
pub mod console;
pub mod conversation;
pub mod media;
pub mod metrics;
pub mod providers;
pub mod redact;
pub mod secret;
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
