//! RTPProxy's control protocol, sans-IO: the text commands Kamailio's and OpenSIPS'
//! `rtpproxy` modules send to a media relay, and the relay's replies.
//!
//! Over UDP every datagram is `COOKIE COMMAND[MODIFIERS] ARGS…` and every reply
//! `COOKIE RESULT\n`, where the result is a port and address (`20090 192.0.2.1`, IPv6 with a
//! trailing ` 6`), a number (`0` success or "not found", `1`/`0` for a capability), an error
//! `E<code>`, or text (`I`'s statistics, `Q`'s counters).
//!
//! | file | what |
//! | --- | --- |
//! | [`command`] | [`Command`]: parse a command datagram, encode one (for a client) |
//! | [`modifier`] | [`Modifiers`]: the letters after `U`/`L`, typed, unknown ones kept |
//! | [`reply`] | [`Reply`]: encode a reply (server), parse one (client) |
//! | [`info`] | [`Info`]: the numbers of an `I` reply (a node's load) |
//! | [`leg_flags`] | [`LegFlags`]: OpenSIPS' per-leg flag letters, split into modifiers and SDP edits |
//! | [`client`] | [`Client`]: a controller's retransmitting request tracker, one per node |
//! | [`error`] | [`ParseError`] and RTPProxy's numeric error codes ([`ErrorCode`]) |
//!
//! Nothing here touches a socket or a clock.

#![warn(missing_docs)]

pub mod client;
pub mod command;
pub mod error;
pub mod info;
pub mod leg_flags;
pub mod modifier;
pub mod reply;

pub use client::{Client, ClientConfig, Event, RequestId};
pub use command::{Command, CommandKind, Session, SessionTags, Tag};
pub use error::{ErrorCode, InfoParseError, ParseError, ParseErrorKind, ReplyParseError};
pub use info::Info;
pub use leg_flags::{LegFlagError, LegFlags};
pub use modifier::{Modifier, Modifiers};
pub use reply::{Reply, BASE_VERSION};
