//! SIP: rsipstack glue.

pub mod sdp;
