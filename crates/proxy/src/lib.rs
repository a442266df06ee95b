//! The proxy core of Anchorage: RFC 3261 transaction state machines, stateful forwarding,
//! routing, dialogs, media anchoring over ng and re-anchoring, driven by
//! `handle_*`/`poll_*` with an injected clock.
//!
//! This crate is sans-IO: it contains no networking code and never reads the clock or an
//! RNG. Every input carries `now: std::time::Instant`; every output (what to send, what to
//! tell the transaction user, when to be woken) is polled. The `clippy.toml` of this crate
//! forbids `Instant::now` and `SystemTime::now`.
//!
//! * [`transaction`]: RFC 3261 §17 client and server transactions (INVITE and non-INVITE)
//!   with RFC 6026's `Accepted` state, timers A–M and Timer C; the node holds them (matched by
//!   branch with the RFC 2543 fallback) in one store, `node/transactions.rs`.
//! * [`node`]: the RFC 3261 §16 proxy node, [`node::Proxy`] — validation, loose routing,
//!   Record-Route, forwarding, response selection, CANCEL, serial failover, stateless
//!   forwarding of what belongs to a transaction another node holds, media anchoring and
//!   re-anchoring; one file per RFC concern (see the module's table). Named `node`, not
//!   `core`, so that it does not shadow the `core` crate.
//! * [`routing`]: the `[[proxy.route]]` rules; [`via`]: branches, loops, `received`/`rport`;
//!   [`dialog`]: INVITE dialogs per leg, with CSeq renumbering.
//! * [`media`]: relay sets, node health checks and the ng requests built from SIP;
//!   [`reanchor`]: what moving a call's media needs (leg targets, in-dialog requests, `o=`,
//!   back-off, job records); the procedure runs in `node/moves/`.
//! * [`flood`]: the per-source request rate limit (`[proxy.flood]`).
#![warn(missing_docs)]

pub mod dialog;
pub mod flood;
pub mod media;
pub mod node;
pub mod reanchor;
pub mod routing;
pub mod via;

/// The RFC 3261 §17 transaction machines, from their own crate (`anchorage-transaction`),
/// under the path the node has always used.
pub use anchorage_transaction as transaction;

/// The SIP transport (one type for the core and the I/O layer).
pub use anchorage_sip::Transport;
