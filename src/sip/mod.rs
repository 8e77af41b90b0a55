//! SIP: signalling only, on rsipstack. Imports none of the conversation,
//! the store, the timeline, the providers or the cache.
//!
//! - [`endpoint`]: the transports (UDP, TCP, TLS), shared by `serve` and
//!   `sav call`;
//! - [`incoming`]: a new INVITE checked (420/415/400/488/422) and answered;
//! - [`leg`]: one UAS leg as a task: SIP in, `LegEvent`s out, `LegCommand`s
//!   in (answer, REFER, BYE);
//! - [`outbound`]: a UAC leg (`sav call`): the INVITE, the answer, the BYE;
//! - [`sdp`]: the SDP offer/answer of one audio stream;
//! - [`registration`] (sans-IO) and [`registrar_client`] (its shell),
//!   [`digest`], [`midcall`] (session timers, INFO, sipfrag), [`contact`],
//!   [`respond`], [`tls`].

pub mod admission;
pub mod config;
pub mod contact;
pub mod digest;
pub mod endpoint;
pub mod incoming;
pub mod leg;
pub mod midcall;
pub mod outbound;
pub mod registrar_client;
pub mod registration;
pub mod respond;
pub mod sdp;
pub mod tls;
pub mod wire;

/// Methods we answer (RFC 3261 §20.5 Allow).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";
