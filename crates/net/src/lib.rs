//! The only crate with sockets. It drives the sans-IO cores:
//!
//! * [`media`]: the relay's fast path — per-core worker threads, each owning a shard of the
//!   media sockets in a `mio` loop, forwarding by [`anchorage_relay::MediaPair::on_packet`].

#![warn(missing_docs)]

pub mod media;
