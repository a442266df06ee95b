//! The proxy core of Anchorage: RFC 3261 transaction state machines (and, to come,
//! forwarding, dialogs and re-anchoring), driven by `handle_*`/`poll_*` with an injected
//! clock.
//!
//! This crate is sans-IO: it contains no networking code and never reads the clock or an
//! RNG. Every input carries `now: std::time::Instant`; every output (what to send, what to
//! tell the transaction user, when to be woken) is polled. The `clippy.toml` of this crate
//! forbids `Instant::now` and `SystemTime::now`.
//!
//! * [`transaction`]: RFC 3261 §17 client and server transactions (INVITE and non-INVITE)
//!   with RFC 6026's `Accepted` state, timers A–M and Timer C, matching by branch with the
//!   RFC 2543 fallback, and a [`transaction::TransactionTable`] whose memory is bounded by
//!   the peak number of live transactions.

pub mod transaction;
