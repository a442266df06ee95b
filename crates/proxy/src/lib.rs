//! The proxy core of Anchorage: RFC 3261 transaction state machines, stateful forwarding,
//! routing, dialogs, media anchoring over ng and re-anchoring, driven by
//! `handle_*`/`poll_*` with an injected clock.
//!
//! This crate is sans-IO: it contains no networking code and never reads the clock or an
//! RNG. Every input carries `now: std::time::Instant` (the wall clock enters beside it as
//! [`node::Now`], to write out when things happened); every output (what to send, what to
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
//!
//! # The seam
//!
//! What a driver (the `anchorage proxy` process, a test bench) may do with a [`node::Proxy`],
//! and nothing else:
//!
//! ```text
//! start    Proxy::new(config, seed, Now { mono, unix_us })
//! inputs   handle_datagram(Datagram, now)          a SIP message received
//!          handle_ng_datagram(relay, bytes, now)   an ng reply (or any datagram) from a relay
//!          handle_relay_refused(relay, now)        ICMP port unreachable from a relay
//!          handle_resolved(query id, result, now)  the answer to an Output::Resolve
//!          handle_timeout(now)                     poll_timeout() has passed
//!          handle_clock(Now)                       a new reading of both clocks
//!          set_input_delay(duration)               how long the next inputs queued (overload)
//! commands start_reanchor / drain_relay / rebalance (…, now) -> Result<JobId, CommandError>
//!          undrain_relay(name, now) -> Result<(), CommandError>; flood_unblock(ip, now) -> bool
//! outputs  poll_output() -> Option<Output>         Ng { relay, datagram } | Resolve(query)
//!                                                  | Sip(Transmit); called until None after
//!                                                  every input or command
//!          poll_timeout() -> Option<Instant>       when to call handle_timeout
//! getters  calls(), dialogs(), anchored_call(id), relays(), job(id), jobs(), counters(),
//!          reanchor_metrics(), waiting_calls(), transaction_count(), unix_us_at(instant), …
//! ```
//!
//! No poll takes `now`: time enters only with inputs. Every input ends by settling the core
//! (queued re-anchoring moves are started there, never from inside the code that ends one),
//! so what the outputs hold after an input is complete. The typed polls `poll_transmit`,
//! `poll_ng_transmit` and `poll_resolve` are the three parts of `poll_output`, for tests that
//! look at one kind at a time.
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
