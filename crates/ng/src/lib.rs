//! The rtpengine **ng** control protocol, sans-IO: bencode/JSON codec, the command table,
//! typed requests and replies, the flag normaliser, the server's reply cache and the client's
//! retransmitting request tracker.
//!
//! Map (one job per file):
//!
//! | file | what |
//! | --- | --- |
//! | [`value`] | the document tree both encodings decode into (depth-bounded) |
//! | [`codec`] | `<cookie> <document>` framing, bencode vs JSON by the first byte |
//! | [`command`] | THE command table (wire strings) |
//! | [`flags`] | THE flag normaliser: dict keys + `flags` + `replace` + `rtpp-flags` → [`Flags`] |
//! | [`request`] / [`reply`] | typed requests and replies |
//! | [`error`] | rtpengine's exact `error-reason` strings, decode errors |
//! | [`reply_cache`] | server: (source, cookie) → reply, in-flight duplicates, expiry |
//! | [`client`] | client: cookies, retransmission schedule, reply matching, timeouts |
//!
//! API grammar (quinn-proto's): input goes in through `handle_*(…, now)` or `begin`/`send`,
//! results come out of `poll_transmit`, `poll_timeout` and `poll_event`. Nothing here reads a
//! clock, touches a socket or draws a random number.
//!
//! Server flow, per datagram from `source`:
//!
//! 1. [`split_cookie`]; no cookie → drop silently.
//! 2. [`ReplyCache::begin`]: [`Begin::Cached`] → resend; [`Begin::InProgress`] → drop.
//! 3. [`decode_request`]: on error, send [`DecodeError::error_reply`].
//! 4. execute; reply with [`encode_reply`] in the request's [`Encoding`], warn with
//!    [`Flags::warning`] about ignored flags; [`ReplyCache::complete`].

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod command;
pub mod error;
pub mod flags;
pub mod reply;
pub mod reply_cache;
pub mod request;
pub mod value;

pub use client::{Client, ClientConfig, Event, RequestId};
pub use codec::{
    decode_document, decode_reply, decode_request, encode_document, encode_reply, encode_request,
    split_cookie, Cookie, Encoding, Incoming,
};
pub use command::Command;
pub use error::{reason, DecodeError, ErrorReason, ReplyError};
pub use flags::{
    normalise, normalise_key, AddressFamily, Codec, Dtls, Flags, Ice, Identity, Replace, RtcpMux,
    Sdes, TransportProtocol,
};
pub use reply::{Counters, Outcome, Reply, TagInfo, Totals};
pub use reply_cache::{Begin, ReplyCache, ReplyCacheConfig};
pub use request::{
    Branch, CallId, Delete, DeleteTarget, OfferAnswer, Query, Request, RequestKind, Tag,
};
pub use value::{Dict, Value};
