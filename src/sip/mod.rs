//! SIP: the rsipstack glue.
//!
//! - [`server`]: the endpoint (UDP and TCP listeners), the dispatch of
//!   incoming requests, RTP port allocation, start-up and shutdown;
//! - [`call`]: one answered INVITE from offer to BYE, driving the
//!   conversation and the media;
//! - [`sdp`]: the SDP offer/answer of one audio stream.

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

/// Methods we answer (RFC 3261 §20.5 Allow).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";
