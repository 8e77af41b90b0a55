//! SIP: the rsipstack glue.
//!
//! - [`server`]: the endpoint (UDP and TCP listeners), the dispatch of
//!   incoming requests, RTP port allocation, start-up and shutdown;
//! - [`call`]: one answered INVITE from offer to BYE, driving the
//!   conversation and the media;
//! - [`sdp`]: the SDP offer/answer of one audio stream.

pub mod call;
pub mod config;
pub mod digest;
pub mod midcall;
pub mod outbound;
pub mod registrar_client;
pub mod registration;
pub mod sdp;
pub mod server;
pub mod tls;
