//! The media relay's control plane, sans-IO: the ng commands an rtpengine-compatible relay
//! executes (`ping`, `offer`, `answer`, `delete`, `query`, `list`, `statistics`) over its call
//! model, with port allocation and the rtpengine-style SDP rewrite.
//!
//! | file | what |
//! | --- | --- |
//! | [`controller`] | THE command executor: [`Controller::handle`] → reply + [`MediaAction`]s; one file per command family under `controller/` |
//! | [`session`] | calls, dialogs (two parties over one set of ports), streams (`m=` lines) |
//! | [`sdp_in`] | what the relay reads from a party's SDP |
//! | [`sdes`] | SDES `a=crypto` negotiation and each stream's transport per side |
//! | [`dtls`] | DTLS-SRTP `a=setup` roles and `a=fingerprint` per side |
//! | [`sdp_out`] | the SDP the relay sends on |
//!
//! The I/O layer (`anchorage relay`) decodes ng datagrams with `anchorage-ng`, calls
//! [`Controller::handle`] with the clock and a [`PortBinder`] that binds real sockets, applies
//! the [`MediaAction`]s to the media workers, feeds counters back with
//! [`Controller::observe`], and calls [`Controller::expire`] every second.

#![warn(missing_docs)]

pub mod controller;
pub mod dtls;
pub mod sdes;
pub mod sdp_in;
pub mod sdp_out;
pub mod session;

pub use controller::{
    body, Config, ConfigError, Controller, Expired, ExpiryReason, Handled, MediaAction, Now,
    PortBinder, PortUsage, Statistics,
};
pub use session::SessionKey;
