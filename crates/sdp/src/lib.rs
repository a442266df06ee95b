//! SDP as ordered lines with typed views of the lines a relay rewrites; offer/answer helpers
//! (sans-IO).
//!
//! Why we hand-write this: a relay must forward what it does not understand, byte for byte, and
//! no SDP crate does (see `shared/reference/rust-crates.md` §2: they drop `a=crypto`, unknown
//! attributes, `m=image` T.38 sections or `y=` lines, reorder lines, normalise LF to CRLF, or
//! require UTF-8). Here a [`Session`] is the input's raw lines, grouped into the session level
//! and [`MediaSection`]s; typed views ([`Origin`], [`Connection`], [`Media`], [`Rtpmap`],
//! [`Crypto`], ...) are parsed when asked for, and edits replace, insert or remove whole lines,
//! so an unedited session serializes to exactly its input.
//!
//! ```
//! use anchorage_sdp::{Direction, Session};
//!
//! let mut sdp = Session::parse_slice(
//!     b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
//!       m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
//! )?;
//! let relay = "203.0.113.5".parse().unwrap();
//! sdp.session_level_mut().remove_connection();
//! for media in sdp.media_mut() {
//!     media.set_port(30000);
//!     media.set_connection(relay);
//!     media.add_static_rtpmaps();
//!     media.set_direction(Direction::SendRecv);
//! }
//! sdp.set_origin_version(2)?;
//! assert_eq!(
//!     &sdp.to_bytes()[..],
//!     &b"v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nt=0 0\r\n\
//!        m=audio 30000 RTP/AVP 0 101\r\nc=IN IP4 203.0.113.5\r\na=rtpmap:0 PCMU/8000\r\n\
//!        a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"[..]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod attribute;
mod error;
mod fields;
mod line;
mod media;
pub mod offer_answer;
mod section;
mod session;
mod static_payload;

pub use attribute::{
    Attribute, Candidate, Crypto, Direction, Fingerprint, Fmtp, KeyParam, Rtcp, Rtpmap, Setup,
    ICE_ATTRIBUTES,
};
pub use error::{FieldError, ParseError};
pub use fields::{Bandwidth, Connection, Origin, Timing};
pub use line::LineEnding;
pub use media::{Media, MediaSection, Proto};
pub use section::Section;
pub use session::Session;
pub use static_payload::static_rtpmap;
